"""Integration tests: export, runtime and HTTP in process; fits and pretraining on tiny configs."""
