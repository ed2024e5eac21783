"""Read scenario files (``*.tdx``) into plain data.

The format is ``../shared/scenario-format.md`` (§1 lines, §2 steps, §5 threads and faults).
This module knows no TDX rule beyond the step table: step names, operand kinds, optional
operands and bindings come from :mod:`tdxcheck.model.steps`, status names and the
nondeterministic statuses from :mod:`tdxcheck.model.status`.  Every malformed input is one
:class:`ScenarioError` whose text is ``FILE:LINE: reason`` (the CLI prints it and exits 2).

Decisions where the contract is silent:

* ``#`` starts a comment anywhere on a line; ``Step.text`` is the line without its comment,
  stripped.  ``-> STATUS`` must be the last thing on a line (``->STATUS`` also works).
* Names (td, vp, page, thread) are ``[A-Za-z_][A-Za-z0-9_]*``.  td, vp and page names share
  one namespace: a name that is a page cannot also be a td or a vp (a typo such as
  ``page=td0`` is reported instead of silently naming a new page).  Thread names are separate.
* Integers are decimal or ``0x`` hex.  ``gpa`` must be a 64-bit value (a misaligned,
  shared or too-wide GPA is the module's to refuse; ``tdh_mr_extend`` takes 256-byte
  chunks); ``level`` is 0..7 (the RCX bits the
  wrapper puts it in; a level beyond the S-EPT is the module's to refuse).  A raw ``seamcall``
  register the leaf reads as a page takes a page name or 0 (the NULL page); one it reads as
  an integer takes any 64-bit unsigned value; one it does not read takes either.
* ``cpu=`` is accepted on every SEAMCALL step (typed or raw, it is in the table's
  ``optional``) and on steps whose operands list ``cpu`` (``host_write``); other host and
  guest actions reject it.  It defaults to 0.  ``td_exit`` without ``reason=`` gets
  ``reason=normal`` (the first of ``TD_EXIT_REASONS``) filled into its operands.
* A td exists from the first ``tdh_mng_create td=X`` (in file order, threads included); a
  vp from the first ``tdh_vp_create vp=V``.  Using either earlier is an error.  Creating it
  again with the same page (and, for a vp, the same td) is a retry and is accepted; with
  another page it is an error naming the first line.  Every td and vp gets an entry (maybe
  empty) in ``td_tdcs`` / ``vp_tdcx``; an addcx step appends its page unless already listed
  (a retry after a fault does not list a page twice).
* Raw ``seamcall`` registers only name pages (and make hidden objects, next point); they
  bind nothing else (a raw ``TDH.MNG.ADDCX`` does not touch ``td_tdcs``) and their integers
  do not enter ``hkids``/``gpas``.
* Hidden objects: ``seamcall TDH.MNG.CREATE rcx=P ...`` with ``P`` a page name creates a td
  named ``@P`` bound to ``P``; ``seamcall TDH.VP.CREATE rcx=P rdx=T ...`` a vp named ``@P``
  bound to ``P`` whose td is the first td whose TDR is ``T`` (``None`` if there is none or
  ``rdx`` is not a page).  ``@`` cannot start a user name, so a hidden object never clashes
  with a user's td or vp; the model looks them up as ``"@" + page``.  A later raw create of
  the same ``@P`` keeps the first binding.  With an integer ``rcx`` nothing is created.
* ``expected_text`` and ``fault`` are normalised: ``NAME`` without an operand id, else
  ``NAME|OPID`` with the operand id's name when it has one (``TDX_OPERAND_BUSY|0xBA`` gives
  ``TDX_OPERAND_BUSY|KOT``), else its hex value.
* ``config`` must come before any step or ``thread`` line; with no key it keeps the defaults.
  A file without any step is an error reported at its last line (line 1 if it is empty).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tdxcheck.model.actions import raw_register
from tdxcheck.model.state import Platform
from tdxcheck.model.status import (
    NONDETERMINISTIC,
    OperandId,
    Status,
    StatusSyntaxError,
    parse_status,
    status_class,
)
from tdxcheck.model.steps import (
    SEAMCALL_REGISTERS,
    STEP_BY_NAME,
    STEPS,
    TD_EXIT_REASONS,
    Kind,
    StepSig,
    hidden_object,
)

__all__ = [
    "SEAMCALL_LEAVES",
    "Config",
    "InputError",
    "Scenario",
    "ScenarioError",
    "Step",
    "config_values",
    "parse_bytes",
    "parse_file",
    "parse_text",
]

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT_RE = re.compile(r"-?(?:0[xX][0-9A-Fa-f]+|[0-9]+)\Z")
_U64 = (1 << 64) - 1

#: the leaves the untyped ``seamcall`` form accepts: the spec names used in the step table
SEAMCALL_LEAVES: tuple[str, ...] = tuple(dict.fromkeys(s.leaf for s in STEPS if s.leaf))

_NONDET_CLASSES = frozenset(int(s) for s in NONDETERMINISTIC)


class InputError(ValueError):
    """Bad input that is not a line of a file: an option, a ``key=value``, a name (a
    configuration, an invariant, a check, a mutant).  The CLI prints ``tdxcheck: error: TEXT``
    and exits 2.  Anything else raised inside tdxcheck is an internal error (exit 4)."""


class ScenarioError(Exception):
    """Bad input: ``str(e) == f"{file}:{line}: {reason}"`` (line 0: the file as a whole)."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(file, line, reason)
        self.file = file
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        # line 0: the file as a whole (it cannot be read), so no line number is named
        return f"{self.file}:{self.line}: {self.reason}" if self.line else \
            f"{self.file}: {self.reason}"


