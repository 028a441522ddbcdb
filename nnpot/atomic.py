"""Atomic file output: write to a temporary name beside the target, rename on success.

A crash, an exception or a kill mid-write leaves the previous file (or none) in place,
never a half-written one: ``os.replace`` is atomic on POSIX within one file system.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from nnpot import errors

__all__ = ["atomic_path", "write_isolated", "disk_full"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; move it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    if target.is_symlink():  # write the file the link points to, and keep the link
        target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # flush to disk before the rename
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_isolated(work: Callable[[], int], target: str | os.PathLike[str]) -> int:
    """Run ``work`` (which writes a temporary file for ``target`` and returns a count) in a
    forked child process and return its result.

    The HDF5 library can crash the whole process (a segmentation fault) when a write fails
    half-way, most often on a full disk. In a child, such a crash becomes a one-line error
    here: :class:`OSError` ``ENOSPC`` naming ``target`` when its file system is (nearly) full,
    else an :class:`~nnpot.errors.NNPotError`. Errors ``work`` raises come back with their
    class (nnpot's own and ``OSError``) and message. Without ``os.fork`` it runs in-process.
    """
    if not hasattr(os, "fork"):
        return work()


    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's exit handlers
        os.close(read_end)
        # the file library prints tracebacks of its own while a failed write unwinds; the
        # parent reports the failure in one line instead
        sys.excepthook = sys.unraisablehook = lambda *_: None
        try:
            reply = {"ok": work()}
        except BaseException as exc:  # noqa: BLE001  (everything goes back to the parent)
            reply = {"error": type(exc).__name__, "message": str(exc), "errno": getattr(exc, "errno", None)}
        try:
            with os.fdopen(write_end, "w") as fh:
                fh.write(json.dumps(reply))
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        text = fh.read()
    _, status = os.waitpid(pid, 0)
    reply = json.loads(text) if text else {}
    if "ok" in reply:
        return reply["ok"]
    target = Path(target)
    if reply.get("errno") == errno.ENOSPC or disk_full(target.parent):
        raise OSError(errno.ENOSPC, "no space left on device (nothing was changed)", str(target))
    if reply:
        cls = getattr(errors, reply["error"], None)
        cls = cls if isinstance(cls, type) and issubclass(cls, errors.NNPotError) else (
            OSError if reply["error"] in ("OSError", "PermissionError", "FileNotFoundError") else errors.NNPotError)
        if cls is OSError:
            raise OSError(reply.get("errno") or errno.EIO, reply["message"], str(target))
        raise cls(reply["message"])
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    name = signal.Signals(sig).name if sig else f"exit status {os.WEXITSTATUS(status)}"
    raise errors.NNPotError(f"{target}: writing failed ({name} in the file library); nothing was changed")


def disk_full(folder: str | os.PathLike[str], spare: int = 1 << 20) -> bool:
    """Whether the file system of ``folder`` has less than ``spare`` bytes free (1 MiB)."""
    try:
        return shutil.disk_usage(folder).free < spare
    except OSError:
        return False
