"""Unit tests: pure functions and modules (no files beyond tmp_path, no subprocesses, no training)."""
