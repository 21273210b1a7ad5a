"""The KVM probe's verdicts (harness/vm/qemu.py kvm_probe), from real QEMU output.

data/qemu/kvm-msr-assertion.txt: QEMU 7.2's stderr on this host, `qemu-system-x86_64
-machine q35,accel=kvm -cpu host -m 256M -kernel bzImage -append console=ttyS0
-nographic -no-reboot` (it aborts at once). data/qemu/tcg-boot-to-init.log: the start of
a real console.log of a 6.1 boot under TCG, up to init's first line."""
from pathlib import Path

import pytest

from harness.vm.qemu import KVM_PROBE_S, Probe, kvm_probe

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
KVM_ASSERTION = (DATA / "qemu" / "kvm-msr-assertion.txt").read_text()
TO_INIT = (DATA / "qemu" / "tcg-boot-to-init.log").read_text()
BEFORE_INIT = TO_INIT[:TO_INIT.index("Run /init")].rsplit("\n", 1)[0] + "\n"  # stuck before init: the same boot, cut
PANIC = (DATA / "crashes" / "panic.log").read_text()


def test_qemu_aborting_under_kvm_is_broken_kvm_and_names_the_assertion():
    verdict, reason = kvm_probe(KVM_ASSERTION, exited=True, elapsed=0.3)
    assert verdict is Probe.BROKEN
    assert reason == ("QEMU stopped under KVM: qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: "
                      "kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.")


@pytest.mark.parametrize("elapsed", [0.8, KVM_PROBE_S + 20])  # a slow init still proves KVM works
def test_a_guest_that_reaches_init_keeps_kvm(elapsed):
    assert kvm_probe(TO_INIT, exited=False, elapsed=elapsed) == (Probe.WORKS, "")
    # QEMU's warnings before the boot (e.g. the MSR error line) are no verdict either
    assert kvm_probe(KVM_ASSERTION.splitlines()[0] + "\n" + TO_INIT, exited=False, elapsed=elapsed)[0] is Probe.WORKS


def test_a_guest_without_init_in_the_probe_time_is_broken_kvm():
    assert kvm_probe(BEFORE_INIT, exited=False, elapsed=KVM_PROBE_S - 1) == (Probe.WAIT, "")
    verdict, reason = kvm_probe(BEFORE_INIT, exited=False, elapsed=KVM_PROBE_S)
    assert verdict is Probe.BROKEN and reason == f"a KVM guest did not reach init within {KVM_PROBE_S} s"
    assert kvm_probe("", exited=False, elapsed=KVM_PROBE_S)[0] is Probe.BROKEN  # not a line printed


def test_a_kernel_that_crashes_by_itself_is_reported_not_blamed_on_kvm():
    assert kvm_probe(PANIC, exited=True, elapsed=2.0) == (Probe.WORKS, "")


def test_qemu_exiting_after_the_kernel_started_is_broken_kvm():
    verdict, reason = kvm_probe(BEFORE_INIT + "qemu: terminating on signal 15\n", exited=True, elapsed=3.0)
    assert verdict is Probe.BROKEN and reason == "QEMU stopped under KVM: qemu: terminating on signal 15"
