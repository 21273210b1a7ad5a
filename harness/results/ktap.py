"""Results stage: turn KTAP v1 output captured from a guest console into TestResults.

Input is console.log as (line number, text) pairs. Kernel printk prefixes and
unrelated console noise are tolerated; only lines shaped like KTAP count. The
output is one TestResult tree per KTAP document (see model.py), handed on to
the report stage; every `line` points back into console.log.

Choices where Documentation/dev-tools/ktap.rst leaves room ("diagnostic
lines regarding a test are directly before the test result line"):
- "# ..." lines before a document's plan, first result and first nested
  document describe that document: they go to the result line that closes it
  (for the top level, to the group parse_ktap returns). Later "# ..." lines go
  to the next result at their indentation; any left after a level's last
  result go to the parent's next result (top level: to the group).
- "# Subtest: X" is a name, not a diagnostic. Before the plan it names its
  document; after a plan or result it names the next result at its level (the
  workload prints it before each case) and opens that test's diagnostics, so
  lines between the plan and the first such header are the document's preamble.
  Names of results that never came are taken from it, else (top level only)
  from the names the producer lists for its tests (`migrate_suite --list`).
- A test keeps at most MAX_DIAGNOSTICS diagnostics, the first and last half,
  with one line in between saying how many were dropped and where to read them.
- A test number printed twice at one level is an ERROR on the second result:
  the producer is broken, so its suite must not pass.
- Planned results that never arrived are ERROR leaves with line=None. Nested
  results whose parent never printed its own result line get an ERROR parent
  whose `line` is where the nested document began.
"""
from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.results.model import Status, TestResult, rollup

Line = tuple[int, str]
Note = tuple[int, str]  # (line number, diagnostic text): sorted by line when merged

MISSING = "missing: planned but never reported"
NO_RESULT_LINE = "missing: subtests ran but the result line was never printed"
MAX_DIAGNOSTICS = 200  # per test; a guest printing megabytes must not reach results.json

# Timestamp "[    1.234567]" and caller "[    T1]"/"[ C0]" fields, optionally after a
# syslog level "<6>". Exactly one space is dropped: the rest is KTAP indentation.
_PREFIX_RE = re.compile(r"^(?:<\d+>)?(?:\[\s*(?:\d+\.\d+|[TC]\d+)\] ?)*")
_VERSION_RE = re.compile(r"^(?:KTAP version 1|TAP version 1[34])$")
_PLAN_RE = re.compile(r"^1\.\.(\d+)\b")
_RESULT_RE = re.compile(r"^(ok|not ok) (\d+)\b\s*(?:- )?(.*)$")
_DIRECTIVE_RE = re.compile(r"(?:^|\s)#\s*((SKIP|TODO|XFAIL|TIMEOUT|ERROR)\b.*)$", re.IGNORECASE)
_SUBTEST_RE = re.compile(r"^Subtest:\s*(.+)$")
_DIRECTIVE_STATUS = {"SKIP": Status.SKIP, "XFAIL": Status.XFAIL, "TIMEOUT": Status.FAIL, "ERROR": Status.ERROR}


class KtapError(Exception):
    """No KTAP document at all in the input."""


def strip_console_prefix(text: str) -> str:
    """Drop a kernel console prefix and trailing CR/LF; other text is kept as is."""
    return _PREFIX_RE.sub("", text.rstrip("\r\n"), count=1)


@dataclass
class _Tok:
    line: int
    indent: int
    kind: str  # "version" | "plan" | "result" | "diag"
    text: str
    match: re.Match[str] | None = None  # a result's: (ok|not ok, number, the rest)

    def result(self) -> tuple[str, str, str]:
        assert self.match is not None, "only result tokens have a match"
        ok, number, rest = self.match.groups()
        return ok, number, rest


def _tokenize(line: int, raw: str) -> _Tok | None:
    text = strip_console_prefix(raw)
    body = text.lstrip(" \t")
    indent, body = len(text) - len(body), body.rstrip()
    if _VERSION_RE.match(body):
        return _Tok(line, indent, "version", body)
    if m := _PLAN_RE.match(body):
        return _Tok(line, indent, "plan", m[1])
    if m := _RESULT_RE.match(body):
        return _Tok(line, indent, "result", body, m)
    if body.startswith("#"):
        return _Tok(line, indent, "diag", body[2:] if body.startswith("# ") else body[1:])
    return None  # console noise


