from feature_unlearn.cli import main

main()
