"""One error type per stage. Only cli.py catches them and maps them to exit 2
(harness/exits.py).

Each message is meant for a person: one paragraph that names the culprit
(the file, the line, the symbol, the command) and, where it helps, what to do.
A few kinds of failure are types of their own, so that callers decide by
type and never by message text: a patch that does not apply, a command that
timed out, a full disk.
"""
from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path
from typing import cast


class HarnessError(Exception):
    """The harness could not do its job (exit 2). `stage` names the stage in the message."""

    stage = "harness"

    def __init_subclass__(cls, stage: str = "", **kwargs: object) -> None:
        super().__init_subclass__()
        cls.stage = stage or cls.stage


# One per stage, in the order a run meets them.
class SpecError(HarnessError, stage="spec"): ...
class SourceError(HarnessError, stage="source"): ...
class PatchDoesNotApply(SourceError): ...  # a verdict on the commit, for bisect
class ConfigError(HarnessError, stage="config"): ...
class BuildError(HarnessError, stage="build"): ...
class BootError(HarnessError, stage="boot"): ...
class GuestError(HarnessError, stage="guest"): ...
class ToolMissing(HarnessError, stage="setup"): ...
class DiskFull(HarnessError, stage="disk"): ...  # a fault of the machine, never of the kernel under test
class HostError(HarnessError, stage="host"): ...  # a file or directory of the host the harness cannot use
class VmKilled(HarnessError, stage="vm"): ...  # QEMU killed from outside: the machine's fault, never the kernel's
class VmCrashed(HarnessError, stage="vm"): ...  # QEMU died of its own bug again: no verdict on the kernel


class CommandTimeout(HarnessError):
    """An external command outlived its timeout. commands.run raises it as
    timeout_of(the stage's error), so it is that stage's error too."""


_TIMEOUTS: dict[type[HarnessError], type[CommandTimeout]] = {}


def timeout_of(stage_error: type[HarnessError]) -> type[CommandTimeout]:
    """The CommandTimeout that is also a `stage_error` (e.g. a BuildError), made once."""
    if stage_error not in _TIMEOUTS:
        bases, name = (CommandTimeout, stage_error), f"{stage_error.__name__}Timeout"
        _TIMEOUTS[stage_error] = cast(type[CommandTimeout], type(name, bases, {}, stage=stage_error.stage))
    return _TIMEOUTS[stage_error]


def host_error(e: OSError) -> HarnessError:
    """An OSError met in the harness's own work, as the error it is: a full disk, or a path it cannot use."""
    if e.errno == errno.ENOSPC:
        return DiskFull(f"no space left on the device while writing {e.filename or 'a file'}: "
                        "free some space (the cache is in ~/.cache/migrate-harness)")
    where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "") if e.filename else "a file"
    return HostError(f"cannot use {where}: {e.strerror or e}")


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError raised inside names `path` (a write to an open file names none by itself)."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None


@contextlib.contextmanager
def disk_full_is_an_error() -> Iterator[None]:
    """Turn ENOSPC met in the harness's own writes into DiskFull."""
    try:
        yield
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise host_error(e) from None
