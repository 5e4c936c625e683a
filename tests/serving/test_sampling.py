"""Joint posterior samples and quantiles (`handler.sampling`) against eager BoTorch.

Every family but SAAS (refused: its mixture is not Gaussian) is traced once; at spread
points its served draws from `sampling.standard_normal` base samples equal BoTorch's
``rsample_from_base_samples`` on the same values, and its quantiles ``posterior.quantile``.
The Kronecker family's BoTorch draws are Matheron's rule on more base samples than `q x m`:
there the tests check that they have the served distribution, exactly.
"""

from __future__ import annotations

import functools
import warnings

import botorch
import linear_operator.settings as linop_settings
import pytest
import torch
from botorch.models import ModelListGP
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from linear_operator.operators import DenseLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from linear_operator.utils.errors import NotPSDError
from packaging.version import Version

from gp_serve.export.families import family_named, family_of, trace_posterior
from gp_serve.export.gate import relative_error
from gp_serve.export.kronecker import eager_moments as kronecker_moments
from gp_serve.handler import gp_artifact
from gp_serve.handler.sampling import (
    CHOLESKY_JITTER,
    CHOLESKY_MAX_TRIES,
    NotPositiveDefinite,
    cholesky,
    draw,
    quantiles,
    standard_normal,
)
from tests.export.conftest import make_model
from tests.export.test_kronecker import make_kronecker
from tests.export.test_multitask import make_multitask

BOTORCH_012 = Version(botorch.__version__) < Version("0.13")
DRAW_TOL = 1e-8
QUANTILE_TOL = 1e-12
N = 5
QS = (1, 4, 13)
PROBABILITIES = (0.05, 0.5, 0.95, 1e-6)
D = 2


def _list_model() -> ModelListGP:
    first = make_model(14, D, 1, seed=4, covar_module=MaternKernel(nu=0.5).double())
    second = make_model(
        18, D, 1, seed=5, covar_module=ScaleKernel(RBFKernel(ard_num_dims=D)).double()
    )
    return ModelListGP(first, second).eval()


# (BoTorch 0.12's Kronecker posterior is wrong with an input transform: tests/export)
BUILDERS = {
    "single": lambda: make_model(20, D, 1, seed=1),
    "single, two outputs": lambda: make_model(20, D, 2, seed=2),
    "single, known noise": lambda: make_model(20, D, 2, yvar=True, seed=3),
    "list": _list_model,
    "multitask": lambda: make_multitask(24, D, 3, seed=6),
    "kronecker": lambda: make_kronecker(
        20, D, 2, seed=7, normalize=not BOTORCH_012, task_noises=[2e-3, 2e-3]
    ),
    "kronecker, unequal noises": lambda: make_kronecker(
        20, D, 3, seed=8, normalize=not BOTORCH_012, task_noises=[1e-3, 4e-2, 1e-2]
    ),
    "kronecker, no outcome transform": lambda: make_kronecker(
        20, D, 2, seed=9, normalize=not BOTORCH_012, standardize=False, task_noises=[3e-3] * 2
    ),
}
EXACT = ["single", "single, two outputs", "single, known noise", "list", "multitask"]
KRONECKER = [name for name in BUILDERS if name.startswith("kronecker")]


@functools.cache
def built(name: str):
    """The model and its traced posterior (once per case)."""
    model = BUILDERS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = trace_posterior(model, spread(3, 0))
    return model, module


def spread(q: int, seed: int) -> torch.Tensor:
    """`q x D` scrambled Sobol points in the training box ``[-1, 3]^D`` (close points make
    the noiseless joint covariance ill-conditioned, its Cholesky factor then sensitive)."""
    sobol = torch.quasirandom.SobolEngine(D, scramble=True, seed=seed)
    return 4 * sobol.draw(q, dtype=torch.float64) - 1


def served(module, X: torch.Tensor, noisy: bool):
    """The served mean, covariance and variance."""
    mean, covariance = (module.forward_noisy if noisy else module.forward)(X)
    _, variance = (module.mean_var_noisy if noisy else module.mean_var)(X)
    return mean, covariance, variance


def botorch_draws(posterior, base: torch.Tensor) -> torch.Tensor:
    """BoTorch's draws from the served `n x q x m` base samples, in its own layout."""
    shape = torch.Size([base.size(0)])
    with torch.no_grad():
        return posterior.rsample_from_base_samples(
            shape, base.reshape(shape + posterior.base_sample_shape)
        )


