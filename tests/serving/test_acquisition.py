"""Unit tests of ``handler/acquisition.py``: served acquisition values equal eager BoTorch's, and
every rule of the request field ``"acquisition"`` has its message. No server.

Tolerances (`error`): values to <= 1e-8 relative, per point for EI and PI (positive, over
hundreds of orders of magnitude), against the batch's largest for the signed ones (UCB, the
posterior mean and standard deviation: served moments are accurate relative to their scale).
Log-values to <= 1e-8 absolute: an absolute error of log(v) is the relative error of v itself,
whereas a relative 1e-8 of a log-value of -1000 would let v be off by 1e-5. Below -100 they are
compared to 1e-10 relative (1e-8 absolute at -100): a log-value L ~ -x^2/2 of a standardized
distance x carries about 2|L| times the relative error of x (~1e-12 from the moments, which are
eager's to ~1e-13), so its absolute error grows with |L| (4e-12 |L| measured), while the value
exp(L) is then below 4e-44, and below -745 beyond float64 altogether.

BoTorch is given ``best_f``, ``beta`` and constraint bounds under float64 as the default dtype:
it keeps Python floats with ``torch.as_tensor``, in float32 otherwise (0.3 -> 0.30000001192...),
and the served values use the float64 numbers of the request.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import botorch
import pytest
import torch
from botorch.acquisition import analytic
from botorch.acquisition.objective import ScalarizedPosteriorTransform
from botorch.models import KroneckerMultiTaskGP
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultitaskMultivariateNormal

from gp_serve.export import trace_posterior
from gp_serve.export.families import eager_moments, family_of
from gp_serve.handler import acquisition
from gp_serve.handler.acquisition import (
    EI,
    LOG_CEI,
    LOG_EI,
    LOG_PI,
    NAMES,
    PI,
    POSTERIOR_MEAN,
    POSTERIOR_STD,
    UCB,
    Acquisition,
    evaluate,
    needs_output_covariance,
    parse,
    point_blocks,
)
from gp_serve.handler.codecs.budget import RequestError
from tests.export.conftest import make_model
from tests.export.test_kronecker import make_kronecker
from tests.export.test_model_list import make_list
from tests.export.test_multitask import make_multitask

# (BoTorch's advice to use LogExpectedImprovement instead, at every ExpectedImprovement built)
pytestmark = pytest.mark.filterwarnings("ignore:.*has known numerical issues")
BOTORCH_012 = tuple(int(part) for part in botorch.__version__.split(".")[:2]) < (0, 13)
TOL = 1e-8
# Log-values are compared absolutely above -LOG_RELATIVE_FROM, relatively (TOL / 100) below.
LOG_RELATIVE_FROM = 100.0
POINTS = (1, 5, 40)
IMPROVEMENT = (EI, LOG_EI, PI, LOG_PI)


@dataclass(frozen=True)
class Served:
    """A model, its compiled posterior and its output names."""

    model: Model
    module: Any
    names: list[str]
    correlated: bool
    d: int


def _served(model: Model, d: int) -> Served:
    module = trace_posterior(model, _points(d, 3, 0))
    names = [f"y{t}" for t in range(model.num_outputs)]
    return Served(model, module, names, family_of(model).correlated_outputs, d)


def _points(d: int, q: int, seed: int) -> torch.Tensor:
    """`q x d` points in and up to 0.5 beyond the training box [-1, 3]^d."""
    generator = torch.Generator().manual_seed(5000 + seed)
    return 5 * torch.rand(q, d, generator=generator, dtype=torch.float64) - 1.5


@pytest.fixture(scope="module")
def families() -> dict[str, Served]:
    """One model of each family (unfitted, randomised hyperparameters; the global seed fixed
    too: the multi-task models draw their initial task covariance factors from it)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _families()


def _families() -> dict[str, Served]:
    return {
        "single": _served(make_model(14, 2, 1, seed=1), 2),
        "single m=2": _served(make_model(16, 2, 2, seed=2), 2),
        "list": _served(make_list([10, 15], 2), 2),
        "multitask": _served(make_multitask(24, 2, 3, seed=3), 2),
        # (BoTorch's closed-form posterior, which LogConstrainedExpectedImprovement uses, is
        # exact for equal task noises only, and 0.12's is off with an input transform: see
        # tests/export/test_kronecker.py; weights: `ExactKronecker`)
        "kronecker": _served(
            make_kronecker(20, 2, 3, seed=4, normalize=not BOTORCH_012, task_noises=[3e-3] * 3),
            2,
        ),
    }


