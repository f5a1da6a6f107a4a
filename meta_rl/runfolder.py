"""The run folder's safety: one writer at a time, checked before the work starts, no leftovers.

- :class:`FolderLock`: an exclusive OS lock (``flock`` on ``DIR/.lock``) held by the one process
  that writes a folder (training, a resume, ``--force``, an evaluation's output). The kernel
  releases it when the process dies, however it dies, so a crash never leaves a stale lock. A
  second writer gets a ``ValueError`` naming the process that holds the folder. Readers (an
  evaluation writing elsewhere, TensorBoard, ``tail``) take no lock and are never blocked.
- :func:`check_writable`: the folder can be written, tried before hours of work.
- :func:`remove_stale_temp_files`: a process killed while writing a file atomically leaves its
  temporary file; the folder's next writer removes them.
- :func:`publish`: files written through a temporary file get the mode a plain ``open`` would
  give (``0666`` less the umask), not ``mkstemp``'s ``0600``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

LOCK = ".lock"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(path: str | Path) -> None:
    """Give ``path`` the mode ``0666 & ~umask``, as ``open(path, "w")`` would have."""
    os.chmod(path, 0o666 & ~_umask())


class FolderLock:
    """An exclusive lock on ``folder`` for this process (re-entrant within it).

    ``acquire()`` creates the folder if needed and raises a ``ValueError`` naming the holder's
    PID when another process holds it; ``release()`` (or the process's death) frees it.
    """

    _held: dict[Path, tuple[int, int]] = {}  # resolved folder -> (fd, count), this process

    def __init__(self, folder: str | Path, what: str = "writes"):
        self.folder = Path(folder)
        self.what = what
        self._key: Path | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self._key is not None:
            return
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot write in {self.folder} ({exc.strerror}); make it writable "
                             "or choose another folder, before any work is done") from None
        key = self.folder.resolve()
        if key in self._held:
            fd, count = self._held[key]
            self._held[key] = (fd, count + 1)
            self._key = key
            return
        fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "? writes"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise ValueError(
                f"{self.folder} is in use: process {holder} there (a meta-rl train or evaluate); "
                "wait for it to end, stop it, or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)  # for the next one's message
        self._held[key] = (fd, 1)
        self._key = key

    def release(self) -> None:
        if self._key is None:
            return
        fd, count = self._held[self._key]
        if count > 1:
            self._held[self._key] = (fd, count - 1)
        else:
            del self._held[self._key]
            os.close(fd)  # closing the last descriptor releases the flock
        self._key = None


def check_writable(folder: str | Path) -> None:
    """Raise a ``ValueError`` unless files can be created in ``folder`` (created if missing)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write in {folder} ({exc.strerror}); make it writable or "
                         "choose another folder, before any work is done") from None


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files that atomic writes in ``folder`` (and its ``snapshots``) left
    behind when a process was killed mid-write; only the folder's lock holder should call it."""
    removed = []
    for sub in (Path(folder), Path(folder) / "snapshots"):
        if sub.is_dir():
            for path in sub.glob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