def test_sample_orders() -> None:
    """Only the Kronecker family's eager sample vector is interleaved (point-major)."""
    orders = {name: family_named(name).sample_order for name in ("single", "list", "multitask")}
    assert orders == dict.fromkeys(orders, "output-major")
    assert family_named("kronecker").sample_order == "point-major"
    assert family_named("saas").sample_order in gp_artifact.SAMPLE_ORDERS


@pytest.mark.parametrize("noisy", [False, True], ids=["noiseless", "noisy"])
@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("name", EXACT)
def test_draws_equal_botorch(name: str, q: int, noisy: bool) -> None:
    model, module = built(name)
    X = spread(q, q)
    mean, covariance, _ = served(module, X, noisy)
    m = mean.size(-1)
    base = standard_normal(N, 100 + q, q, m)
    samples = draw(mean, covariance, base, family_of(model).sample_order)
    with torch.no_grad():
        posterior = model.posterior(X, observation_noise=noisy)
    assert type(posterior) is GPyTorchPosterior
    expected = botorch_draws(posterior, base)
    assert samples.shape == expected.shape == (N, q, m)
    error = relative_error(samples, expected)
    assert error <= DRAW_TOL, f"{name} q={q}: relative error {error:.3g}"


@pytest.mark.parametrize("noisy", [False, True], ids=["noiseless", "noisy"])
@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("name", KRONECKER)
def test_kronecker_draws_have_botorchs_distribution(name: str, q: int, noisy: bool) -> None:
    """BoTorch's draws are an affine map ``mu + M w`` of its `(N + q) m + N m (+ q m)` base
    samples (Matheron's rule); ``mu`` is the served mean and ``M M^T`` the served covariance,
    point-major, for equal and unequal task noises alike. Served draws (the point-major
    Cholesky factor on `q x m` base samples) have that distribution; they are not BoTorch's."""
    model, module = built(name)
    X = spread(q, q)
    mean, covariance, _ = served(module, X, noisy)
    m = mean.size(-1)
    with torch.no_grad():
        posterior = model.posterior(X, observation_noise=noisy)
    shape = posterior.base_sample_shape
    k = shape.numel()
    assert k == (20 + q) * m + 20 * m + (q * m if noisy else 0)
    with torch.no_grad():
        mu = posterior.rsample_from_base_samples(
            torch.Size([1]), torch.zeros(1, *shape, dtype=torch.float64)
        )[0]
        columns = posterior.rsample_from_base_samples(
            torch.Size([k]), torch.eye(k, dtype=torch.float64).reshape(k, *shape)
        )
    M = (columns - mu).reshape(k, q * m).t()  # rows i*m + t
    point_major = covariance.view(m, q, m, q).permute(1, 0, 3, 2).reshape(q * m, q * m)
    assert relative_error(mean, mu) <= DRAW_TOL
    assert relative_error(point_major, M @ M.t()) <= DRAW_TOL
    base = standard_normal(N, 100 + q, q, m)
    samples = draw(mean, covariance, base, family_of(model).sample_order)
    root = torch.linalg.cholesky(point_major)
    expected = mean + (root @ base.reshape(N, q * m).t()).t().reshape(N, q, m)
    assert relative_error(samples, expected) <= 1e-14


@pytest.mark.parametrize("noisy", [False, True], ids=["noiseless", "noisy"])
@pytest.mark.parametrize("q", QS)
def test_point_major_draws_equal_an_interleaved_mvn(q: int, noisy: bool) -> None:
    """The point-major order is an interleaved ``MultitaskMultivariateNormal``'s."""
    _, module = built("multitask")
    mean, covariance, _ = served(module, spread(q, q), noisy)
    m = mean.size(-1)
    interleaved = covariance.view(m, q, m, q).permute(1, 0, 3, 2).reshape(q * m, q * m)
    mvn = MultitaskMultivariateNormal(mean, DenseLinearOperator(interleaved), interleaved=True)
    base = standard_normal(N, 7, q, m)
    expected = botorch_draws(GPyTorchPosterior(mvn), base)
    # (to rounding: BLAS's small products may round differently with the operands' alignment)
    assert relative_error(draw(mean, covariance, base, "point-major"), expected) <= 1e-15


