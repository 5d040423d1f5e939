"""The test suite: a package so that the layers share tests/helpers.py (see conftest.py)."""
