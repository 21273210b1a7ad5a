"""Where the harness keeps what is expensive to make: kernel trees, builds,
guest images, ccache. Always outside the checkout; $MIGRATE_HARNESS_CACHE
moves it."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterator


def root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "migrate-harness"
    path = Path(os.environ.get("MIGRATE_HARNESS_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(name: str) -> Path:
    path = root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*parts: str | bytes, length: int = 12) -> str:
    """A short stable hash of the parts, for cache keys."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:length]


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock shared by every harness on this machine.

    Two runs on the same source take turns to prepare and build it; the
    second then finds nothing left to do.
    """
    with (subdir("locks") / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
