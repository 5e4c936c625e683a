"""The benchmarks (``make bench``, ``python -m benchmarks.<name>``); docs/benchmarks.md."""