def _classify(ok: bool, rest: str) -> tuple[Status, str | None, str]:
    """Status, normalised directive and name from the text after the test number."""
    m = _DIRECTIVE_RE.search(rest)
    if not m:
        return (Status.PASS if ok else Status.FAIL), None, rest.strip()
    word = m[2].upper()
    directive = (word + m[1][len(word):]).strip()
    # TODO is the only directive whose meaning depends on ok/not ok.
    status = _DIRECTIVE_STATUS.get(word) or (Status.PASS if ok else Status.XFAIL)
    return status, directive, rest[: m.start()].strip()


def _missing(name: str) -> TestResult:
    return TestResult(name=name, status=Status.ERROR, diagnostics=(MISSING,))


class _Notes:
    """One test's diagnostics, bounded: the first and last MAX_DIAGNOSTICS // 2 kept, the rest counted."""

    def __init__(self, notes: Iterable[Note] = ()) -> None:
        self.head: list[Note] = []
        self.tail: deque[Note] = deque(maxlen=MAX_DIAGNOSTICS // 2)
        self.dropped = 0
        for note in notes:
            self.add(note)

    def add(self, note: Note) -> None:
        if len(self.head) < MAX_DIAGNOSTICS // 2:
            self.head.append(note)
            return
        self.dropped += len(self.tail) == self.tail.maxlen
        self.tail.append(note)

    def __bool__(self) -> bool:
        return bool(self.head)

    def merged(self, *others: _Notes) -> _Notes:
        """All notes in line order, bounded again; dropped counts add up."""
        out = _Notes(sorted(note for notes in (self, *others) for note in (*notes.head, *notes.tail)))
        out.dropped += self.dropped + sum(o.dropped for o in others)
        return out

    def texts(self, log: str) -> list[str]:
        gap = [f"... {self.dropped} more diagnostic lines dropped (see {log})"] if self.dropped else []
        return [text for _, text in self.head] + gap + [text for _, text in self.tail]


@dataclass
class _Doc:
    """One KTAP level (document) as parsed."""

    line: int
    name: str | None = None
    plan: int | None = None
    header: _Notes = field(default_factory=_Notes)
    trailing: _Notes = field(default_factory=_Notes)
    results: list[TestResult] = field(default_factory=list)

    @property
    def diag_only(self) -> bool:
        return self.plan is None and not self.results


class _Parser:
    def __init__(self, toks: Iterator[_Tok], log: str) -> None:
        self.toks, self.log = toks, log
        self.tok = next(toks, None)

    def level(self, indent: int, names: Sequence[str] = ()) -> _Doc:
        """Parse the document at `indent` until a shallower line or a new document;
        `names`: its tests' names in order, for results that never came."""
        assert self.tok is not None, "a level starts at a token"
        doc = _Doc(line=self.tok.line)
        pending = _Notes()
        seen: dict[int, int] = {}  # test number -> line of its first result
        hint: str | None = None
        children: _Doc | None = None
        started = False
        while (tok := self.tok) is not None:
            if tok.indent < indent or (tok.kind == "version" and tok.indent == indent and started):
                break
            started = True
            if tok.indent > indent:
                child = self.level(tok.indent)
                if child.diag_only:  # indented chatter, not a nested test
                    pending = pending.merged(child.header, child.trailing)
                    hint = child.name or hint
                    continue
                if children is not None:
                    doc.results.append(self._orphan(children, len(doc.results) + 1, hint, seen))
                    hint = None
                children = child
                continue
            self.tok = next(self.toks, None)
            if tok.kind == "plan":
                doc.plan = int(tok.text)
            elif tok.kind == "diag":
                name = m[1].strip() if (m := _SUBTEST_RE.match(tok.text)) else None
                if doc.plan is None and not doc.results and children is None and not pending:
                    doc.name = name or doc.name
                    if name is None:
                        doc.header.add((tok.line, tok.text))
                elif name is not None:
                    if not doc.results and children is None:  # the first test's header ends the preamble
                        doc.header, pending = doc.header.merged(pending), _Notes()
                    hint = name
                else:
                    pending.add((tok.line, tok.text))
            elif tok.kind == "result":
                number = int(tok.result()[1])
                doc.results.append(self._result(tok, pending, children, hint, len(seen) + 1, seen.get(number)))
                seen.setdefault(number, tok.line)
                pending, children, hint = _Notes(), None, None
        if children is not None:
            doc.results.append(self._orphan(children, len(doc.results) + 1, hint, seen))
            hint = None
        doc.trailing = pending
        for k in range(1, (doc.plan or 0) + 1):
            if k not in seen:
                doc.results.append(_missing(hint or (names[k - 1] if k <= len(names) else f"test {k} (missing)")))
                hint = None
        return doc

    def _result(self, tok: _Tok, notes: _Notes, children: _Doc | None, hint: str | None, expected: int,
                first_line: int | None) -> TestResult:
        ok, num, rest = tok.result()
        status, directive, name = _classify(ok == "ok", rest)
        subtests: tuple[TestResult, ...] = ()
        if children is not None:
            subtests = tuple(children.results)
            notes = notes.merged(children.header, children.trailing)
            name = name or children.name or ""
        texts = notes.texts(self.log)
        if first_line is not None:
            texts.append(f"duplicate test number {num} (also at line {first_line}): the KTAP producer is broken")
            status = status if status.is_failure else Status.ERROR
        elif int(num) != expected:
            texts.append(f"expected test {expected}, got {num}")
        # A parent line is printed by the same code that may have lost track of a
        # child; the leaves are the evidence, so "ok" over a failure is not trusted.
        if status is Status.PASS and any(leaf.status.is_failure for s in subtests for leaf in s.leaves()):
            status = Status.FAIL
            texts.append("reported ok but a subtest failed")
        return TestResult(name=name or hint or f"test {num}", status=status, diagnostics=tuple(texts),
                          directive=directive, subtests=subtests, line=tok.line)

    def _orphan(self, children: _Doc, number: int, hint: str | None, seen: dict[int, int]) -> TestResult:
        """The parent of nested results whose own result line never came."""
        seen.setdefault(number, children.line)
        notes = children.header.merged(children.trailing).texts(self.log)
        return TestResult(name=children.name or hint or f"test {number} (missing)", status=Status.ERROR,
                          diagnostics=(*notes, NO_RESULT_LINE), subtests=tuple(children.results),
                          line=children.line)


def _overall(results: list[TestResult], plan: int | None) -> Status:
    """The rolled-up status of the leaves; with none, an empty plan is a skip."""
    return rollup(results) or (Status.SKIP if plan == 0 else Status.ERROR)


def parse_ktap(lines: Iterable[Line], name: str, log: str = "the full log", names: Sequence[str] = ()) -> TestResult:
    """Parse the first KTAP document in `lines` into one group result called `name`.

    `lines` is read lazily and only up to the end of that document; `log` names
    where the input can be read in full (e.g. "workload.ktap"), for diagnostics
    that had to be dropped; `names` are the top level's test names in order, as
    the producer lists them, for tests that never reported.
    """
    toks = (tok for number, raw in lines if (tok := _tokenize(number, raw)))
    parser = _Parser(itertools.dropwhile(lambda tok: tok.kind != "version", toks), log)
    if parser.tok is None:
        raise KtapError("no 'KTAP version 1' or 'TAP version 13/14' line found")
    doc = parser.level(parser.tok.indent, names)
    status = _overall(doc.results, doc.plan)
    texts = doc.header.merged(doc.trailing).texts(log)
    if not doc.results and status is Status.ERROR:
        texts.append("no test results")
    return TestResult(name=name, status=status, diagnostics=tuple(texts),
                      subtests=tuple(doc.results), line=doc.line)


def numbered_lines(path: Path) -> Iterator[Line]:
    """A file's lines numbered from 1, read as they are needed (never the whole
    file at once). A line ends at "\n" only, as a program's stdout is counted."""
    with path.open(encoding="utf-8", errors="replace", newline="\n") as f:
        for number, text in enumerate(f, 1):
            yield number, text.rstrip("\n")


def split_documents(lines: Iterable[Line]) -> list[list[Line]]:
    """Split a log into top-level KTAP documents, each starting at its version line.

    Lines before the first version line are dropped; noise between documents stays
    with the preceding one (parse_ktap ignores it).
    """
    docs: list[list[Line]] = []
    base: int | None = None
    for number, raw in lines:
        tok = _tokenize(number, raw)
        if tok is not None and tok.kind == "version" and (base is None or tok.indent <= base):
            base = tok.indent if base is None else base
            docs.append([])
        if docs:
            docs[-1].append((number, raw))
    return docs
