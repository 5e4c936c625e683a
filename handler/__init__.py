"""The serving side inside every model archive: the artifact contract (``gp_artifact``), the
formats' loaders (``gp_formats``), the wire codecs (``codecs``) and the handler (``gp_handler``).

Imports torch, numpy and orjson only, never BoTorch. See docs/serving.md ("Where things are").
"""

from __future__ import annotations
