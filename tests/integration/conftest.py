"""Integration tests share the session Ray cluster of ``tests/conftest.py``."""
