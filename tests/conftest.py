"""Shared fixtures. Integration tests boot a real kernel, built once per session
(incrementally: a warm cache makes it seconds, a cold one a few minutes)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "integration" / "data"


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
