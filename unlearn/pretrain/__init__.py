"""Pre-training of the zoo: generators (VAE, DCGAN) and attribute classifiers."""
