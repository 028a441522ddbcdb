"""nnpot.data: the HDF5 dataset format, readers of other formats, conversion and statistics.

The pieces: :class:`Frame` is one labelled structure; the ``readers`` turn DeePMD-kit npy
systems, ASE-readable files, ASE databases and MD17 npz into validated frames; ``h5format``
stores frames in one versioned, chunked, compressed HDF5 file read lazily by
:class:`H5Dataset`; ``convert`` merges and splits; ``stats`` summarises a dataset.
"""

from nnpot.data.convert import convert, read_frames, split, split_indices
from nnpot.data.deepmd_writer import write_deepmd
from nnpot.data.extxyz import write_extxyz
from nnpot.data.frame import Frame, validate_frame
from nnpot.data.h5format import FORMAT_NAME, FORMAT_VERSION, H5Dataset, append_h5, write_h5
from nnpot.data.readers import read_ase, read_ase_db, read_deepmd, read_npz, read_source

__all__ = [
    "Frame",
    "validate_frame",
    "H5Dataset",
    "write_h5",
    "append_h5",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "read_source",
    "read_deepmd",
    "read_ase",
    "read_ase_db",
    "read_npz",
    "convert",
    "split",
    "split_indices",
    "read_frames",
    "write_extxyz",
    "write_deepmd",
]
