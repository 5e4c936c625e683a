"""Serving-side tooling: the archive recipe, the config reader, a local TorchServe, health."""
