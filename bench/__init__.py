"""Benchmarks: each figure is printed with a bare baseline measured in the same run."""
