"""Every external command the harness runs goes through `run` (except the
long-lived QEMU process, which vm/qemu.py owns).

`run` logs the command line and its output to a log file when given one,
enforces a timeout, and raises the calling stage's error with the tail of
the output, so a failure explains itself without a traceback. A timeout is
also a CommandTimeout, and a command that failed on a full disk a DiskFull.
"""
from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from harness.errors import DiskFull, HarnessError, ToolMissing, timeout_of

# Which Debian package brings each tool, so "missing" errors say what to install.
TOOL_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "dropbear": "dropbear-bin",
    "dropbearkey": "dropbear-bin",
    "gcc": "gcc",
    "make": "make",
    "patch": "patch",
    "rsync": "rsync",
    "git": "git",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "ccache": "ccache",
    "tar": "tar",
    "xz": "xz-utils",
    "mkfs.ext4": "e2fsprogs",
}


def need_tool(name: str) -> str:
    """Path of `name`, or a ToolMissing error saying which package to install."""
    path = shutil.which(name)
    if path is None:
        package = TOOL_PACKAGES.get(name, name)
        raise ToolMissing(
            f"'{name}' is not installed: run 'make setup' (as root), or 'apt-get install {package}'."
        )
    return path


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(
    argv: list[str],
    *,
    error: type[HarnessError],
    what: str,
    cwd: Path | None = None,
    log: IO[str] | None = None,
    timeout: float | None = 3600,
    env: dict[str, str] | None = None,
    input: str | None = None,
    on_line: Callable[[str], None] | None = None,
    ok: tuple[int, ...] = (0,),
) -> str:
    """Run argv to completion and return its combined output.

    On an exit status not in `ok`, or a timeout, raise `error` naming `what` failed and
    showing the output's last lines. With `log`, the command line and all
    output are appended to that file as they are produced; `on_line` sees
    each line as it comes (for progress).
    """
    need_tool(argv[0])
    full_env = {**os.environ, **(env or {})}
    if log is not None:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=full_env, text=True, errors="replace",
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # so a kill reaches make's compilers too
    )
    # A timer kills the command so that a hang cannot block the loop below.
    timed_out = threading.Event()

    def kill_on_timeout() -> None:
        timed_out.set()
        kill_group(proc)

    killer = threading.Timer(timeout, kill_on_timeout) if timeout else None
    output: list[str] = []
    try:
        if killer:
            killer.start()
        if input is not None and proc.stdin is not None:
            proc.stdin.write(input)
            proc.stdin.close()
        for line in proc.stdout or ():
            output.append(line)
            if log is not None:
                log.write(line)
                log.flush()  # a log someone tails, or reads after a crash, is complete
            if on_line is not None:
                on_line(line)
        proc.wait()
    finally:
        if killer:
            killer.cancel()
        if proc.poll() is None:  # interrupted (Ctrl-C): never leave the child behind
            kill_group(proc)
            proc.wait()
        if log is not None:
            log.flush()
    text = "".join(output)
    if timed_out.is_set():
        raise timeout_of(error)(f"{what} timed out after {timeout:.0f} s: {shlex.join(argv)}\n{tail(text)}")
    if proc.returncode not in ok and os.strerror(errno.ENOSPC) in text:
        raise DiskFull(f"{what} failed: no space left on the device: {shlex.join(argv)}\n{tail(text)}")
    if proc.returncode not in ok:
        raise error(f"{what} failed (exit {proc.returncode}): {shlex.join(argv)}\n{tail(text)}")
    return text
