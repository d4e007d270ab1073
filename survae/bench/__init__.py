"""Measurement tools: the paper-workload benchmark, the comparison with peer libraries, and the
harness that runs the official SurVAE code beside survae.

Nothing in the library imports this package; ``scripts/benchmark.py`` is its command line.
"""
