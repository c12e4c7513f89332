"""A run's claim: while a process trains a run, no other process does (`RunFolder.claim` calls `take`).

The claim is an OS lock (`flock`) on the run's `.claim` file, held as long as the process lives; where the
file system has no locks, the file's presence, judged by the pid, host and time it records.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: claims fall back to plain files
    fcntl = None

__all__ = ["take", "give_up", "holder", "pid_alive", "FALLBACK_CLAIM_TIMEOUT_S"]

# Only where the file system has no locks (claims are then plain files): a claim whose recorded time is
# older than this is taken over even if its process may live (another host, a hung job).
FALLBACK_CLAIM_TIMEOUT_S = float(os.environ.get("STUDYKIT_CLAIM_TIMEOUT_S", 24 * 3600))


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust kill


# Claims this process holds: the claim file's path -> the descriptor that holds its lock (or _FILE_CLAIM).
# Keyed by path, so any RunFolder of a run finds this process's claim.
_HELD: dict[Path, int] = {}
_FILE_CLAIM = -1
_NO_LOCKS_ON: set[int] = set()  # file systems (st_dev) that refused a lock: said once, then plain files
# errnos of a file system without locks (some network and FUSE mounts); any other error is raised
_NO_LOCK_ERRNOS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class _NoLocks(OSError):
    """The file system refuses file locks."""


def _claim_key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _claim_text() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})


def _lock(path: Path) -> int | None:
    """A descriptor of `path` holding an exclusive lock on it, or None if another process holds the lock."""
    if fcntl is None:
        raise _NoLocks(errno.ENOSYS, "no fcntl module on this platform")
    for _ in range(100):
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        try:
            fd, created = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(path, flags), False
            except FileNotFoundError:
                continue  # released meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as err:
            os.close(fd)
            if err.errno in _NO_LOCK_ERRNOS:
                if created:  # leave no empty claim behind for the fallback to trip over
                    path.unlink(missing_ok=True)
                raise _NoLocks(err.errno, err.strerror) from None
            raise
        try:
            here = os.stat(path)
            mine = os.fstat(fd)
            if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder released and removed it between our open and our lock: try the new file
    return None


def take(folder: Path, claim_path: Path) -> bool:
    """Claim the run for this process; False: another live process holds it.

    The claim is an OS lock (`flock`) on `.claim`, held as long as this process lives: a killed process
    loses it at once, and a `.claim` copied, committed or merged from elsewhere holds nothing. A run this
    process already holds (a claim left by an interrupted cell) is claimed again at once, never waited
    on. Where the file system has no locks, the claim falls back to the file's presence (a warning says
    so; see `_claim_file`)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = _claim_key(claim_path)
    if key in _HELD:
        return True
    device = os.stat(folder).st_dev
    if device in _NO_LOCKS_ON:
        return _claim_file(claim_path)
    try:
        fd = _lock(claim_path)
    except _NoLocks as err:
        _NO_LOCKS_ON.add(device)
        warnings.warn(f"the file system of {folder} has no file locks ({err}); claims fall back to "
                      ".claim files judged by their pid, host and recorded time, so a claim of a process "
                      "on another host is waited on for up to FALLBACK_CLAIM_TIMEOUT_S "
                      f"({FALLBACK_CLAIM_TIMEOUT_S:.0f} s): delete that .claim to take the run over",
                      stacklevel=2)
        return _claim_file(claim_path)
    if fd is None:
        return False
    _HELD[key] = fd
    with contextlib.suppress(OSError):  # who holds it, for people reading the folder; the lock is the claim
        os.ftruncate(fd, 0)
        os.pwrite(fd, _claim_text().encode(), 0)
    return True


def give_up(claim_path: Path) -> None:
    """Give up this process's claim (a claim of another process is left alone)."""
    fd = _HELD.pop(_claim_key(claim_path), None)
    if fd is None:
        return
    if fd == _FILE_CLAIM:
        recorded = holder(claim_path)
        if recorded and recorded.get("pid") == os.getpid() and recorded.get("host") == socket.gethostname():
            claim_path.unlink(missing_ok=True)
        return
    try:
        # Removed while still locked: a process that opened the old file meanwhile finds it is no longer
        # the one at this path once it gets the lock, and tries the new one (`_lock`).
        claim_path.unlink(missing_ok=True)
    finally:
        os.close(fd)

def holder(claim_path: Path) -> dict | None:
    """What `.claim` records of its holder (pid, host, time), {} if unreadable, None if there is none.
    For messages only: whether a run is claimed is the lock's to say."""
    try:
        holder = json.loads(claim_path.read_text() or "null")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written this instant, or garbage
    return holder if isinstance(holder, dict) else {}

def _claim_file(claim_path: Path) -> bool:
    """Create `.claim` exclusively (one claimant wins); a stale one is taken over (`_take_over_stale_claim`)."""
    for _ in range(5):
        try:
            fd = os.open(claim_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _take_over_stale_claim(claim_path.parent, claim_path):
                return False
            continue
        with os.fdopen(fd, "w") as f:
            f.write(_claim_text())
        _HELD[_claim_key(claim_path)] = _FILE_CLAIM
        return True
    return False

def _take_over_stale_claim(folder: Path, claim_path: Path) -> bool:
    """Move a stale claim file aside; True if the caller should try to claim again. Stale: this process's
    own (an interrupted cell), a dead process's on this host, a recorded time (never the file's mtime,
    which a copy resets) older than FALLBACK_CLAIM_TIMEOUT_S, or unreadable for a minute."""
    try:
        text, age = claim_path.read_text(), time.time() - claim_path.stat().st_mtime
    except FileNotFoundError:
        return True  # released meanwhile
    who = holder(claim_path) or {}
    same_host = who.get("host") == socket.gethostname()
    pid, recorded = who.get("pid"), who.get("time")
    mine = same_host and pid == os.getpid()
    dead = same_host and isinstance(pid, int) and not pid_alive(pid)
    old = isinstance(recorded, (int, float)) and time.time() - recorded > FALLBACK_CLAIM_TIMEOUT_S
    if not (mine or dead or old or (not who and age > 60)):
        return False
    aside = folder / f".claim.stale.{os.getpid()}"
    try:
        os.replace(claim_path, aside)
    except FileNotFoundError:
        return True
    if aside.read_text() != text:  # another process took it over first: put its fresh claim back
        try:
            os.link(aside, claim_path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)
    return True
