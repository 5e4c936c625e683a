"""Serving-side tooling: the archive recipe, the config reader, a local TorchServe, health.

See docs/serving.md ("Where things are").
"""

from __future__ import annotations
