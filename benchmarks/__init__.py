"""Serving benchmarks (see workers_batching.py)."""
