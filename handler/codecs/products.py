"""What a request may ask for besides the moments: joint samples, quantiles and acquisition
values (`Products`), read from the request's JSON values and counted in its budget.

No torch: the handler computes them (`handler.sampling`, `handler.acquisition`). See
docs/serving.md, step 11.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gp_serve.handler.codecs.bounded_json import describe, finite_number, quote_names
from gp_serve.handler.codecs.budget import BINARY_BYTES, NUMBER_BYTES, Budget, RequestError

# The request keys of the products of the distribution (not served for a mixture) ...
DISTRIBUTION_KEYS = ("samples", "base_samples", "quantiles", "acquisition")
# ... and every request key (JSON's envelope, v2's parameters) that asks for a product:
# gradients are the moments'.
KEYS = (*DISTRIBUTION_KEYS, "gradients")
# The answer's gradient tensors, `q x m x d` each.
GRADIENTS = ("mean_gradient", "variance_gradient")
# The most quantile levels of one request.
MAX_QUANTILES = 64
# Seeds are torch generator seeds: non-negative 64-bit integers.
MAX_SEED = 2**63 - 1
SAMPLE_KEYS = ("n", "seed")


@dataclass(frozen=True)
class Products:
    """A request's products, validated (the acquisition's own fields are validated by
    `handler.acquisition.parse`, which knows each function's parameters).

    Attributes:
        samples: ``n``, the joint samples asked for with a seed (0: none).
        seed: Their seed (`handler.sampling.standard_normal`).
        base_samples: The client's `n x q x m` standard-normal base samples (nested lists of
            floats), or None.
        quantiles: The quantile levels, each in (0, 1), in the order asked.
        acquisition: The acquisition function's spec (a JSON object), or None.
        gradients: ``d``, the inputs the mean's and variance's gradients are taken with
            respect to (0: no gradients).
    """

    samples: int = 0
    seed: int = 0
    base_samples: list | None = None
    quantiles: tuple[float, ...] = ()
    acquisition: dict | None = None
    gradients: int = 0

    @property
    def draws(self) -> int:
        """The number of joint samples answered (``n``, or the base samples' count)."""
        return len(self.base_samples) if self.base_samples is not None else self.samples

    @property
    def joint(self) -> bool:
        """Whether the products need the joint covariance (samples do)."""
        return self.draws > 0

    def shapes(self, q: int, m: int) -> dict[str, tuple[int, ...]]:
        """The answer's product tensors, by key, and their shapes at ``q`` points and ``m``
        outputs (``samples`` for base samples too), in the answer's order."""
        shapes = {
            "samples": (self.draws, q, m),
            "quantiles": (len(self.quantiles), q, m),
            "acquisition": (q,),
            GRADIENTS[0]: (q, m, self.gradients),
            GRADIENTS[1]: (q, m, self.gradients),
        }
        on = {
            "samples": self.joint,
            "quantiles": bool(self.quantiles),
            "acquisition": self.acquisition is not None,
            GRADIENTS[0]: self.gradients > 0,
            GRADIENTS[1]: self.gradients > 0,
        }
        return {name: shape for name, shape in shapes.items() if on[name]}

    @property
    def asked(self) -> tuple[str, ...]:
        """The answer's product keys, in order (``samples`` for base samples too)."""
        return tuple(self.shapes(1, 1))

    def numbers(self, q: int, m: int) -> int:
        """The numbers the products add to an answer of ``q`` points and ``m`` outputs."""
        return sum(math.prod(shape) for shape in self.shapes(q, m).values())

    def output_numbers(self, name: str, q: int, m: int) -> int:
        """The numbers of one product's tensor (a key of `shapes`)."""
        return math.prod(self.shapes(q, m)[name])

    def answer_bytes(self, q: int, m: int, json_numbers: bool = True) -> int:
        """An upper bound of the bytes the products add to an answer: their numbers (JSON
        text or binary) and, in JSON, every nested list's brackets and separator, the
        quantile levels echoed and the keys."""
        shapes = self.shapes(q, m)
        if not shapes:
            return 0
        if not json_numbers:
            return BINARY_BYTES * self.numbers(q, m)
        lists = sum(  # (a `a x b x c` tensor is 1 + a + a*b lists)
            sum(math.prod(shape[:k]) for k in range(len(shape))) for shape in shapes.values()
        )
        return NUMBER_BYTES * (self.numbers(q, m) + len(self.quantiles)) + 3 * lists + 64


NONE = Products()


def _integer(value: Any, where: str, lowest: int, highest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise RequestError(
            f"{where}: expected an integer from {lowest} to {highest}, got {describe(value)}"
        )
    return value


def _samples(value: Any, where: str, budget: Budget) -> tuple[int, int]:
    if not isinstance(value, dict):
        raise RequestError(
            f'{where}: expected an object {{"n": <samples>, "seed": <integer>}}, got '
            f"{describe(value)}"
        )
    unknown = sorted(set(value) - set(SAMPLE_KEYS))
    if unknown or "n" not in value:
        raise RequestError(
            f"{where}: expected the keys {list(SAMPLE_KEYS)} (n required), got "
            f"{quote_names(sorted(value))}"
        )
    n = _integer(value["n"], f"{where}.n", 1, budget.max_samples)
    return n, _integer(value.get("seed", 0), f"{where}.seed", 0, MAX_SEED)


def _base_samples(value: Any, where: str, q: int, budget: Budget) -> list:
    m = len(budget.output_names)
    shape = f"n x {q} x {m} (samples x points x outputs)"
    if not isinstance(value, list) or not value:
        raise RequestError(f"{where}: expected a non-empty list, {shape}, got {describe(value)}")
    _integer(len(value), f"{where}: the number of samples", 1, budget.max_samples)
    rows = []
    for s, sample in enumerate(value):
        if not isinstance(sample, list) or len(sample) != q:
            raise RequestError(
                f"{where}[{s}]: expected {q} points of {m} numbers ({shape}), got "
                f"{describe(sample)}"
            )
        for i, point in enumerate(sample):
            if not isinstance(point, list) or len(point) != m:
                raise RequestError(
                    f"{where}[{s}][{i}]: expected {m} numbers, one per output "
                    f"{budget.output_names}, got {describe(point)}"
                )
        rows.append(
            [
                [finite_number(v, f"{where}[{s}][{i}][{t}]") for t, v in enumerate(point)]
                for i, point in enumerate(sample)
            ]
        )
    return rows


def _quantiles(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_QUANTILES:
        raise RequestError(
            f"{where}: expected a list of 1 to {MAX_QUANTILES} levels in (0, 1), got "
            f"{describe(value)}"
        )
    levels = tuple(finite_number(p, f"{where}[{k}]") for k, p in enumerate(value))
    for k, p in enumerate(levels):
        if not 0.0 < p < 1.0:
            raise RequestError(f"{where}[{k}]: expected a level in (0, 1), got {p!r}")
    return levels


def parse(value: dict, q: int, budget: Budget, prefix: str = "") -> Products:
    """The products a request object asks for (its `KEYS`), validated and budgeted.

    Args:
        value: The request object (JSON's envelope, or v2's ``parameters``).
        q: The request's number of points.
        budget: The model's outputs and limits.
        prefix: Where the keys are, for messages (``"parameters."`` for v2).

    Returns:
        The products (`NONE` if none is asked for).

    Raises:
        RequestError: If a product is invalid, not served for this model (a mixture's) or
            its samples need a larger covariance than the budget allows (413).
    """
    asked = [key for key in DISTRIBUTION_KEYS if key in value]
    gradients = value.get("gradients", False)
    if not isinstance(gradients, bool):
        raise RequestError(f"{prefix}gradients: expected true or false, got {describe(gradients)}")
    if not asked and not gradients:
        return NONE
    if asked and budget.mixture_samples > 1:
        raise RequestError(
            f"{prefix}{asked[0]}: the served posterior is a mixture over "
            f"{budget.mixture_samples} MCMC samples (SAAS), served by its moments only: "
            "samples, quantiles and acquisition values are served for Gaussian posteriors"
        )
    if "samples" in value and "base_samples" in value:
        raise RequestError(
            f"{prefix}samples and {prefix}base_samples: expected one of them (base samples "
            "say how many samples they make)"
        )
    n, seed, base = 0, 0, None
    if "samples" in value:
        n, seed = _samples(value["samples"], f"{prefix}samples", budget)
    if "base_samples" in value:
        base = _base_samples(value["base_samples"], f"{prefix}base_samples", q, budget)
    quantiles = _quantiles(value["quantiles"], f"{prefix}quantiles") if "quantiles" in value else ()
    acquisition = value.get("acquisition")
    if "acquisition" in value and not isinstance(acquisition, dict):
        raise RequestError(
            f'{prefix}acquisition: expected an object like {{"name": "ExpectedImprovement", '
            f'"best_f": 0.5}}, got {describe(acquisition)}'
        )
    d = len(budget.input_names) if gradients else 0
    products = Products(n, seed, base, quantiles, acquisition, d)
    if products.joint and q > budget.max_full_points:
        raise RequestError(
            f"{prefix}{'samples' if n else 'base_samples'}: samples are drawn from the joint "
            f"covariance, limited to {budget.max_full_points} points, got {q}: ask for "
            "samples at fewer points per request",
            413,
        )
    return products
