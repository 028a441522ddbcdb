"""A full disk in the middle of a write: every command ends with one line naming the file,
exit 2, no signal, and every file that existed before is unchanged (no partial output, no
temporary file left). ENOSPC is injected at the write calls, so the tests run anywhere."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import WATER

SMALL = ["--set", "model.descriptor.neuron=[8,16]", "--set", "model.descriptor.axis_neuron=4",
         "--set", "model.fitting.neuron=[16,16]", "--set", "stat_frames=4", "--set", "valid_frames=2",
         "--set", "valid_fraction=0.25", "--set", "num_steps=4", "--set", "valid_freq=2", "--set", "save_freq=2"]

#: installed in the child before the command runs: the named call fails with ENOSPC
INJECT = {
    "h5": "import nnpot.data.h5format as m\n"
          "def boom(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')\n"
          "m._Writer.flush = boom\n",
    "npy": "import numpy\n"
           "def boom(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')\n"
           "numpy.save = boom\n",
    "torch": "import torch, nnpot.potentials.modelfile as m\n"
             "def boom(*a, **k): raise RuntimeError('[enforce fail at inline_container.cc:778] . PytorchStreamWriter "
             "failed writing file data/0: file write failed')\n"
             "torch.save = boom\nm.disk_full = lambda folder: True\n",
    "torchscript": "import torch, nnpot.interop.metatomic as m\n"
                   "def boom(*a, **k): raise RuntimeError('PytorchStreamWriter failed writing file data.pkl: file "
                   "write failed')\n"
                   "torch.jit.save = boom\nm.disk_full = lambda folder: True\n",
}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def _run(cwd: Path, inject: str, argv: list[str]) -> subprocess.CompletedProcess:
    code = f"import errno, sys\n{INJECT[inject]}from nnpot.cli import main\nsys.exit(main({argv!r}))\n"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def ws(tmp_path):
    from nnpot.data import H5Dataset, write_h5

    water = H5Dataset(WATER)
    write_h5([water[i] for i in range(8)], tmp_path / "small.h5")
    write_h5([water[i] for i in range(8, 10)], tmp_path / "more.h5")
    if importlib.util.find_spec("metatomic") is not None:  # the metatomic export's input
        from nnpot import save_model
        from nnpot.potentials import EnergyModel

        from .conftest import small_config
        save_model(EnergyModel(small_config()), tmp_path / "model.nnp")
    return tmp_path


CASES = [
    ("convert", "h5", ["data", "convert", "small.h5", "-o", "new.h5"], "new.h5"),
    ("convert-force", "h5", ["data", "convert", "small.h5", "-o", "more.h5", "--force"], "more.h5"),
    ("append", "h5", ["data", "convert", "small.h5", "-o", "more.h5", "--append"], "more.h5"),
    ("export-deepmd", "npy", ["data", "export", "small.h5", "--format", "deepmd", "-o", "dp"], "No space"),
    ("train-checkpoint", "torch", ["train", "--data", "small.h5", "--out", "run", *SMALL], "run/"),
    ("metatomic-export", "torchscript", ["convert", "model.nnp", "-o", "model.pt", "--format", "metatomic"],
     "model.pt"),
]


@pytest.mark.parametrize("inject, argv, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_full_disk_is_one_line_and_changes_nothing(ws, inject, argv, names):
    before = _snapshot(ws)
    out = _run(ws, inject, argv)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])  # not a signal, not an internal error
    lines = [line for line in out.stderr.replace("\r", "\n").splitlines() if line.strip() and "|" not in line]
    assert lines[-1].startswith("nnpot: error:") and names in lines[-1], out.stderr[-2000:]
    assert "no space left" in lines[-1].lower() and "Traceback" not in out.stderr
    after = _snapshot(ws)
    assert {k: v for k, v in after.items() if k in before} == before  # earlier files untouched
    new = set(after) - set(before)
    assert not [n for n in new if n.endswith(".tmp") or n.startswith(".")], new  # no temporary left
    if argv[0] == "data":
        assert not new, new


def test_explore_with_a_full_disk_stops_cleanly(tmp_path):
    """The exploration's first write (its state) fails: one line, and no half-made run."""
    from ase.build import bulk

    from nnpot.data import write_h5
    from nnpot.explore import Labeller

    frames = []
    for k in range(4):
        a = bulk("Cu", "fcc", a=3.61, cubic=True)
        a.rattle(0.05, seed=k)
        frames.append(Labeller("emt").label(a).frame)
    write_h5(frames, tmp_path / "cu.h5")
    bulk("Cu", "fcc", a=3.61, cubic=True).write(tmp_path / "seed.xyz")
    (tmp_path / "al.yaml").write_text("data: cu.h5\nstructures: [seed.xyz]\nout: al\nlabeller: {name: emt}\n")
    code = ("import errno, sys\nimport nnpot.explore.loop as m\n"
            "def boom(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device', 'al/state.json')\n"
            "m._write_json = boom\nfrom nnpot.cli import main\nsys.exit(main(['explore', 'al.yaml']))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "al/state.json: No space left on device" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_two_processes_in_one_run_folder(tmp_path):
    """A second training (fresh or --resume) in a folder another process is writing stops at
    once with the holder's process id; the first one finishes untouched."""
    from nnpot.outputs import FolderLock

    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out, "training run"):  # as a first `nnpot train` holds it
        for argv in (["train", "--data", str(WATER), "--out", str(out), *SMALL], ["train", "--resume", str(out)]):
            second = subprocess.run([sys.executable, "-m", "nnpot.cli", *argv], capture_output=True, text=True,
                                    timeout=300)
            assert second.returncode == 2, second.stderr[-2000:]
            assert f"pid {os.getpid()}" in second.stderr and "is writing this training run" in second.stderr
    assert list(out.iterdir()) == []  # the second process wrote nothing
    first = subprocess.run([sys.executable, "-m", "nnpot.cli", "train", "--data", str(WATER), "--out", str(out),
                            *SMALL, "-q"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]  # the lock went with its holder
