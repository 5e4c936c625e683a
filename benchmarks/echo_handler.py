"""A TorchServe handler that answers every request with its own body: TorchServe's latency floor.

Archived as model ``echo`` next to ``gp`` in the same TorchServe by ``python -m benchmarks.http``
(with gp's workers and batching settings), so that the difference between the two is what the
GP handler itself costs per request: parsing, the posterior, rendering.
"""

from __future__ import annotations

from typing import Any

from ts.torch_handler.base_handler import BaseHandler


class EchoHandler(BaseHandler):
    """Returns each request body unchanged (bytes or str, as TorchServe passed it)."""

    def initialize(self, context: Any) -> None:
        """Nothing to load."""
        self.context = context
        self.initialized = True

    def handle(self, data: list[dict], context: Any) -> list[Any]:
        """One answer per request of the batch: its body (``body`` or ``data``), as received."""
        answers = []
        for row in data:
            body = row.get("body")
            answers.append(body if body is not None else row.get("data", b""))
        return answers
