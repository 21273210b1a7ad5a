"""Where the harness keeps what is expensive to make: kernel trees, builds,
guest images, ccache. Always outside the checkout; $MIGRATE_HARNESS_CACHE
moves it."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


def root() -> Path:
    """$MIGRATE_HARNESS_CACHE, else $XDG_CACHE_HOME/migrate-harness, else ~/.cache/migrate-harness,
    made absolute (commands run in other directories). An empty variable counts as unset, and a
    relative $XDG_CACHE_HOME is ignored, as the XDG base directory spec says."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    default = (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "migrate-harness"
    path = Path(os.environ.get("MIGRATE_HARNESS_CACHE") or default).absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(name: str) -> Path:
    path = root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_dir(tree_name: str, key: str) -> Path:
    """Where the build of private tree `tree_name` with config `key` lives: build/TREE-KEY."""
    return subdir("build") / f"{tree_name}-{key}"


def builds_of(tree_name: str) -> list[Path]:
    """Every build directory of private tree `tree_name`."""
    return sorted(subdir("build").glob(f"{tree_name}-*"))


def digest(*parts: str | bytes, length: int = 12) -> str:
    """A short stable hash of the parts, for cache keys."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:length]


def publish(path: Path, make: Callable[[Path], object]) -> Path:
    """`path`, made once by `make(a temporary path)` and renamed into place,
    so a reader never sees half a file. For paths named by their inputs' digest."""
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        make(tmp)
        tmp.rename(path)
    return path


@dataclass(frozen=True)
class Stamp:
    """A file that records what the outputs beside it were made from."""

    path: Path
    identity: str  # a digest of every input

    def current(self, *outputs: Path) -> bool:
        """The outputs exist and were made from `identity`. If not, the stamp
        is removed first, so work interrupted half-way is never taken as done."""
        if all(o.exists() for o in outputs) and self.path.exists() and self.path.read_text() == self.identity:
            return True
        self.path.unlink(missing_ok=True)
        return False

    def write(self) -> None:
        self.path.write_text(self.identity)


def lock_file(name: str) -> Path:
    return subdir("locks") / f"{name}.lock"


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock shared by every harness on this machine.

    Two runs on the same source take turns to prepare and build it; the
    second then finds nothing left to do. The lock file's mtime says when a
    harness last took it (`harness cache` shows it as the last use).
    """
    path = lock_file(name)
    path.touch()
    with holding(path):
        yield


@contextlib.contextmanager
def holding(path: Path, wait: bool = True) -> Iterator[bool]:
    """flock(2) `path` (a lock file or a directory) for the block.

    With wait=False it does not wait: it yields False, holding nothing, when
    another process holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
