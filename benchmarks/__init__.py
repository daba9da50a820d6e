"""Benchmarks: measured costs, not tests (run them by hand; they print JSON)."""
