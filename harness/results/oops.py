"""Results stage: crash detection on the guest console; hands on CrashReport values.

A table of crash kinds (after syzkaller's pkg/report/linux.go) says how each
report starts and how to title it. Titles carry no addresses, PIDs or
timestamps so the same bug gets the same title from run to run:
- "WARNING: CPU: 1 PID: 1 at mm/migrate.c:123 migrate_pages+0x1/0x2" is titled
  "WARNING in migrate_pages": the function survives rebuilds, file:line does not.
  Only when no function is printed does the title fall back to "WARNING at FILE:LINE".
- Generic faults (page fault, NULL dereference, GPF, Oops) get " in FUNC" from
  the first "RIP: 0010:FUNC+0x../0x.." of their excerpt.
- A hung task is titled "INFO: task hung (blocked for more than N seconds): COMM".
An excerpt runs from the header to "---[ end trace ...]---" / "---[ end Kernel
panic ...]---", else to the last line that still looks like part of a report.
Headers inside an excerpt belong to it (one cascade, one report), and so does a
"Kernel panic" that follows "end trace" after nothing but re-printed registers.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.results.model import CrashReport

MAX_LINES = 200
GAP = 4  # unrelated lines tolerated inside a report (interleaved printk, blank lines)
PANIC_WINDOW = 30  # re-printed registers between "end trace" and the panic it causes

# "[    1.234567]" and "[  T12]" fields. Spaces only, never \s: CRASH_START must
# not match across a newline when pexpect searches the raw console stream.
_TIMESTAMP = r"(?:<\d+>)?(?:\[ *(?:\d+\.\d+|[TC]\d+)\] ?)*"
_TIMESTAMP_RE = re.compile("^" + _TIMESTAMP)
# Some headers come behind a subsystem prefix: "watchdog: BUG: soft lockup".
_HEADER_PREFIX = r"^[ \t\r]*" + _TIMESTAMP + r"[ \t]*(?:(?:NMI )?watchdog: |rcu: )?"
_HEADER_PREFIX_RE = re.compile(_HEADER_PREFIX)

_STOP_WORDS = frozenset({"at", "for", "in", "on", "-"})


def _clean(text: str) -> str:
    """Leading words of a message, up to its first variable part (address, pid, place)."""
    kept: list[str] = []
    for word in text.split():
        if word in _STOP_WORDS or re.search(r"[\d\[#]", word):
            break
        kept.append(word.rstrip(":,"))
        if word[-1] in ":,":
            break
    return " ".join(kept)


def _sanitizer(m: re.Match[str]) -> str:
    """Title a sanitizer report: "BUG: KASAN: uaf in foo+0x1/0x2" -> "KASAN: uaf in foo"."""
    where = re.search(r"\bin ([\w./-]+?)(?:\+0x|:\d)", m[2])
    return f"{m[1]}: {_clean(m[2])}" + (f" in {where[1]}" if where else "")


def _warning(m: re.Match[str]) -> str:
    func = re.search(r"([\w.]+)\+0x[0-9a-f]+/", m[1])
    if func:
        return f"WARNING in {func[1]}"
    place = re.search(r"\bat (\S+:\d+)", m[1])
    # Lockdep and friends print a sentence instead: "WARNING: possible recursive locking detected".
    return f"WARNING at {place[1]}" if place else f"WARNING: {_clean(m[1])}"


def _kernel_bug(m: re.Match[str]) -> str:
    func = re.match(r"([\w.]+)\+0x[0-9a-f]+/", m[1])
    return f"kernel BUG in {func[1]}" if func else f"kernel BUG at {m[1]}"


def _panic(m: re.Match[str]) -> str:
    # Cut from the first word holding an address or code: "kill init! exitcode=0x00000009".
    reason = re.sub(r"\s*\S*(?:0x[0-9a-fA-F]+|[0-9a-f]{8,}).*$", "", m[1]).strip()
    return f"Kernel panic - not syncing: {reason}"


@dataclass(frozen=True)
class CrashKind:
    """One row of the table: how a crash report starts and what it is called."""

    name: str
    start: re.Pattern[str]  # matched right after the console/subsystem prefix
    title: Callable[[re.Match[str]], str]
    rip: bool = False  # generic fault: the faulting function goes into the title


# First matching row wins, so specific rows stand before the generic "BUG: ".
KINDS: tuple[CrashKind, ...] = (
    CrashKind("sanitizer", re.compile(r"(?:BUG: )?(KASAN|KFENCE|KCSAN|KMSAN|UBSAN): (.*)"), _sanitizer),
    CrashKind("soft-lockup", re.compile(r"BUG: soft lockup"), lambda m: "BUG: soft lockup"),
    CrashKind("bad-page", re.compile(r"BUG: (Bad page \w+)"), lambda m: f"BUG: {m[1]}"),
    CrashKind(
        "bug-fault",
        re.compile(r"BUG: ((?:unable to handle|kernel NULL pointer dereference).*)"),
        lambda m: f"BUG: {_clean(m[1])}",
        rip=True,
    ),
    CrashKind("bug", re.compile(r"BUG: (.*)"), lambda m: f"BUG: {_clean(m[1])}"),
    # Without CONFIG_DEBUG_BUGVERBOSE the kernel prints "Kernel BUG at func+0x1b/0x1000 [mod]".
    CrashKind("kernel-bug", re.compile(r"[Kk]ernel BUG at ([^!\s]+)"), _kernel_bug),
    CrashKind("invalid-opcode", re.compile(r"invalid opcode: "), lambda m: "invalid opcode", rip=True),
    CrashKind("gpf", re.compile(r"(?:Oops: )?general protection fault"), lambda m: "general protection fault",
              rip=True),
    CrashKind("oops", re.compile(r"(?:Internal error: )?Oops: "), lambda m: "Oops", rip=True),
    CrashKind("unable-to-handle", re.compile(r"([Uu]nable to handle .*)"), lambda m: _clean(m[1]), rip=True),
    CrashKind("warning", re.compile(r"WARNING: (.*)"), _warning),
    CrashKind("panic", re.compile(r"Kernel panic - not syncing: (.*)"), _panic),
    CrashKind("hard-lockup", re.compile(r"Watchdog detected hard LOCKUP"), lambda m: "Watchdog detected hard LOCKUP"),
    CrashKind("rcu-stall", re.compile(r"INFO: rcu_\w+ (?:self-)?detected stall"), lambda m: "INFO: rcu detected stall"),
    CrashKind(
        "hung-task",
        re.compile(r"INFO: task (.+):\d+ blocked for more than (\d+) seconds"),
        lambda m: f"{HUNG_TASK_TITLE}(blocked for more than {m[2]} seconds): {m[1]}",
    ),
    CrashKind("list-corruption", re.compile(r"(list_(?:add|del)) corruption"), lambda m: f"{m[1]} corruption"),
)

HUNG_TASK_TITLE = "INFO: task hung "


def is_hung_task(crash: CrashReport) -> bool:
    """The hung-task detector's report: a task blocked in the kernel, not a crash of it."""
    return crash.title.startswith(HUNG_TASK_TITLE)


