"""Benchmarks, each run as a script (``python bench/ingest.py --json``); a package so that the scripts'
shared helpers import, and type-check, as ``bench.scratch_db`` and ``bench.ingest``."""