#: config key -> (minimum, maximum or None); scenario-format.md §1.  The maxima are stated
#: up front so that a typo cannot ask for a state the model would take minutes and gigabytes
#: to build: each bounds a dimension of the state layout (``model/state.py``: per-package
#: bitmaps and caches, one KOT entry per HKID, a dirty bit per page, KeyID and package), and
#: at the maxima together a replay still builds in well under a second.  They are above any
#: platform TDX runs on (8 sockets; TDX 1.5 takes at most a few hundred private KeyIDs).
_CONFIG_LIMITS: dict[str, tuple[int, int | None]] = {
    "packages": (1, 8),
    "cpus_per_package": (1, 64),
    "hkids": (2, 256),
    "tdcs_pages": (1, 16),
    "tdcx_pages": (0, 16),
    "max_vcpus": (1, 1024),
    "sept_levels": (2, 5),
    "clflush_before_alloc": (0, 1),
    "clear_before_reuse": (0, 1),
    "wrapper_clflush": (0, 1),
}


def config_values(pairs: Sequence[tuple[str, str]],
                  extra: Mapping[str, tuple[int, int | None]] | None = None,
                  prefix: str = "") -> dict[str, int]:
    """The one validation of configuration values, wherever they come from (a scenario's
    ``config`` line, ``key=value`` overrides on the command line): known keys (with a
    suggestion for a typo), no key twice, integers within ``_CONFIG_LIMITS`` (and ``extra``:
    the object counts of ``--host any``).  Raises ``InputError`` with the reason; ``prefix``
    starts each message (``"config "`` for a file's line)."""
    limits = {**_CONFIG_LIMITS, **(extra or {})}
    values: dict[str, int] = {}
    for key, value in pairs:
        if key not in limits:
            raise InputError(f"unknown {prefix}key {key!r}{_suggest(key, limits)}"
                             f" (keys: {', '.join(limits)})")
        if key in values:
            raise InputError(f"duplicate {prefix}key {key}=")
        try:
            v = _parse_int(value)
        except ValueError as e:
            raise InputError(f"{prefix}{key}: {e}") from None
        lo, hi = limits[key]
        if v < lo or (hi is not None and v > hi):
            why = " (the limit tdxcheck's state layout is built for)" if hi and v > hi \
                and hi > 1 and key != "sept_levels" else ""
            raise InputError(f"{prefix}{key}={value}: must be {_limit_text(lo, hi)}{why}")
        values[key] = v
    return values


def _limit_text(lo: int, hi: int | None) -> str:
    if hi is None:
        return f">= {lo}"
    if (lo, hi) == (0, 1):
        return "0 or 1"
    return f"in {lo}..{hi}"


