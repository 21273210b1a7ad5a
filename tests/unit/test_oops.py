"""Crash detection: hand-written x86_64 console captures in, CrashReports out."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.results.oops import CRASH_START, KINDS, MAX_LINES, find_crashes

pytestmark = pytest.mark.unit


def numbered(text: str) -> list[tuple[int, str]]:
    """A log as the harness hands it over: (1-based line number, raw line)."""
    return list(enumerate(text.strip("\n").splitlines(), start=1))


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based number of the nth line containing needle."""
    hits = [n for n, line in numbered(text) if needle in line]
    return hits[nth - 1]


BOOT_NOISE = """\
[    0.000000] Linux version 6.6.0 (builder@ci) (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC
[    0.000000] Kernel command line: console=ttyS0 panic=-1 oops=panic panic_on_warn=0 softlockup_panic=1
[    0.000000] kasan: KernelAddressSanitizer initialized
[    0.081234] rcu: Hierarchical RCU implementation.
[    0.081240] rcu: 	RCU event tracing is enabled.
[    0.120001] NMI watchdog: Perf NMI watchdog permanently disabled
[    0.310000] ACPI: RSDP 0x00000000000F5A50 000014 (v00 BOCHS )
[    0.512000] hung_task: khungtaskd started, timeout 10 seconds
[    1.004000] Run /init as init process
# selftests: mm: migration
# BUG_ON path not taken
# WARNING: this is userspace talking, not the kernel
ok 1 no_bug
ok 2 warning_test
ok 3 list_del corruption check skipped # SKIP no CONFIG_DEBUG_LIST
[    1.900000] random: crng init done
"""

MODULE_BUG = """\
[   12.001000] crashmod: loading out-of-tree module taints kernel.
[   12.002000] ------------[ cut here ]------------
[   12.002001] kernel BUG at /tmp/x/crashmod.c:10!
[   12.002400] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI
[   12.002800] CPU: 0 PID: 93 Comm: insmod Tainted: G           O       6.6.0 #1
[   12.003000] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[   12.003200] RIP: 0010:crashmod_init+0x5/0x1000 [crashmod]
[   12.003300] Code: Unable to access opcode bytes at 0xffffffffc0000fdb.
[   12.003400] RSP: 0018:ffffc900001b7c88 EFLAGS: 00010246
[   12.003500] RAX: 0000000000000000 RBX: ffffffffc0002000 RCX: 0000000000000000
[   12.003600] RDX: 0000000000000000 RSI: 0000000000000000 RDI: ffffffffc0001000
[   12.003700] FS:  00007f1c2a4b5740(0000) GS:ffff88807dc00000(0000) knlGS:0000000000000000
[   12.003800] CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033
[   12.003900] CR2: 00007ffd3c2f1ff8 CR3: 0000000003e6a000 CR4: 00000000000006f0
[   12.004000] Call Trace:
[   12.004001]  <TASK>
[   12.004100]  ? die+0x36/0x90
[   12.004200]  ? do_trap+0xda/0x100
[   12.004300]  do_one_initcall+0x58/0x300
[   12.004400]  do_init_module+0x60/0x240
[   12.004500]  __do_sys_finit_module+0xac/0x120
[   12.004600]  do_syscall_64+0x3c/0x90
[   12.004700]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
[   12.004800]  </TASK>
[   12.004900] Modules linked in: crashmod(O+)
[   12.005000] ---[ end trace 0000000000000000 ]---
[   12.005100] note: insmod[93] exited with irqs disabled
[   12.006000] random: fast init done
"""

WARN_ON = """\
[   20.100000] crashmod: about to warn
[   20.100100] ------------[ cut here ]------------
[   20.100200] WARNING: CPU: 1 PID: 101 at mm/migrate.c:1523 migrate_pages+0x3a1/0x8d0
[   20.100300] Modules linked in: crashmod(O)
[   20.100400] CPU: 1 PID: 101 Comm: migrate_test Tainted: G           O       6.6.0 #1
[   20.100500] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2 04/01/2014
[   20.100600] RIP: 0010:migrate_pages+0x3a1/0x8d0
[   20.100700] Code: 0f 0b e9 5d fe ff ff 48 8b 44 24 10 <0f> 0b 48 89 c7 e8 00 00 00 00
[   20.100800] RSP: 0018:ffffc900002d7cb0 EFLAGS: 00010202
[   20.100900] Call Trace:
[   20.101000]  <TASK>
[   20.101100]  ? __warn+0x81/0x130
[   20.101200]  ? migrate_pages+0x3a1/0x8d0
[   20.101300]  kernel_migrate_pages+0x3f4/0x480
[   20.101400]  __x64_sys_migrate_pages+0x1d/0x30
[   20.101500]  do_syscall_64+0x3c/0x90
[   20.101600]  </TASK>
[   20.101700] ---[ end trace 0000000000000000 ]---
ok 1 migrate_pages_basic
"""

