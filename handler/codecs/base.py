"""What every wire-format codec has in common: the `Codec` the handler calls and the values it
passes (`Request`, `Posterior`, `ServedModel`, `Answer`). No torch: posteriors are numpy arrays.

See docs/serving.md ("Where things are").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeGuard, get_args

import numpy as np

from gp_serve.handler.codecs.budget import Budget
from gp_serve.handler.codecs.products import Products
from gp_serve.handler.gp_artifact import CovarianceMode

# The covariance modes a request may ask for (``gp_artifact.CovarianceMode``, the artifact
# contract's, which the codecs import from here), for checking decoded values.
COVARIANCE_MODES: tuple[CovarianceMode, ...] = get_args(CovarianceMode)


def is_covariance_mode(value: object) -> TypeGuard[CovarianceMode]:
    """Whether a decoded request value is one of `COVARIANCE_MODES`."""
    return isinstance(value, str) and value in COVARIANCE_MODES


class Request(Protocol):
    """A decoded, validated request, whatever its wire format.

    Attributes:
        points: `q x d` float64 inputs, columns in input-name order (nested lists of floats
            or a numpy array).
        covariance: One of `COVARIANCE_MODES`: whether the `(q*m) x (q*m)` covariance is
            computed (``"full"``) or not.
        observation_noise: Whether to add observation noise to the posterior.
        products: The samples, quantiles and acquisition values asked for
            (`codecs.products.Products`).
    """

    @property
    def points(self) -> Any: ...

    @property
    def covariance(self) -> CovarianceMode: ...

    @property
    def observation_noise(self) -> bool: ...

    @property
    def products(self) -> Products: ...


@dataclass(frozen=True)
class Posterior:
    """A request's posterior, as the handler computed it for the codec to encode.

    Attributes:
        mean: `q x m` posterior means (C-contiguous float64).
        variance: `q x m` posterior variances.
        std: `q x m` posterior standard deviations, the variances' square roots as torch
            computes them (numpy's correctly rounded ``sqrt`` differs in the last bit for
            about 1% of float64 values).
        covariance: The `(q*m) x (q*m)` output-major joint covariance, or None unless the
            request's covariance is ``"full"``.
        extrapolation: Indices of the points outside the training bounds.
        products: The products the request asked for (`codecs.products`), by answer key:
            ``samples`` (`n x q x m`), ``quantiles`` (`levels x q x m`), ``acquisition``
            (`q`), ``mean_gradient`` and ``variance_gradient`` (`q x m x d`).
    """

    mean: np.ndarray
    variance: np.ndarray
    std: np.ndarray
    covariance: np.ndarray | None
    extrapolation: list[int]
    products: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ServedModel:
    """The facts of the served model an answer names.

    Attributes:
        name: The model's name (TorchServe's); ``version`` its version.
        output_names: Its ``m`` output names.
        covariance_layout: The artifact's covariance layout (``metadata.json``).
        input_names: Its ``d`` input names (CSV's gradient columns name them).
    """

    name: str
    version: str
    output_names: list[str]
    covariance_layout: str
    input_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """One request's answer.

    Attributes:
        body: The response body.
        content_type: Its ``Content-Type``.
        headers: Response headers besides the content type.
    """

    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class Codec(ABC):
    """One wire format: decodes its requests, encodes their answers and its errors.

    Attributes:
        name: The format's short name (``"json"``, ``"csv"``, ``"v2"``).
        chunked: Whether its posterior is predicted `chunk_rows` points at a time (without
            covariance), a chunk's non-finite points refused before the next is predicted.
    """

    name: ClassVar[str]
    chunked: ClassVar[bool] = False

    @abstractmethod
    def decode(self, body: Any, headers: dict, budget: Budget) -> Request:
        """Validate a request body, its cost included, before any posterior work.

        Args:
            body: The raw body (bytes, or a value TorchServe already decoded).
            headers: The request's headers.
            budget: The model's inputs, outputs and limits.

        Returns:
            The validated request.

        Raises:
            RequestError: If anything is invalid (400) or too large (413).
        """

    @abstractmethod
    def encode(self, request: Any, posterior: Posterior, model: ServedModel) -> Answer:
        """The answer to ``request`` (as `decode` returned it), holding ``posterior``."""

    @abstractmethod
    def error(self, message: str, status: int) -> tuple[bytes, str]:
        """The body and content type of an error answer of HTTP ``status``."""