def test_independent_outputs_are_jittered_one_block_at_a_time() -> None:
    """As BoTorch's ``BlockDiagLinearOperator`` of independent outputs: jitter only in the
    output block that needs it (the first: its smallest eigenvalue is -5e-9, as rounding may
    leave a kernel matrix of duplicate points)."""
    singular = _with_eigenvalues([1.0, 0.5, 0.1, 0.05, -5e-9], seed=1)
    q = singular.size(0)
    regular = _with_eigenvalues([3.0, 2.0, 1.0, 0.5, 0.2])
    mvns = [
        MultivariateNormal(torch.zeros(q, dtype=torch.float64), DenseLinearOperator(K))
        for K in (singular, regular)
    ]
    posterior = GPyTorchPosterior(MultitaskMultivariateNormal.from_independent_mvns(mvns))
    base = standard_normal(N, 3, q, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = botorch_draws(posterior, base)
    covariance = torch.block_diag(singular, regular)
    samples = draw(torch.zeros(q, 2, dtype=torch.float64), covariance, base, "output-major")
    assert relative_error(samples, expected) <= 1e-15
    unjittered = (torch.linalg.cholesky(regular) @ base[..., 1].t()).t()
    assert relative_error(samples[..., 1], unjittered) <= 1e-15
    whole = (cholesky(covariance) @ base.transpose(1, 2).reshape(N, 2 * q).t()).t()
    assert relative_error(samples[..., 1], whole[:, q:]) > 1e-10  # (jittered with the first)


@pytest.mark.parametrize("noisy", [False, True], ids=["noiseless", "noisy"])
@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("name", [*EXACT, "kronecker, no outcome transform"])
def test_quantiles_equal_botorch(name: str, q: int, noisy: bool) -> None:
    model, module = built(name)
    X = spread(q, q)
    mean, _, variance = served(module, X, noisy)
    with torch.no_grad():
        posterior = model.posterior(X, observation_noise=noisy)
    for dtype in (torch.float64, torch.float32):
        p = torch.tensor(PROBABILITIES, dtype=dtype)
        expected = posterior.quantile(p)
        assert expected.shape == (len(PROBABILITIES), q, mean.size(-1))
        # bit for bit from BoTorch's own moments, to QUANTILE_TOL from the served ones
        assert torch.equal(quantiles(posterior.mean, posterior.variance, p), expected)
        error = relative_error(quantiles(mean, variance, p), expected)
        assert error <= QUANTILE_TOL, f"{name} q={q} {dtype}: relative error {error:.3g}"


@pytest.mark.parametrize("noisy", [False, True], ids=["noiseless", "noisy"])
@pytest.mark.parametrize("name", ["kronecker", "kronecker, unequal noises"])
def test_kronecker_quantiles_are_the_exact_posteriors(name: str, noisy: bool) -> None:
    """With an outcome transform BoTorch's posterior is a ``TransformedPosterior``, without
    ``quantile``; the served quantiles are those of the exact posterior (the gate's eager),
    which BoTorch's closed-form variance is not for unequal task noises."""
    model, module = built(name)
    X = spread(13, 13)
    mean, _, variance = served(module, X, noisy)
    exact = kronecker_moments(model, X, noisy)
    p = torch.tensor(PROBABILITIES, dtype=torch.float64)
    normal = torch.distributions.Normal(exact["mean"], exact["variance"].sqrt())
    expected = torch.stack([normal.icdf(value) for value in p])
    assert relative_error(quantiles(mean, variance, p), expected) <= QUANTILE_TOL
    with torch.no_grad():
        posterior = model.posterior(X, observation_noise=noisy)
    with pytest.raises(NotImplementedError):
        posterior.quantile(p)


def test_standard_normal_is_reproducible() -> None:
    state = torch.random.get_rng_state()
    first = standard_normal(5, 7, 4, 2)
    assert first.shape == (5, 4, 2) and first.dtype == torch.float64
    assert torch.equal(first, standard_normal(5, 7, 4, 2))
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(first, torch.randn(5, 4, 2, generator=generator, dtype=torch.float64))
    assert not torch.equal(first, standard_normal(5, 8, 4, 2))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    _, module = built("multitask")
    mean, covariance = module.forward(spread(4, 4))
    draws = [draw(mean, covariance, standard_normal(5, 7, 4, 3), "output-major") for _ in "ab"]
    assert torch.equal(*draws)
    other = draw(mean, covariance, standard_normal(5, 8, 4, 3), "output-major")
    assert not torch.equal(draws[0], other)


def test_jitter_settings_are_botorchs() -> None:
    """``import botorch`` raises linear_operator's tries from 3 to 6 (0.12 and 0.18)."""
    assert linop_settings.cholesky_max_tries.value() == CHOLESKY_MAX_TRIES == 6
    for dtype, jitter in CHOLESKY_JITTER.items():
        assert linop_settings.cholesky_jitter.value(dtype) == jitter


def _with_eigenvalues(values: list[float], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=generator).double())
    matrix = Q @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ Q.t()
    return (matrix + matrix.t()) / 2


