"""Benchmarks of the event log against baselines run side by side (`make bench`).

Run ``python -m tests.benchmarks.run`` from the project root; see ``docs/benchmarks.md``.
Pytest ignores this package (``--ignore=tests/benchmarks``): nothing here asserts a number.
"""
