"""Benchmarks (``metaprune bench …``): the top floor, importing only the floors below it.

Speed targets are checked here, never in timed tests: ``train`` (the population loop against a common
research loop), ``sparse`` (the compacted/sparse population loop against the dense one), ``prune`` (the
pruning hot paths), ``harvest``, ``fit`` and ``evaluate`` (their commands end to end); ``measure`` holds
how a speed-up is measured on a machine whose load changes.
"""
