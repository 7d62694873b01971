"""Benchmarks that print tables: ``python -m bench.<name> [--quick]``.

BENCHMARKS.md records each table with its command."""
