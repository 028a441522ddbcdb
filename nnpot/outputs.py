"""What a command may write over: its own earlier outputs, never its inputs or a user's files.

Every command that writes a file or a folder checks the target here first:

* a target that is one of the command's inputs (the same resolved path, or the same file
  through another name: same inode) is refused, with or without ``--force``;
* an existing target is refused without ``--force``;
* with ``--force``, an existing target is replaced only when nnpot wrote it: each kind of
  output says how it is recognised (``owned``: an HDF5 format attribute, a LAMMPS log's first
  line, or the manifest of a folder, :func:`write_manifest`).

A folder output is never removed wholesale: the command replaces the entries it names in its
manifest and leaves everything else in the folder alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from nnpot.atomic import atomic_path
from nnpot.errors import NNPotError

__all__ = ["MANIFEST", "FolderLock", "same_file", "check_output", "read_manifest", "write_manifest", "owned_by_manifest", "locked_folder"]

MANIFEST = ".nnpot-outputs.json"  #: in a folder nnpot wrote: the entries it wrote there


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: equal resolved paths, or the same inode."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_output(path: str | os.PathLike, force: bool, inputs: Iterable[str | os.PathLike] = (),
                 owned: Callable[[Path], bool] | None = None, what: str = "output") -> None:
    """Refuse to write ``path`` unless it is new, or ``force`` is given and ``owned(path)`` says
    nnpot wrote it; never when it is (or, for a folder, holds) one of ``inputs``."""
    path = Path(path)
    for source in inputs:
        if source is None:
            continue
        if (path.exists() or path.is_symlink()) and Path(source).exists() and same_file(path, source):
            raise NNPotError(f"{path}: is an input of this command ({source}); choose another {what} name")
        if path.is_dir() and _inside(Path(source), path):
            raise NNPotError(f"{path}: holds {source}, an input of this command; choose another {what} folder")
    if not (path.exists() or path.is_symlink()):
        return
    kind = "folder" if path.is_dir() else "file"
    if not force:
        raise NNPotError(f"{path}: the {kind} exists; choose another name, or give --force to replace it")
    if owned is None or not owned(path):
        raise NNPotError(f"{path}: the {kind} exists and nnpot did not write it; --force replaces only nnpot's own "
                         f"outputs: choose another name, or move it away yourself")


def read_manifest(folder: str | os.PathLike) -> list[str] | None:
    """The entries nnpot wrote into ``folder`` (its manifest), or None when it has none."""
    path = Path(folder) / MANIFEST
    try:
        names = json.loads(path.read_text()).get("outputs")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and "/" not in n and n not in ("", ".", "..")
                                               for n in names):
        return None
    return names


def write_manifest(folder: str | os.PathLike, names: Iterable[str], tool: str) -> None:
    """Record that ``tool`` wrote the entries ``names`` into ``folder`` (merged with earlier ones)."""
    folder = Path(folder)
    known = set(read_manifest(folder) or ())
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"writer": tool, "outputs": sorted(known | set(names))}, indent=1) + "\n")


def owned_by_manifest(folder: Path) -> bool:
    """A folder is nnpot's to refill when its manifest lists what nnpot wrote there."""
    return folder.is_dir() and read_manifest(folder) is not None


class FolderLock:
    """An exclusive lock on a run folder, held while a process writes there, so a second
    training or exploration in the same folder stops at once with the holder's process id
    instead of corrupting the first one's files. It is a ``flock`` on the folder itself (no
    file is added to it), which the kernel releases when the holder dies, even by SIGKILL."""

    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _flock_holder(os.fstat(fd).st_ino)
            os.close(fd)
            raise NNPotError(f"{self.folder}: another nnpot process (pid {holder}) is writing this {self.what}; "
                             "wait for it to finish, or stop it first") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _flock_holder(inode: int) -> str:
    """The process id holding a flock on ``inode`` (Linux's /proc/locks), or "unknown"."""
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
                return parts[4]
    except OSError:
        pass
    return "unknown"


@contextlib.contextmanager
def locked_folder(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold :class:`FolderLock` on ``folder`` (made if missing) for the ``with`` block. A folder
    this call made is removed again when it is still empty (a run that failed before its first
    output leaves nothing behind)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NNPotError(f"{folder}: exists and is not a folder; choose another output folder")
    made = [p for p in [folder, *folder.parents] if not p.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(folder, what)
    try:
        lock.acquire()
        yield folder
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            for p in made:
                p.rmdir()  # only while empty
