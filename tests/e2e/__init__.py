"""End-to-end tests: real processes (README flow, unlearn-cli serve, torchrun DDP, wheel builds)."""
