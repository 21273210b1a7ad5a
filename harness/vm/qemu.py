"""VM stage: the QEMU command line, the accelerator choice, and the VM's life.

The command line is data: harness/vm/profiles/x86_64.j2 renders one option
per line from the spec's topology. Accel `auto` uses KVM only when it really
works: the first boot under KVM must reach init within KVM_PROBE_S, else it
is stopped, the verdict is remembered for this host boot, and the VM boots
under TCG with a one-line notice. Hands on a running `Vm`.
"""
from __future__ import annotations

import enum
import json
import logging
import os
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NoReturn

import jinja2

from harness import cache
from harness.commands import need_tool
from harness.commands import run as run_command
from harness.errors import BootError
from harness.guest.initramfs import MARKER, GuestImage
from harness.results.oops import CRASH_START
from harness.spec import VmSpec, cpu_ranges
from harness.vm.console import C, Console, CrashWatch, Wait, Waited, note_between_boots

log = logging.getLogger("harness")

QEMU = "qemu-system-x86_64"
PROFILE = Path(__file__).with_name("profiles") / "x86_64.j2"
KVM_PROBE_S = 10  # a working KVM guest reaches init in about a second
# QEMU 7.2's TCG (Debian 12's) now and then dies of SIGSEGV while a guest boots (seen twice in
# CI, 0.6 s and 3.2 s into a boot; ClangBuiltLinux/boot-utils#111 saw the like, a TCG race fixed
# upstream in 2023), or stops running it (seen once in CI: not a line after 0.74 s, for the whole
# 120 s). QEMU's own crash before any test ran decides nothing, so the boot is tried again; a boot
# that stalled silently is tried again to tell a QEMU stall from a kernel hung at boot (the
# second stall is the kernel's verdict, as any boot that never got ready). A kill from outside
# is never retried.
BOOT_ATTEMPTS = 2
# A boot that timed out stalled if the console was silent for at least this share of the
# timeout: a hung kernel that still speaks (the hung-task or RCU stall detector) is no stall.
STALL_SILENT_SHARE = 0.5
# oops=panic: an oopsed kernel is not trusted with the next tests (syzkaller does the same); the
# panic ends QEMU at once. The hung-task detector reports a task stuck in D without wakeups
# within 20-25 s, before a workload case's own deadline (30-40 s), not after the default 120 s.
# no_timer_check: a TCG guest on a busy host can miss the IO-APIC timer test's deadline and
# panic at boot ("IO-APIC + timer doesn't work!", seen here); the emulated timer is fine.
# kasan.fault=panic: a KASAN report stops the guest at once and is blamed on the test
# that was running (without it the run goes on and the report is found seconds later).
# printk.devkmsg=on: the end mark of every command run over SSH goes to /dev/kmsg (groups/guest.py),
# and by default only 10 lines in 5 s may (a script group runs one command per line).
CMDLINE = ("console=ttyS0 panic=-1 oops=panic kasan.fault=panic mitigations=off numa_balancing=disable cma=32M"
           " no_timer_check printk.devkmsg=on sysctl.kernel.hung_task_timeout_secs=20"
           " sysctl.kernel.hung_task_check_interval_secs=5")
INIT_STARTED = rf"{MARKER}: init started"
READY = rf"{MARKER}: ready"
FIRST_RESULT = r"^(?:not )?ok 1 "  # the boot checks' first KTAP result


def preset_lpj(config: dict[str, str]) -> int | None:
    """loops_per_jiffy for `lpj=`, as the boot CPU works it out from the TSC (lpj_fine:
    TSC kHz * 1000 / HZ), from this host's clock (/proc/cpuinfo; a guest's TSC runs at the
    host's under TCG and KVM alike). Only the boot CPU takes its value from the TSC: every
    other CPU calibrates its delay loop, and under TCG that takes 0.1-0.3 s each and fails
    ("calibrate_delay_direct() failed to get a good estimate"): 0.5 s of a 4-CPU boot.
    (A host whose "cpu MHz" reads below its TSC's rate gives a smaller lpj: udelay() runs
    short in the guest, which QEMU's emulated devices do not mind. Only TCG boots use it.)
    `config`: the kernel's .config (kernel/config.read_config), for CONFIG_HZ."""
    hz = int(config.get("CONFIG_HZ", "0"))
    try:
        mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text(), re.M)]
    except OSError:
        return None
    return round(max(mhz) * 1e6 / hz) if mhz and hz > 0 else None