def _rank_two() -> torch.Tensor:
    """`4 x 4` of rank 2 whose Cholesky pivots are exact: the third is exactly 0."""
    B = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    return B @ B.t()


@pytest.mark.parametrize(
    "matrix",
    [
        _rank_two(),
        _with_eigenvalues([1.0, 0.5, 0.1, -5e-8]),  # the second try (1e-7)
        _with_eigenvalues([2.0, 1.0, -5e-4]),  # the last try (1e-3)
        torch.stack([_rank_two(), torch.eye(4, dtype=torch.float64)]),
    ],
    ids=["singular", "second try", "last try", "batch, one singular"],
)
def test_cholesky_jitters_as_psd_safe_cholesky(matrix: torch.Tensor) -> None:
    assert torch.linalg.cholesky_ex(matrix).info.any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = psd_safe_cholesky(matrix)
    factor = cholesky(matrix)
    assert torch.equal(factor, expected)
    assert torch.equal(factor, factor.tril())


def test_cholesky_without_jitter_is_torchs() -> None:
    matrix = _with_eigenvalues([3.0, 2.0, 1.0])
    assert torch.equal(cholesky(matrix), torch.linalg.cholesky(matrix))


def test_not_positive_definite() -> None:
    matrix = _with_eigenvalues([2.0, 1.0, -5e-3])  # needs more than 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NotPSDError):
            psd_safe_cholesky(matrix)
    with pytest.raises(NotPositiveDefinite) as raised:
        cholesky(matrix)
    assert isinstance(raised.value, ValueError)
    assert str(raised.value) == (
        "the joint covariance of these points is not positive definite even with jitter "
        "1e-03 added: expected points farther apart or observation_noise true"
    )
    with pytest.raises(NotPositiveDefinite):
        draw(
            torch.zeros(3, 1, dtype=torch.float64),
            matrix,
            standard_normal(2, 0, 3, 1),
            "point-major",
        )


def test_cholesky_refuses_nan() -> None:
    matrix = torch.full((2, 2), float("nan"), dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"^expected a covariance without NaN entries, got 4 of 4$"
    ):
        cholesky(matrix)


def test_draw_checks_shapes_and_order() -> None:
    mean = torch.zeros(3, 2, dtype=torch.float64)
    covariance = torch.eye(6, dtype=torch.float64)
    base = standard_normal(4, 0, 3, 2)
    with pytest.raises(
        ValueError, match=r"^expected n x 3 x 2 base samples, got shape \(4, 2, 3\)$"
    ):
        draw(mean, covariance, base.transpose(1, 2), "output-major")
    with pytest.raises(ValueError, match=r"^expected a 6 x 6 covariance, got shape \(5, 5\)$"):
        draw(mean, covariance[:5, :5], base, "output-major")
    with pytest.raises(
        ValueError, match=r"^expected order 'output-major' or 'point-major', got 'x'$"
    ):
        draw(mean, covariance, base, "x")  # type: ignore[arg-type]
    assert torch.equal(draw(mean, covariance, base, "output-major"), base)
    assert torch.equal(draw(mean, covariance, base, "point-major"), base)


@pytest.mark.parametrize("bad", [[0.0], [0.5, 1.0], [1.5], [float("nan")], [-0.1, 0.2]])
def test_quantiles_refuse_probabilities_outside_0_1(bad: list[float]) -> None:
    mean = variance = torch.ones(2, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^expected probabilities in \(0, 1\), got "):
        quantiles(mean, variance, torch.tensor(bad, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^expected a non-empty vector of probabilities"):
        quantiles(mean, variance, torch.tensor([], dtype=torch.float64))
