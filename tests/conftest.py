"""Shared fixtures. Integration tests boot a real kernel, built once per session
(incrementally: a warm cache makes it seconds, a cold one a few minutes)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "integration" / "data"


# What the default run (boot, workload, module groups on the default machine) reports, leaf by leaf.
BOOT_CHECKS = ["numa_nodes_online", "node0_memory", "node0_cpus", "node1_memory", "node1_cpus", "swap_active",
               "scratch_mounted"]
MODULE_CASES = ["shmem_to_node1", "mode_async", "mode_sync_light", "mode_sync", "extra_ref_not_migrated",
                "dirty_state_preserved", "alloc_fail_enomem", "swapcache_anon"]
MODULE_LEAVES = [f"migrate_pages.{c}" for c in MODULE_CASES] + [
    "console_matches_dmesg", "unload", "isolated_counters_restored"]


def workload_cases() -> list[str]:
    """The suite's own case table (`migrate_suite --list`; the binary is static, so it runs here too)."""
    from harness.guest import compile as compiler
    binary = compiler.workload(io.StringIO())
    listed = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True)
    return listed.stdout.split()


# Skips allowed on the default machine, as "group.test": none. A case that skips there lost
# its precondition (a disk, swap, THP, a node's memory): that is a harness regression.
EXPECTED_SKIPS: list[str] = []


def leaves(results: dict, status: str | None = None) -> list[str]:
    """results.json's leaves as "group.path" (only those with `status` if given)."""
    found: list[str] = []

    def walk(test: dict, path: str) -> None:
        if not test["subtests"] and status in (None, test["status"]):
            found.append(path)
        for sub in test["subtests"]:
            walk(sub, f"{path}.{sub['name']}")
    for group in results["groups"]:
        walk(group, group["name"])
    return found


def skips(out: Path) -> list[str]:
    """The run's skipped leaves as "group.test" (the reasons are in summary.txt)."""
    return leaves(json.loads((out / "results.json").read_text()), "skip")


JUNIT_SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "unit" / "data" / "junit.xsd")))


def validate_junit(text: str) -> None:
    """Validate against the common JUnit schema (tests/unit/data/junit.xsd) with libxml2."""
    JUNIT_SCHEMA.assertValid(etree.fromstring(text.encode()))


def harness(*args: str, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line, as a user would."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def process_gone(pid: int, wait: float = 5) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def default_kernel(tmp_path_factory) -> Path:
    """The default kernel (Debian's 6.1 source + our fragments), built once."""
    out = tmp_path_factory.mktemp("build")
    result = harness("build", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip())


def qemu_pid(out: Path) -> int | None:
    pid_file = out / "qemu.pid"
    return int(pid_file.read_text()) if pid_file.exists() and pid_file.read_text().strip() else None


class Started:
    """A harness process started by a test; `stop` ends it and its QEMU whatever happened."""

    def __init__(self, out: Path, *args: str, ignore_sigint: bool = False):
        self.out = out
        preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args, "--out", str(out)], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec)

    def wait_for(self, path: Path, text: str, timeout: float = 600, count: int = 1) -> None:
        """Until `path` holds `text`, `count` times (the harness may still be building)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text(errors="replace").count(text) >= count:
                return
            assert self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in {path} within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        pid = qemu_pid(self.out)
        if pid is not None and not process_gone(pid, wait=5):
            os.kill(pid, signal.SIGKILL)  # the QEMU this test started; then fail
            raise AssertionError(f"QEMU {pid} outlived its harness")


@pytest.fixture
def start_harness():
    """Start harness processes; each is ended, and its QEMU checked gone, when the test ends."""
    started: list[Started] = []

    def start(out: Path, *args: str, ignore_sigint: bool = False) -> Started:
        started.append(Started(out, *args, ignore_sigint=ignore_sigint))
        return started[-1]
    yield start
    for each in started:
        each.stop()
