"""Converting, merging and splitting datasets (what ``nnpot data`` runs)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from nnpot.atomic import atomic_path
from nnpot.data.frame import Frame
from nnpot.data.h5format import H5Dataset, append_h5, write_h5
from nnpot.data.readers import read_source, reader_for
from nnpot.errors import DatasetError

__all__ = ["convert", "split", "read_frames"]


def read_frames(sources: Sequence[str | os.PathLike[str]], energy_unit: str | None = None) -> Iterator[Frame]:
    """All frames of all ``sources``, in order."""
    return itertools.chain.from_iterable(read_source(s, energy_unit=energy_unit) for s in sources)


def convert(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    append: bool = False,
    energy_unit: str | None = None,
    progress: bool = False,
) -> int:
    """Convert (and merge) ``sources`` into the nnpot HDF5 file ``out``; return frames written.

    With ``append`` the frames are added to an existing file. The output is written under a
    temporary name and renamed at the end, so a bad source leaves no (or the old) file.
    """
    if not sources:
        raise DatasetError("no source given")
    provenance = [{"source": str(Path(s).resolve()), "reader": _reader_name(s)} for s in sources]
    frames = read_frames(sources, energy_unit=energy_unit)
    # every reader has validated its frames, naming its own file and frame
    if append and Path(out).exists():
        return append_h5(frames, out, sources=provenance, progress=progress, validate=False)
    return write_h5(frames, out, sources=provenance, progress=progress, validate=False)


def _reader_name(source: str | os.PathLike[str]) -> str:
    return reader_for(source).name


def split(
    path: str | os.PathLike[str],
    fractions: Sequence[float],
    outputs: Sequence[str | os.PathLike[str]],
    seed: int = 0,
) -> list[int]:
    """Split the frames of ``path`` at random into ``outputs`` in the given ``fractions``.

    The fractions are normalised; each output gets ``round``-ed counts that add up to the
    total. Returns the frame count of each output.
    """
    if len(fractions) != len(outputs):
        raise DatasetError(f"{len(fractions)} fractions but {len(outputs)} output names")
    fr = np.asarray(fractions, dtype=float)
    if np.any(fr <= 0):
        raise DatasetError(f"fractions must be positive, got {list(fractions)}")
    if len({Path(o).resolve() for o in outputs}) != len(outputs):
        raise DatasetError(f"the output names must be distinct, got {[str(o) for o in outputs]}")
    ds = H5Dataset(path).check()
    order = split_indices(len(ds), fr, seed)
    for indices, out in zip(order, outputs):
        if len(indices) == 0:
            raise DatasetError(f"{out}: the split leaves no frame for this part ({len(ds)} frames in {path})")
    with contextlib.ExitStack() as stack:  # every part under a temporary name; all renamed only at the end
        for indices, out in zip(order, outputs):
            tmp = stack.enter_context(atomic_path(out))
            write_h5((ds[int(i)] for i in np.sort(indices)), tmp, sources=ds.sources + [{"split_of": str(path),
                                                                                        "seed": seed}], validate=False)
    return [len(indices) for indices in order]


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Random disjoint index sets covering ``range(n)`` in proportion to ``fractions``."""
    fr = np.asarray(fractions, dtype=float) / np.sum(fractions)
    bounds = np.round(np.cumsum(np.concatenate([[0.0], fr])) * n).astype(int)
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
