"""Large training sets keep half their `N x N` root (``engine.pack_upper_triangular``): the
packed product equals the full one, and the packed posterior equals eager BoTorch."""

from __future__ import annotations

import pytest
import torch

from gp_serve.export import engine, trace_posterior
from gp_serve.export.gate import relative_error
from tests.export.conftest import assert_matches_eager, make_model, points


class _Root(engine.ExactPosterior):
    """Only what `ExactPosterior._root` reads."""

    def __init__(self, cache: torch.Tensor, num_train: int, tile: int) -> None:
        torch.nn.Module.__init__(self)
        self.covar_cache, self.num_train, self.tile = cache, num_train, tile


@pytest.mark.parametrize(
    ("n", "tile", "batch"), [(5, 2, (2,)), (7, 7, ()), (1030, 256, (2,)), (1024, 512, (3,))]
)
def test_the_packed_product_is_the_full_product(n: int, tile: int, batch: tuple) -> None:
    generator = torch.Generator().manual_seed(n)
    root = torch.randn(*batch, n, n, dtype=torch.float64, generator=generator).triu()
    packed = engine.pack_upper_triangular(root, tile)
    assert packed is not None
    blocks = -(-n // tile)
    assert packed.shape == (*batch, tile * blocks * (blocks + 1) // 2, tile)
    cross = torch.randn(*batch, 9, n, dtype=torch.float64, generator=generator)
    assert relative_error(_Root(packed, n, tile)._root(cross), cross @ root) <= 1e-14


def test_only_square_upper_triangular_roots_are_packed() -> None:
    square = torch.randn(6, 6, dtype=torch.float64)
    assert engine.pack_upper_triangular(square, 2) is None
    assert engine.pack_upper_triangular(square.tril(), 2) is None
    assert engine.pack_upper_triangular(square.triu()[:, :4], 2) is None


@pytest.mark.slow
@pytest.mark.parametrize(("m", "options"), [(2, {}), (1, {"yvar": True})])
def test_a_large_training_set_is_packed_and_matches_eager(m: int, options: dict) -> None:
    n = engine.PACK_MIN_POINTS + 52
    model = make_model(n, 2, m, seed=11, **options)
    module = trace_posterior(model, points(model, 3, 0))
    blocks = -(-n // engine.PACK_TILE)
    assert module.tile == engine.PACK_TILE
    rows = engine.PACK_TILE * blocks * (blocks + 1) // 2
    assert tuple(module.covar_cache.shape) == ((m,) if m > 1 else ()) + (rows, engine.PACK_TILE)
    for q in (1, 7, 300):
        assert_matches_eager(module, model, points(model, q, q))
