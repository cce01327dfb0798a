"""Benchmarks: scripts that measure; their output feeds docs/results.md."""