NULL_DEREF_PANIC = """\
[   30.000100] crashmod: dereferencing NULL
[   30.000200] BUG: kernel NULL pointer dereference, address: 0000000000000000
[   30.000300] #PF: supervisor write access in kernel mode
[   30.000400] #PF: error_code(0x0002) - not-present page
[   30.000500] PGD 0 P4D 0
[   30.000600] Oops: 0002 [#1] PREEMPT SMP NOPTI
[   30.000700] CPU: 0 PID: 95 Comm: insmod Tainted: G           O       6.6.0 #1
[   30.000800] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2 04/01/2014
[   30.000900] RIP: 0010:crashmod_init+0x15/0x1000 [crashmod]
[   30.001000] Code: 00 00 00 00 00 00 00 00 00 00 00 00 0f 1f 44 00 00 c7 04 25 00 <00> 00 00
[   30.001100] RSP: 0018:ffffc900001c7c88 EFLAGS: 00010246
[   30.001200] RAX: 0000000000000000 RBX: ffffffffc0002000 RCX: 0000000000000000
[   30.001300] CR2: 0000000000000000 CR3: 0000000003f7c000 CR4: 00000000000006f0
[   30.001400] Call Trace:
[   30.001500]  <TASK>
[   30.001600]  ? __die+0x1f/0x70
[   30.001700]  ? page_fault_oops+0x17b/0x480
[   30.001800]  ? exc_page_fault+0x6f/0x160
[   30.001900]  do_one_initcall+0x58/0x300
[   30.002000]  </TASK>
[   30.002100] Modules linked in: crashmod(O+)
[   30.002200] CR2: 0000000000000000
[   30.002300] ---[ end trace 0000000000000000 ]---
[   30.002400] RIP: 0010:crashmod_init+0x15/0x1000 [crashmod]
[   30.002500] Code: 00 00 00 00 00 00 00 00 00 00 00 00 0f 1f 44 00 00 c7 04 25 00 <00> 00 00
[   30.002600] RSP: 0018:ffffc900001c7c88 EFLAGS: 00010246
[   30.002700] CR2: 0000000000000000 CR3: 0000000003f7c000 CR4: 00000000000006f0
[   30.002800] Kernel panic - not syncing: Fatal exception
[   30.002900] Kernel Offset: disabled
[   30.003000] ---[ end Kernel panic - not syncing: Fatal exception ]---
"""

SYSRQ_PANIC = """\
[   40.000000] sysrq: Trigger a crash
[   40.000100] Kernel panic - not syncing: sysrq triggered crash
[   40.000200] CPU: 0 PID: 1 Comm: sh Not tainted 6.6.0 #1
[   40.000300] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2 04/01/2014
[   40.000400] Call Trace:
[   40.000500]  <TASK>
[   40.000600]  dump_stack_lvl+0x36/0x50
[   40.000700]  panic+0x17a/0x350
[   40.000800]  sysrq_handle_crash+0x16/0x20
[   40.000900]  __handle_sysrq+0x9b/0x180
[   40.001000]  write_sysrq_trigger+0x24/0x40
[   40.001100]  </TASK>
[   40.001200] Kernel Offset: disabled
[   40.001300] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---
"""

HUNG_TASK = """\
[   50.000000] migrate_test: waiting on a locked page
[   61.440000] INFO: task sh:123 blocked for more than 10 seconds.
[   61.440100]       Not tainted 6.6.0 #1
[   61.440200] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
[   61.440300] task:sh              state:D stack:0     pid:123   ppid:1      flags:0x00004000
[   61.440400] Call Trace:
[   61.440500]  <TASK>
[   61.440600]  __schedule+0x2d3/0x820
[   61.440700]  schedule+0x5e/0xd0
[   61.440800]  io_schedule+0x46/0x70
[   61.440900]  folio_wait_bit_common+0x13d/0x350
[   61.441000]  migrate_pages_batch+0x4f6/0xd40
[   61.441100]  </TASK>
[   62.000000] random: crng reseeded on system resumption
[   70.000000] virtio_net virtio0 eth0: link up
"""