# Which outputs each family's objective is, per case: the request keys besides name and
# maximize (weights: the transform; output: one output of several).
OBJECTIVES = {
    "single": [{}],
    "single m=2": [{"output": "y1"}, {"weights": {"y0": 0.5, "y1": -1.0}, "offset": 0.25}],
    "list": [{"weights": {"y0": -0.7, "y1": 2.0}}],
    "multitask": [{"weights": {"y0": 1.0, "y1": -0.5, "y2": 0.25}, "offset": -1.0}],
    "kronecker": [{"weights": {"y0": 0.3, "y2": 1.2}}],
}
CASES = [(family, k) for family, objectives in OBJECTIVES.items() for k in range(len(objectives))]


@contextmanager
def _float64_default() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _transform(request: dict, names: list[str]) -> ScalarizedPosteriorTransform | None:
    if "weights" in request:
        weights = [request["weights"].get(name, 0.0) for name in names]
    elif "output" in request and len(names) > 1:
        weights = [float(name == request["output"]) for name in names]
    else:
        return None
    return ScalarizedPosteriorTransform(
        torch.tensor(weights, dtype=torch.float64), offset=request.get("offset", 0.0)
    )


class ExactKronecker(Model):
    """A ``KroneckerMultiTaskGP`` whose ``posterior`` is its exact one, per point, transformed.

    The model's own ``posterior`` refuses posterior transforms (NotImplementedError), and its
    distribution is diagonal: mean and variance only, no cross-output covariance, which
    ``ScalarizedPosteriorTransform`` needs. So BoTorch's acquisition class sees, through this,
    the exact joint posterior at each point (the gate's reference, `eager_moments`, which
    ``tests/export/test_kronecker.py`` ties to the distribution BoTorch's own ``posterior``
    samples from) as a ``GPyTorchPosterior``, scalarized by BoTorch's transform.
    """

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    @property
    def num_outputs(self) -> int:
        return self.model.num_outputs

    def posterior(self, X, output_indices=None, observation_noise=False, posterior_transform=None):
        points = X.squeeze(-2)  # (q x 1 x d: one point per batch)
        moments = eager_moments(self.model, points, bool(observation_noise))
        q = points.size(0)
        blocks = torch.stack([moments["covariance"][i::q, i::q] for i in range(q)])
        distribution = MultitaskMultivariateNormal(moments["mean"].unsqueeze(-2), blocks)
        posterior = GPyTorchPosterior(distribution)
        return posterior if posterior_transform is None else posterior_transform(posterior)


def eager(served: Served, request: dict, X: torch.Tensor) -> torch.Tensor:
    """BoTorch's acquisition function of ``request`` on the eager model at ``X.unsqueeze(-2)``."""
    names = served.names
    kwargs: dict[str, Any] = {"maximize": request.get("maximize", True)}
    for key in ("beta", "best_f"):
        if key in request:
            kwargs[key] = request[key]
    if request["name"] == LOG_CEI:
        kwargs["objective_index"] = names.index(request["objective"])
        kwargs["constraints"] = {
            names.index(name): tuple(bounds) for name, bounds in request["constraints"].items()
        }
    else:
        kwargs["posterior_transform"] = _transform(request, names)
    model = served.model
    if isinstance(model, KroneckerMultiTaskGP) and kwargs.get("posterior_transform"):
        model = ExactKronecker(model)
    with _float64_default():
        function = getattr(analytic, request["name"])(model, **kwargs)
    with torch.no_grad():
        return function(X.unsqueeze(-2))


def served_values(served: Served, request: dict, X: torch.Tensor) -> torch.Tensor:
    """What the handler computes: `evaluate` on the compiled module's moments."""
    spec = parse(request, served.names)
    mean, variance = served.module.mean_var(X)
    blocks = None
    if needs_output_covariance(spec, served.correlated):
        blocks = point_blocks(served.module(X)[1], X.size(0), len(served.names))
    values = evaluate(spec, mean, variance, blocks)
    assert values.shape == (X.size(0),) and values.dtype == torch.float64
    return values


