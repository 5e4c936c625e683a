"""The server a user would write instead of gp-serve: FastAPI + uvicorn + eager BoTorch.

See `benchmarks.peer.app`; started and stopped by ``python -m benchmarks.http``.
"""
