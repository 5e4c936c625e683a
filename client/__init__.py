"""Client-side tools for gp-serve: CSV batch scoring and a local TorchServe runner."""
