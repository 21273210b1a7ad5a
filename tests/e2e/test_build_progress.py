"""Progress of a real kernel build as a CI log sees it (stderr not a terminal):
plain `harness: build: N/TOTAL steps` lines, and not one control character."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import harness

from harness import cache

pytestmark = pytest.mark.e2e

LINE = re.compile(r"^harness: build: (\d+)/(\d+) steps \((\d+)%\), \d+:\d\d elapsed(?:, about \d+:\d\d left)?$", re.M)


def test_a_build_from_scratch_logs_plain_progress_lines(default_kernel, tmp_path):
    # A fragment of its own gives a build directory of its own, so the build starts
    # from an empty one; its line is the option's default, so the .config is the default
    # kernel's, and ccache (filled by `default_kernel`) serves every object.
    fragment = tmp_path / "progress.config"
    fragment.write_text('CONFIG_LOCALVERSION=""\n')
    before = set(cache.subdir("build").iterdir())
    done = harness("build", "--config", str(fragment), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    image = Path(done.stdout.strip())  # the build directory's vmlinux
    build_dir = image.parent
    assert image.name == "vmlinux" and build_dir.parent == cache.subdir("build"), done.stdout  # before removing it
    try:
        assert build_dir not in before, "left by an interrupted run of this test (removed now): run it again"
        assert "\x1b" not in done.stderr and "\r" not in done.stderr
        steps = [int(m[1]) for m in LINE.finditer(done.stderr)]
        assert len(steps) >= 5, done.stderr
        assert steps == sorted(steps)
        counted = int((build_dir / ".harness-steps").read_text())
        assert counted >= steps[-1]
    finally:
        shutil.rmtree(build_dir)
