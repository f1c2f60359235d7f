"""Benchmarks of the hook path (`make bench`, `python -m bench`); see docs/performance.md."""
