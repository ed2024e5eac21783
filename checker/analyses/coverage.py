"""Coverage: what the explorer exercised, per wrapper and per status, and what never happened.

``tdxcheck coverage`` walks ``--host any`` breadth-first (``walk``: the states ``check
--all`` explores, in the same order) with the fused successor code's counters on
(``AnyHost(coverage=True)``): every transition's outcome is counted per table entry, as
success or as the index in ``rule.steps`` of the check that failed (or the fault point that
fired).  This module folds those counters into one row per wrapper:

* **enabled**: outcomes counted (the host guard and ``Rule.enabled`` passed), **fired**: of
  them, successes, **new states**: states first reached through this wrapper;
* one cell per status the wrapper's rules can return (read from the rule definitions:
  each ``Check.status`` and ``Fault.status`` in ``rule.steps``, plus ``rule.success``), so
  a status never produced is listed with count 0, and one count per check name;
* the witnesses reached.

With symmetry on (the default) the counts are per explored *canonical* state.  That keeps
"never" exact: the action set names every operand, so it is closed under the renamings,
and an outcome of a concrete state is the same outcome, renamed, of its canonical
representative.  Only the numbers change meaning (orbit representatives, not states).

A saved coverage file is a baseline: ``compare`` lists every cell, check, wrapper or
witness the baseline reached and the current run does not.  Engines return data; the CLI
prints (``coverage_text`` only builds the string).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdxcheck.checker.explore.bfs import make_packer
from tdxcheck.checker.scenario import InputError
from tdxcheck.checker.version import JSON_SCHEMA, config_json, envelope
from tdxcheck.model.actions import Action
from tdxcheck.model.expr import Const
from tdxcheck.model.rule import LEAVES, Fault, Rule
from tdxcheck.model.state import State
from tdxcheck.model.status import status_name
from tdxcheck.properties.witnesses import WITNESSES

#: notes on a status cell that was never reached although the rules list it
NOTE_FAULT = "fault point: needs --faults"
NOTE_CONST = "its check cannot fail in this configuration"


def wrapper_of(action: Action) -> str:
    """The row name of an action: its wrapper (scenario step name); ``td_exit`` by reason."""
    if action.kind == "td_exit":
        return f"td_exit({action.arg('reason')})"
    return str(action.step)


def outcome_status(rule: Rule, where: int) -> int:
    """The status of outcome ``where`` (-1 success, else an index in ``rule.steps``)."""
    return int(rule.success if where < 0 else rule.steps[where].status)


@dataclass
class StatusCell:
    """One (wrapper, status) cell: how often the status was returned, and by which steps."""

    status: str
    count: int = 0
    sources: list[str] = field(default_factory=list)  # "success", "check", "fault"
    checks: list[str] = field(default_factory=list)  # names of the steps that return it
    note: str = ""  # why a never-reached cell is expected (fault, constant check), or ""

    @property
    def hole(self) -> bool:
        """Never reached, and nothing explains it: something the model never exercised."""
        return self.count == 0 and not self.note


@dataclass
class WrapperCoverage:
    wrapper: str
    actions: int = 0  # table entries (operand combinations, fault choices)
    enabled: int = 0
    fired: int = 0
    new_states: int = 0
    statuses: list[StatusCell] = field(default_factory=list)  # success, then rule order
    checks: dict[str, int] = field(default_factory=dict)  # step name -> times it decided
    check_notes: dict[str, str] = field(default_factory=dict)  # why a zero is expected

    def cell(self, status: str) -> StatusCell | None:
        return next((c for c in self.statuses if c.status == status), None)


@dataclass
class Coverage:
    config: str
    description: str
    symmetry: bool
    faults: bool
    ablate: list[str]
    verdict: str
    states: int
    transitions: int
    wrappers: list[WrapperCoverage]
    witnesses: dict[str, bool | None]  # None: the configuration cannot reach it

    @property
    def counting(self) -> str:
        if self.symmetry:
            return ("counts per explored canonical state (symmetry on): each orbit of "
                    "renamed states is counted once; 'never' is exact, since the action "
                    "set is closed under renaming")
        return "counts per explored state (symmetry off)"

    def unreached(self) -> list[tuple[str, StatusCell]]:
        """Every (wrapper, cell) with count 0, holes and explained ones alike."""
        return [(w.wrapper, c) for w in self.wrappers for c in w.statuses if c.count == 0]

    def holes(self) -> list[tuple[str, StatusCell]]:
        return [(w, c) for w, c in self.unreached() if c.hole]

    def to_json(self) -> dict[str, Any]:
        """The coverage fields (``dumps`` puts them under the common JSON envelope)."""
        return {
            "config": self.config,
            "description": self.description,
            "symmetry": self.symmetry,
            "faults": self.faults,
            "ablate": sorted(self.ablate),
            "verdict": self.verdict,
            "states": self.states,
            "transitions": self.transitions,
            "counting": self.counting,
            "wrappers": {
                w.wrapper: {
                    "actions": w.actions,
                    "enabled": w.enabled,
                    "fired": w.fired,
                    "new_states": w.new_states,
                    "statuses": {c.status: {"count": c.count, "sources": c.sources,
                                            "checks": c.checks, "note": c.note}
                                 for c in w.statuses},
                    "checks": dict(w.checks),
                }
                for w in self.wrappers
            },
            "witnesses": dict(self.witnesses),
        }


def dumps(cov: Coverage | dict[str, Any], config: Any = None) -> str:
    """The coverage file (and ``coverage --json``): the common envelope (``version.py``,
    command ``coverage``, ``config`` the configuration's every value), then the coverage;
    sorted keys, one value per line, so diffs stay readable."""
    data = cov.to_json() if isinstance(cov, Coverage) else cov
    if "schema" not in data:
        data = envelope("coverage", data, config=config_json(config) or {"name": data["config"]},
                        host="any")
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


# ------------------------------------------------------------------ collecting
def coverage_of(
    prog: Any,
    new_states_by_edge: Sequence[int],
    *,
    config: str,
    description: str,
    symmetry: bool,
    faults: bool,
    ablate: Sequence[str],
    verdict: str,
    states: int,
    transitions: int,
    witnesses: dict[str, bool],
) -> Coverage:
    """Fold an ``AnyHost(coverage=True)`` program's counters into per-wrapper rows.

    ``witnesses`` maps each witness the run looked for to whether it was reached;
    witnesses the configuration cannot reach are listed as None (not applicable).
    """
    if not getattr(prog, "coverage", False):
        raise ValueError("the program was built without coverage counters "
                         "(AnyHost(..., coverage=True))")
    rows: dict[str, WrapperCoverage] = {}
    # per cell: the notes of the steps that return its status ("" = a live step)
    notes: dict[tuple[str, str], list[str]] = {}

    def add(row: WrapperCoverage, status: str, kind: str, check: str, count: int,
            note: str) -> None:
        cell = row.cell(status)
        if cell is None:
            cell = StatusCell(status)
            row.statuses.append(cell)
        cell.count += count
        if kind not in cell.sources:
            cell.sources.append(kind)
        if check and check not in cell.checks:
            cell.checks.append(check)
        notes.setdefault((row.wrapper, status), []).append(note)

    for eid, entry in enumerate(prog._table):
        ca, fault = entry[0], entry[2]
        rule: Rule = ca.rule
        name = wrapper_of(ca.action)
        row = rows.get(name)
        if row is None:
            row = rows[name] = WrapperCoverage(name)
        row.actions += 1
        base = prog.cov_base[eid]
        counts = prog.cov_counts[base: base + len(rule.steps) + 1]
        row.enabled += sum(counts)
        row.fired += counts[0]
        row.new_states += new_states_by_edge[eid] if eid < len(new_states_by_edge) else 0
        add(row, status_name(rule.success), "success", "", counts[0], "")
        k = -1
        for i, step in enumerate(rule.steps):
            note = ""
            if isinstance(step, Fault):
                k += 1
                kind = "fault"
                if fault != k:
                    note = NOTE_FAULT  # this table entry never takes that fault point
            else:
                kind = "check"
                if isinstance(step.ok, Const) and step.ok.value:
                    note = NOTE_CONST
            add(row, status_name(step.status), kind, step.name, counts[i + 1], note)
            row.checks[step.name] = row.checks.get(step.name, 0) + counts[i + 1]
            notes.setdefault((row.wrapper, "check " + step.name), []).append(note)
    for row in rows.values():
        for name in row.checks:
            ns = notes[(row.wrapper, "check " + name)]
            row.check_notes[name] = "" if "" in ns else "; ".join(sorted(set(ns)))
        for c in row.statuses:
            ns = notes[(row.wrapper, c.status)]
            # one live step makes a zero a real hole; else say why it cannot happen
            c.note = "" if "" in ns else "; ".join(sorted(set(ns)))
    wit: dict[str, bool | None] = {w.id: None for w in WITNESSES}
    for wid, reached in witnesses.items():
        wit[wid] = bool(reached)
    return Coverage(config, description, symmetry, faults, list(ablate), verdict, states,
                    transitions, list(rows.values()), wit)


class TooManyStates(InputError):
    """A walk that passed its ``max_states``."""


@dataclass
class Walk:
    """What one breadth-first walk saw, per state *key* (a signature, the state, or one
    key for all when only the totals matter)."""

    prog: Any
    symmetry: bool
    states: int = 0
    transitions: int = 0
    seconds: float = 0.0
    order: list[Hashable] = field(default_factory=list)  # keys in first-expanded order
    visits: dict[Hashable, int] = field(default_factory=dict)  # key -> states expanded
    acc: dict[Hashable, list[int]] = field(default_factory=dict)  # key -> outcome counters
    changes: dict[tuple[Hashable, int, int, Hashable], int] = field(default_factory=dict)
    errors: list[Hashable] = field(default_factory=list)  # keys of unexpanded error states
    new_states_by_edge: list[int] = field(default_factory=list)
    violated: set[str] = field(default_factory=set)  # invariants some state or step broke
    witnesses: dict[str, bool] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "violated" if self.violated else "holds"

    def loops(self) -> dict[tuple[Hashable, int, int], int]:
        """(key, edge id, status) -> outcomes that left the state unchanged."""
        prog = self.prog
        codes = status_codes(prog)
        out: dict[tuple[Hashable, int, int], int] = {}
        for k, C in self.acc.items():
            for eid, sts in enumerate(codes):
                base = prog.cov_base[eid]
                for j, st in enumerate(sts):
                    c = C[base + j]
                    if c:
                        key = (k, eid, st)
                        out[key] = out.get(key, 0) + c
        for (k, eid, st, _kn), c in self.changes.items():
            out[(k, eid, st)] -= c
        return {key: c for key, c in out.items() if c}


def status_codes(prog: Any) -> list[list[int]]:
    """Per edge id, the status of each counter slot (success, then each rule step)."""
    out = []
    for entry in prog._table:
        rule: Rule = entry[0].rule
        out.append([outcome_status(rule, w) for w in range(-1, len(rule.steps))])
    return out


def _one_key(_s: State, _cn: State | None = None) -> Hashable:
    return 0


def walk(
    prog: Any,
    key_of: Callable[[State], Hashable] = _one_key,
    succ_key: Callable[[State, State], Hashable] = _one_key,
    canon: Callable[[State], State] | None = None,
    max_states: int | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    progress_every: float = 2.0,
    witnesses: Callable[[State], list[str]] | None = None,
    witness_ids: Sequence[str] = (),
) -> Walk:
    """Breadth-first over every reachable state of ``prog`` (``AnyHost(coverage=True)``).

    Expands exactly the states ``explore`` expands, in the same order (an error state is
    reached but not expanded), and counts each expanded state's outcomes once: per
    expanded state ``s`` (canonical with ``canon``) every outcome is counted into
    ``acc[key_of(s)]``, and every state change ``s -> n`` into ``changes[(key_of(s),
    edge, status, succ_key(n, canon(n)))]``.  (``explore`` itself cannot serve here: it
    also calls ``successors`` to rebuild traces, which would count those states again.)

    How: the fused successor function counts into its global ``C``, which is the program's
    ``cov_counts``; the walk points both at the current key's array before each state.
    At the end ``prog.cov_counts`` holds the totals.
    """
    g = getattr(getattr(prog, "_fused", None), "__globals__", {})
    if not getattr(prog, "coverage", False) or "C" not in g:
        raise ValueError("walk needs AnyHost(..., coverage=True)")
    t0 = time.monotonic()
    total = prog.cov_counts
    ncov = len(total)
    loops0 = prog.self_loops
    norm: Callable[[State], State] = canon if canon is not None else (lambda x: x)
    pack, unpack = make_packer(prog.bounds(), prog.counter_cells())
    init = norm(prog.initial())
    w = Walk(prog, canon is not None, new_states_by_edge=[0] * len(prog.edges))
    todo = set(witness_ids)

    def reach(st: State) -> None:
        assert witnesses is not None
        for wid in witnesses(st):
            todo.discard(wid)

    if witnesses is not None and todo:
        reach(init)
    seen = {pack(init)}
    queue: deque[bytes] = deque([pack(init)])
    bad = prog.state_violations(init)
    if bad:
        w.violated.update(v.invariant for v in bad)
        w.errors.append(key_of(init))
        queue.clear()
    hidden = [entry[0].action.kind not in LEAVES for entry in prog._table]
    table = prog._table
    acc, visits, changes = w.acc, w.visits, w.changes
    next_report = t0 + progress_every
    n_changes = 0
    try:
        while queue:
            s = unpack(queue.popleft())
            k = key_of(s)
            C = acc.get(k)
            if C is None:
                C = acc[k] = [0] * ncov
                w.order.append(k)
            g["C"] = C
            prog.cov_counts = C
            visits[k] = visits.get(k, 0) + 1
            for eid, status, n, viol in prog.successors(s):
                if viol:
                    w.violated.update(v.invariant for v in viol)
                if n == s:  # a self-loop yielded for its step violation: counted in C
                    continue
                n_changes += 1
                if status is None or hidden[eid]:
                    ca, _g, fault, _e = table[eid]
                    status = ca.fn(s, fault)[0]  # a host/guest action: the rule's status
                cn = norm(n)
                kn = succ_key(n, cn)
                ck = (k, eid, status, kn)
                changes[ck] = changes.get(ck, 0) + 1
                try:
                    b = pack(cn)
                except OverflowError:
                    w.violated.add("state-encoding")
                    w.errors.append(kn)
                    continue
                if b in seen:
                    continue
                seen.add(b)
                w.new_states_by_edge[eid] += 1
                if todo:
                    reach(n)
                bad = prog.state_violations(n)
                if bad:
                    w.violated.update(v.invariant for v in bad)
                    w.errors.append(kn)
                    continue
                queue.append(b)
                if max_states is not None and len(seen) > max_states:
                    raise TooManyStates(
                        f"more than {max_states:,} states: too many for a full graph (use a "
                        f"projection, a smaller configuration, or --max-states)")
            if progress is not None:
                now = time.monotonic()
                if now >= next_report:
                    next_report = now + progress_every
                    progress({"states": len(seen), "queue": len(queue), "depth": 0,
                              "transitions": n_changes + prog.self_loops - loops0,
                              "seconds": now - t0})
    finally:
        g["C"] = total
        prog.cov_counts = total
        for C in acc.values():
            for i, v in enumerate(C):
                if v:
                    total[i] += v
    w.states = len(seen)
    w.transitions = n_changes + prog.self_loops - loops0
    w.seconds = time.monotonic() - t0
    w.witnesses = {wid: wid not in todo for wid in witness_ids}
    return w


def program(config: Any, *, faults: bool = False, ablate: Sequence[str] = (),
            symmetry: bool | None = None) -> tuple[Any, Callable[[State], State] | None]:
    """``AnyHost`` with its counters on, and its canonical form (symmetry: on unless
    False, as in ``check``)."""
    from tdxcheck.checker.explore.programs import AnyHost
    from tdxcheck.checker.explore.symmetry import Symmetry

    prog = AnyHost(config.universe(), faults=faults, ablate=ablate, coverage=True)
    canon = Symmetry(prog.engine.layout).canonical if symmetry is not False else None
    return prog, canon


def collect(
    config: Any,
    *,
    faults: bool = False,
    ablate: Sequence[str] = (),
    symmetry: bool | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    key_of: Callable[[State], Hashable] | None = None,
    succ_key: Callable[[State, State], Hashable] | None = None,
) -> tuple[Coverage, Walk]:
    """Walk every reachable state of ``config`` (as ``check --all`` explores it) with the
    counters on; return the coverage and the walk (keyed by ``key_of`` for projections)."""
    from tdxcheck.checker.explore.check import witness_fn

    prog, canon = program(config, faults=faults, ablate=ablate, symmetry=symmetry)
    wids = [x.id for x in WITNESSES if x.possible(prog.u, faults)]
    w = walk(prog, key_of or _one_key, succ_key or _one_key, canon, progress=progress,
             witnesses=witness_fn(prog, wids) if wids else None, witness_ids=wids)
    cov = coverage_of(prog, w.new_states_by_edge, config=config.name,
                      description=config.describe(), symmetry=canon is not None,
                      faults=faults, ablate=ablate, verdict=w.verdict, states=w.states,
                      transitions=w.transitions, witnesses=w.witnesses)
    return cov, w


# ------------------------------------------------------------------ baselines
class BaselineError(InputError):
    """A baseline file that cannot be read: ``FILE: reason``."""


def load(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise BaselineError(f"{p}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise BaselineError(f"{p}:{e.lineno}: not JSON: {e.msg}") from None
    if not isinstance(data, dict) or data.get("tool") not in ("tdxcheck", "tdxcheck coverage") \
            or data.get("command", "coverage") != "coverage":
        raise BaselineError(f"{p}: not a tdxcheck coverage file")
    if data.get("schema") != JSON_SCHEMA:
        raise BaselineError(f"{p}: coverage schema {data.get('schema')!r}, this tdxcheck "
                            f"reads {JSON_SCHEMA}: regenerate it with tdxcheck coverage --save")
    return data


@dataclass
class Comparison:
    regressions: list[str] = field(default_factory=list)  # once reached, not any more
    gained: list[str] = field(default_factory=list)  # reached now, not in the baseline
    notes: list[str] = field(default_factory=list)  # the runs differ in their settings

    @property
    def ok(self) -> bool:
        return not self.regressions


def compare(baseline: dict[str, Any], current: Coverage | dict[str, Any]) -> Comparison:
    """What the baseline reached that ``current`` does not (and the other way round)."""
    cur = current.to_json() if isinstance(current, Coverage) else current
    out = Comparison()
    for key in ("config", "symmetry", "faults", "ablate"):
        if baseline.get(key) != cur.get(key):
            out.notes.append(f"{key}: baseline {baseline.get(key)!r}, now {cur.get(key)!r}")
    bw, cw = baseline.get("wrappers", {}), cur.get("wrappers", {})

    def pair(old: int, new: int, what: str) -> None:
        if old > 0 and new == 0:
            out.regressions.append(f"{what}: no longer reached (baseline {old:,})")
        elif old == 0 and new > 0:
            out.gained.append(f"{what}: now reached ({new:,})")

    for w in sorted(set(bw) | set(cw)):
        b, c = bw.get(w, {}), cw.get(w, {})
        if b and not c:
            if b.get("enabled", 0) > 0:
                out.regressions.append(f"{w}: wrapper no longer in the program")
            continue
        for what in ("enabled", "fired", "new_states"):
            pair(b.get(what, 0), c.get(what, 0), f"{w}: {what.replace('_', ' ')}")
        bs, cs = b.get("statuses", {}), c.get("statuses", {})
        for s in sorted(set(bs) | set(cs)):
            pair(bs.get(s, {}).get("count", 0), cs.get(s, {}).get("count", 0), f"{w} -> {s}")
        bc, cc = b.get("checks", {}), c.get("checks", {})
        for k in sorted(set(bc) | set(cc)):
            pair(bc.get(k, 0), cc.get(k, 0), f"{w}: check {k}")
    bwit, cwit = baseline.get("witnesses", {}), cur.get("witnesses", {})
    for wid in sorted(set(bwit) | set(cwit)):
        if bwit.get(wid) and not cwit.get(wid):
            out.regressions.append(f"witness {wid}: no longer reached")
        elif cwit.get(wid) and not bwit.get(wid):
            out.gained.append(f"witness {wid}: now reached")
    return out


# ------------------------------------------------------------------ text
def coverage_text(cov: Coverage, title: str = "") -> str:
    """The wrappers x statuses table, long form: one line per status a wrapper's rules can
    return; ``NEVER`` marks a status never produced that nothing explains."""
    out = []
    if title:
        out.append(title)
    out.append(f"verdict: {cov.verdict}; {cov.states:,} states, {cov.transitions:,} "
               f"transitions" + (f"; ablated: {', '.join(cov.ablate)}" if cov.ablate else ""))
    out.append(cov.counting)
    out.append("")
    wid = max([len(w.wrapper) for w in cov.wrappers] + [7])
    sw = max([len(c.status) for w in cov.wrappers for c in w.statuses] + [6])
    head = (f"{'wrapper':<{wid}}  {'actions':>7}  {'enabled':>12}  {'fired':>11}  "
            f"{'new states':>10}  {'status':<{sw}}  count")
    out.append(head)
    out.append("-" * (len(head) + 12))
    pad = " " * (wid + 2 + 7 + 2 + 12 + 2 + 11 + 2 + 10 + 2)
    for w in cov.wrappers:
        for i, c in enumerate(w.statuses):
            left = (f"{w.wrapper:<{wid}}  {w.actions:>7,}  {w.enabled:>12,}  {w.fired:>11,}  "
                    f"{w.new_states:>10,}  ") if i == 0 else pad
            if c.count:
                val = f"{c.count:,}"
            elif c.note:
                val = f"never ({c.note})"
            else:
                val = "NEVER  <-- " + ", ".join(c.checks or ["success path"])
            out.append(f"{left}{c.status:<{sw}}  {val}")
    holes = cov.holes()
    out.append("")
    out.append(f"never reached: {len(holes)} status cell(s) the rules list but no explored "
               f"state produced" + (":" if holes else ""))
    for wn, c in holes:
        out.append(f"  {wn} -> {c.status}  ({', '.join(c.checks) or 'success path'})")
    in_holes = {(wn, k) for wn, c in holes for k in c.checks}
    dead = [(w.wrapper, k) for w in cov.wrappers for k, n in w.checks.items()
            if n == 0 and not w.check_notes.get(k) and (w.wrapper, k) not in in_holes]
    if dead:
        out.append(f"checks that never failed although their status was reached through "
                   f"another check: {len(dead)}")
        for wn, k in dead:
            out.append(f"  {wn}: {k}")
    explained = [(wn, c) for wn, c in cov.unreached() if not c.hole]
    if explained:
        out.append(f"not reached, as expected: {len(explained)} cell(s) "
                   f"({', '.join(sorted({c.note for _, c in explained}))})")
    reach = [w for w, v in cov.witnesses.items() if v]
    miss = [w for w, v in cov.witnesses.items() if v is False]
    na = [w for w, v in cov.witnesses.items() if v is None]
    out.append(f"witnesses reached: {len(reach)}/{len(reach) + len(miss)}"
               + (f": {', '.join(reach)}" if reach else "")
               + (f"; NOT reached: {', '.join(miss)}" if miss else "")
               + (f"; not applicable here: {', '.join(na)}" if na else ""))
    return "\n".join(out)


def comparison_text(cmp: Comparison, baseline: str) -> str:
    out = []
    for n in cmp.notes:
        out.append(f"note: the runs differ: {n}")
    if cmp.regressions:
        out.append(f"baseline {baseline}: {len(cmp.regressions)} regression(s): once covered, "
                   f"no longer reached:")
        out.extend(f"  {r}" for r in cmp.regressions)
    else:
        out.append(f"baseline {baseline}: everything it covered is still reached")
    if cmp.gained:
        out.append(f"newly reached ({len(cmp.gained)}):")
        out.extend(f"  {g}" for g in cmp.gained)
    return "\n".join(out)