def error(name: str, actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The error compared with `TOL` (see the module docstring)."""
    assert actual.shape == expected.shape
    if not torch.equal(actual.isfinite(), expected.isfinite()):
        return math.inf
    finite = expected.isfinite()
    assert torch.equal(actual[~finite], expected[~finite])
    actual, expected = actual[finite], expected[finite]
    if actual.numel() == 0:
        return 0.0
    difference = (actual - expected).abs()
    if name in acquisition.LOG_NAMES:  # (absolute down to -100, relative 1e-10 below)
        return (difference / (expected.abs() / LOG_RELATIVE_FROM).clamp_min(1)).max().item()
    if name in (EI, PI):  # (positive, over hundreds of orders of magnitude: per point)
        return (difference / expected.abs().clamp_min(torch.finfo(torch.float64).tiny)).max().item()
    return difference.max().item() / max(expected.abs().max().item(), 1e-300)


def _objective_moments(served: Served, request: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective's mean and standard deviation at the test points (BoTorch's)."""
    X = _points(served.d, POINTS[-1], POINTS[-1])
    mean = eager(served, {**request, "name": POSTERIOR_MEAN}, X)
    std = eager(served, {**request, "name": POSTERIOR_STD}, X)
    return mean, std


def _best_fs(served: Served, objective: dict, maximize: bool) -> list[float]:
    """A typical ``best_f`` and ones leaving improvements that are tiny (log EI about -100
    and -800 at the best point, EI underflowing) and vanishing (u < -1e6, the asymptote)."""
    mean, std = _objective_moments(served, objective)
    sign = 1.0 if maximize else -1.0
    top = (sign * mean).max().item() * sign
    spread = std.max().item()
    return [
        mean.median().item(),
        top + sign * 14 * spread,
        top + sign * 40 * spread,
        top + sign * 3e6 * spread,
    ]


def _requests(served: Served, objective: dict, maximize: bool) -> Iterator[dict]:
    base = {**objective, "maximize": maximize}
    for beta in (0.0, 0.2, 4.0):
        yield {"name": UCB, "beta": beta, **base}
    yield {"name": POSTERIOR_MEAN, **base}
    yield {"name": POSTERIOR_STD, **base}
    for best_f in _best_fs(served, objective, maximize):
        for name in IMPROVEMENT:
            yield {"name": name, "best_f": best_f, **base}


@pytest.mark.parametrize("maximize", [True, False], ids=["max", "min"])
@pytest.mark.parametrize("family, case", CASES)
def test_matches_botorch(families, family: str, case: int, maximize: bool) -> None:
    served = families[family]
    objective = OBJECTIVES[family][case]
    seen = set()
    for request in _requests(served, objective, maximize):
        seen.add(request["name"])
        for q in POINTS:
            X = _points(served.d, q, q)
            expected = eager(served, request, X)
            err = error(request["name"], served_values(served, request, X), expected)
            assert err <= TOL, f"{request} q={q}: error {err:.3g}"
    assert seen == set(NAMES) - {LOG_CEI}


def test_tiny_improvements_reach_the_asymptotic_branches(families) -> None:
    """The ``best_f`` values of `test_matches_botorch` take log EI to -100 and below, EI to
    exact zeros and u below -1e6 (`_log_ei_helper`'s last branch)."""
    served = families["single"]
    X = _points(served.d, POINTS[-1], POINTS[-1])
    typical, tiny, tinier, vanishing = _best_fs(served, {}, True)
    for best_f, low, high in ((tiny, -200, -100), (tinier, -2000, -800)):
        log_ei = served_values(served, {"name": LOG_EI, "best_f": best_f}, X)
        assert low < log_ei.max().item() < high
    assert served_values(served, {"name": EI, "best_f": tinier}, X).max().item() == 0.0
    spec = parse({"name": LOG_EI, "best_f": vanishing}, served.names)
    mean, variance = served.module.mean_var(X)
    u = (mean[:, 0] - vanishing) / variance[:, 0].clamp_min(1e-12).sqrt()
    assert u.max().item() < -1e6
    assert evaluate(spec, mean, variance, None).isfinite().all()


# LogConstrainedExpectedImprovement: one objective, bounds on other outputs at quantiles of
# their means (lower only, upper only, both), some far out (log feasibility of -100s).
CONSTRAINED = {
    "single m=2": ("y0", [{"y1": ("lower", 0.3)}, {"y1": ("upper", 0.5)}, {"y1": (0.2, 0.9)}]),
    "list": ("y1", [{"y0": ("upper", 0.01)}, {"y0": ("lower", 0.99)}, {"y0": (0.4, 0.45)}]),
    "multitask": (
        "y2",
        [{"y0": ("lower", 0.5), "y1": (0.1, 0.7)}, {"y1": ("upper", 0.2), "y0": (0.0, 1.0)}],
    ),
    "kronecker": (
        "y1",
        [{"y0": ("upper", 0.6), "y2": ("lower", 0.4)}, {"y2": (0.3, 0.6), "y0": (0.05, 0.06)}],
    ),
}
CONSTRAINED_CASES = [(family, k) for family, (_, c) in CONSTRAINED.items() for k in range(len(c))]


def _constraints(served: Served, spec: dict) -> dict[str, list[float | None]]:
    """``{output: [lower, upper]}`` at quantiles of the output's means at the test points.

    An interval is at least a quarter of the output's median standard deviation wide: far from
    the data many means are the prior's, and quantiles of them can be 1e-9 apart, where the
    log-probability ``log(Phi(b) - Phi(a))`` itself is ill-conditioned (rounding errors of
    1e-16 in ``log Phi`` become relative errors of ``1e-16 / (Phi(b) - Phi(a))``).
    """
    X = _points(served.d, POINTS[-1], POINTS[-1])
    mean, variance = served.module.mean_var(X)
    bounds: dict[str, list[float | None]] = {}
    for name, (first, second) in spec.items():
        column = mean[:, served.names.index(name)]
        if first == "lower":
            bounds[name] = [column.quantile(second).item(), None]
        elif first == "upper":
            bounds[name] = [None, column.quantile(second).item()]
        else:
            width = 0.25 * variance[:, served.names.index(name)].sqrt().median().item()
            lower = column.quantile(first).item()
            bounds[name] = [lower, max(column.quantile(second).item(), lower + width)]
    return bounds


@pytest.mark.parametrize("maximize", [True, False], ids=["max", "min"])
@pytest.mark.parametrize("family, case", CONSTRAINED_CASES)
def test_log_constrained_ei_matches_botorch(
    families, family: str, case: int, maximize: bool
) -> None:
    served = families[family]
    objective, cases = CONSTRAINED[family]
    constraints = _constraints(served, cases[case])
    for best_f in _best_fs(served, {"output": objective}, maximize):
        request = {
            "name": LOG_CEI,
            "objective": objective,
            "constraints": constraints,
            "best_f": best_f,
            "maximize": maximize,
        }
        for q in POINTS:
            X = _points(served.d, q, q)
            expected = eager(served, request, X)
            err = error(LOG_CEI, served_values(served, request, X), expected)
            assert err <= TOL, f"{request} q={q}: error {err:.3g}"


def test_log_constrained_ei_bounds(families) -> None:
    """A lower bound, an upper bound and both, on one output: feasibility as BoTorch's, and the
    three kinds of bound each contribute their own log-probability."""
    served = families["single m=2"]
    X = _points(served.d, 40, 40)
    mean, variance = served.module.mean_var(X)
    sigma = variance[:, 1].clamp_min(1e-12).sqrt()
    base = {"name": LOG_CEI, "objective": "y0", "best_f": mean[:, 0].median().item()}
    lower, upper = mean[:, 1].quantile(0.3).item(), mean[:, 1].quantile(0.7).item()
    normal = torch.distributions.Normal(mean[:, 1], sigma)
    unconstrained = evaluate(
        parse({**base, "constraints": {"y1": [None, 1e300]}}, served.names), mean, variance, None
    )
    for bounds, probability in (
        ([lower, None], 1 - normal.cdf(torch.tensor(lower))),
        ([None, upper], normal.cdf(torch.tensor(upper))),
        ([lower, upper], normal.cdf(torch.tensor(upper)) - normal.cdf(torch.tensor(lower))),
    ):
        request = {**base, "constraints": {"y1": bounds}}
        values = served_values(served, request, X)
        assert error(LOG_CEI, values, eager(served, request, X)) <= TOL
        feasible = (values - unconstrained).exp()
        assert torch.allclose(feasible, probability, rtol=1e-6, atol=1e-12)


def test_point_blocks() -> None:
    q, m = 3, 2
    covariance = torch.arange(36, dtype=torch.float64).reshape(6, 6)
    blocks = point_blocks(covariance, q, m)
    assert blocks.shape == (q, m, m)
    for i in range(q):
        for s in range(m):
            for t in range(m):
                assert blocks[i, s, t] == covariance[s * q + i, t * q + i]
    with pytest.raises(
        ValueError, match=r"^expected a 6 x 6 covariance \(q=3, m=2\), got \(4, 4\)$"
    ):
        point_blocks(torch.zeros(4, 4), q, m)


@pytest.mark.parametrize("family", ["multitask", "kronecker"])
def test_correlated_outputs_need_their_covariance(families, family: str) -> None:
    """Weights over correlated outputs: the variance is ``w^T B w`` (BoTorch's), which
    ``w^2 . variance`` is not."""
    served = families[family]
    X = _points(served.d, 40, 40)
    spec = parse({"name": POSTERIOR_STD, **OBJECTIVES[family][0]}, served.names)
    assert needs_output_covariance(spec, served.correlated)
    mean, variance = served.module.mean_var(X)
    blocks = point_blocks(served.module(X)[1], 40, len(served.names))
    with_blocks = evaluate(spec, mean, variance, blocks)
    without = evaluate(spec, mean, variance, None)
    assert ((with_blocks - without).abs() / with_blocks).max() > 1e-3  # (>> TOL)


def test_needs_output_covariance() -> None:
    names = ["y0", "y1"]
    weights = parse({"name": POSTERIOR_MEAN, "weights": {"y0": 1.0, "y1": 2.0}}, names)
    one = parse({"name": POSTERIOR_MEAN, "weights": {"y1": 2.0}}, names)
    output = parse({"name": POSTERIOR_MEAN, "output": "y1"}, names)
    constrained = parse(
        {"name": LOG_CEI, "objective": "y0", "constraints": {"y1": [0, None]}, "best_f": 0},
        names,
    )
    assert needs_output_covariance(weights, True)
    for spec in (weights, one, output, constrained):
        assert not needs_output_covariance(spec, False)
    for spec in (one, output, constrained):
        assert not needs_output_covariance(spec, True)


def test_parse_builds_the_spec() -> None:
    names = ["y0", "y1"]
    assert parse({"name": EI, "best_f": 0.3, "maximize": True, "output": "y1"}, names) == (
        Acquisition(EI, best_f=0.3, output=1)
    )
    assert parse(
        {"name": UCB, "beta": 0.2, "weights": {"y0": 0.5, "y1": -1}, "offset": 1}, names
    ) == Acquisition(UCB, beta=0.2, weights=(0.5, -1.0), offset=1.0)
    assert parse(
        {"name": LOG_CEI, "objective": "y0", "constraints": {"y1": [None, 0.0]}, "best_f": 1.0},
        names,
    ) == Acquisition(LOG_CEI, best_f=1.0, objective_index=0, constraints={1: (None, 0.0)})
    assert parse({"name": POSTERIOR_STD, "maximize": False}, ["f"]) == (
        Acquisition(POSTERIOR_STD, maximize=False, output=0)
    )
    assert parse({"name": PI, "best_f": 2, "weights": {"f": 3}}, ["f"]).weights == (3.0,)


NAME_LIST = (
    "['UpperConfidenceBound', 'ExpectedImprovement', 'LogExpectedImprovement', "
    "'ProbabilityOfImprovement', 'LogProbabilityOfImprovement', 'PosteriorMean', "
    "'PosteriorStandardDeviation', 'LogConstrainedExpectedImprovement']"
)
EI_KEYS = "['name', 'maximize', 'best_f', 'output', 'weights', 'offset']"
# (request, output names, the exact message)
BAD = [
    (
        [1, 2],
        ["y"],
        'acquisition: expected an object like {"name": "ExpectedImprovement", "best_f": 0.0}, '
        "got a list of 2 items",
    ),
    ({"best_f": 0}, ["y"], f"acquisition.name: required: expected one of {NAME_LIST}"),
    (
        {"name": "EI"},
        ["y"],
        f'acquisition.name: expected one of {NAME_LIST}, got a string ("EI")',
    ),
    (
        {"name": EI, "best_f": 0, "beta": 1, "xi": 2},
        ["y"],
        f'acquisition: unknown keys "beta", "xi" for ExpectedImprovement: expected keys among '
        f"{EI_KEYS}",
    ),
    (
        {"name": EI, "best_f": 0, "x" * 100: 1},
        ["y"],
        'acquisition: unknown key "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (100 characters)" '
        f"for ExpectedImprovement: expected keys among {EI_KEYS}",
    ),
    (
        {"name": POSTERIOR_MEAN, "best_f": 0},
        ["y"],
        'acquisition: unknown key "best_f" for PosteriorMean: expected keys among '
        "['name', 'maximize', 'output', 'weights', 'offset']",
    ),
    (
        {
            "name": LOG_CEI,
            "objective": "a",
            "constraints": {"b": [0, None]},
            "best_f": 0,
            "weights": {"a": 1},
        },
        ["a", "b"],
        'acquisition: unknown key "weights" for LogConstrainedExpectedImprovement: expected '
        "keys among ['name', 'maximize', 'best_f', 'objective', 'constraints']",
    ),
    (
        {"name": UCB, "beta": 1, "maximize": 1},
        ["y"],
        "acquisition.maximize: expected true or false, got a number (1)",
    ),
    (
        {"name": UCB},
        ["y"],
        "acquisition.beta: required by UpperConfidenceBound: expected a finite non-negative number",
    ),
    (
        {"name": UCB, "beta": -1},
        ["y"],
        "acquisition.beta: expected a finite non-negative number, got a number (-1)",
    ),
    (
        {"name": UCB, "beta": True},
        ["y"],
        "acquisition.beta: expected a finite non-negative number, got a boolean (true)",
    ),
    (
        {"name": UCB, "beta": 10**400},
        ["y"],
        "acquisition.beta: expected a finite non-negative number, got a number "
        f"(1{'0' * 36}... (401 characters))",
    ),
    (
        {"name": EI},
        ["y"],
        "acquisition.best_f: required by ExpectedImprovement: expected a finite number",
    ),
    (
        {"name": LOG_PI, "best_f": None},
        ["y"],
        "acquisition.best_f: expected a finite number, got null",
    ),
    (
        {"name": EI, "best_f": float("inf")},
        ["y"],
        "acquisition.best_f: expected a finite number, got a number (inf)",
    ),
    (
        {"name": EI, "best_f": "0.3"},
        ["y"],
        'acquisition.best_f: expected a finite number, got a string ("0.3")',
    ),
    (
        {"name": EI, "best_f": 0},
        ["y0", "y1"],
        "acquisition: the model has 2 outputs ['y0', 'y1']: expected \"output\" or \"weights\"",
    ),
    (
        {"name": EI, "best_f": 0, "output": "y0", "weights": {"y0": 1}},
        ["y0", "y1"],
        'acquisition: expected "output" or "weights", got both',
    ),
    (
        {"name": EI, "best_f": 0, "output": "y2"},
        ["y0", "y1"],
        "acquisition.output: expected an output name, one of ['y0', 'y1'], got a string (\"y2\")",
    ),
    (
        {"name": EI, "best_f": 0, "output": 1},
        ["y0", "y1"],
        "acquisition.output: expected an output name, one of ['y0', 'y1'], got a number (1)",
    ),
    (
        {"name": EI, "best_f": 0, "output": "y0", "offset": 1},
        ["y0", "y1"],
        'acquisition.offset: expected only with "weights", got it without "weights"',
    ),
    (
        {"name": EI, "best_f": 0, "weights": [1, 2]},
        ["y0", "y1"],
        "acquisition.weights: expected an object of output names to numbers, got a list of 2 items",
    ),
    (
        {"name": EI, "best_f": 0, "weights": {}},
        ["y0", "y1"],
        "acquisition.weights: expected weights of outputs among ['y0', 'y1'], got an empty object",
    ),
    (
        {"name": EI, "best_f": 0, "weights": {"y0": 1, "z" * 50: 2}},
        ["y0", "y1"],
        "acquisition.weights: expected output names among ['y0', 'y1'], got "
        '"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz... (50 characters)"',
    ),
    (
        {"name": EI, "best_f": 0, "weights": {"y0": 1, "y1": float("nan")}},
        ["y0", "y1"],
        "acquisition.weights.y1: expected a finite number, got a number (nan)",
    ),
    (
        {"name": EI, "best_f": 0, "weights": {"y0": 0, "y1": 0.0}},
        ["y0", "y1"],
        "acquisition.weights: expected at least one non-zero weight, got only zeros",
    ),
    (
        {"name": EI, "best_f": 0, "weights": {"y0": 1}, "offset": False},
        ["y0", "y1"],
        "acquisition.offset: expected a finite number, got a boolean (false)",
    ),
    (
        {"name": EI, "best_f": 0},
        [f"output_{k}" for k in range(10)],
        "acquisition: the model has 10 outputs ['output_0', 'output_1', 'output_2', "
        "'output_3', 'output_4', 'output_5', 'output_6', 'output_7', ... (10 in all)]: expected "
        '"output" or "weights"',
    ),
    (
        {"name": LOG_CEI, "objective": "y", "constraints": {}, "best_f": 0},
        ["y"],
        "acquisition: LogConstrainedExpectedImprovement needs a model of 2 or more outputs (an "
        "objective and constraints), got 1 output ['y']",
    ),
    (
        {"name": LOG_CEI, "constraints": {"b": [0, None]}, "best_f": 0},
        ["a", "b"],
        "acquisition.objective: required by LogConstrainedExpectedImprovement: expected an "
        "output name, one of ['a', 'b']",
    ),
    (
        {"name": LOG_CEI, "objective": "c", "constraints": {"b": [0, None]}, "best_f": 0},
        ["a", "b"],
        "acquisition.objective: expected an output name, one of ['a', 'b'], got a string (\"c\")",
    ),
    (
        {"name": LOG_CEI, "objective": "a", "best_f": 0},
        ["a", "b"],
        "acquisition.constraints: required by LogConstrainedExpectedImprovement: expected an "
        'object of output names to [lower, upper], e.g. {"y1": [null, 0.0]}',
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": [[0, 1]], "best_f": 0},
        ["a", "b"],
        "acquisition.constraints: expected an object of output names to [lower, upper], got a "
        "list of 1 items",
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {}, "best_f": 0},
        ["a", "b"],
        "acquisition.constraints: expected at least one constrained output, got none",
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {"c": [0, 1]}, "best_f": 0},
        ["a", "b"],
        "acquisition.constraints: expected output names among ['a', 'b'], got \"c\"",
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {"a": [0, 1]}, "best_f": 0},
        ["a", "b"],
        "acquisition.constraints.a: expected outputs other than the objective, got the "
        'objective "a"',
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {"b": 0}, "best_f": 0},
        ["a", "b"],
        "acquisition.constraints.b: expected [lower, upper] (numbers or null), got a number (0)",
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {"b": [0, 1, 2]}, "best_f": 0},
        ["a", "b"],
        "acquisition.constraints.b: expected [lower, upper] (numbers or null), got a list of 3 "
        "items",
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {"b": [None, None]}, "best_f": 0},
        ["a", "b"],
        "acquisition.constraints.b: expected at least one bound, got [null, null]",
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {"b": [None, "1"]}, "best_f": 0},
        ["a", "b"],
        'acquisition.constraints.b[1]: expected a finite number or null, got a string ("1")',
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {"b": [1, 0.5]}, "best_f": 0},
        ["a", "b"],
        "acquisition.constraints.b: expected lower < upper, got [1.0, 0.5]",
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {"b": [1, 1]}, "best_f": 0},
        ["a", "b"],
        "acquisition.constraints.b: expected lower < upper, got [1.0, 1.0]",
    ),
    (
        {"name": LOG_CEI, "objective": "a", "constraints": {"b": [0, None]}},
        ["a", "b"],
        "acquisition.best_f: required by LogConstrainedExpectedImprovement: expected a finite "
        "number",
    ),
]


@pytest.mark.parametrize("request_, names, message", BAD, ids=[m[:60] for _, _, m in BAD])
def test_parse_refuses(request_: Any, names: list[str], message: str) -> None:
    with pytest.raises(RequestError) as raised:
        parse(request_, names)
    assert str(raised.value) == message
    assert raised.value.status == 400
    assert len(message) <= 300


def test_botorch_refuses_what_parse_refuses(families) -> None:
    """The constraint rules are BoTorch's own (upper <= lower, the objective constrained)."""
    model = families["single m=2"].model
    for constraints in ({1: (1.0, 1.0)}, {0: (None, 1.0)}, {}):
        with pytest.raises(ValueError):
            analytic.LogConstrainedExpectedImprovement(model, 0.0, 0, constraints)