@dataclass(frozen=True)
class Config(Platform):
    """The ``config`` line (scenario-format.md §1): the model's ``Platform`` with its
    defaults, each value checked against its limits."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            lo, hi = _CONFIG_LIMITS[f.name]
            bad_type = not isinstance(v, int) or isinstance(v, bool)
            if bad_type or v < lo or (hi is not None and v > hi):
                raise ValueError(f"{f.name} must be an integer {_limit_text(lo, hi)}, not {v!r}")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Step:
    """One step line.

    ``operands`` of a typed step are keyed by operand kind value (``td``, ``vp``, ``page``,
    ``hkid``, ``gpa``, ``level``, ``resume``, ``reason``): names as ``str``, numbers as ``int``,
    ``page`` of ``page_alloc``/``page_free`` a list of names.  ``cpu`` is never an operand
    (it is ``cpu``).  For ``seamcall``: ``{"leaf": "TDH.MNG.ADDCX", "rcx": ..., "rdx": ...,
    "r8": ...}`` with absent registers omitted, each an ``int`` or a page name.
    """

    line: int
    name: str  # a step name of model.steps, or "seamcall"
    operands: dict[str, Any]
    cpu: int = 0
    expected: int | None = None  # status code of ``-> STATUS``
    expected_has_opid: bool = False
    expected_text: str | None = None  # normalised ``-> STATUS`` text
    fault: str | None = None  # normalised ``fault=`` text, e.g. ``TDX_OPERAND_BUSY|KOT``
    thread: str | None = None  # None: the common prefix
    text: str = ""  # the source line without its comment

    @property
    def leaf(self) -> str | None:
        """The SEAMCALL leaf spec name, or None for host and guest actions."""
        if self.name == "seamcall":
            return self.operands["leaf"]
        return STEP_BY_NAME[self.name].leaf


@dataclass
class Scenario:
    """A parsed scenario; the name lists are in order of first appearance."""

    file: str
    config: Config = field(default_factory=Config)
    config_line: int | None = None
    steps: list[Step] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    tds: list[str] = field(default_factory=list)
    vps: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)
    hkids: list[int] = field(default_factory=list)
    gpas: list[int] = field(default_factory=list)
    td_tdr: dict[str, str] = field(default_factory=dict)
    td_tdcs: dict[str, list[str]] = field(default_factory=dict)
    vp_tdvpr: dict[str, str] = field(default_factory=dict)
    vp_td: dict[str, str | None] = field(default_factory=dict)
    vp_tdcx: dict[str, list[str]] = field(default_factory=dict)

    def prefix(self) -> list[Step]:
        """The steps before the first ``thread`` line."""
        return [s for s in self.steps if s.thread is None]

    def thread_steps(self, name: str) -> list[Step]:
        return [s for s in self.steps if s.thread == name]


# --------------------------------------------------------------------------- helpers


def _suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for a close match, case-insensitively; else ``""``."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]}?)" if close else ""


def _status_text(code: int, has_opid: bool) -> str:
    base = Status(status_class(code)).name
    if not has_opid:
        return base
    detail = code & 0xFFFFFFFF
    try:
        return f"{base}|{OperandId(detail).name}"
    except ValueError:
        return f"{base}|0x{detail:X}"


def _parse_status(text: str) -> tuple[int, bool, str]:
    """(code, has_operand_id, normalised text); raises ValueError with a useful message."""
    if not text:
        raise ValueError("missing status name")
    try:
        code, has_opid = parse_status(text)
    except StatusSyntaxError as e:
        raise ValueError(str(e)) from None
    name = text.partition("|")[0]
    if has_opid and name in Status.__members__ and \
            not 0 <= code - int(Status[name]) <= 0xFFFFFFFF:
        raise ValueError(f"operand id in {text!r} must be in 0..0xFFFFFFFF")
    return code, has_opid, _status_text(code, has_opid)


def _parse_int(text: str) -> int:
    if not _INT_RE.match(text):
        raise ValueError(f"bad integer {text!r} (write decimal or 0x hex)")
    return int(text, 0) if not re.match(r"-?0[0-9]", text) else int(text, 10)


def _leaf_to_wrappers() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in STEPS:
        if s.leaf:
            out.setdefault(s.leaf, []).append(s.name)
    return out


_WRAPPERS_OF_LEAF = _leaf_to_wrappers()


def _file_key(kind: Kind) -> str:
    """The ``key=`` a scenario file writes for an operand kind (a page list is ``page=``)."""
    return "page" if kind is Kind.PAGES else kind.value


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, file: str, fault_table: Mapping[str, Sequence[str]] | None) -> None:
        self.file = file
        self.fault_table = fault_table
        self.sc = Scenario(file=file)
        self.thread: str | None = None
        self.thread_line: dict[str, int] = {}
        self.thread_nsteps: dict[str, int] = {}
        # user names: name -> (kind "td" | "vp" | "page", line first named)
        self.names: dict[str, tuple[str, int]] = {}
        self.td_line: dict[str, int] = {}  # line that bound each td
        self.vp_line: dict[str, int] = {}
        self.line = 0

    # ---- errors
    def err(self, reason: str) -> ScenarioError:
        return ScenarioError(self.file, self.line, reason)

    # ---- top level
    def run(self, text: str) -> Scenario:
        lines = text.splitlines()
        for i, raw in enumerate(lines, 1):
            self.line = i
            body = raw.split("#", 1)[0].strip()
            if not body:
                continue
            toks = body.split()
            head = toks[0]
            if head == "config":
                self.config(toks)
            elif head == "thread":
                self.thread_decl(toks)
            else:
                self.step(toks, body)
        self.finish(len(lines))
        return self.sc

    def finish(self, nlines: int) -> None:
        for t in self.sc.threads:
            if not self.thread_nsteps[t]:
                self.line = self.thread_line[t]
                raise self.err(f"thread {t} has no steps")
        if not self.sc.steps:
            self.line = max(nlines, 1)
            raise self.err("no steps: a scenario needs at least one step")

    # ---- config
    def config(self, toks: list[str]) -> None:
        sc = self.sc
        if sc.config_line is not None:
            raise self.err(f"config given twice (first on line {sc.config_line})")
        if sc.steps or sc.threads:
            raise self.err("config must come before the first step and thread")
        pairs = []
        for tok in toks[1:]:
            if tok.startswith("->"):
                raise self.err("config takes no '-> STATUS'")
            pairs.append(self.key_value(tok))
        try:
            values = config_values(pairs, prefix="config ")
        except InputError as e:
            raise self.err(str(e)) from None
        sc.config = Config(**values)
        sc.config_line = self.line

    # ---- thread
    def thread_decl(self, toks: list[str]) -> None:
        if len(toks) < 2:
            raise self.err("thread needs a name: thread NAME")
        if len(toks) > 2:
            raise self.err(f"unexpected {toks[2]!r} after thread {toks[1]}: "
                           "write one thread NAME per line")
        name = toks[1]
        if not _NAME_RE.match(name):
            raise self.err(f"bad thread name {name!r} (names are [A-Za-z_][A-Za-z0-9_]*)")
        if name in self.thread_line:
            raise self.err(f"duplicate thread {name} (first on line {self.thread_line[name]})")
        # the thread being closed must have had steps
        if self.thread is not None and not self.thread_nsteps[self.thread]:
            prev = self.thread
            self.line = self.thread_line[prev]
            raise self.err(f"thread {prev} has no steps")
        self.thread = name
        self.thread_line[name] = self.line
        self.thread_nsteps[name] = 0
        self.sc.threads.append(name)

    # ---- tokens
    def key_value(self, tok: str) -> tuple[str, str]:
        key, eq, value = tok.partition("=")
        if not eq or not key or not value:
            raise self.err(f"malformed operand {tok!r}: expected key=value")
        return key, value

    def split_tail(self, toks: list[str]) -> tuple[list[str], str | None]:
        """Operand tokens, and the ``-> STATUS`` text if any (it must end the line)."""
        for i, tok in enumerate(toks):
            if tok.startswith("->"):
                rest = toks[i + 1:]
                status = tok[2:]
                if not status:
                    if not rest:
                        raise self.err("'->' needs a status name after it")
                    status, rest = rest[0], rest[1:]
                if rest:
                    raise self.err(f"unexpected {rest[0]!r} after '-> {status}': "
                                   "the expected status ends the line")
                return toks[:i], status
        return toks, None

    # ---- steps
    def step(self, toks: list[str], body: str) -> None:
        name = toks[0]
        if name == "seamcall":
            st = self.seamcall_step(toks, body)
        elif name in STEP_BY_NAME:
            st = self.typed_step(STEP_BY_NAME[name], toks, body)
        else:
            raise self.err(self.unknown_step(name))
        self.sc.steps.append(st)
        if self.thread is not None:
            self.thread_nsteps[self.thread] += 1

    def unknown_step(self, name: str) -> str:
        if name in _WRAPPERS_OF_LEAF:
            w = " or ".join(_WRAPPERS_OF_LEAF[name])
            return (f"unknown step {name!r}: a leaf is called through its wrapper ({w}) "
                    f"or as 'seamcall {name} ...'")
        choices = [s.name for s in STEPS] + ["seamcall", "config", "thread"]
        return f"unknown step {name!r}{_suggest(name, choices)}"

    def expectation(
        self, st_name: str, may_return: bool, status: str | None
    ) -> tuple[int | None, bool, str | None]:
        if status is None:
            return None, False, None
        if not may_return:
            raise self.err(f"{st_name} is a host action and returns no status: drop '-> {status}'")
        try:
            return _parse_status(status)
        except ValueError as e:
            raise self.err(f"bad expected status: {e}") from None

    def fault_of(self, leaf: str | None, st_name: str, value: str) -> str:
        if leaf is None:
            raise self.err(f"fault= is only for SEAMCALL steps; {st_name} is not a SEAMCALL")
        try:
            code, has_opid, text = _parse_status(value)
        except ValueError as e:
            raise self.err(f"bad fault: {e}") from None
        if status_class(code) not in _NONDET_CLASSES:
            ok = ", ".join(s.name for s in NONDETERMINISTIC)
            raise self.err(f"fault={value}: not a status a leaf returns nondeterministically "
                           f"(use one of {ok})")
        if self.fault_table is not None:
            accepted = list(self.fault_table.get(leaf, ()))
            norm = []
            for a in accepted:
                try:
                    c, h, t = _parse_status(a)
                except ValueError:
                    norm.append((None, a))
                else:
                    norm.append((status_class(c), t))
            if has_opid:
                hit = any(t == text for _, t in norm)
            else:
                hit = any(c == status_class(code) for c, _ in norm)
            if not hit:
                have = ", ".join(accepted) or "none"
                raise self.err(f"fault={value}: {leaf} cannot return {text} (its faults: {have})")
        return text

    def check_cpu(self, value: str) -> int:
        try:
            cpu = _parse_int(value)
        except ValueError as e:
            raise self.err(f"cpu: {e}") from None
        n = self.sc.config.cpus
        if not 0 <= cpu < n:
            raise self.err(f"cpu={value} out of range: this platform has cpus 0..{n - 1}")
        return cpu

    # ---- names
    def name_value(self, key: str, value: str) -> str:
        if "," in value:
            raise self.err(f"{key}={value}: only page_alloc and page_free take a comma list")
        if not _NAME_RE.match(value):
            raise self.err(f"bad {key} name {value!r} (names are [A-Za-z_][A-Za-z0-9_]*)")
        return value

    def use_page(self, name: str) -> None:
        kind = self.names.get(name)
        if kind is None:
            self.names[name] = ("page", self.line)
            self.sc.pages.append(name)
        elif kind[0] != "page":
            raise self.err(f"{name} is a {kind[0]} (line {kind[1]}), not a page")

    def need_td(self, name: str) -> None:
        if name in self.sc.td_tdr:
            return
        kind = self.names.get(name)
        if kind is not None:
            raise self.err(f"{name} is a {kind[0]} (line {kind[1]}), not a td")
        raise self.err(f"td {name} is used before it exists (no earlier tdh_mng_create td={name})")

    def need_vp(self, name: str) -> None:
        if name in self.sc.vp_tdvpr:
            return
        kind = self.names.get(name)
        if kind is not None:
            raise self.err(f"{name} is a {kind[0]} (line {kind[1]}), not a vp")
        raise self.err(f"vp {name} is used before it exists (no earlier tdh_vp_create vp={name})")

    def new_name(self, name: str, kind: str) -> None:
        have = self.names.get(name)
        if have is not None and have[0] != kind:
            raise self.err(f"{name} is a {have[0]} (line {have[1]}), not a {kind}")
        if have is None:
            self.names[name] = (kind, self.line)

    # ---- typed steps
    def typed_step(self, sig: StepSig, toks: list[str], body: str) -> Step:
        optoks, status = self.split_tail(toks[1:])
        kinds = list(sig.operands) + [k for k in sig.optional if k not in sig.operands]
        by_key: dict[str, Kind] = {_file_key(k): k for k in kinds}
        allowed = list(by_key) + (["fault"] if sig.is_seamcall else [])
        raw: dict[str, str] = {}
        order: list[str] = []
        for tok in optoks:
            key, value = self.key_value(tok)
            if key == "fault" and not sig.is_seamcall:
                raise self.err(f"fault= is only for SEAMCALL steps; {sig.name} is not a SEAMCALL")
            if key not in allowed:
                takes = " ".join(f"{k}=" for k in allowed) or "no operands"
                raise self.err(f"unknown operand {key!r} for {sig.name}{_suggest(key, allowed)} "
                               f"(it takes: {takes})")
            if key in raw:
                raise self.err(f"duplicate operand {key}= (already {key}={raw[key]})")
            raw[key] = value
            order.append(key)
        missing = [k for k, kind in by_key.items() if k not in raw and kind not in sig.optional]
        if missing:
            raise self.err(f"{sig.name} needs {' '.join(k + '=' for k in missing)}")

        may_return = sig.is_seamcall or sig.name == "guest_accept"
        expected, has_opid, expected_text = self.expectation(sig.name, may_return, status)
        fault = self.fault_of(sig.leaf, sig.name, raw["fault"]) if "fault" in raw else None
        cpu = self.check_cpu(raw["cpu"]) if "cpu" in raw else 0

        cfg = self.sc.config
        ops: dict[str, Any] = {}
        for key in order:
            if key in ("fault", "cpu"):
                continue
            value = raw[key]
            kind = by_key[key]
            if kind is Kind.PAGES:
                items = value.split(",")
                if any(not p for p in items):
                    raise self.err(f"page={value}: empty name in the page list")
                for p in items:
                    if not _NAME_RE.match(p):
                        raise self.err(f"bad page name {p!r} (names are [A-Za-z_][A-Za-z0-9_]*)")
                ops["page"] = items
            elif kind in (Kind.TD, Kind.VP, Kind.PAGE):
                ops[key] = self.name_value(key, value)
            elif kind is Kind.REASON:
                if value not in TD_EXIT_REASONS:
                    raise self.err(f"unknown reason {value!r}{_suggest(value, TD_EXIT_REASONS)}"
                                   f" (reasons: {', '.join(TD_EXIT_REASONS)})")
                ops[key] = value
            else:
                try:
                    v = _parse_int(value)
                except ValueError as e:
                    raise self.err(f"{key}: {e}") from None
                if kind is Kind.HKID and not 1 <= v < cfg.hkids:
                    raise self.err(f"hkid={value} out of range: private HKIDs are "
                                   f"1..{cfg.hkids - 1} "
                                   f"(config hkids={cfg.hkids})")
                if kind is Kind.LEVEL and not 0 <= v <= 7:
                    # the wrapper puts the level in RCX bits 2:0; a level the S-EPT does not
                    # have (>= sept_levels) is the module's to refuse (OPERAND_INVALID|RCX)
                    raise self.err(f"level={value} out of range: a level is 0..7 (RCX bits "
                                   "2:0)")
                if kind is Kind.GPA:
                    if v < 0:
                        raise self.err(f"gpa={value} is negative")
                    if v > _U64:
                        raise self.err(f"gpa={value} does not fit in 64 bits")
                if kind is Kind.RESUME and v not in (0, 1):
                    raise self.err(f"resume={value}: must be 0 (start) or 1 (resume)")
                ops[key] = v
        if Kind.REASON in kinds and "reason" not in ops:
            ops["reason"] = TD_EXIT_REASONS[0]

        self.bind(sig, ops)
        return Step(self.line, sig.name, ops, cpu, expected, has_opid, expected_text, fault,
                    self.thread, body)

    def bind(self, sig: StepSig, ops: dict[str, Any]) -> None:
        """Check that td/vp exist (or are made here), name pages, record the bindings."""
        sc = self.sc
        name = sig.name
        # pages first: a page named on this line exists from this line
        if "page" in ops:
            for p in ops["page"] if isinstance(ops["page"], list) else [ops["page"]]:
                self.use_page(p)
        if name == "tdh_mng_create":
            td, page = ops["td"], ops["page"]
            if td in sc.td_tdr:
                if sc.td_tdr[td] != page:
                    raise self.err(f"td {td} was created on line {self.td_line[td]} with page "
                                   f"{sc.td_tdr[td]}; a td binds its TDR once (page={page} here)")
            else:
                self.new_name(td, "td")
                sc.td_tdr[td] = page
                sc.td_tdcs[td] = []
                sc.tds.append(td)
                self.td_line[td] = self.line
        elif "td" in ops:
            self.need_td(ops["td"])
        if name == "tdh_vp_create":
            vp, page, td = ops["vp"], ops["page"], ops["td"]
            if vp in sc.vp_tdvpr:
                if sc.vp_tdvpr[vp] != page or sc.vp_td[vp] != td:
                    raise self.err(f"vp {vp} was created on line {self.vp_line[vp]} with td="
                                   f"{sc.vp_td[vp]} page={sc.vp_tdvpr[vp]}; a vp binds once "
                                   f"(td={td} page={page} here)")
            else:
                self.new_name(vp, "vp")
                sc.vp_tdvpr[vp] = page
                sc.vp_td[vp] = td
                sc.vp_tdcx[vp] = []
                sc.vps.append(vp)
                self.vp_line[vp] = self.line
        elif "vp" in ops:
            self.need_vp(ops["vp"])
        if name == "tdh_mng_addcx" and ops["page"] not in sc.td_tdcs[ops["td"]]:
            sc.td_tdcs[ops["td"]].append(ops["page"])
        if name == "tdh_vp_addcx" and ops["page"] not in sc.vp_tdcx[ops["vp"]]:
            sc.vp_tdcx[ops["vp"]].append(ops["page"])
        if "hkid" in ops and ops["hkid"] not in sc.hkids:
            sc.hkids.append(ops["hkid"])
        if "gpa" in ops and ops["gpa"] not in sc.gpas:
            sc.gpas.append(ops["gpa"])

    # ---- the untyped form
    def seamcall_step(self, toks: list[str], body: str) -> Step:
        optoks, status = self.split_tail(toks[1:])
        if not optoks or "=" in optoks[0]:
            raise self.err("seamcall needs a leaf: seamcall LEAF rcx=... rdx=... r8=... cpu=N")
        leaf = optoks[0]
        if leaf not in SEAMCALL_LEAVES:
            guess = leaf.upper().replace("_", ".")
            if guess in SEAMCALL_LEAVES:
                hint = f" (did you mean {guess}?)"
            else:
                hint = _suggest(leaf, SEAMCALL_LEAVES)
            raise self.err(f"unknown leaf {leaf!r} for seamcall{hint}")
        allowed = [*SEAMCALL_REGISTERS, "cpu", "fault"]
        raw: dict[str, str] = {}
        for tok in optoks[1:]:
            key, value = self.key_value(tok)
            if key not in allowed:
                raise self.err(f"unknown operand {key!r} for seamcall{_suggest(key, allowed)} "
                               f"(it takes: {' '.join(k + '=' for k in allowed)})")
            if key in raw:
                raise self.err(f"duplicate operand {key}= (already {key}={raw[key]})")
            raw[key] = value
        expected, has_opid, expected_text = self.expectation("seamcall", True, status)
        fault = self.fault_of(leaf, "seamcall", raw["fault"]) if "fault" in raw else None
        cpu = self.check_cpu(raw["cpu"]) if "cpu" in raw else 0
        ops: dict[str, Any] = {"leaf": leaf}
        for key, value in raw.items():
            if key in ("cpu", "fault"):
                continue
            reads = raw_register(leaf, key)
            if _INT_RE.match(value):
                v = _parse_int(value)
                if not 0 <= v <= _U64:
                    raise self.err(f"{key}={value} out of range: a register holds 0..2**64-1")
                if reads == "page" and v != 0:
                    raise self.err(f"{key}={value}: {leaf} reads a page in {key}; write a page "
                                   "name (or 0 for the NULL page): pages are known by name")
                ops[key] = v
            elif _NAME_RE.match(value):
                if reads == "int":
                    raise self.err(f"{key}={value}: {leaf} reads an integer in {key} (a GPA, "
                                   "an HKID or a flag), not a page")
                self.use_page(value)
                ops[key] = value
            else:
                raise self.err(f"bad {key} value {value!r}: "
                               "a register takes an integer or a page name")
        # keep register order rcx, rdx, r8 whatever the text order
        ops = {"leaf": leaf, **{r: ops[r] for r in SEAMCALL_REGISTERS if r in ops}}
        self.hidden_objects(leaf, ops)
        return Step(self.line, "seamcall", ops, cpu, expected, has_opid, expected_text, fault,
                    self.thread, body)

    def hidden_objects(self, leaf: str, ops: dict[str, Any]) -> None:
        """Raw creates get a struct for the model: a td / vp named ``@PAGE`` (``@0`` for the
        NULL page: RCX 0 or absent), ``model.steps.hidden_object``."""
        sc = self.sc
        page = ops.get("rcx", 0)
        hidden = hidden_object(page)
        if leaf == "TDH.MNG.CREATE" and hidden not in sc.td_tdr:
            sc.td_tdr[hidden] = page
            sc.td_tdcs[hidden] = []
            sc.tds.append(hidden)
        elif leaf == "TDH.VP.CREATE" and hidden not in sc.vp_tdvpr:
            tdr = ops.get("rdx")
            td = None
            if isinstance(tdr, str):
                td = next((t for t, p in sc.td_tdr.items() if p == tdr), None)
            sc.vp_tdvpr[hidden] = page
            sc.vp_td[hidden] = td
            sc.vp_tdcx[hidden] = []
            sc.vps.append(hidden)


# --------------------------------------------------------------------------- API


def parse_text(
    text: str,
    file: str = "<string>",
    *,
    fault_table: Mapping[str, Sequence[str]] | None = None,
) -> Scenario:
    """Parse scenario text; ``fault_table`` (leaf spec name -> accepted fault texts such as
    ``TDX_OPERAND_BUSY|KOT``) makes ``fault=`` a leaf cannot return an error."""
    return _Parser(file, fault_table).run(text)


def parse_bytes(
    data: bytes,
    file: str = "<bytes>",
    *,
    fault_table: Mapping[str, Sequence[str]] | None = None,
) -> Scenario:
    """Parse scenario bytes: UTF-8, and a byte that is not is reported at its line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise ScenarioError(file, line, f"not UTF-8 text: byte 0x{data[e.start]:02x} at "
                            f"column {column}") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ScenarioError(file, line, "a NUL character: this is not a text file")
    return parse_text(text, file, fault_table=fault_table)


def parse_file(
    path: str | os.PathLike[str],
    *,
    fault_table: Mapping[str, Sequence[str]] | None = None,
) -> Scenario:
    """Parse a scenario file.

    An unreadable file is ``ScenarioError(path, 0, "cannot read: ...")``; bytes that are not
    UTF-8 are reported at their line (``parse_bytes``).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ScenarioError(name, 0, f"cannot read: {e.strerror or e}") from None
    return parse_bytes(data, name, fault_table=fault_table)