SOFT_LOCKUP = """\
[   80.000000] migrate_test: spinning
[  102.120000] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [migrate_test:140]
[  102.120100] Modules linked in: crashmod(O)
[  102.120200] irq event stamp: 31234
[  102.120300] hardirqs last  enabled at (31233): [<ffffffff81c3a1b2>] irqentry_exit+0x32/0x50
[  102.120400] CPU: 1 PID: 140 Comm: migrate_test Tainted: G           O       6.6.0 #1
[  102.120500] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2 04/01/2014
[  102.120600] RIP: 0010:crashmod_spin+0x8/0x20 [crashmod]
[  102.120700] Code: eb fe 66 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 <eb> fe 0f 1f 00
[  102.120800] RSP: 0018:ffffc900002f7e70 EFLAGS: 00000246
[  102.120900] RAX: 0000000000000000 RBX: 0000000000000000 RCX: 0000000000000000
[  102.121000] Call Trace:
[  102.121100]  <IRQ>
[  102.121200]  ? watchdog_timer_fn+0x1e6/0x270
[  102.121300]  </IRQ>
[  102.121400]  <TASK>
[  102.121500]  full_proxy_write+0x5c/0x90
[  102.121600]  vfs_write+0xe1/0x460
[  102.121700]  </TASK>
[  130.000000] virtio_net virtio0 eth0: link up
[  130.000100] random: crng reseeded on system resumption
"""

BAD_PAGE = """\
[   90.000000] migrate_test: freeing pages
[   90.100000] BUG: Bad page state in process migrate_test  pfn:10f2a
[   90.100100] page:00000000c3e9d5a1 refcount:0 mapcount:1 mapping:0000000000000000 index:0x7f1c2a400 pfn:0x10f2a
[   90.100200] flags: 0x100000000080014(uptodate|lru|swapbacked|node=0|zone=1)
[   90.100300] page_type: 0x0()
[   90.100400] raw: 0100000000080014 dead000000000100 dead000000000122 0000000000000000
[   90.100500] raw: 00000007f1c2a400 0000000000000000 0000000000000000 0000000000000000
[   90.100600] page dumped because: nonzero mapcount
[   90.100700] Modules linked in: crashmod(O)
[   90.100800] CPU: 0 PID: 150 Comm: migrate_test Tainted: G           O       6.6.0 #1
[   90.100900] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2 04/01/2014
[   90.101000] Call Trace:
[   90.101100]  <TASK>
[   90.101200]  dump_stack_lvl+0x36/0x50
[   90.101300]  bad_page+0xcf/0xf0
[   90.101400]  free_unref_page_prepare+0x2c6/0x350
[   90.101500]  </TASK>
[   90.101600] Disabling lock debugging due to kernel taint
[   90.200000] migrate_test: done
"""

LIST_DEL = """\
[  100.000000] crashmod: corrupting a list
[  100.000100] ------------[ cut here ]------------
[  100.000200] list_del corruption. prev->next should be ffff888004b5e0a8, but was dead000000000100. (prev=ffff888004b5e0a8)
[  100.000300] WARNING: CPU: 1 PID: 160 at lib/list_debug.c:62 __list_del_entry_valid_or_report+0x8d/0xc0
[  100.000400] Modules linked in: crashmod(O)
[  100.000500] CPU: 1 PID: 160 Comm: insmod Tainted: G           O       6.6.0 #1
[  100.000600] RIP: 0010:__list_del_entry_valid_or_report+0x8d/0xc0
[  100.000700] RSP: 0018:ffffc900002e7c98 EFLAGS: 00010286
[  100.000800] Call Trace:
[  100.000900]  <TASK>
[  100.001000]  ? __warn+0x81/0x130
[  100.001100]  crashmod_init+0x3c/0x1000 [crashmod]
[  100.001200]  </TASK>
[  100.001300] ---[ end trace 0000000000000000 ]---
"""

