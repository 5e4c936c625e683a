"""What a gp-serve client user runs: CSV batch scoring against a running server.

See docs/serving.md (step 6).
"""

from __future__ import annotations
