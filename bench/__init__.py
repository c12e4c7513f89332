"""Benchmarks of the study kit (see README.md); `throughput.py` is the command line."""
