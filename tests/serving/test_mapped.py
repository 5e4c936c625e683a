"""A loaded posterior's large buffers are mapped from the file itself (``handler.mapped``): the
same numbers, the file's pages rather than the worker's memory. No server, no BoTorch."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from gp_serve.handler import mapped

MIB = 2**20


class Cached(nn.Module):
    """A stand-in posterior: a large and a small buffer, in a submodule and at the top."""

    def __init__(self, big: Tensor, small: Tensor) -> None:
        super().__init__()
        self.inner = Inner(big)
        self.register_buffer("small", small)

    def forward(self, X: Tensor) -> Tensor:
        return self.inner(X) + self.small.sum()


class Inner(nn.Module):
    def __init__(self, big: Tensor) -> None:
        super().__init__()
        self.register_buffer("cache", big)

    def forward(self, X: Tensor) -> Tensor:
        return X @ self.cache


def _mappings(path: Path) -> list[tuple[int, int]]:
    """The address ranges of this process's mappings of ``path``."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path.resolve())):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, nn.Module]:
    generator = torch.Generator().manual_seed(0)
    big = torch.randn(2, 512, 512, dtype=torch.float64, generator=generator)  # 4 MiB
    module = torch.jit.script(Cached(big, torch.ones(3, dtype=torch.float64)))
    path = tmp_path / "posterior.pt"
    torch.jit.save(module, str(path))
    return path, module


def test_large_buffers_are_mapped_from_the_file_and_answer_the_same(saved) -> None:
    path, original = saved
    module = torch.jit.load(str(path))
    X = torch.randn(2, 7, 512, dtype=torch.float64)
    assert mapped.map_buffers(module, path, min_bytes=MIB) == ["inner.cache"]
    pointer = module.inner.cache.data_ptr()
    assert any(start <= pointer < end for start, end in _mappings(path))
    assert torch.equal(module(X), original(X))
    assert torch.equal(module.inner.cache, original.inner.cache)


def test_small_buffers_stay_in_memory(saved) -> None:
    path, _ = saved
    module = torch.jit.load(str(path))
    assert mapped.map_buffers(module, path, min_bytes=8 * MIB) == []
    assert not any(start <= module.inner.cache.data_ptr() < end for start, end in _mappings(path))


def test_a_buffer_with_no_equal_record_keeps_its_copy(saved, tmp_path: Path) -> None:
    """A module whose buffer changed after loading is not silently swapped for the file's."""
    path, _ = saved
    module = torch.jit.load(str(path))
    module.inner.cache[0, 0, 0] += 1.0
    changed = module.inner.cache.clone()
    assert mapped.map_buffers(module, path, min_bytes=MIB) == []
    assert torch.equal(module.inner.cache, changed)


def test_records_are_where_the_zip_says(saved) -> None:
    path, original = saved
    (record,) = mapped.stored_records(path, MIB)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo(record.name).file_size == record.size == 2 * 512 * 512 * 8
    with open(path, "rb") as stream:
        stream.seek(record.offset)
        head = stream.read(64)
    assert head == original.inner.cache.flatten()[:8].numpy().tobytes()
    assert record.offset % 64 == 0


def test_a_loaded_posterior_maps_its_caches(exported, monkeypatch) -> None:
    """`gp_formats.load` (the handler's and the export gate's loader) maps what is large."""
    from gp_serve.handler import gp_artifact, gp_formats

    monkeypatch.setattr(mapped, "MAP_MIN_BYTES", 1024)
    module = gp_formats.load(exported.directory, gp_artifact.DEFAULT_FORMAT, 2)
    path = Path(exported.directory) / gp_artifact.POSTERIOR_FILE
    ranges = _mappings(path)
    assert any(start <= module.covar_cache.data_ptr() < end for start, end in ranges)
    plain = torch.jit.load(str(path))
    X = torch.rand(9, 2, dtype=torch.float64)
    for method in ("forward", "mean_var"):
        for got, want in zip(getattr(module, method)(X), getattr(plain, method)(X), strict=True):
            assert torch.equal(got, want)
    assert os.path.getsize(path) > module.covar_cache.nbytes
