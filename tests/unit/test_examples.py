"""Every example spec under examples/ is a valid spec, and its QEMU command line renders."""
from pathlib import Path

import pytest

from harness import spec
from harness.vm import qemu

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_spec_loads_and_renders(path):
    s = spec.load(path)
    argv = qemu.command_line(s.vm, kernel=Path("/k"), initrd=Path("/i"), swap_disk=Path("/s"),
                             scratch_disk=Path("/x"), accel="tcg", ssh_port=2222)
    assert argv.count("-numa") == len(s.vm.numa) + sum(len(r) - 1 for r in s.vm.distances or ()) + 2 * len(s.vm.hmat)
