"""Benchmarks: ``make bench`` (``python -m benchmarks``). Never part of ``make test``.

Each benchmark prints same-run ratios against a baseline measured in the same
run and writes JSON to ``bench-results/<name>.json``.
"""
