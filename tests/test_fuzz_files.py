"""Damaged files: random truncations, bit flips and edited headers of an HDF5 dataset and of a
model file. The only outcomes allowed are a correct read and an ``NNPotError``."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnpot.data import H5Dataset, write_h5
from nnpot.errors import NNPotError
from nnpot.potentials import load_model, save_model

FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def dataset_bytes(water, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "small.h5"
    write_h5([water[i] for i in range(3)], path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def model_bytes(small_model, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "m.nnp"
    save_model(small_model, path)
    return path.read_bytes()


def _reads_or_says_why(read, path) -> None:
    """``read(path)`` either works or raises an NNPotError: nothing else is allowed."""
    try:
        read(path)
    except NNPotError:
        pass


def _read_dataset(path) -> None:
    ds = H5Dataset(path)
    ds.check()
    for frame in ds:
        assert frame.positions.shape == (frame.n_atoms, 3)


def _damage(data: bytes, cut: float, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(data[: max(1, int(len(data) * cut))])
    for where, bit in flips:
        k = int(where * (len(out) - 1))
        out[k] ^= 1 << bit
    return bytes(out)


DAMAGE = dict(cut=st.sampled_from([1.0, 1.0, 0.99, 0.9, 0.5, 0.1]),
              flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), max_size=6))


@FUZZ
@given(**DAMAGE)
def test_damaged_dataset_reads_or_says_why(dataset_bytes, tmp_path, cut, flips):
    path = tmp_path / "d.h5"
    path.write_bytes(_damage(dataset_bytes, cut, flips))
    _reads_or_says_why(_read_dataset, path)


HEADER_EDITS = [("attr", "format_version", 99), ("attr", "format", "other"), ("attr", "length_unit", "nm"),
                ("drop", "frame_offsets", None), ("drop", "forces", None),
                ("resize", "energy", 10 ** 9), ("resize", "numbers", 10 ** 10),
                ("replace", "frame_offsets", np.array([0, 5, 3, 576])), ("replace", "pbc", np.ones((2, 3), bool)),
                ("replace", "cell", np.full((3, 3, 3), np.nan)), ("replace", "numbers", np.full(576, 300, np.int32))]


@pytest.mark.parametrize("kind, key, value", HEADER_EDITS, ids=[f"{k}-{n}" for k, n, _ in HEADER_EDITS])
def test_edited_dataset_header_is_refused_by_name(dataset_bytes, tmp_path, kind, key, value):
    path = tmp_path / "d.h5"
    path.write_bytes(dataset_bytes)
    with h5py.File(path, "a") as fh:
        if kind == "attr":
            fh.attrs[key] = value
        elif kind == "drop":
            del fh[key]
        elif kind == "resize":  # a declared size the stored chunks do not back
            old = fh[key]
            del fh[key]
            fh.create_dataset(key, shape=(value,) + old.shape[1:], dtype=old.dtype, chunks=True)
        else:
            del fh[key]
            fh[key] = value
    with pytest.raises(NNPotError):
        _read_dataset(path)


@FUZZ
@given(**DAMAGE)
def test_damaged_model_file_loads_or_says_why(model_bytes, tmp_path, cut, flips):
    path = tmp_path / "m.nnp"
    path.write_bytes(_damage(model_bytes, cut, flips))
    _reads_or_says_why(lambda p: load_model(p).cutoff > 0 or pytest.fail("a model without a cutoff"), path)
