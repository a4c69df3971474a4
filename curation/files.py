"""File primitives every store in the workbench shares, written once.

- `atomic_write(path, data)` / `atomic_replace(path, write)`: a reader sees the old
  file or the new one, never half of one, and a crash after the call returns loses
  nothing (temp file beside the target, fsync, rename, fsync of the directory).
- `fsync(path)`, `fsync_tree(directory)`: flush before a rename that publishes.
- `exclusive_lock(path, timeout_s, busy)`: an flock held by one writer at a time,
  waiting at most `timeout_s`, then `LockTimeout` with the caller's words.
- `sha256_file(path)`: hex digest, read in chunks; `sha256_file_cached(path)` remembers it
  by the file's size and times under `cache_dir()` (a base model is not re-hashed every run).
- `utc_now()`, `iso_utc(value)`: the one timestamp format (ISO 8601, UTC, `+00:00`).

Temp files start with TMP_PREFIX, so the sweeps of the workspace and of the
versions directory know what a killed writer left behind.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from curation.errors import CurationError

TMP_PREFIX = ".tmp-"


class LockTimeout(CurationError):
    """Another process held a lock for longer than the caller was willing to wait."""


def fsync(path: str | os.PathLike[str]) -> None:
    """Flush a file or directory to disk, so a rename that follows never outruns its contents."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: str | os.PathLike[str]) -> None:
    """fsync every file and directory below `directory`, innermost first, then `directory` itself."""
    for root, _, files in os.walk(directory, topdown=False):
        for name in files:
            fsync(Path(root) / name)
        fsync(root)


def temp_path(path: str | os.PathLike[str]) -> Path:
    """Where a writer of `path` stages its bytes: beside it (same filesystem, so the rename is atomic)."""
    path = Path(path)
    # pid and a random part: two writers of one path (a retried Ray task on another node) never share a temp file.
    return path.parent / f"{TMP_PREFIX}{path.name}-{os.getpid()}-{secrets.token_hex(4)}"


def atomic_replace(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> None:
    """Call `write(temp)` to produce the new file, then publish it at `path` in one rename.

    For writers that want a path rather than bytes (Parquet, SQLite backups). On any
    error the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    temp = temp_path(path)
    try:
        write(temp)
        fsync(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync(path.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically and durably."""

    def write(temp: Path) -> None:
        with open(temp, "wb") as file:
            file.write(data)

    atomic_replace(path, write)


@contextmanager
def exclusive_lock(
    path: str | os.PathLike[str], timeout_s: float, busy: str, error: type[Exception] = LockTimeout
) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing, never truncated) for the block.

    Waits up to `timeout_s` for another holder, then raises `error("<busy> (waited Ns for its lock)")`:
    the caller's own error class, so that its callers catch what they already catch.
    """
    try:
        lock_file = open(path, "ab")  # noqa: SIM115 - closed by the with below
    except IsADirectoryError:
        raise error(f"{path}: is a directory, where the lock file should be; remove it (rmdir {path}) and run again") from None
    except OSError as why:
        raise error(f"{path}: cannot open the lock file ({why.strerror})") from None
    with lock_file:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise error(f"{busy} (waited {timeout_s:g}s for its lock)") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_error_reason(error: BaseException) -> str | None:
    """Why the disk refused a write, in words ("disk full: No space left on device"), or None for any other error.

    OSError carries its errno; Parquet and Arrow writers (polars, pyarrow) wrap the OS error in
    their own exception, whose message names it.
    """
    if isinstance(error, OSError) and error.errno is not None:
        reason = error.strerror or os.strerror(error.errno)
        return f"disk full: {reason}" if error.errno in (errno.ENOSPC, errno.EDQUOT) else reason
    message = " ".join(str(error).split())
    for words in ("No space left on device", "Disk quota exceeded"):
        if words in message:
            return f"disk full: {words}"
    if "os error" in message.lower() or "io error" in message.lower():
        return message[:200]
    return None


CACHE_DIR_ENV = "SATSANG_CACHE_DIR"
SHA256_CACHE_NAME = "sha256.json"


def cache_dir() -> Path:
    """Where satsang keeps what it can recompute: $SATSANG_CACHE_DIR, else $XDG_CACHE_HOME/satsang, else ~/.cache/satsang."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "satsang"


def sha256_file_cached(path: str | os.PathLike[str]) -> str:
    """sha256_file, remembered by (real path, size, mtime, ctime, inode), so a multi-gigabyte base model is hashed once.

    ctime and the inode are in the key because a writer can set mtime back but not ctime: a
    file changed in place is hashed again. The cache is a convenience; when it cannot be read
    or written the file is simply hashed.
    """
    real = Path(path).resolve()
    info = real.stat()
    key = f"{real}|{info.st_size}|{info.st_mtime_ns}|{info.st_ctime_ns}|{info.st_ino}"
    cache = cache_dir() / SHA256_CACHE_NAME
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    digest = sha256_file(real)
    known = {k: v for k, v in known.items() if not k.startswith(f"{real}|")}  # this path's older states are stale
    known[key] = digest
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, json.dumps(known, indent=0, sort_keys=True).encode("utf-8"))
    except OSError:
        pass
    return digest


def utc_now(timespec: str = "seconds") -> str:
    """Now as ISO 8601 in UTC, e.g. 2026-12-02T14:10:48+00:00 (`timespec="microseconds"` orders rapid events)."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


def iso_utc(value: str | datetime, timespec: str = "seconds") -> str:
    """Any ISO 8601 string or datetime (naive means UTC, `Z` accepted) in the one format `utc_now` writes."""
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif isinstance(value, datetime):
        moment = value
    else:
        raise ValueError(f"not a time: {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec=timespec)
