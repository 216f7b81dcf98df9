"""Sections of ``tools/benchmark.py`` (imported with ``tools/`` on ``sys.path``)."""
