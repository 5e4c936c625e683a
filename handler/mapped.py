"""One copy of a large posterior per machine: a loaded TorchScript posterior's large buffers
(the `m x N x N` training-data caches) replaced by read-only views of their records in the
file itself, memory-mapped, so every worker serving the file shares the same pages.

``posterior.pt`` stays one self-contained file (``torch.jit.load`` alone still serves it);
this only changes where a loaded copy keeps its numbers. See docs/scale.md.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

# Buffers from this size on are mapped; smaller ones stay in the worker's memory.
MAP_MIN_BYTES = 16 * 2**20
# torch.jit.save aligns every record to this many bytes (PyTorchStreamWriter).
_RECORD_ALIGNMENT = 64
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip local file header (30 bytes)
_DTYPES = {torch.float64: np.float64, torch.float32: np.float32}


@dataclass(frozen=True)
class Record:
    """A stored (uncompressed) record of a zip file: where its bytes start, how many."""

    name: str
    offset: int
    size: int


def stored_records(path: str | os.PathLike, min_bytes: int = MAP_MIN_BYTES) -> list[Record]:
    """The records of ``path`` (a TorchScript zip archive) of at least ``min_bytes`` that are
    stored uncompressed and aligned, with the offset of their first byte in the file."""
    records = []
    with open(path, "rb") as stream, zipfile.ZipFile(stream) as archive:
        for info in archive.infolist():
            if info.file_size < min_bytes or info.compress_type != zipfile.ZIP_STORED:
                continue
            stream.seek(info.header_offset)
            header = _LOCAL_HEADER.unpack(stream.read(_LOCAL_HEADER.size))
            if header[0] != b"PK\x03\x04":
                continue
            offset = info.header_offset + _LOCAL_HEADER.size + header[9] + header[10]
            if offset % _RECORD_ALIGNMENT == 0:
                records.append(Record(info.filename, offset, info.file_size))
    return records


def _mappable(buffer: Tensor, min_bytes: int) -> bool:
    """Whether ``buffer`` is a whole, contiguous CPU storage of a mappable dtype."""
    return (
        buffer.dtype in _DTYPES
        and buffer.device.type == "cpu"
        and buffer.nbytes >= min_bytes
        and buffer.is_contiguous()
        and buffer.storage_offset() == 0
        and buffer.untyped_storage().nbytes() == buffer.nbytes
    )


def _view(path: str | os.PathLike, record: Record, like: Tensor) -> Tensor:
    """A copy-on-write mapping of ``record`` with ``like``'s dtype and shape (pages shared
    with every other process mapping the file until one writes, which the posterior never
    does)."""
    dtype = _DTYPES[like.dtype]
    array = np.memmap(path, dtype=dtype, mode="c", offset=record.offset, shape=tuple(like.shape))
    return torch.from_numpy(array)


def _submodule(module: nn.Module, name: str) -> nn.Module:
    """``module.get_submodule(name)``, which ScriptModules do not have."""
    for part in name.split(".") if name else []:
        module = getattr(module, part)
    return module


def map_buffers(
    module: nn.Module, path: str | os.PathLike, min_bytes: int | None = None
) -> list[str]:
    """Replace ``module``'s buffers of at least ``min_bytes`` by mappings of their records in
    ``path``, the file it was loaded from.

    A buffer is matched with a record of its size whose bytes are equal to it (compared in
    full: a buffer with no equal record keeps its loaded copy). Each replaced copy is freed.

    Args:
        module: The loaded module (``torch.jit.load(path)``).
        path: Its file.
        min_bytes: The smallest buffer mapped (default `MAP_MIN_BYTES`).

    Returns:
        The names of the buffers now mapped (as ``module.named_buffers`` names them).
    """
    min_bytes = MAP_MIN_BYTES if min_bytes is None else min_bytes
    records = stored_records(path, min_bytes)
    mapped = []
    for name in [name for name, _ in module.named_buffers()]:
        owner_name, _, leaf = name.rpartition(".")
        owner = _submodule(module, owner_name)
        buffer = getattr(owner, leaf)
        if not _mappable(buffer, min_bytes):
            continue
        for record in records:
            if record.size == buffer.nbytes:
                view = _view(path, record, buffer)
                if torch.equal(view, buffer):
                    setattr(owner, leaf, view)  # (the loaded copy is freed with ``buffer``)
                    records.remove(record)
                    mapped.append(name)
                    break
        del buffer
    return mapped