# re.M so that pexpect, searching a whole console buffer, anchors at every line start.
CRASH_START: re.Pattern[str] = re.compile(
    _HEADER_PREFIX + "(?:" + "|".join(f"(?:{kind.start.pattern})" for kind in KINDS) + ")", re.M
)

# Lines that still belong to a report: stack frames, registers, the
# "CPU:/Hardware name:" banner, hung-task, bad-page and KASAN dump lines.
_REPORT_LINE = re.compile(
    r"\+0x[0-9a-f]+/0x[0-9a-f]+"
    r"|^ *</?(?:TASK|IRQ|NMI|SOFTIRQ)>"
    r"|^ *[A-Z][A-Z0-9]{1,4}: +[0-9a-f]{4}"
    r"|^ *(?:Call Trace|Modules linked in|Hardware name|Workqueue|Code|Kernel Offset|Tainted):"
    r"|^ *(?:CPU: \d+ (?:UID: \d+ )?PID: \d+|#PF: |PGD |invalid opcode: |Not tainted"
    r'|"echo 0 > /proc/sys/kernel/hung_task_timeout_secs"|task:\S+ +state:)'
    r"|^(?:page|raw|head|flags|memcg|page_type|page dumped because):"
    r"|^ *(?:(?:Read|Write) of size \d|(?:Allocated|Freed) by task|The buggy address|Memory state around)"
    r"|^={20,}$|^[> ][0-9a-f]{16}: "
)
_END_TRACE = re.compile(r"^---\[ end trace ")
_END_PANIC = re.compile(r"^---\[ end Kernel panic")
_RIP = re.compile(r"^ *(?:RIP: \w+:(?:\[<\w+>\] *)*|pc : )([\w.]+)\+0x")


def _strip(raw: str) -> str:
    """The line without its console timestamp and line ending; indentation stays."""
    return _TIMESTAMP_RE.sub("", raw.rstrip("\r\n"), count=1)


def _header(raw: str) -> tuple[CrashKind, re.Match[str]] | None:
    """The kind of crash whose first line this is, if any."""
    text = raw.rstrip("\r\n")
    prefix = _HEADER_PREFIX_RE.match(text)  # all optional: it always matches
    pos = prefix.end() if prefix else 0
    for kind in KINDS:
        m = kind.start.match(text, pos)
        if m:
            return kind, m
    return None


def _in_report(raw: str) -> bool:
    """Does this line look like part of a crash report (including a cascading header)?"""
    return _header(raw) is not None or bool(_REPORT_LINE.search(_strip(raw)))


def _panic_follows(lines: Sequence[tuple[int, str]], end: int) -> bool:
    """After "end trace": does a panic come next, past only re-printed registers?"""
    for _, raw in lines[end + 1 : end + 1 + PANIC_WINDOW]:
        header = _header(raw)
        if header is not None:
            return header[0].name == "panic"
        if not _REPORT_LINE.search(_strip(raw)):
            return False
    return False


def _last_index(lines: Sequence[tuple[int, str]], start: int) -> int:
    """Index of the last line of the report that starts at lines[start]."""
    last = start
    for j in range(start + 1, min(len(lines), start + MAX_LINES)):
        if j - last > GAP:
            break
        text = _strip(lines[j][1])
        if _END_PANIC.match(text) or (_END_TRACE.match(text) and not _panic_follows(lines, j)):
            return j
        if _END_TRACE.match(text) or _in_report(lines[j][1]):
            last = j
    return last


def find_crashes(lines: Sequence[tuple[int, str]]) -> list[CrashReport]:
    """Every crash in a console log, in order; a cascade counts once."""
    crashes: list[CrashReport] = []
    i = 0
    while i < len(lines):
        header = _header(lines[i][1])
        if header is None:
            i += 1
            continue
        kind, m = header
        end = _last_index(lines, i)
        body = [_strip(raw) for _, raw in lines[i : end + 1]]
        title = kind.title(m)
        rip = next((r[1] for r in map(_RIP.match, body) if r), None) if kind.rip else None
        if rip:
            title += f" in {rip}"
        crashes.append(CrashReport(title, "\n".join(body), lines[i][0], lines[end][0]))
        i = end + 1
    return crashes
