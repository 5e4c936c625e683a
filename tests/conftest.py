"""Shared by every tier: ``handler/`` on the import path, as the model archive ships it.

The handler imports its modules as top-level ``gp_artifact`` and ``gp_protocol`` (TorchServe
puts the extracted archive on ``sys.path``); the tests import them the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "handler"))
