"""Results stage: turn KTAP v1 output captured from a guest console into TestResults.

Input is console.log as (line number, text) pairs. Kernel printk prefixes and
unrelated console noise are tolerated; only lines shaped like KTAP count. The
output is one TestResult tree per KTAP document (see model.py), handed on to
the report stage; every `line` points back into console.log.

Choices where Documentation/dev-tools/ktap.rst leaves room:
- "# ..." lines before a document's plan, first result and first nested
  document describe that document: they go to the result line that closes it
  (for the top level, to the group parse_ktap returns). Later "# ..." lines go
  to the next result at their indentation; any left after a level's last
  result go to the parent's next result (top level: to the group).
- "# Subtest: X" names the document it heads; after a plan or result it names
  the next result at its level. Such names are used for results that never came.
- Planned results that never arrived are ERROR leaves with line=None. Nested
  results whose parent never printed its own result line get an ERROR parent
  whose `line` is where the nested document began.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.results.model import Status, TestResult, rollup

Line = tuple[int, str]
Note = tuple[int, str]  # (line number, diagnostic text): sorted by line when merged

MISSING = "missing: planned but never reported"
NO_RESULT_LINE = "missing: subtests ran but the result line was never printed"

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


@dataclass
class _Doc:
    """One KTAP level (document) as parsed."""

    line: int
    name: str | None = None
    plan: int | None = None
    header: list[Note] = field(default_factory=list)
    trailing: list[Note] = field(default_factory=list)
    results: list[TestResult] = field(default_factory=list)

    @property
    def diag_only(self) -> bool:
        return self.plan is None and not self.results


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.pos = 0

    def level(self, indent: int) -> _Doc:
        """Parse the document at `indent` until a shallower line or a new document."""
        doc = _Doc(line=self.toks[self.pos].line)
        pending: list[Note] = []
        seen: set[int] = set()
        hint: str | None = None
        children: _Doc | None = None
        started = False
        while self.pos < len(self.toks):
            tok = self.toks[self.pos]
            if tok.indent < indent or (tok.kind == "version" and tok.indent == indent and started):
                break
            started = True
            if tok.indent > indent:
                child = self.level(tok.indent)
                if child.diag_only:  # indented chatter, not a nested test
                    pending += child.header + child.trailing
                    hint = child.name or hint
                    continue
                if children is not None:
                    doc.results.append(self._orphan(children, len(doc.results) + 1, hint, seen))
                    hint = None
                children = child
                continue
            self.pos += 1
            if tok.kind == "plan":
                doc.plan = int(tok.text)
            elif tok.kind == "diag":
                name = m[1].strip() if (m := _SUBTEST_RE.match(tok.text)) else None
                if doc.plan is None and not doc.results and children is None and not pending:
                    doc.header.append((tok.line, tok.text))
                    doc.name = name or doc.name
                else:
                    pending.append((tok.line, tok.text))
                    hint = name or hint
            elif tok.kind == "result":
                doc.results.append(self._result(tok, pending, children, hint, len(doc.results) + 1))
                seen.add(int(tok.result()[1]))
                pending, children, hint = [], None, None
        if children is not None:
            doc.results.append(self._orphan(children, len(doc.results) + 1, hint, seen))
            hint = None
        doc.trailing = pending
        for k in range(1, (doc.plan or 0) + 1):
            if k not in seen:
                doc.results.append(_missing(hint or f"test {k} (missing)"))
                hint = None
        return doc

    @staticmethod
    def _result(tok: _Tok, notes: list[Note], children: _Doc | None, hint: str | None, expected: int) -> TestResult:
        ok, num, rest = tok.result()
        status, directive, name = _classify(ok == "ok", rest)
        subtests: tuple[TestResult, ...] = ()
        if children is not None:
            subtests = tuple(children.results)
            notes = notes + children.header + children.trailing
            name = name or children.name or ""
        texts = [text for _, text in sorted(notes)]
        if int(num) != expected:
            texts.append(f"expected test {expected}, got {num}")
        # A parent line is printed by the same code that may have lost track of a
        # child; the leaves are the evidence, so "ok" over a failure is not trusted.
        if status is Status.PASS and any(leaf.status.is_failure for s in subtests for leaf in s.leaves()):
            status = Status.FAIL
            texts.append("reported ok but a subtest failed")
        return TestResult(name=name or hint or f"test {num}", status=status, diagnostics=tuple(texts),
                          directive=directive, subtests=subtests, line=tok.line)

    @staticmethod
    def _orphan(children: _Doc, number: int, hint: str | None, seen: set[int]) -> TestResult:
        """The parent of nested results whose own result line never came."""
        seen.add(number)
        notes = [text for _, text in sorted(children.header + children.trailing)]
        return TestResult(name=children.name or hint or f"test {number} (missing)", status=Status.ERROR,
                          diagnostics=(*notes, NO_RESULT_LINE), subtests=tuple(children.results),
                          line=children.line)


def _overall(results: list[TestResult], plan: int | None) -> Status:
    """The rolled-up status of the leaves; with none, an empty plan is a skip."""
    return rollup(results) or (Status.SKIP if plan == 0 else Status.ERROR)


def parse_ktap(lines: Iterable[Line], name: str) -> TestResult:
    """Parse the first KTAP document in `lines` into one group result called `name`."""
    toks = [tok for number, raw in lines if (tok := _tokenize(number, raw))]
    start = next((i for i, tok in enumerate(toks) if tok.kind == "version"), None)
    if start is None:
        raise KtapError("no 'KTAP version 1' or 'TAP version 13/14' line found")
    doc = _Parser(toks[start:]).level(toks[start].indent)
    status = _overall(doc.results, doc.plan)
    texts = [text for _, text in sorted(doc.header + doc.trailing)]
    if not doc.results and status is Status.ERROR:
        texts.append("no test results")
    return TestResult(name=name, status=status, diagnostics=tuple(texts),
                      subtests=tuple(doc.results), line=doc.line)


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
