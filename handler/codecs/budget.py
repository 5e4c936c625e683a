"""What one request may cost (`Budget`), and the error every codec raises (`RequestError`).

No torch, no numpy: every rule is unit-tested without a server. See docs/serving.md ("Limits").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (base imports this module: the type only)
    from gp_serve.handler.codecs.base import CovarianceMode

# Client input quoted in an error message is cut to this many characters ...
MAX_QUOTE_CHARS = 40
# ... and a whole error message to this many (error bodies stay under 1 KB).
MAX_ERROR_CHARS = 900
# The upper bounds of the answer's size, per number: the longest float64 orjson writes
# (-2.2250738585072014e-308, 24 characters) and a separator; an exact zero ("-0.0") likewise.
NUMBER_BYTES = 25
ZERO_BYTES = 5
BINARY_BYTES = 8
# Bytes of an answer besides its numbers (keys, names, version), before its names' lengths.
ANSWER_OVERHEAD_BYTES = 2048


class RequestError(ValueError):
    """A client error: the request cannot be answered as sent.

    Attributes:
        status: The HTTP status to answer with (400, or 413 for too large).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def clip(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (``...`` and its length marking a cut)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 3]}... ({len(text)} characters)"


def error_text(message: str) -> str:
    """An error message cut to `MAX_ERROR_CHARS` (whatever a client's input made it)."""
    return clip(message, MAX_ERROR_CHARS)


@dataclass(frozen=True)
class Budget:
    """What one request may cost, and the model facts its cost depends on.

    Built by the handler from ``model-config.yaml``'s ``handler`` limits and the artifact's
    ``metadata.json``; every codec checks a request against it before any float is built
    (points) or any posterior work is done (covariance size, the answer's bytes).

    Attributes:
        input_names: The model's ``d`` input names, in order.
        output_names: Its ``m`` output names.
        max_points: The most points (`q`) of one request, in every mode and envelope.
        max_covariance_rows: The largest full covariance, as its side `q*m`; a mixture of
            ``S`` samples (SAAS) computes ``S`` of them, so it may have `q*m*sqrt(S)` rows.
        max_response_bytes: The largest answer (TorchServe's ``max_response_size``).
        max_samples: The most joint posterior samples of one request.
        correlated_outputs: Whether the covariance's off-diagonal output blocks can be
            nonzero (else they are exact zeros, which take fewer bytes).
        mixture_samples: ``S``, the samples of a mixture posterior (1 for the others).
    """

    input_names: list[str]
    output_names: list[str]
    max_points: int = 100_000
    max_covariance_rows: int = 4000
    max_response_bytes: int = 314_572_800
    max_samples: int = 10_000
    correlated_outputs: bool = True
    mixture_samples: int = 1

    @property
    def max_full_points(self) -> int:
        """The most points a full covariance may be asked for (`max_covariance_rows`)."""
        rows = self.max_covariance_rows / math.sqrt(max(1, self.mixture_samples))
        return max(0, min(self.max_points, int(rows // len(self.output_names))))

    def check_points(self, q: int, where: str = "a request", at_least: bool = False) -> None:
        """Refuse more than `max_points` points (413); ``at_least``: ``q`` is a lower bound."""
        if q > self.max_points:
            got = f"at least {q}" if at_least else str(q)
            raise RequestError(
                f"{where} is limited to {self.max_points} points, got {got}: split the points "
                "into several requests (client.score_csv does for CSV: --chunk-rows)",
                413,
            )

    def check_values(self, values: int) -> None:
        """Refuse a body of more JSON values than `max_points` points can hold, before it is
        decoded (413). ``values`` is an upper bound of its values (its commas + 1)."""
        d = len(self.input_names)
        if values > (self.max_points + 1) * (d + 1) + 64:
            raise RequestError(
                f"the body holds up to {values} JSON values, more than {self.max_points} "
                f"points of {d} inputs need: a request is limited to {self.max_points} "
                "points; split the points into several requests",
                413,
            )

    def check_full(self, q: int, hint: str) -> None:
        """Refuse a full covariance of more than `max_full_points` points (413)."""
        if q > self.max_full_points:
            m, s = len(self.output_names), self.mixture_samples
            rows = f"{q * m} x {q * m}" + (f", for each of {s} samples" if s > 1 else "")
            raise RequestError(
                f"a full covariance is limited to {self.max_full_points} points, got {q}; "
                f"{hint} for more points (a {rows} covariance; at most "
                f"{self.max_covariance_rows} rows for {m} outputs)",
                413,
            )

    def answer_bytes(
        self, q: int, covariance: bool, per_point_numbers: int = 2, extra_bytes: int = 0
    ) -> int:
        """An upper bound of a JSON answer's size in bytes.

        Args:
            q: The number of points.
            covariance: Whether it holds the `(q*m) x (q*m)` covariance.
            per_point_numbers: `q x m` tensors besides the covariance (mean, variance: 2;
                the KServe v1 envelope repeats them: 4).
            extra_bytes: Bytes per point on top (keys, brackets).
        """
        size = self.overhead_bytes(q, extra_bytes) + per_point_numbers * self.tensor_bytes(q)
        if covariance:
            size += self.covariance_bytes(q)
        return size

    def overhead_bytes(self, q: int, extra_bytes: int = 0) -> int:
        """An upper bound of an answer's bytes besides its tensors: keys, names, version and,
        per point, its extrapolation index, row brackets and ``extra_bytes``."""
        names = sum(len(name) + 16 for name in self.output_names)
        return ANSWER_OVERHEAD_BYTES + 4 * names + q * (extra_bytes + len(str(q)) + 8)

    def tensor_bytes(self, q: int, json_numbers: bool = True) -> int:
        """An upper bound of one `q x m` tensor's bytes (JSON text, or 8-byte binary)."""
        return q * len(self.output_names) * (NUMBER_BYTES if json_numbers else BINARY_BYTES)

    def covariance_bytes(self, q: int, json_numbers: bool = True) -> int:
        """An upper bound of the `(q*m) x (q*m)` covariance's size in bytes (JSON or binary).

        Without correlated outputs its off-diagonal output blocks are exact zeros.
        """
        if not json_numbers:
            return BINARY_BYTES * (q * len(self.output_names)) ** 2
        m = len(self.output_names)
        off_diagonal = NUMBER_BYTES if self.correlated_outputs else ZERO_BYTES
        return q * m * (q * NUMBER_BYTES + (m - 1) * q * off_diagonal + 2)

    def check_answer(self, size: int, q: int, covariance: CovarianceMode) -> None:
        """Refuse an answer that could exceed `max_response_bytes` (413)."""
        if size > self.max_response_bytes:
            raise RequestError(
                f"the answer to {q} points with covariance {covariance!r} could take "
                f"{size} bytes, over the limit of {self.max_response_bytes} bytes "
                '(max_response_size): ask for "diag" (no covariance), send fewer points '
                "or score a CSV in chunks (client.score_csv --chunk-rows)",
                413,
            )
