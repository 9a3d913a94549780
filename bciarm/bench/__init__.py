"""Benchmarks (``bciarm bench ...``)."""
