"""``tdxcheck apis``: explore every variant's most general client and classify each class of
host mistake (``classes.py``) per variant.

Breadth-first over the states a client of the API can reach without having broken an
invariant yet (a step that breaks one is recorded, with its shortest trace, and not
expanded: what follows it follows a bug), with the explorer's symmetry reduction.  Every
transition, a refused call included, is read by every class predicate still open; the first
instance of each outcome is the shortest one:

* **caught**: the module refused the call (its status and the check that refused);
* **silent**: accepted, and that step or the state after it breaks an invariant;
* **harmless**: accepted, and nothing breaks there.

A cell's verdict is the worst outcome found (silent, then harmless, then caught);
**impossible** when no move of the API can make the mistake (its types or its helpers rule
it out), or when an exhaustive run never reached it; a run a limit cut short says **not
reached in N states**, never impossible; and a caught or harmless verdict from such a run
says how far it looked.

Returns data (``ApisResult``); ``output/apis_report.py`` prints it.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tdxcheck.checker.explore.bfs import Limits, Packing, canon_keyer
from tdxcheck.checker.explore.engine import Violation
from tdxcheck.checker.explore.programs import Config
from tdxcheck.checker.explore.symmetry import Symmetry
from tdxcheck.model.actions import Action
from tdxcheck.model.compile import NOT_ENABLED, compile_functions, new_gen, predicate_source
from tdxcheck.model.expr import Not
from tdxcheck.model.rule import Fault
from tdxcheck.model.state import State
from tdxcheck.model.status import status_name

from .classes import CLASSES, MisuseClass
from .host import ApiHost, Rec, Run
from .variants import VARIANTS, Variant

IMPOSSIBLE, CAUGHT, SILENT, HARMLESS, NOT_REACHED, NA = (
    "impossible", "caught", "silent", "harmless", "not reached", "n/a")
#: a refusal by another check than the ones that judge the mistake (the call was wrong
#: for some other reason too): reported as caught only when no other outcome is known
CAUGHT_OTHER = "caught-other"
_RANK = {SILENT: 4, HARMLESS: 3, CAUGHT: 2, CAUGHT_OTHER: 1}
_MET_MAX = 3_000_000


@dataclass
class Finding:
    """The first (shortest) instance of one outcome of a class."""

    outcome: str
    length: int
    state: int  # index of the stored state the transition left
    edge: int
    status: str = ""
    check: str = ""
    invariant: str = ""
    message: str = ""
    action: str = ""
    also: str = ""  # silent: other invariants the same step breaks (another mistake in it)


@dataclass
class Cell:
    cls: MisuseClass
    verdict: str
    note: str = ""
    found: dict[str, Finding] = field(default_factory=dict)  # outcome -> first instance
    trace: list[str] = field(default_factory=list)  # the worst finding's trace, as labels
    path: list[int] = field(default_factory=list)  # its edges from the initial state

    @property
    def worst(self) -> Finding | None:
        best = max(self.found, key=lambda o: _RANK[o], default=None)
        return self.found[best] if best else None

    def summary(self) -> str:
        """The table cell: the verdict with its status or invariant and trace length."""
        f = self.worst
        if self.verdict == CAUGHT and f:
            return f"caught {_short_status(f.status)} ({f.length})" + (
                "*" if f.outcome == CAUGHT_OTHER else "")
        if self.verdict == SILENT and f:
            return f"SILENT {f.invariant} ({f.length})"
        if self.verdict == HARMLESS and f:
            return f"harmless ({f.length})"
        return self.verdict


def _short_status(s: str) -> str:
    return s.removeprefix("TDX_")


@dataclass
class VariantRun:
    variant: Variant
    config: Config
    faults: bool
    cells: list[Cell]
    states: int
    transitions: int
    depth: int
    seconds: float
    complete: bool
    reason: str
    host: ApiHost
    violations: dict[str, Finding] = field(default_factory=dict)  # any cause
    #: ``properties/witnesses.py`` goals: the depth each was first reached at (None: never);
    #: an API that cannot reach them proves nothing about those paths
    witnesses: dict[str, int | None] = field(default_factory=dict)
    #: the helpers ran step by step against the guest / vCPU thread (``--interleave``;
    #: False where the API has no helper of more than one step), and whether the
    #: symmetry reduction was on (off for an interleaved run: ``ApiHost._interleave``)
    interleaved: bool = False
    symmetry: bool = True

    def cell(self, cls_id: str) -> Cell:
        return next(c for c in self.cells if c.cls.id == cls_id)

    def counts(self) -> dict[str, int]:
        out = {SILENT: 0, CAUGHT: 0, IMPOSSIBLE: 0, HARMLESS: 0, NOT_REACHED: 0, NA: 0}
        for c in self.cells:
            out[c.verdict] += 1
        return out


@dataclass
class ApisResult:
    config: Config
    faults: bool
    runs: list[VariantRun]
    classes: list[MisuseClass]
    interleave: bool = False  # asked for (a run says whether it had helpers to split)


# ---------------------------------------------------------------------- classifying
class _Classifier:
    """Compiled class predicates per (action, through a sealed handle)."""

    def __init__(self, host: ApiHost, classes: Sequence[MisuseClass]) -> None:
        self.host = host
        self.classes = list(classes)
        self._fns: dict[tuple[Action, bool], list[tuple[int, Any]]] = {}

    def fns(self, a: Action, via: bool) -> list[tuple[int, Any]]:
        key = (a, via)
        out = self._fns.get(key)
        if out is None:
            lay = self.host.lay
            gen = new_gen(lay)
            srcs, ids = [], []
            for ci, c in enumerate(self.classes):
                e = c.expr(self.host.u, a, via) if c.expr is not None else None
                if e is None:
                    continue
                srcs.append(predicate_source(f"c{ci}", [Not(e)], lay, gen, two_state=False))
                ids.append(ci)
            ns = compile_functions(srcs, gen) if srcs else {}
            out = self._fns[key] = [(ci, ns[f"c{ci}"]) for ci in ids]
        return out

    def hits(self, run: Run, eid: int, open_: set[int]) -> list[tuple[int, Rec]]:
        host = self.host
        mv = host.moves[host.edges[eid][0]]
        out = []
        for r in run.recs:
            for ci, fn in self.fns(r.action, mv.via_handle):
                if ci in open_ and fn(r.pre) >= 0:
                    out.append((ci, r))
        if mv.marks:
            for ci, c in enumerate(self.classes):
                if ci in open_ and c.mark and c.mark in mv.marks and run.recs:
                    out.append((ci, next((r for r in run.recs if r.status is not None),
                                         run.recs[0])))
        return out


def _outcome(host: ApiHost, c: MisuseClass, r: Rec) -> tuple[str, str, str, str, str] | None:
    """(outcome, status, check, invariant, message) of one instance; None when a module
    fault refused it (the environment, not the module's judgement of the mistake)."""
    if not r.accepted:
        rule = host.engine.compiled(r.action).rule
        step = rule.steps[r.where] if r.where >= 0 else None
        if isinstance(step, Fault):
            return None
        name = step.name if step is not None else ""
        return (CAUGHT if c.judged_by(name) else CAUGHT_OTHER, status_name(r.status), name,
                "", "")
    broken = list(r.viol) + host.state_violations(r.post)
    st = "" if r.status is None else status_name(r.status)
    own = [v for v in broken if v.invariant in c.invariants]
    if own:
        other = sorted({v.invariant for v in broken} - set(c.invariants))
        return (SILENT, st, ",".join(other), own[0].invariant, own[0].message)
    other = sorted({v.invariant for v in broken})
    return (HARMLESS, st, "", "", ("the same step also breaks " + ", ".join(other) +
                                   " (another mistake made in it)") if other else "")


# ---------------------------------------------------------------------- exploring
def explore_variant(variant: Variant, config: Config, *, faults: bool = False,
                    classes: Sequence[MisuseClass] = CLASSES, limits: Limits | None = None,
                    symmetry: bool = True, interleave: bool = False,
                    progress: Callable[[dict[str, float]], None] | None = None) -> VariantRun:
    """Explore ``variant``'s most general client on ``config`` and classify ``classes``.
    With ``interleave``, each helper of more than one step runs step by step, a guest or
    vCPU move between any two (``ApiHost._interleave``); the run is then without the
    symmetry reduction, which does not rename the helper-in-flight cells."""
    t0 = time.monotonic()
    limits = limits or Limits()
    u = config.universe()
    host = ApiHost(variant, u, faults=faults, classes=classes, interleave=interleave)
    if host.extra:
        symmetry = False
    clf = _Classifier(host, classes)
    lay = host.lay
    packing = Packing(host.bounds(), host.counter_cells())
    pack, unpack = packing.pack, packing.unpack
    canon: Callable[[State], State] = Symmetry(lay).canonical if symmetry else (lambda s: s)
    # the encoding of a successor's canonical state, without building that state (as the
    # explorer does: ``Symmetry.canonical_key``, the same least state of the orbit)
    keyer = canon_keyer(canon, packing)[0] if symmetry else None
    init = canon(host.initial())
    k0 = pack(init)
    seen: set[int] = {k0}
    bad: set[int] = set()
    parent = array("i", [-1])
    via = array("i", [-1])
    queue: deque[tuple[int, int]] = deque([(k0, 0)])
    depth_of = array("i", [0])
    found: list[dict[str, Finding]] = [{} for _ in classes]
    statics = set()
    for mv in host.moves:
        statics |= mv.statics
    # a raw SEPT.REMOVE shows REMOVE-without-TRACK with no guest page (classes.py)
    sept_remove = any(mv.action is not None and mv.action.kind == "TDH.MEM.SEPT.REMOVE"
                      for mv in host.moves)
    open_: set[int] = set()
    for ci, c in enumerate(classes):
        if c.applies(u, sept_remove) or (c.static and c.static not in statics):
            continue
        open_.add(ci)
    violations: dict[str, Finding] = {}
    for v in host.state_violations(init):
        violations.setdefault(v.invariant, Finding(SILENT, 0, 0, -1, invariant=v.invariant,
                                                   message=v.message))
    transitions = 0
    reason = ""
    max_states = limits.max_states if limits.max_states is not None else 1 << 62
    max_depth = limits.max_depth if limits.max_depth is not None else 1 << 62
    deadline = t0 + limits.time_limit if limits.time_limit is not None else float("inf")
    next_report = t0 + 2.0
    depth = 0
    cid = {f"class:{c.id}": ci for ci, c in enumerate(classes)}
    keys = [k0]  # the stored states' keys, in breadth-first order
    met: set[int] = set()  # successors already canonicalised (their keys as they came)

    def record(ci: int, eid: int, status: int | None, s: State, n: State,
               viol: Sequence[Violation], d: int, i: int, rec: Rec | None = None) -> None:
        f = found[ci]
        if ci not in open_ or (CAUGHT in f and status):
            return  # the shortest refusal is known (a fault's is not one anyway)
        if rec is None:  # a fused transition: run it again for the check that refused
            mi, fault = host.edges[eid]
            a = host.moves[mi].action
            assert a is not None
            _st, _n, where = host.engine.compiled(a).fn(s, fault if isinstance(fault, int)
                                                         else -1)
            rec = Rec(a, status, where, s, n, tuple(viol))
        out = _outcome(host, classes[ci], rec)
        if out is None:
            return
        kind, st, chk, inv, msg = out
        if kind == SILENT:
            # the shortest silent instance, and the shortest that breaks nothing but what
            # this mistake harms (a shorter one may make another mistake in the same step)
            if SILENT in f and (chk or not f[SILENT].also):
                return
            f[kind] = Finding(kind, d + 1, i, eid, st, "", inv, msg, host.label(eid),
                              also=chk)
            if not chk:
                open_.discard(ci)
            return
        if kind in f:
            return
        f[kind] = Finding(kind, d + 1, i, eid, st, chk, inv, msg, host.label(eid))

    def broke(viol: Sequence[Violation], d: int, i: int, eid: int) -> None:
        for v in viol:
            if v.invariant not in violations:
                violations[v.invariant] = Finding(SILENT, d + 1, i, eid, invariant=v.invariant,
                                                  message=v.message, action=host.label(eid))

    while queue:
        key, i = queue.popleft()
        d = depth_of[i]
        depth = max(depth, d)
        if d >= max_depth:
            reason = reason or f"depth bound {limits.max_depth} reached"
            continue
        s = unpack(key)
        succ, total = host.fused_successors(s)
        transitions += total
        moves: list[tuple[int, State, Sequence[Violation]]] = []
        for eid, status, n, viol in succ:
            real = viol
            if viol:
                real = []
                for v in viol:
                    ci = cid.get(v.invariant)
                    if ci is None:
                        real.append(v)
                    elif open_:
                        record(ci, eid, status, s, n, [x for x in viol
                                                        if not x.invariant.startswith("class:")],
                                d, i)
            moves.append((eid, n, real))
        for eid in host.slow_edges(s):
            run = host.run_edge(s, eid)
            if run is None:
                continue
            transitions += 1
            if open_:
                for ci, r in clf.hits(run, eid, open_):
                    record(ci, eid, r.status, r.pre, r.post, r.viol, d, i, r)
            moves.append((eid, run.m, [v for r in run.recs for v in r.viol]))
        for eid, n, real in moves:
            if real:
                broke(real, d, i, eid)
                continue
            if n is s or n == s:
                continue
            if symmetry:  # a successor met before needs no canonical form again
                rk = pack(n)
                if rk in met:
                    continue
                if len(met) >= _MET_MAX:  # only a cache: bounded memory
                    met.clear()
                met.add(rk)
            kn = keyer(n)[0] if keyer is not None else pack(n)
            if kn in seen or kn in bad:
                continue
            # the invariants do not depend on which object plays which part (else the
            # symmetry would not be one), so the successor as it came is checked
            sv = host.state_violations(n)
            if sv:
                bad.add(kn)
                broke(sv, d, i, eid)
                continue
            seen.add(kn)
            keys.append(kn)
            j = len(parent)
            parent.append(i)
            via.append(eid)
            depth_of.append(d + 1)
            queue.append((kn, j))
            if len(seen) >= max_states:
                reason = f"state limit {limits.max_states} reached"
                break
        now = time.monotonic()
        if reason.startswith("state limit"):
            break
        if now > deadline:
            reason = f"time limit {limits.time_limit:g}s reached"
            break
        if progress is not None and now >= next_report:
            next_report = now + 2.0
            progress({"states": len(seen), "queue": len(queue), "depth": d,
                      "seconds": now - t0})
    # mistakes the module refuses, for the classes no accepted instance showed: the
    # stored states in breadth-first order, the first refusal of each is its shortest
    todo = {ci for ci in open_ if not {SILENT, HARMLESS, CAUGHT} & set(found[ci])}
    if todo:
        cands = host.refusals(classes, clf)
        for j, kj in enumerate(keys):
            if not todo:
                break
            sj = unpack(kj)
            for ci in sorted(todo):
                for eid, guard, fn, cf in cands.get(ci, ()):
                    if (guard is not None and guard(sj) >= 0) or not host.host_may(sj, eid):
                        continue
                    if cf(sj) < 0:
                        continue
                    status, n, _where = fn(sj, -1)
                    if status == NOT_ENABLED or not status:
                        continue
                    record(ci, eid, status, sj, n, (), depth_of[j], j)
                    if CAUGHT in found[ci] or (not classes[ci].checks and found[ci]):
                        todo.discard(ci)
                        break
    complete = not reason and not queue
    if not complete and not reason:
        reason = "stopped early"
    states = len(seen)
    cells = []
    for ci, c in enumerate(classes):
        why = c.applies(u, sept_remove)
        if why:
            cells.append(Cell(c, NA, why))
            continue
        if c.static and c.static not in statics:
            cells.append(Cell(c, IMPOSSIBLE, f"cannot be written: {c.cannot_write}"))
            continue
        f = found[ci]
        best = max(f, key=lambda o: _RANK[o], default=None)
        if best is None:
            if complete:
                cells.append(Cell(c, IMPOSSIBLE, f"never reached in all {states:,} states"))
            else:
                cells.append(Cell(c, NOT_REACHED, f"not reached in {states:,} states "
                                  f"({reason})"))
            continue
        note = ""
        if best == CAUGHT_OTHER:
            best = CAUGHT
            w = f[CAUGHT_OTHER]
            note = (f"refused only for another reason ({w.check}): no check of the module "
                    "judges this mistake")
        if best != SILENT and not complete:
            note = ((note + "; ") if note else "") + (
                f"every instance in {states:,} states ({reason}): a later one may differ")
        cells.append(Cell(c, best, note, dict(f)))
    wit = _witnesses(host, faults, [unpack(k) for k in keys], depth_of)
    vr = VariantRun(variant, config, faults, cells, states, transitions, depth,
                    round(time.monotonic() - t0, 2), complete, reason, host, violations, wit,
                    interleaved=bool(host.extra), symmetry=symmetry)
    vr._parent, vr._via, vr._canon = parent, via, canon  # type: ignore[attr-defined]
    for cell in vr.cells:
        w = cell.worst
        if w is not None:
            cell.path = _path(vr, w.state) + [w.edge]
            cell.trace = [host.label(e) for e in cell.path]
    return vr


def _witnesses(host: ApiHost, faults: bool, states: Sequence[State],
               depth_of: Sequence[int]) -> dict[str, int | None]:
    from tdxcheck.properties.witnesses import WITNESSES

    lay = host.lay
    gen = new_gen(lay)
    ws = [w for w in WITNESSES if w.possible(host.u, faults)]
    srcs = [predicate_source(f"w{i}", [w.goal(host.u)], lay, gen, two_state=False)
            for i, w in enumerate(ws)]
    ns = compile_functions(srcs, gen) if srcs else {}
    out: dict[str, int | None] = {w.id: None for w in ws}
    for j, st in enumerate(states):
        for i, w in enumerate(ws):
            if out[w.id] is None and ns[f"w{i}"](st) < 0:
                out[w.id] = depth_of[j]
    return out


def _path(vr: VariantRun, i: int) -> list[int]:
    out = []
    parent, via = vr._parent, vr._via  # type: ignore[attr-defined]
    while i > 0:
        out.append(via[i])
        i = parent[i]
    out.reverse()
    return out


def concrete_run(vr: VariantRun, path: Sequence[int],
                 last: Callable[[Run], bool] | None = None) -> list[tuple[int, Run]]:
    """``path`` (edges taken from canonical states) as a run from the concrete initial
    state: at each step the successor whose canonical form is the one the edge gave (the
    last step also satisfying ``last``).  Each element: (edge, the finished move)."""
    host = vr.host
    canon = vr._canon  # type: ignore[attr-defined]
    cur = host.initial()
    ccur = canon(cur)
    out: list[tuple[int, Run]] = []
    for k, eid in enumerate(path):
        r = host.run_edge(ccur, eid)
        assert r is not None, "a recorded edge is not enabled when re-run"
        target = canon(r.m)
        final = k == len(path) - 1
        # the same calls with the same outcomes, not only the same successor: a refused
        # call leaves the state as it was, so any other refused call would match too
        made = _outcomes(r)
        pick = None
        for e2, run in host.transitions(cur):
            if canon(run.m) != target:
                continue
            if final and last is not None and not last(run):
                continue
            if _outcomes(run) == made:
                pick = (e2, run)
                break
            pick = pick or (e2, run)
        if pick is None:  # pragma: no cover - the symmetry would not be one
            raise AssertionError("a trace does not concretise")
        out.append(pick)
        cur, ccur = pick[1].m, target
    return out


def _outcomes(run: Run) -> list[tuple[str, int | None, int]]:
    """What a move did, up to the naming of objects: each action's kind, status and the
    check (or fault) that decided it."""
    return [(x.action.kind, x.status, x.where) for x in run.recs]


def run_apis(config: Config, *, variants: Sequence[Variant] = VARIANTS,
             classes: Sequence[MisuseClass] = CLASSES, faults: bool = False,
             limits: Limits | None = None, interleave: bool = False,
             progress: Callable[[str, dict[str, float]], None] | None = None) -> ApisResult:
    """Every variant (or those given) on ``config``: one ``VariantRun`` each (``interleave``:
    helpers step by step against the guest, ``explore_variant``)."""
    runs = []
    for v in variants:
        cb = (lambda d, v=v: progress(v.name, d)) if progress is not None else None
        runs.append(explore_variant(v, config, faults=faults, classes=classes,
                                    limits=limits, interleave=interleave, progress=cb))
    return ApisResult(config, faults, runs, list(classes), interleave)