# Every kind in the table, as its first line prints, with the title it must get.
FIRST_LINES = {
    "sanitizer": ("BUG: KASAN: use-after-free in migrate_folio+0x12/0x34", "KASAN: use-after-free in migrate_folio"),
    "soft-lockup": ("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [a.out:123]", "BUG: soft lockup"),
    "bad-page": ("BUG: Bad page state in process x  pfn:1234", "BUG: Bad page state"),
    "bug-fault": ("BUG: unable to handle page fault for address: 0000000000000000", "BUG: unable to handle page fault"),
    "bug": ("BUG: sleeping function called from invalid context at mm/migrate.c:99", "BUG: sleeping function called from invalid context"),
    "kernel-bug": ("kernel BUG at mm/migrate.c:123!", "kernel BUG at mm/migrate.c:123"),
    "invalid-opcode": ("invalid opcode: 0000 [#1] PREEMPT SMP", "invalid opcode"),
    "gpf": ("general protection fault, probably for non-canonical address 0xdffffc0000000000: 0000 [#1]", "general protection fault"),
    "oops": ("Oops: 0002 [#1] PREEMPT SMP NOPTI", "Oops"),
    "unable-to-handle": ("Unable to handle kernel paging request at virtual address dead000000000108", "Unable to handle kernel paging request"),
    "warning": ("WARNING: possible circular locking dependency detected", "WARNING: possible circular locking dependency detected"),
    "panic": ("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009", "Kernel panic - not syncing: Attempted to kill init!"),
    "hard-lockup": ("NMI watchdog: Watchdog detected hard LOCKUP on cpu 1", "Watchdog detected hard LOCKUP"),
    "rcu-stall": ("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "INFO: rcu detected stall"),
    "hung-task": ("INFO: task kworker/1:2:45 blocked for more than 120 seconds.", "INFO: task hung (blocked for more than 120 seconds): kworker/1:2"),
    "list-corruption": ("list_add corruption. next->prev should be prev (ffff8880), but was 0000000000000000.", "list_add corruption"),
}


def test_every_kind_has_a_sample():
    assert set(FIRST_LINES) == {kind.name for kind in KINDS}


@pytest.mark.parametrize("prefix", ["[   12.345678] ", "[  T12] ", "[    1.234567][  T12] ", ""])
@pytest.mark.parametrize("name", sorted(FIRST_LINES))
def test_first_line_of_each_kind(name, prefix):
    line, title = FIRST_LINES[name]
    assert CRASH_START.search(prefix + line)
    [crash] = find_crashes([(7, prefix + line)])
    assert (crash.title, crash.first_line, crash.last_line, crash.excerpt) == (title, 7, 7, line)


@pytest.mark.parametrize(
    "log, title, first, last",
    [
        (MODULE_BUG, "kernel BUG at /tmp/x/crashmod.c:10", "kernel BUG at", "---[ end trace"),
        (WARN_ON, "WARNING in migrate_pages", "WARNING: CPU", "---[ end trace"),
        (NULL_DEREF_PANIC, "BUG: kernel NULL pointer dereference in crashmod_init", "BUG: kernel NULL", "---[ end Kernel panic"),
        (SYSRQ_PANIC, "Kernel panic - not syncing: sysrq triggered crash", "Kernel panic", "---[ end Kernel panic"),
        (HUNG_TASK, "INFO: task hung (blocked for more than 10 seconds): sh", "INFO: task sh:123", "</TASK>"),
        (SOFT_LOCKUP, "BUG: soft lockup", "soft lockup", "</TASK>"),
        (BAD_PAGE, "BUG: Bad page state", "Bad page state", "</TASK>"),
        (LIST_DEL, "list_del corruption", "list_del corruption.", "---[ end trace"),
    ],
    ids=["module-bug", "warn-on", "null-deref-panic", "sysrq", "hung-task", "soft-lockup", "bad-page", "list-del"],
)
def test_one_crash_per_capture(log, title, first, last):
    text = BOOT_NOISE + log
    [crash] = find_crashes(numbered(text))
    assert crash.title == title
    assert (crash.first_line, crash.last_line) == (line_of(text, first), line_of(text, last))
    lines = crash.excerpt.splitlines()
    assert len(lines) == crash.last_line - crash.first_line + 1
    assert first in lines[0] and last in lines[-1]
    assert not any(line.startswith("[ ") for line in lines), "console timestamps are stripped"
    assert CRASH_START.search(numbered(text)[crash.first_line - 1][1])


def test_cascade_is_one_report_holding_every_header():
    [crash] = find_crashes(numbered(NULL_DEREF_PANIC))
    for header in ("Oops: 0002 [#1]", "Kernel panic - not syncing: Fatal exception"):
        assert header in crash.excerpt


def test_stack_frames_keep_their_indentation():
    [crash] = find_crashes(numbered(MODULE_BUG))
    assert " do_one_initcall+0x58/0x300" in crash.excerpt.splitlines()


def test_two_independent_crashes():
    text = WARN_ON + "[   25.000000] migrate_test: next case\n" + MODULE_BUG
    warning, bug = find_crashes(numbered(text))
    assert (warning.title, bug.title) == ("WARNING in migrate_pages", "kernel BUG at /tmp/x/crashmod.c:10")
    assert warning.last_line == line_of(text, "---[ end trace", 1)
    assert (bug.first_line, bug.last_line) == (line_of(text, "kernel BUG at"), line_of(text, "---[ end trace", 2))


def test_clean_boot_has_no_crash():
    assert find_crashes(numbered(BOOT_NOISE)) == []
    assert not [line for line in BOOT_NOISE.splitlines() if CRASH_START.search(line)]


def test_crash_start_on_the_raw_console_stream():
    """pexpect searches the whole buffer: match at the header's line, never across lines."""
    stream = (BOOT_NOISE + SYSRQ_PANIC).replace("\n", "\r\n")
    m = CRASH_START.search(stream)
    assert m and stream[m.start() - 1] == "\n"
    assert m.group().rstrip("\r") == "[   40.000100] Kernel panic - not syncing: sysrq triggered crash"


def test_excerpt_is_capped():
    frames = [f"[   5.000000]  frame{n}+0x1/0x2" for n in range(MAX_LINES * 2)]
    lines = numbered("\n".join(["[   5.000000] BUG: soft lockup - CPU#0 stuck for 23s! [sh:1]", *frames]))
    [crash] = find_crashes(lines)
    assert len(crash.excerpt.splitlines()) == MAX_LINES


# Real console logs, captured from the default 6.1 kernel under QEMU by
# tests/unit/data/crashes/capture.sh (a module that crashes on purpose, sysrq);
# kasan.log from `harness run --profile kasan --patch tests/e2e/mutants/40-*.patch`.
REAL = Path(__file__).parent / "data" / "crashes"


@pytest.mark.parametrize("log, title, first_text, last_text", [
    ("bug.log", "kernel BUG in crashmod_init", "Kernel BUG at crashmod_init", "---[ end trace"),
    ("warn.log", "WARNING in crashmod_init", "WARNING: CPU:", "---[ end trace"),
    ("null.log", "BUG: kernel NULL pointer dereference in crashmod_null_store.constprop.0",
     "BUG: kernel NULL pointer dereference", "---[ end trace"),
    ("hang.log", "INFO: task hung (blocked for more than 2 seconds): insmod", "INFO: task insmod:", "</TASK>"),
    # mutant 40 under the kasan profile: the old folio read after it was freed
    ("kasan.log", "KASAN: use-after-free in migrate_pages_batch", "BUG: KASAN: use-after-free", "=" * 66),
    # panic=-1: QEMU is gone before the kernel prints its "end Kernel panic" line
    ("panic.log", "Kernel panic - not syncing: sysrq triggered crash", "Kernel panic - not syncing",
     "Kernel Offset:"),
])
def test_real_crash_logs(log, title, first_text, last_text):
    lines = list(enumerate((REAL / log).read_text(errors="replace").split("\n"), 1))
    crashes = find_crashes(lines)
    assert [c.title for c in crashes] == [title]
    crash = crashes[0]
    assert first_text in lines[crash.first_line - 1][1] and last_text in lines[crash.last_line - 1][1]
    assert crash.excerpt.splitlines()[0].startswith(first_text.split(":")[0])
    assert CRASH_START.search(lines[crash.first_line - 1][1])
    assert not any(CRASH_START.search(text) for n, text in lines if n < crash.first_line)