def command_line(vm: VmSpec, *, kernel: Path, initrd: Path, swap_disk: Path, scratch_disk: Path, accel: str,
                 ssh_port: int | None, lpj: int | None = None) -> list[str]:
    """The argv; ssh_port None: no network (bench.py's floor boot); lpj: preset_lpj(), given
    to TCG guests only (under KVM the secondary CPUs calibrate quickly, and the host's
    cpu MHz may read below its TSC)."""
    template = jinja2.Template(PROFILE.read_text(), undefined=jinja2.StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True)
    distances = [(i, j, v) for i, row in enumerate(vm.distances or ()) for j, v in enumerate(row) if i != j]
    text = template.render(
        accel=accel, cpus=vm.cpus, memory_mib=vm.memory_mib, distances=distances,
        numa=[{"mem_mib": 0 if vm.on_nvdimm(n) else n.mem_mib, "cpu_ranges": cpu_ranges(n.cpus),
               "initiator": vm.initiator(i) if vm.hmat and not n.cpus else None} for i, n in enumerate(vm.numa)],
        dimms=vm.hotplug, nvdimms=vm.nvdimms, hmat=vm.hmat, kernel=kernel, initrd=initrd,
        cmdline=" ".join(filter(None, (CMDLINE, f"lpj={lpj}" if lpj and accel == "tcg" else "", vm.kernel_args,
                                       vm.append))),
        swap_disk=swap_disk, scratch_disk=scratch_disk, ssh_port=ssh_port,
    )
    argv = [QEMU]
    for line in text.splitlines():
        if line.strip():
            argv += line.strip().split(" ", 1)
    return argv


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (QEMU binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _verdict_file() -> Path:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    qemu = Path(need_tool(QEMU)).stat()
    return cache.subdir("accel") / f"kvm-{cache.digest(boot_id, str(qemu.st_mtime_ns))}.json"


def kvm_unavailable() -> str | None:
    """Why KVM cannot even be tried here, or None."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not accessible to this user"
    verdict = _verdict_file()
    if verdict.exists():
        broken: str | None = json.loads(verdict.read_text()).get("broken")
        return broken
    return None


def _remember_kvm(broken: str | None) -> None:
    _verdict_file().write_text(json.dumps({"broken": broken}))


@dataclass
class Vm(Generic[C]):
    """A running (or crashed) guest: its console, SSH port and how boot went."""

    console: Console[C]
    image: GuestImage
    accel: str
    ssh_port: int
    boot_ended: Wait  # MARKER when init said it is ready
    boot_seconds: float  # QEMU start to ready
    first_result_seconds: float | None  # QEMU start to the first KTAP result

    @property
    def ready(self) -> bool:
        """init said it is ready (a crash after that is the console's to tell)."""
        return self.boot_ended.how is Waited.MARKER

    @property
    def pid(self) -> int:
        return self.console.pid

    def stop(self) -> None:
        self.console.close()

    def __enter__(self) -> Vm[C]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _start(vm: VmSpec, kernel: Path, image: GuestImage, accel: str, console_log: Path,
           crashes: CrashWatch[C], timeout: float, lpj: int | None) -> tuple[Console[C], int, Wait]:
    """Start QEMU and wait for init to start; retry if a parallel run took our port."""
    for _attempt in range(3):
        port = free_port()
        argv = command_line(vm, kernel=kernel, initrd=image.initramfs, swap_disk=image.swap_disk,
                            scratch_disk=image.scratch_disk, accel=accel, ssh_port=port, lpj=lpj)
        (console_log.parent / "qemu.cmdline").write_text(shlex.join(argv) + "\n")  # to reproduce by hand
        console = Console(argv, console_log, crashes)
        first = console.wait_for(INIT_STARTED, timeout=timeout)
        if first.how is Waited.QEMU_EXITED and "Could not set up host forwarding" in console.tail(5):
            console.close()
            continue
        return console, port, first
    raise BootError("QEMU could not forward an SSH port on 127.0.0.1 after 3 tries")


class Probe(enum.Enum):
    """What a first boot under KVM (accel auto) says about KVM."""

    WORKS = "works"  # init started, or the kernel crashed by itself: stay on KVM
    BROKEN = "broken"  # QEMU stopped, or no init within KVM_PROBE_S: fall back to TCG
    WAIT = "wait"  # neither yet


def kvm_probe(printed: str, exited: bool, elapsed: float) -> tuple[Probe, str]:
    """The verdict from what QEMU printed (console and stderr), whether it exited,
    and the seconds since it started; the reason says why KVM looks broken."""
    if re.search(INIT_STARTED, printed) or CRASH_START.search(printed):
        return Probe.WORKS, ""
    if exited:
        return Probe.BROKEN, f"QEMU stopped under KVM: {(printed.strip().splitlines() or [''])[-1].strip()}"
    if elapsed >= KVM_PROBE_S:
        return Probe.BROKEN, f"a KVM guest did not reach init within {KVM_PROBE_S} s"
    return Probe.WAIT, ""


def _choose_accel(requested: str) -> str:
    if requested == "tcg":
        return "tcg"
    why_not = kvm_unavailable()
    if requested == "kvm":
        if why_not and "/dev/kvm" in why_not:
            raise BootError(f"the spec asks for KVM, but {why_not}")
        return "kvm"
    if why_not:
        log.info("accel: KVM not used (%s); using TCG", why_not)
        return "tcg"
    return "kvm"


def check_starts() -> None:
    """QEMU runs at all (`--version`, 20 ms): a missing or broken QEMU is said
    before minutes of building, and a bisect stops at its first step."""
    run_command([need_tool(QEMU), "--version"], error=BootError,
                what="QEMU would not start: its check before the build", timeout=30)


def _give_up(console: Console[C], why: str) -> NoReturn:
    """Stop QEMU and raise BootError: `why`, then the console's last lines."""
    tail = console.tail(10)
    console.close()
    raise BootError(f"{why}:\n{tail}")


def boot(vm: VmSpec, kernel: Path, image: GuestImage, console_log: Path,
         boot_timeout: float, crashes: CrashWatch[C], lpj: int | None = None) -> Vm[C]:
    """Boot the guest and wait until init says it is ready (or crashes, or times out).

    Only a QEMU that will not start, or crashes itself BOOT_ATTEMPTS times, raises
    (BootError); a kernel that crashes or never gets ready (a silent stall: BOOT_ATTEMPTS
    times) comes back as a Vm whose `ready` says so.
    """
    need_tool(QEMU)
    accel = _choose_accel(vm.accel)
    probing = accel == "kvm" and vm.accel == "auto"
    console, port, first = _start(vm, kernel, image, accel, console_log, crashes,
                                  KVM_PROBE_S if probing else boot_timeout, lpj)
    verdict, reason = None, ""
    if probing and console.killed_by() is None:  # a kill from outside says nothing of KVM
        printed = "\n".join(line for _, line in console.lines(since=console.start_line))
        verdict, reason = kvm_probe(printed, first.how is Waited.QEMU_EXITED, first.seconds)
    if verdict is Probe.BROKEN:
        log.warning("accel: %s; KVM looks broken on this host, falling back to TCG", reason)
        console.close()
        note_between_boots(console_log, f"KVM probe failed ({reason}); booting again under TCG")
        accel = "tcg"
        console, port, first = _start(vm, kernel, image, accel, console_log, crashes, boot_timeout, lpj)
        if first.how is Waited.MARKER:  # the kernel is fine under TCG: KVM itself is at fault
            _remember_kvm(reason)
    elif verdict is Probe.WORKS:
        _remember_kvm(None)
    attempt = 1
    while True:
        result, ready = _until_ready(console, first, accel, boot_timeout)
        why = _why_boot_again(console, ready, accel, boot_timeout)
        last = attempt == BOOT_ATTEMPTS
        if why is not None and last and console.crashed_itself:
            _give_up(console, f"{why}, {attempt} boots in a row: an infrastructure failure, "
                              "not a verdict on the kernel")
        if why is None or last:
            if why is not None:  # stalled every time: the kernel's
                log.warning("boot: %s, %d boots in a row: taken for the kernel hanging at boot", why, attempt)
            first_result = first.seconds + result.seconds if result.how is Waited.MARKER else None
            return Vm(console, image, accel, port, ready, first.seconds + result.seconds + ready.seconds,
                      first_result)
        attempt += 1
        log.warning("boot: %s; not a verdict on the kernel: booting again (attempt %d of %d)",
                    why, attempt, BOOT_ATTEMPTS)
        console.close()
        note_between_boots(console_log, f"{why}; booting again")
        console, port, first = _start(vm, kernel, image, accel, console_log, crashes, boot_timeout, lpj)


def _why_boot_again(console: Console[C], ready: Wait, accel: str, boot_timeout: float) -> str | None:
    """Why a boot that did not get ready says nothing of the kernel yet: QEMU crashed
    by itself (KVM's own abort is the probe's), or the guest stalled silently."""
    if ready.how is Waited.QEMU_EXITED and console.crashed_itself:
        return f"QEMU itself crashed while the guest booted under {accel.upper()} ({console.exit_note()})"
    if ready.how is Waited.TIMEOUT and (silent := console.silent_s) >= STALL_SILENT_SHARE * boot_timeout:
        return (f"the guest stalled while booting under {accel.upper()}: not ready within {boot_timeout:.0f} s, "
                f"not a console line for the last {silent:.0f} s")
    return None


def _until_ready(console: Console[C], first: Wait, accel: str, boot_timeout: float) -> tuple[Wait, Wait]:
    """Wait for the boot checks' first result, then for ready (each ends early if QEMU
    exits); a QEMU that exited before the kernel printed anything is a BootError."""
    this_boot = [line for _, line in console.lines(since=console.start_line)]
    killed = console.killed_by() is not None  # the boot group says so (Ended.KILLED)
    if (first.how is Waited.QEMU_EXITED and not killed and not console.crashed_itself
            and not any("Linux version" in line for line in this_boot)):
        _give_up(console, f"QEMU would not start the guest under {accel.upper()} (it exited at once)")
    try:
        result = console.wait_for(FIRST_RESULT, timeout=boot_timeout) if first.how is Waited.MARKER else first
        ready = console.wait_for(READY, timeout=boot_timeout) if result.how is Waited.MARKER else result
    except BaseException:
        console.close()
        raise
    return result, ready
