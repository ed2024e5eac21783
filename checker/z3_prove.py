"""``tdxcheck prove``: the invariants for runs of any length (induction), and bounded model
checking, with Z3 over the rule data (``checker/z3_encode.py``, the one Z3 reading).

Scope: ``--host any`` (``programs.AnyHost``): its transitions are ``any_host_actions(u)``
with their host-side guards (plus every fault point with ``faults``), its initial state is
``AnyHost.initial()``, and only the clauses the *module* guarantees are proved
(``Invariant.state_clauses(u, "module")``, ``step_clauses(u, a, "module")``).  Scenario
files are not proved here (``tdxcheck check FILE`` explores them).

Induction (mypyvy ``verify``, Apalache ``--init=IndInv --length=1``): the *hypotheses* are
every module invariant, every lemma of ``properties/lemmas.py`` and ``state-encoding``
(every cell within its ``Layout.value_bound``, enum cells members of their enum: the
range in which the Z3 and the Python readings of a rule agree).  Each hypothesis must hold
in the initial state (in both readings, which must agree there), and for each hypothesis
*T* and each transition *a* the query

    typing(s) ∧ hypotheses(s) ∧ guard_a(s) ∧ enabled_a(s) ∧ s' = a(s) ∧ ¬T(s, s')

must be unsat (a step invariant's clauses read ``s`` and ``s'``).  A transition that
changes no cell a state hypothesis reads keeps it (the frame rule): no query is asked.
If every query is unsat the conjunction of the hypotheses is inductive, so each holds in
every reachable state.  If some query is sat (or unknown), that hypothesis is dropped and
the others are proved again without it (Houdini), until what is left is inductive: those
are ``proved``; a dropped one is ``violated`` if a bounded search from the initial state
reaches a violation (a trace that replays on ``Engine``), else ``not-inductive`` with its
counterexample to induction (CTI): the transition with its operands and a minimised
two-state diff.  A solver timeout is ``unknown``, never ``proved``.  Every query assumes
``typing(s)``, so once ``state-encoding`` is dropped nothing else is proved: the hypotheses
left are ``unknown`` ("assumes state-encoding"), or ``violated`` if the bounded search finds
a run.  The frame rule (``FRAME_RULE``) only skips a state clause none of whose cells
(``read_cells``, indices included) the transition's next-state terms change; step clauses
are asked for every transition.  With ``cores=True`` each proved target also lists the
hypotheses the (minimised) unsat cores of its queries name (``TargetResult.uses``).

Solving: one incremental solver per round holds the hypotheses; each transition is pushed
once, and each clause of a target that the transition may change is one solver call
(``push``/``pop``; ¬(c1 ∧ … ∧ cn) is sat iff some ¬ci is, and the calls one at a time are
much faster than the disjunction).  A call the incremental solver does not settle within
``FAST_MS`` (the counting clauses: sums over pages or vCPUs) goes to a one-shot solver
that preprocesses and bit-blasts the whole query (``_TACTIC``); ``timeout_ms`` bounds each
call.  Every answer is recorded (``QueryRecord``: target, transition, answer, seconds).

BMC (``mode="bmc"``): unrolls the transition relation from the initial state one step at a
time (the unrolling is kept and extended; each depth asks one query for all invariants not
yet violated, then one per invariant when that is sat); the first depth that answers sat is
the shortest violation.  As in the explorer, a path never runs through a state that breaks a
state invariant.  The trace is replayed on the concrete model (``AnyHost.apply_edge``) and
returned as an ``explore.Counterexample``, so ``report.counterexample_text`` and
``traces.any_host_tdx``/``itf`` print and write it as they do the explorer's
(``write_traces`` does what ``check.write_traces`` does).

The engine returns data (``ProveResult``); ``prove_text``/``prove_json`` format it, and
``ProveResult.exit_status`` is the exit code (0 proved, 1 violated or not inductive, 3 only
timeouts).  The front end maps ``tdxcheck prove [--config NAME] [key=value ...] [--faults]
[--ablate CHECK] [--bmc --depth K] [--timeout-ms N] [--json] [-v] [--trace-out DIR]`` onto
``prove(make_config(NAME, overrides), ...)``; ``--host FILE`` (a scenario) is not proved.
"""

from __future__ import annotations

import itertools
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import z3
from tdxcheck.model.actions import Action, describe, rule_of
from tdxcheck.model.compile import compile_functions, new_gen, predicate_source
from tdxcheck.model.expr import Const, Expr, reads
from tdxcheck.model.rule import Ctx
from tdxcheck.model.state import Layout, State
from tdxcheck.model.status import status_name
from tdxcheck.properties import INVARIANTS, Clause, Invariant
from tdxcheck.properties.lemmas import LEMMAS

from .engine import STATE_ENCODING, Engine
from .explore import Counterexample
from .programs import (
    AnyHost,
    Config,
    any_host_actions,
    has_clauses,
    not_covered,
    partly_covered,
)
from .z3_encode import Z3Encoder, enabled_term

#: the incremental solver's budget per goal before the goal goes to a one-shot solver (ms)
FAST_MS = 100
#: with ``cores``: the budget per goal for its unsat core (ms)
CORE_MS = 10_000
#: skip the clauses a transition cannot change (off: every clause of every target is a
#: goal for every transition; the tests check both give the same verdicts)
FRAME_RULE = True
#: the one-shot solver: preprocessing, then bit-blasting to SAT
_TACTIC = z3.Then("simplify", "propagate-values", "solve-eqs", "elim-uncnstr", "simplify",
                  "bit-blast", "sat")


def _incremental(sol: Any, goal: Any, timeout_ms: int) -> tuple[str, Any, float]:
    """``goal`` on top of the incremental solver ``sol`` for at most ``FAST_MS``: the
    answer, a model when sat, and the milliseconds spent."""
    sol.set("timeout", min(timeout_ms, FAST_MS))
    sol.push()
    sol.add(goal)
    t0 = time.monotonic()
    r = sol.check()
    spent = (time.monotonic() - t0) * 1000
    m = sol.model() if r == z3.sat else None
    sol.pop()
    sol.set("timeout", timeout_ms)
    return ("sat" if r == z3.sat else "unsat" if r == z3.unsat else "unknown"), m, spent


def _one_shot(assertions: Sequence[Any], goal: Any, timeout_ms: int) -> tuple[str, Any]:
    """``assertions`` and ``goal`` on a fresh bit-blasting solver (``_TACTIC``, much
    faster than the incremental one on deep unrollings and counting clauses)."""
    if timeout_ms <= 0:
        return "unknown", None
    one = _TACTIC.solver()
    one.set("timeout", timeout_ms)
    one.add(*assertions)
    one.add(goal)
    r = one.check()
    if r == z3.sat:
        return "sat", one.model()
    return ("unsat" if r == z3.unsat else "unknown"), None


def two_stage_check(sol: Any, goal: Any, timeout_ms: int) -> tuple[str, Any]:
    """``goal`` on top of the incremental solver ``sol`` for at most ``FAST_MS``, then on a
    one-shot bit-blasting solver with the rest of ``timeout_ms``:
    ("sat", model) | ("unsat", None) | ("unknown", None)."""
    answer, m, spent = _incremental(sol, goal, timeout_ms)
    if answer != "unknown":
        return answer, m
    return _one_shot(sol.assertions(), goal, int(timeout_ms - spent))


PROVED, VIOLATED, NOT_INDUCTIVE, UNKNOWN = "proved", "violated", "not-inductive", "unknown"
#: bmc: no violation up to the depth searched (not a proof)
NO_VIOLATION = "no-violation"
#: the pseudo-invariant "every cell in range" (the explorer's name for its violation)
TYPING = STATE_ENCODING
#: a hypothesis left without proof because ``state-encoding`` is not proved
ASSUMES_TYPING = "assumes-typing"

INDUCTION, BMC = "induction", "bmc"
#: why an invariant with host clauses is proved in part
PARTLY = "proved for the module's clauses only; the host clauses are the host's obligation"

Progress = Callable[[dict[str, Any]], None]


# ------------------------------------------------------------------ data
@dataclass(frozen=True)
class Transition:
    """One edge of the any host: an action, its fault choice and its host-side guard.
    ``eid`` is its edge id in ``AnyHost(u, faults).edges`` (same order)."""

    eid: int
    action: Action
    fault: int  # -1: no fault point fires
    fault_name: str | None
    guard: Expr | None
    label: str

    @property
    def text(self) -> str:
        return self.label + (f" [fault {self.fault_name}]" if self.fault_name else "")


@dataclass
class Target:
    """What is proved: an invariant, a lemma, or ``state-encoding``."""

    id: str
    kind: str  # "invariant" | "lemma" | "typing"
    summary: str
    inv: Invariant | None
    clauses: list[Clause]  # state clauses (module-guaranteed)
    read_sets: list[frozenset[int]] = field(default_factory=list)

    def step_clauses(self, ctx: _Ctx, a: Action) -> list[Clause]:
        if self.inv is None:
            return []
        return self.inv.step_clauses(ctx.u, a, "module")


@dataclass
class QueryRecord:
    """One query: an induction query (target, transition edge id) or a BMC query (target,
    depth, round 0): its answer (unsat | sat | unknown), time and solver calls (an
    induction query asks one call per clause the transition may change)."""

    target: str
    edge: int
    answer: str
    seconds: float
    round: int
    calls: int = 1


@dataclass
class CTI:
    """A counterexample to induction: a state where every hypothesis holds, a transition,
    and the state after it, where ``invariant`` does not hold.  ``changes`` are the cells
    the step changed (label, before, after); ``context`` the other cells of the minimised
    pre-state that differ from the any host's initial state (label, value, read by the
    violated clause?).  ``replayed``: the concrete engine, run on ``pre``, gives ``post``."""

    invariant: str
    edge: int
    transition: str
    status: str | None
    clauses: list[str]
    changes: list[tuple[str, str, str]]
    context: list[tuple[str, str, bool]]
    pre: State
    post: State
    replayed: bool
    round: int
    confirmed: bool = False  # the compiled Python reading agrees: hypotheses hold on
    # ``pre``, the engine steps ``pre`` to ``post``, and ``post`` breaks the target

    def to_json(self) -> dict[str, Any]:
        return {
            "transition": self.transition, "edge": self.edge, "status": self.status,
            "violated_clauses": self.clauses,
            "changes": [{"field": f, "before": a, "after": b} for f, a, b in self.changes],
            "pre_state": [{"field": f, "value": v, "read_by_clause": r}
                          for f, v, r in self.context],
            "replayed_on_engine": self.replayed, "confirmed_concretely": self.confirmed,
        }


@dataclass
class TargetResult:
    invariant: str
    kind: str
    summary: str
    status: str
    seconds: float = 0.0
    queries: int = 0
    frame: int = 0  # transitions that change no cell the target reads: no query needed
    slowest: tuple[float, str] | None = None
    cti: CTI | None = None
    counterexample: Counterexample | None = None
    note: str = ""
    #: with ``cores``: the other hypotheses (invariants, lemmas, state-encoding) some unsat
    #: core of a proved target's queries named; ``no_core`` queries had no core in time
    uses: list[str] | None = None
    no_core: int = 0


@dataclass
class ProveResult:
    config: Config
    mode: str
    depth: int | None  # bmc depth searched (or the confirmation depth of induction)
    faults: bool
    ablate: tuple[str, ...]
    results: list[TargetResult]
    transitions: int
    queries: int
    seconds: float
    solver_seconds: float
    rounds: int
    peak_rss_mib: float
    timeout_ms: int
    records: list[QueryRecord] = field(default_factory=list)
    _ctx: Any = None
    #: the invariants asked for (``--invariant``), or empty: all of them
    only: tuple[str, ...] = ()

    def scope(self) -> list[tuple[str, str]]:
        """(invariant, why) for what this run does not prove: the invariants outside
        ``--host any`` (``not_covered``), and those proved for their module clauses only
        (``partly_covered``).  Empty when ``--invariant`` chose what to prove."""
        if self.only or self._ctx is None:
            return []
        u = self._ctx.u
        return [*self._ctx.not_covered.items(), *(
            (i, PARTLY) for i in partly_covered(u))]

    @property
    def ok(self) -> bool:
        good = (PROVED,) if self.mode == INDUCTION else (NO_VIOLATION,)
        return all(r.status in good for r in self.results)

    @property
    def exit_status(self) -> int:
        """0: everything proved (bmc: no violation); 1: a violation or a hypothesis not
        inductive; 3: only solver timeouts (``unknown``) stand in the way."""
        if self.ok:
            return 0
        bad = {r.status for r in self.results} - {PROVED, NO_VIOLATION}
        return 3 if bad == {UNKNOWN} else 1

    @property
    def queries_per_second(self) -> float:
        return self.queries / self.solver_seconds if self.solver_seconds > 0 else 0.0

    @property
    def counterexamples(self) -> list[Counterexample]:
        return [r.counterexample for r in self.results if r.counterexample is not None]

    def program(self) -> AnyHost:
        """The any-host program the counterexamples' edge ids refer to (for reporters and
        ``traces.any_host_tdx``/``itf``)."""
        return self._ctx.program()

    def labels(self, cx: Counterexample) -> list[str]:
        prog = self.program()
        return [describe(prog.action_of(e), prog.u) for e, _ in cx.path]

    def describe(self) -> str:
        return self.config.describe()


# ------------------------------------------------------------------ context
def read_cells(e: Expr, lay: Layout) -> frozenset[int]:
    """Every cell an expression may read (a non-constant index: every cell it can name)."""
    out: set[int] = set()
    for r in reads(e):
        shape = lay.shape[r.field]
        choices = [[i.value] if isinstance(i, Const) else range(n)
                   for i, n in zip(r.index, shape, strict=True)]
        for combo in itertools.product(*choices):
            if all(0 <= c < n for c, n in zip(combo, shape, strict=True)):
                out.add(lay.flat(r.field, combo))
    return frozenset(out)


def _object_of(lay: Layout, i: int) -> tuple[str, int]:
    """The object a cell belongs to: (dimension, index); a TD's S-EPT entries are the TD's."""
    f = lay.field_of(i)
    k = i - lay.base[f.name]
    if f.dim == "td_entry":
        return ("td", k // lay.shape[f.name][1])
    return (f.dim, k)


class _Ctx:
    """One configuration's transitions, targets, encoder and concrete evaluators."""

    def __init__(self, config: Config, faults: bool, ablate: Sequence[str],
                 invariants: Sequence[str] | None, lemmas: Sequence[str] | None) -> None:
        self.config = config
        self.u = u = config.universe()
        self.faults = faults
        self.ablate = tuple(ablate)
        self.engine = Engine(u, ablate=ablate, only="module")
        self.layout = lay = self.engine.layout
        self.enc = Z3Encoder(lay)
        self._prog: AnyHost | None = None
        self.initial = self._initial()
        # transitions, in AnyHost's edge order
        self.trans: list[Transition] = []
        for a, guard in any_host_actions(u):
            rule = rule_of(a, Ctx(u, lay, a.cpu, frozenset(ablate)))
            label = describe(a, u)
            self.trans.append(Transition(len(self.trans), a, -1, None, guard, label))
            if faults:
                for k, f in enumerate(rule.faults):
                    self.trans.append(Transition(len(self.trans), a, k,
                                                 status_name(f.status), guard, label))
        # targets: the module invariants, the lemmas, state-encoding
        self.not_covered = not_covered(u)
        if invariants is not None:
            self.check_ids(invariants)
        lem_by_id = {lm.id: lm for lm in LEMMAS}
        if lemmas is not None:
            unknown = [i for i in lemmas if i not in lem_by_id]
            if unknown:
                raise ValueError(f"unknown lemma(s): {', '.join(unknown)}")
        typing = Target(TYPING, "typing", "every cell within its declared range (the Z3 and "
                        "Python readings agree there)", None, [])
        #: what a path may not run through (the explorer's error states)
        self.path_targets: list[Target] = [
            Target(inv.id, "invariant", inv.summary, inv, inv.state_clauses(u, "module"))
            for inv in INVARIANTS if self._has_module_clauses(inv)] + [typing]
        self.targets: list[Target] = [t for t in self.path_targets[:-1]
                                      if invariants is None or t.id in invariants]
        for lm in LEMMAS:
            if lemmas is not None and lm.id not in lemmas:
                continue
            self.targets.append(Target(lm.id, "lemma", lm.summary, lm,
                                       lm.state_clauses(u, "module")))
        self.targets.append(typing)
        for t in self.targets + self.path_targets:
            t.read_sets = [read_cells(c.ok, lay) for c in t.clauses]
        self._cell_typing: dict[tuple[int, int], Any] = {}
        self._state_fns: dict[str, Any] = {}
        self._step_fns: dict[tuple[str, Action], Any] = {}
        self.bounds = self.enc.bounds

    def check_ids(self, ids: Sequence[str]) -> None:
        """ValueError unless every id names an invariant proved here (or state-encoding)."""
        known = {inv.id for inv in INVARIANTS} | {TYPING}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"unknown invariant(s): {', '.join(unknown)} (have: "
                             f"{', '.join(sorted(known - set(self.not_covered)))})")
        outside = [i for i in ids if i in self.not_covered]
        if outside:
            raise ValueError("; ".join(f"{i} is not proved for --host any: "
                                       f"{self.not_covered[i]}" for i in outside))

    def cell_typing(self, i: int, state: list[Any]) -> Any:
        """``Z3Encoder.typing`` of one cell (``state[i]``, a constant): the typing of the
        initial state with that cell replaced, simplified (the other cells are values)."""
        key = (i, state[i].get_id())
        t = self._cell_typing.get(key)
        if t is None:
            s = self.enc.const_state(self.initial)
            s[i] = state[i]
            t = self._cell_typing[key] = z3.simplify(self.enc.typing(s, members=True))
        return t

    def _has_module_clauses(self, inv: Invariant) -> bool:
        return has_clauses(inv, self.u, "module")

    def _initial(self) -> State:
        lay = self.layout
        from tdxcheck.model.enums import HostPage

        s = list(lay.initial())
        for pg in range(1, self.u.n_pages):
            s[lay.flat("host", (pg,))] = int(HostPage.TDX)
        for h in range(1, self.u.platform.hkids):
            s[lay.flat("host_hkid", (h,))] = 1
        return tuple(s)

    def program(self) -> AnyHost:
        if self._prog is None:
            self._prog = AnyHost(self.u, faults=self.faults, ablate=self.ablate)
            labels = [(e.label, e.fault) for e in self._prog.edges]
            assert labels == [(t.label, t.fault_name) for t in self.trans], \
                "the prover's transitions are not the any host's edges"
            assert self._prog.initial() == self.initial
        return self._prog

    # ---- concrete evaluation (the compiled Python reading) -----------------------------
    def state_fn(self, t: Target) -> Any:
        fn = self._state_fns.get(t.id)
        if fn is None:
            gen = new_gen(self.layout)
            src = predicate_source("f", [c.ok for c in t.clauses], self.layout, gen,
                                   two_state=False)
            fn = self._state_fns[t.id] = compile_functions([src], gen)["f"]
        return fn

    def step_fn(self, t: Target, a: Action) -> tuple[Any, list[Clause]]:
        cls = t.step_clauses(self, a)
        key = (t.id, a)
        fn = self._step_fns.get(key)
        if fn is None and cls:
            gen = new_gen(self.layout)
            src = predicate_source("f", [c.ok for c in cls], self.layout, gen, two_state=True)
            fn = self._step_fns[key] = compile_functions([src], gen)["f"]
        return fn, cls

    def typing_violation(self, s: State) -> str | None:
        """``Z3Encoder.typing(members=True)`` in the concrete reading
        (``Layout.encoding_violation``)."""
        return self.layout.encoding_violation(s)

    def z3_holds_initially(self, t: Target) -> bool:
        """``t``'s state clauses (or the typing) on the initial state, in the Z3 reading."""
        init = self.enc.const_state(self.initial)
        terms = ([self.enc.typing(init, members=True)] if t.kind == "typing" else
                 self.enc.clauses([c.ok for c in t.clauses], init))
        return all(z3.is_true(z3.simplify(x)) for x in terms)

    def in_range(self, s: State) -> bool:
        return self.typing_violation(s) is None

    def concrete_violation(self, t: Target, pre: State | None, post: State,
                           a: Action | None) -> str | None:
        """The message of the first clause of ``t`` that ``post`` (or the step pre -> post)
        breaks in the compiled Python reading, or None."""
        if t.kind == "typing":
            return self.typing_violation(post)
        if t.clauses:
            k = self.state_fn(t)(post)
            if k >= 0:
                return t.clauses[k].message
        if pre is not None and a is not None:
            fn, cls = self.step_fn(t, a)
            if fn is not None:
                k = fn(pre, post)
                if k >= 0:
                    return cls[k].message
        return None


# ------------------------------------------------------------------ induction
class _Induction:
    """One Houdini round: every (hypothesis, transition) query against one hypothesis set."""

    def __init__(self, ctx: _Ctx, hyps: list[Target], timeout_ms: int, round_no: int,
                 progress: Progress | None, t0: float, cores: bool = False) -> None:
        self.ctx, self.hyps, self.timeout_ms = ctx, hyps, timeout_ms
        self.round = round_no
        self.progress, self.t0 = progress, t0
        enc = ctx.enc
        self.pre = enc.fresh_state("s")
        self.sol = z3.Solver()
        self.sol.set("timeout", timeout_ms)
        assert any(h.kind == "typing" for h in hyps), "the background assumes the typing"
        self.background: list[Any] = [enc.typing(self.pre, members=True)]
        for h in hyps:
            if h.clauses:
                self.background += enc.clauses([c.ok for c in h.clauses], self.pre)
        self.sol.add(*self.background)
        self.records: list[QueryRecord] = []
        self.failed: dict[str, tuple[str, CTI | None]] = {}  # target -> (answer, CTI)
        self.frame: dict[str, int] = {}
        self.modes: dict[str, tuple[int, int]] = {}  # target -> (settled fast, fell through)
        # unsat cores (``cores``): which hypotheses each target's unsat queries used, on a
        # second solver where each hypothesis is guarded by a literal (only reported)
        self.cores = cores
        self.uses: dict[str, set[str]] = {}
        self.no_core: dict[str, int] = {}  # target -> queries whose core was not found
        if cores:
            self.lits = {h.id: z3.Bool(f"hyp:{h.id}") for h in hyps if h.clauses}
            self.core_sol = z3.Solver()
            self.core_sol.set("core.minimize", True)
            self.core_sol.add(self.background[0])
            for h in hyps:
                if h.clauses:
                    self.core_sol.add(z3.Implies(self.lits[h.id], z3.And(*enc.clauses(
                        [c.ok for c in h.clauses], self.pre))))

    def run(self) -> None:
        ctx, enc, sol = self.ctx, self.ctx.enc, self.sol
        n = len(ctx.trans)
        last = time.monotonic()
        for k, tr in enumerate(ctx.trans):
            st, post, where = enc.action(ctx.engine, tr.action, self.pre, tr.fault)
            changed = frozenset(i for i in range(len(post)) if not z3.eq(post[i], self.pre[i]))
            step_facts = [enabled_term(where)]
            if tr.guard is not None:
                step_facts.append(enc.cond(tr.guard, self.pre))
            sol.push()
            sol.add(*step_facts)
            if self.cores:
                self.core_sol.push()
                self.core_sol.add(*step_facts)
            for h in self.hyps:
                if h.id in self.failed:
                    continue  # already out of this round's conclusions
                goals = self._goals(h, tr, post, changed)
                if not goals:
                    self.frame[h.id] = self.frame.get(h.id, 0) + 1
                    continue
                # one solver call per clause: ¬(c1 ∧ ... ∧ cn) is sat iff some ¬ci is, and
                # the calls one at a time are much faster than the disjunction
                t1 = time.monotonic()
                answer = "unsat"
                for g in goals:
                    r, model = self._check(h.id, z3.Not(g), step_facts)
                    if r == "sat":
                        answer = "sat"
                        self.failed[h.id] = ("sat", self._cti(h, tr, st, post, g, model))
                        break
                    if r == "unknown":
                        answer = "unknown"
                if answer == "unknown":
                    self.failed.setdefault(h.id, ("unknown", None))
                self.records.append(QueryRecord(h.id, tr.eid, answer,
                                                time.monotonic() - t1, self.round,
                                                len(goals)))
                if answer == "unsat" and self.cores:
                    self._core(h, goals)  # not timed: only a report
            sol.pop()
            if self.cores:
                self.core_sol.pop()
            now = time.monotonic()
            if self.progress is not None and (now - last > 1.0 or k == n - 1):
                last = now
                self.progress({"phase": "induction", "round": self.round, "done": k + 1,
                               "total": n, "queries": len(self.records),
                               "failed": len(self.failed), "seconds": now - self.t0})

    def _core(self, h: Target, goals: list[Any]) -> None:
        """The hypotheses an unsat query used (its minimised unsat core), added to
        ``uses[h]``; a goal the core solver does not settle in ``CORE_MS`` is counted in
        ``no_core`` (then every hypothesis may have been used)."""
        cs = self.core_sol
        cs.set("timeout", CORE_MS)
        used = self.uses.setdefault(h.id, set())
        for g in goals:
            cs.push()
            cs.add(z3.Not(g))
            r = cs.check(*self.lits.values())
            if r == z3.unsat:
                used.update(str(x).removeprefix("hyp:") for x in cs.unsat_core())
            else:
                self.no_core[h.id] = self.no_core.get(h.id, 0) + 1
            cs.pop()

    def _check(self, target: str, negated_goal: Any, step_facts: list[Any]
               ) -> tuple[str, Any]:
        """sat | unsat | unknown, and a model when sat.

        First the incremental solver (the hypotheses asserted once, the transition pushed),
        briefly: most goals are settled in a few milliseconds there.  A goal it does not
        settle in ``FAST_MS`` (the counting clauses: a sum over pages or vCPUs) goes to a
        fresh solver that preprocesses and bit-blasts the whole query (``_TACTIC``), which
        is several times faster on those, with the full timeout.  A target whose goals
        keep falling through goes to the one-shot solver directly."""
        spent = 0.0
        fast_ok, slow = self.modes.get(target, (0, 0))
        if slow < 2 or slow * 3 < fast_ok:
            answer, model, spent = _incremental(self.sol, negated_goal, self.timeout_ms)
            if answer == "sat":
                return "sat", model
            if answer == "unsat":
                self.modes[target] = (fast_ok + 1, slow)
                return "unsat", None
            self.modes[target] = (fast_ok, slow + 1)
        return _one_shot([*self.background, *step_facts], negated_goal,
                         int(self.timeout_ms - spent))

    def _goals(self, h: Target, tr: Transition, post: list[Any],
               changed: frozenset[int]) -> list[Any]:
        """The target's clauses on the post-state that the step may change, one term each
        (a state clause reading a changed cell, each step clause; for ``state-encoding``
        each changed cell's range)."""
        enc, pre = self.ctx.enc, self.pre
        if not FRAME_RULE:  # every clause and cell (tests: the frame rule changes nothing)
            changed = frozenset(range(len(post)))
        if h.kind == "typing":
            return [z3.substitute(self.ctx.cell_typing(i, pre), (pre[i], post[i]))
                    for i in sorted(changed)]
        rel = [c.ok for c, rs in zip(h.clauses, h.read_sets, strict=True) if rs & changed]
        goals = enc.clauses(rel, post) if rel else []
        step = h.step_clauses(self.ctx, tr.action)
        if step:
            goals += enc.clauses([c.ok for c in step], pre, post)
        return goals

    # ---- counterexamples to induction ------------------------------------------------
    def _cti(self, h: Target, tr: Transition, st: Any, post: list[Any], goal: Any,
             model: Any) -> CTI:
        """Minimise the model (cells back to the initial state's values where the query
        stays sat, object by object, then cell by cell), then read it."""
        ctx, enc, sol = self.ctx, self.ctx.enc, self.sol
        lay = ctx.layout
        base = ctx.initial
        sol.push()
        sol.add(z3.Not(goal))
        viol_cells: set[int] = set()  # cells the broken clauses read
        for c, rs in zip(h.clauses, h.read_sets, strict=True):
            if z3.is_false(model.eval(enc.cond(c.ok, post), model_completion=True)):
                viol_cells |= rs
        groups: dict[tuple[str, int], list[int]] = {}
        for i in range(lay.size):
            groups.setdefault(_object_of(lay, i), []).append(i)
        pushed = 0
        sol.set("timeout", min(self.timeout_ms, 2000))

        def try_fix(cells: list[int]) -> bool:
            nonlocal pushed, model
            cells = [i for i in cells
                     if model.eval(self.pre[i], model_completion=True).as_long() != base[i]]
            if not cells:
                return True
            sol.push()
            sol.add(*(self.pre[i] == enc.const(base[i]) for i in cells))
            if sol.check() == z3.sat:
                model = sol.model()
                pushed += 1
                return True
            sol.pop()
            return False

        for _key, cells in sorted(groups.items()):
            try_fix(cells)
        for i in range(lay.size):
            try_fix([i])
        sol.set("timeout", self.timeout_ms)
        pre_v = enc.values(self.pre, model)
        post_v = enc.values(post, model)
        status = None
        if tr.action.is_seamcall or tr.action.kind == "TDG.MEM.PAGE.ACCEPT":
            sv = model.eval(st, model_completion=True).as_long()
            status = status_name(sv)
        msgs = []
        for c in h.clauses:
            if z3.is_false(model.eval(enc.cond(c.ok, post), model_completion=True)):
                msgs.append(c.message)
        for c in h.step_clauses(ctx, tr.action):
            if z3.is_false(model.eval(enc.cond(c.ok, self.pre, post), model_completion=True)):
                msgs.append(c.message)
        if h.kind == "typing":
            msgs = [f"{lay.label(i)} = {post_v[i]} is outside its declared range "
                    f"(0..{ctx.bounds[i]})" for i in range(lay.size)
                    if not 0 <= post_v[i] <= ctx.bounds[i]] or ["a cell leaves its enum"]
            viol_cells = {i for i in range(lay.size) if not 0 <= post_v[i] <= ctx.bounds[i]}
        for _ in range(pushed + 1):
            sol.pop()
        r = ctx.engine.step(pre_v, tr.action, tr.fault)
        # a value outside the range wraps in Z3 (-1 is 2**width - 1): compare modulo
        top = 1 << enc.width
        replayed = tuple(v % top for v in r.state) == post_v
        confirmed = (replayed and ctx.in_range(pre_v) and all(
            ctx.concrete_violation(x, None, pre_v, None) is None for x in self.hyps)
            and ctx.concrete_violation(h, pre_v, r.state, tr.action) is not None)
        changes = [(lay.label(i), lay.show(i, pre_v[i]), lay.show(i, post_v[i]))
                   for i in range(lay.size) if pre_v[i] != post_v[i]]
        context = [(lay.label(i), lay.show(i, pre_v[i]), i in viol_cells)
                   for i in range(lay.size) if pre_v[i] != base[i] and pre_v[i] == post_v[i]]
        return CTI(h.id, tr.eid, tr.text, status, msgs, changes, context, pre_v, post_v,
                   replayed, self.round, confirmed)


# ------------------------------------------------------------------ bounded model checking
class _Bmc:
    """The transition relation unrolled from the initial state, one step at a time."""

    def __init__(self, ctx: _Ctx, timeout_ms: int) -> None:
        self.ctx = ctx
        self.enc = ctx.enc
        self.sol = z3.Solver()
        self.timeout_ms = timeout_ms
        self.states: list[list[Any]] = [self.enc.const_state(ctx.initial)]
        self.choices: list[Any] = []
        self.bits = max(1, (len(ctx.trans) - 1).bit_length())

    def constrain_path(self, targets: Sequence[Target], k: int) -> None:
        """States before the last are not error states (the explorer does not expand them):
        every state invariant and ``state-encoding`` hold at depth ``k``."""
        s = self.states[k]
        for t in targets:
            if t.kind == "typing":
                self.sol.add(self.enc.typing(s, members=True))
            elif t.clauses:
                self.sol.add(*self.enc.clauses([c.ok for c in t.clauses], s))

    def add_step(self) -> None:
        ctx, enc = self.ctx, self.enc
        k = len(self.choices)
        s = self.states[k]
        e = z3.BitVec(f"edge@{k}", self.bits)
        nxt = enc.fresh_state(f"s{k + 1}")
        changes: dict[int, list[tuple[int, Any]]] = {}
        for j, tr in enumerate(ctx.trans):
            _st, post, where = enc.action(ctx.engine, tr.action, s, tr.fault)
            cond = [enabled_term(where)]
            if tr.guard is not None:
                cond.append(enc.cond(tr.guard, s))
            self.sol.add(z3.Implies(e == j, z3.And(*cond)))
            for i, t in enumerate(post):
                if not z3.eq(t, s[i]):
                    changes.setdefault(i, []).append((j, t))
        if len(ctx.trans) < (1 << self.bits):
            self.sol.add(z3.ULT(e, len(ctx.trans)))
        for i in range(len(s)):
            t = s[i]
            for j, term in reversed(changes.get(i, [])):
                t = z3.If(e == j, term, t)
            self.sol.add(nxt[i] == t)
        self.choices.append(e)
        self.states.append(nxt)

    def violation(self, t: Target, k: int) -> Any:
        """A violation of ``t`` at depth ``k``: in state ``k``, or by step ``k-1``."""
        enc, s = self.enc, self.states[k]
        parts = []
        if t.kind == "typing":
            parts.append(z3.Not(enc.typing(s, members=True)))
        elif t.clauses:
            parts.append(z3.Not(z3.And(*enc.clauses([c.ok for c in t.clauses], s))))
        if k > 0 and t.inv is not None:
            e, pre = self.choices[k - 1], self.states[k - 1]
            for j, tr in enumerate(self.ctx.trans):
                cls = t.step_clauses(self.ctx, tr.action)
                if cls:
                    parts.append(z3.And(e == j, z3.Not(z3.And(*enc.clauses(
                        [c.ok for c in cls], pre, s)))))
        return z3.Or(*parts) if parts else None

    def check(self, goal: Any) -> tuple[str, Any]:
        """The unrolled relation and ``goal``: first on the incremental solver for at most
        ``FAST_MS``, then on a one-shot bit-blasting solver (``_TACTIC``, much faster on
        the deeper unrollings) with the rest of the timeout."""
        return two_stage_check(self.sol, goal, self.timeout_ms)

    def trace(self, t: Target, model: Any, k: int) -> Counterexample:
        """Replay the model's edge choices on the concrete model (``AnyHost.apply_edge``):
        the states must be the model's, and the last state (or step) must break ``t``."""
        ctx = self.ctx
        prog = ctx.program()
        s = ctx.initial
        path: list[tuple[int, int | None]] = []
        states = [s]
        pre = s
        for d in range(k):
            j = model.eval(self.choices[d], model_completion=True).as_long()
            tr = ctx.trans[j]
            r = prog.apply_edge(s, tr.eid)
            if r is None:
                raise AssertionError(f"bmc trace step {d + 1} ({tr.text}) is not enabled "
                                     "on the concrete model")
            want = self.enc.values(self.states[d + 1], model)
            top = 1 << self.enc.width  # an out-of-range value wraps in Z3 (-1: 2**w - 1)
            if tuple(v % top for v in r[2]) != want:
                raise AssertionError(f"bmc trace step {d + 1} ({tr.text}): the Z3 and the "
                                     "concrete next states differ")
            path.append((tr.eid, r[1]))
            pre, s = s, r[2]
            states.append(s)
        a = ctx.trans[path[-1][0]].action if path else None
        msg = ctx.concrete_violation(t, pre if path else None, s, a)
        if msg is None:
            if t.kind != "typing" and not ctx.in_range(s):
                raise Unconfirmed(
                    f"a {k}-step run breaks it in the Z3 reading, but its last state has a "
                    f"cell out of range ({ctx.typing_violation(s)}) and the model's reading "
                    "does not break it there")
            raise AssertionError(f"bmc trace for {t.id} does not break it when replayed")
        return Counterexample(t.id, msg, path, states)


@dataclass
class _Found:
    status: str = NO_VIOLATION
    trace: Counterexample | None = None
    seconds: float = 0.0
    queries: int = 0
    note: str = ""


class Unconfirmed(Exception):
    """A BMC model whose last state breaks the target in the Z3 reading but not in the
    concrete one (a cell out of range, where the readings part): no verdict."""


def depth_queries(bmc: Any, goals: Sequence[tuple[Any, Any]], k: int,
                  records: list[QueryRecord], stats: dict[str, Any],
                  timeout: Callable[[], int] | None = None
                  ) -> tuple[str, list[tuple[Any, str, Any]]]:
    """The BMC queries at depth ``k``: one for every open goal together, and only when that
    is not unsat, each goal (a (target, term) pair) on its own.  Returns the joint answer
    and (target, answer, model) per goal asked alone; each query is recorded, its time and
    count charged to ``stats[target.id]`` (``.seconds``, ``.queries``; the joint one
    shared out).  ``timeout()`` gives each query's budget (else ``bmc.timeout_ms``); the
    joint query that runs out of it is not split."""
    if timeout is not None:
        bmc.timeout_ms = timeout()
    t1 = time.monotonic()
    joint, _m = bmc.check(z3.Or(*(g for _t, g in goals)))
    dt = time.monotonic() - t1
    records.append(QueryRecord("*", k, joint, dt, 0))
    for t, _g in goals:
        stats[t.id].seconds += dt / len(goals)
        stats[t.id].queries += 1
    out: list[tuple[Any, str, Any]] = []
    if joint == "unsat" or (joint == "unknown" and timeout is not None and timeout() <= 0):
        return joint, out
    for t, g in goals:
        if timeout is not None:
            bmc.timeout_ms = max(timeout(), 1)
        t1 = time.monotonic()
        answer, model = bmc.check(g)
        dt = time.monotonic() - t1
        records.append(QueryRecord(t.id, k, answer, dt, 0))
        stats[t.id].seconds += dt
        stats[t.id].queries += 1
        out.append((t, answer, model))
    return joint, out


def _bmc_search(ctx: _Ctx, targets: list[Target], path_targets: list[Target], depth: int,
                timeout_ms: int, progress: Progress | None, t0: float,
                records: list[QueryRecord], facts: Sequence[Target] = (),
                budget: float | None = None) -> tuple[dict[str, _Found], int]:
    """Shortest violation (up to ``depth`` steps) of each target, and the depth searched
    completely.  ``path_targets`` must hold in every state before the last (as in the
    explorer, an error state is not expanded); ``facts`` (proved invariants) hold in every
    state.  ``budget`` (seconds) stops the deepening: a depth not finished in it is not
    searched, and the targets still open are reported at the last complete depth."""
    bmc = _Bmc(ctx, timeout_ms)
    out = {t.id: _Found() for t in targets}
    open_ = list(targets)
    start = time.monotonic()
    done = -1

    def left_ms() -> int:
        if budget is None:
            return timeout_ms
        return int(min(timeout_ms, (budget - (time.monotonic() - start)) * 1000))

    bmc.constrain_path(facts, 0)
    for k in range(depth + 1):
        if k > 0:
            bmc.constrain_path(path_targets, k - 1)
            bmc.add_step()
            bmc.constrain_path(facts, k)
        goals = [(t, bmc.violation(t, k)) for t in open_]
        goals = [(t, g) for t, g in goals if g is not None]
        if goals:
            if left_ms() <= 0:
                break
            joint, alone = depth_queries(bmc, goals, k, records, out, left_ms)
            if joint == "unknown" and left_ms() <= 0:
                break  # out of the budget at this depth: it is not searched
            for t, answer, model in alone:
                f = out[t.id]
                if answer == "sat":
                    try:
                        f.status, f.trace = VIOLATED, bmc.trace(t, model, k)
                    except Unconfirmed as e:
                        f.status, f.note = UNKNOWN, str(e)
                    open_.remove(t)
                elif answer == "unknown":
                    f.status = UNKNOWN
                    open_.remove(t)
        done = k
        if progress is not None:
            progress({"phase": "bmc", "depth": k, "of": depth, "open": len(open_),
                      "seconds": time.monotonic() - t0})
        if not open_:
            break
    return out, done


# ------------------------------------------------------------------ the entry point
def prove(config: Config, *, mode: str = INDUCTION, depth: int | None = None,
          timeout_ms: int = 60_000, ablate: Sequence[str] = (),
          invariants: Sequence[str] | None = None, lemmas: Sequence[str] | None = None,
          faults: bool = False, confirm_depth: int | None = None,
          confirm_seconds: float = 60.0, progress: Progress | None = None,
          cores: bool = False) -> ProveResult:
    """Prove the module invariants of ``config`` for ``--host any``.

    ``mode="induction"``: every module invariant (or the ids in ``invariants``), with the
    lemmas of ``properties/lemmas.py`` (or those in ``lemmas``), proved inductive together;
    a hypothesis that is not is searched for by BMC from the initial state, up to
    ``confirm_depth`` steps (default ``depth``, else 12) and ``confirm_seconds``, with the
    proved hypotheses as facts on every state, to tell ``violated`` from ``not-inductive``.
    ``mode="bmc"``: bounded model checking to ``depth`` (default 8) steps; every invariant
    (or those in ``invariants``) and ``state-encoding`` gets its shortest violation or
    ``no-violation``; as in the explorer, no path runs through a state that breaks any
    module invariant.
    ``timeout_ms`` bounds each solver query; a timeout is ``unknown``.
    ``cores``: also record, per proved target, the hypotheses its queries' unsat cores
    name (``TargetResult.uses``; "lemmas used"), at the cost of a second solver pass.
    """
    if mode not in (INDUCTION, BMC):
        raise ValueError(f"unknown mode {mode!r} (have: {INDUCTION}, {BMC})")
    t0 = time.monotonic()
    # induction proves the named invariants together with every other hypothesis (each
    # query assumes them all) and reports only the named ones; bmc searches the named ones
    ctx = _Ctx(config, faults, ablate, invariants if mode == BMC else None,
               lemmas if mode == INDUCTION else ())
    if invariants is not None:
        ctx.check_ids(invariants)
    records: list[QueryRecord] = []
    results: list[TargetResult] = []
    rounds = 0
    if mode == BMC:
        depth = 8 if depth is None else depth
        targets = ctx.targets
        found, _done = _bmc_search(ctx, targets, ctx.path_targets, depth, timeout_ms,
                                   progress, t0, records)
        for t in targets:
            f = found[t.id]
            note = ""
            if f.status == NO_VIOLATION:
                note = f"no violation in {depth} steps (not a proof)"
            elif f.status == UNKNOWN:
                note = f.note or f"a query timed out ({timeout_ms} ms)"
            results.append(TargetResult(t.id, t.kind, t.summary, f.status, f.seconds,
                                        f.queries, counterexample=f.trace, note=note))
    else:
        results, rounds, depth = _induction(
            ctx, timeout_ms, confirm_depth if confirm_depth is not None else depth,
            confirm_seconds, progress, t0, records, cores)
        if invariants is not None:
            results = [r for r in results if r.invariant in invariants]
    seconds = time.monotonic() - t0
    return ProveResult(
        config, mode, depth, faults, tuple(ablate), results, len(ctx.trans),
        len(records), seconds, sum(r.seconds for r in records), rounds,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, timeout_ms, records, ctx,
        tuple(invariants or ()))


def _induction(ctx: _Ctx, timeout_ms: int, confirm_depth: int | None,
               confirm_seconds: float, progress: Progress | None, t0: float,
               records: list[QueryRecord], cores: bool = False
               ) -> tuple[list[TargetResult], int, int | None]:
    res = {t.id: TargetResult(t.id, t.kind, t.summary, PROVED) for t in ctx.targets}
    # initially true, in both readings (they must agree: the initial state is in range)
    hyps: list[Target] = []
    dropped: dict[str, tuple[str, CTI | None, int]] = {}
    for t in ctx.targets:
        msg = ctx.concrete_violation(t, None, ctx.initial, None)
        if (msg is None) != ctx.z3_holds_initially(t):
            raise AssertionError(f"{t.id}: the Z3 and the Python readings disagree on the "
                                 "initial state")
        if msg is not None:
            res[t.id].status = VIOLATED
            res[t.id].counterexample = Counterexample(t.id, msg, [], [ctx.initial])
            res[t.id].note = "false in the initial state"
        else:
            hyps.append(t)
    rounds = 0
    while True:
        if not any(t.kind == "typing" for t in hyps):
            # every query assumes the cells in range (where the Z3 reading is the model's):
            # without state-encoding nothing else is proved
            for t in hyps:
                dropped[t.id] = (ASSUMES_TYPING, None, rounds)
            hyps = []
            break
        rounds += 1
        ind = _Induction(ctx, hyps, timeout_ms, rounds, progress, t0, cores)
        ind.run()
        records.extend(ind.records)
        for t in hyps:
            r = res[t.id]
            r.frame = ind.frame.get(t.id, 0)
            if cores:
                r.uses = sorted(ind.uses.get(t.id, set()) - {t.id})
                r.no_core = ind.no_core.get(t.id, 0)
        if not ind.failed:
            break
        for tid, (answer, cti) in ind.failed.items():
            dropped[tid] = (answer, cti, rounds)
        hyps = [t for t in hyps if t.id not in ind.failed]
    # per-target timing over every round
    for q in records:
        r = res[q.target]
        r.seconds += q.seconds
        r.queries += 1
        if r.slowest is None or q.seconds > r.slowest[0]:
            r.slowest = (q.seconds, ctx.trans[q.edge].text)
    # tell violated from not inductive: a bounded search from the initial state, with the
    # proved hypotheses as facts (they hold in every reachable state)
    depth = 12 if confirm_depth is None else confirm_depth
    failing = [t for t in ctx.targets if t.id in dropped]
    found: dict[str, _Found] = {}
    searched = -1
    if failing and depth > 0:
        bmc_records: list[QueryRecord] = []
        found, searched = _bmc_search(ctx, failing, ctx.path_targets, depth, timeout_ms,
                                      progress, t0, bmc_records, facts=hyps,
                                      budget=confirm_seconds)
        records.extend(bmc_records)
    for t in failing:
        answer, cti, rnd = dropped[t.id]
        r = res[t.id]
        r.cti = cti
        f = found.get(t.id, _Found())
        r.seconds += f.seconds
        if f.status == VIOLATED and f.trace is not None:
            r.status, r.counterexample = VIOLATED, f.trace
            r.note = f"reachable: a {f.trace.length}-step run breaks it"
        elif answer == "unknown":
            r.status = UNKNOWN
            r.note = f"a query timed out ({timeout_ms} ms)"
        elif answer == ASSUMES_TYPING:
            r.status = UNKNOWN
            r.note = (f"not proved: every induction query assumes {TYPING} (the cells in "
                      "range, where the Z3 reading is the model's), which is not proved")
        elif f.status == UNKNOWN and f.note:
            r.status = UNKNOWN
            r.note = f.note
        else:
            r.status = NOT_INDUCTIVE
            lost = sorted(k for k, v in dropped.items() if v[2] < rnd)
            searched_t = searched if f.status != UNKNOWN else searched - 1
            r.note = (f"no violation within {max(searched_t, 0)} steps; "
                      if depth > 0 else "") + (
                "a lemma is missing" if not lost else
                f"not inductive once {', '.join(lost)} (not proved) left the hypotheses")
    return [res[t.id] for t in ctx.targets], rounds, (searched if failing else None)


# ------------------------------------------------------------------ reporters
def options_lines(r: ProveResult) -> list[str]:
    """The header line naming the options that change what was proved, if any."""
    extra = (["fault points on"] if r.faults else []) + (
        ["ablated: " + ", ".join(r.ablate)] if r.ablate else [])
    return ["  " + "; ".join(extra)] if extra else []


def prove_text(result: ProveResult, verbose: bool = False) -> str:
    """For people: one line per invariant and lemma (status, time, queries), then each
    counterexample to induction and each violation, then the totals."""
    r = result
    out = [f"tdxcheck prove ({r.mode}): host any, config {r.config.describe()}",
           *options_lines(r)]
    out.append(f"  {r.transitions} transitions, per-query timeout {r.timeout_ms} ms")
    if r.only and r.mode == INDUCTION:
        out.append("  shown: " + ", ".join(r.only) + "; proved together with every other "
                   "invariant, lemma and state-encoding (each query assumes them all)")
    out.append("")
    width = max([len(t.invariant) for t in r.results] + [10])
    for t in r.results:
        kind = {"lemma": " (lemma)", "typing": " (cells in range)"}.get(t.kind, "")
        line = (f"  {t.invariant:<{width}}  {t.status:<13} {t.seconds:7.2f}s  "
                f"{t.queries:5d} queries")
        if r.mode == INDUCTION:
            line += f", {t.frame} by frame"
        out.append(line + kind)
        if verbose and t.slowest:
            out.append(f"      slowest: {t.slowest[0]:.3f}s on {t.slowest[1]}")
        if t.uses is not None and t.status == PROVED:
            out.append("      uses: " + (", ".join(t.uses) or "itself only") + (
                f" ({t.no_core} queries without a core: may use any)" if t.no_core else ""))
        if t.note and t.status != PROVED:
            out.append(f"      {t.note}")
    for t in r.results:
        if t.cti is not None and (t.status == NOT_INDUCTIVE or verbose):
            out.append("")
            out.append(cti_text(t.cti, "not inductive" if t.status == NOT_INDUCTIVE
                                else t.status))
        if t.counterexample is not None:
            out.append("")
            out.append(_cx_text(r, t))
    scope = r.scope()
    if scope:
        out.append("")
        out.append("not proved by this run (--host any):")
        for why in dict.fromkeys(w for _i, w in scope):
            out.append("  " + ", ".join(i for i, w in scope if w == why) + ":")
            out.append(f"      {why}")
    out.append("")
    if verbose and r.records:
        out.append("queries (target, edge, answer, seconds):")
        ctx = r._ctx
        for q in r.records:
            where = ctx.trans[q.edge].text if r.mode == INDUCTION and q.round else \
                f"depth {q.edge}"
            out.append(f"  {q.target:<{width}} {q.answer:<8} {q.seconds:8.4f}s  {where}")
        out.append("")
    qps = f"{r.queries_per_second:,.0f} queries/s" if r.queries else "no queries"
    n_ok = sum(t.status in (PROVED, NO_VIOLATION) for t in r.results)
    verdict = "all proved" if r.ok and r.mode == INDUCTION else (
        f"no violation in {r.depth} steps" if r.ok else "NOT PROVED" if r.mode == INDUCTION
        else "VIOLATED")
    out.append(f"{verdict}: {n_ok}/{len(r.results)} "
               f"{'proved' if r.mode == INDUCTION else 'without violation'}; "
               f"{r.queries} queries in {r.solver_seconds:.1f}s ({qps}), "
               f"{r.rounds if r.mode == INDUCTION else r.depth} "
               f"{'round(s)' if r.mode == INDUCTION else 'steps'}, total {r.seconds:.1f}s, "
               f"peak memory {r.peak_rss_mib:.0f} MiB")
    return "\n".join(out)


def cti_text(c: CTI, label: str) -> str:
    out = [f"[{c.invariant}] {label}: counterexample to induction"
           + (" (a lemma is missing)" if label == "not inductive" else
              " (and reachable: see the trace)" if label == VIOLATED else ""),
           f"  step: {c.transition}" + (f" -> {c.status}" if c.status else "")]
    for m in c.clauses:
        out.append(f"  breaks: {m}")
    out.append("  the step changes:")
    for f, a, b in c.changes:
        out.append(f"       {f}: {a} -> {b}")
    if not c.changes:
        out.append("       nothing")
    if c.context:
        out.append("  in a state where (every hypothesis holds; fields not shown are as in "
                   "the initial state):")
        for f, v, mark in c.context:
            out.append(f"       {f} = {v}{'   <- read by the broken clause' if mark else ''}")
    if not c.replayed:
        out.append("  !! the concrete engine gives a different next state (encoding bug)")
    elif not c.confirmed:
        out.append("  !! the compiled Python reading does not confirm this CTI")
    return "\n".join(out)


def _cx_text(r: ProveResult, t: TargetResult) -> str:
    from .report import counterexample_text

    cx = t.counterexample
    assert cx is not None
    how = "by bounded model checking" if cx.length else "in the initial state"
    head = f"[{t.invariant}] violated: a reachable counterexample, found {how}"
    if not cx.path:
        return f"{head}: {cx.message}"
    prog = r.program()
    return head + " and replayed on the model\n" + counterexample_text(
        prog, cx, r.labels(cx))


def prove_json(result: ProveResult, queries: bool = False) -> dict[str, Any]:
    """``{"results": [{"invariant", "status", "seconds", "cti"?}], ...totals}``; with
    ``queries`` also every query (target, transition or depth, answer, seconds)."""
    r = result
    rows = []
    for t in r.results:
        row: dict[str, Any] = {"invariant": t.invariant, "status": t.status,
                               "seconds": round(t.seconds, 4), "kind": t.kind,
                               "queries": t.queries}
        if r.mode == INDUCTION:
            row["frame"] = t.frame
        if t.slowest:
            row["slowest"] = {"seconds": round(t.slowest[0], 4), "transition": t.slowest[1]}
        if t.cti is not None and t.status != PROVED:
            row["cti"] = t.cti.to_json()
        if t.counterexample is not None:
            cx = t.counterexample
            row["counterexample"] = {
                "message": cx.message, "length": cx.length,
                "trace": r.labels(cx) if cx.path else []}
        if t.note:
            row["note"] = t.note
        if t.uses is not None and t.status == PROVED:
            row["uses"] = t.uses
            if t.no_core:
                row["queries_without_core"] = t.no_core
        rows.append(row)
    return {
        "mode": r.mode, "config": r.config.name, "faults": r.faults, "ablate": list(r.ablate),
        "depth": r.depth, "transitions": r.transitions, "results": rows,
        "not_proved_here": [{"invariant": i, "why": why} for i, why in r.scope()],
        "queries": r.queries, "solver_seconds": round(r.solver_seconds, 3),
        "seconds": round(r.seconds, 3), "queries_per_second": round(r.queries_per_second, 1),
        "rounds": r.rounds, "peak_rss_mib": round(r.peak_rss_mib, 1), "ok": r.ok,
        **({"query_log": [_query_json(r, q) for q in r.records]} if queries else {}),
    }


def _query_json(r: ProveResult, q: QueryRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"target": q.target, "answer": q.answer,
                           "seconds": round(q.seconds, 5)}
    if q.round:  # an induction query
        out.update(transition=r._ctx.trans[q.edge].text, round=q.round,
                   solver_calls=q.calls)
    else:
        out["depth"] = q.edge
    return out


def write_traces(result: ProveResult, out: Any, title: str = "") -> list[list[str]]:
    """Each reachable counterexample as ``OUT/<invariant>.tdx`` (a replayable scenario) and
    ``.itf.json``, as ``check.write_traces`` writes the explorer's; returns the paths."""
    from pathlib import Path

    from .traces import any_host_tdx, dumps_itf, itf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prog = result.program() if result.counterexamples else None
    files = []
    for cx in result.counterexamples:
        if not cx.path:
            continue  # false initially: nothing to replay
        base = out / cx.invariant
        head = title or (f"tdxcheck prove ({result.mode}), host any, config "
                         f"{result.config.describe()}")
        text = any_host_tdx(prog, cx, head).replace(
            "found by tdxcheck check --host any (breadth-first: shortest)",
            "found by tdxcheck prove (bounded model checking: shortest)")
        base.with_suffix(".tdx").write_text(text)
        base.with_suffix(".itf.json").write_text(dumps_itf(itf(prog, cx, result.labels(cx))))
        files.append([str(base.with_suffix(".tdx")), str(base.with_suffix(".itf.json"))])
    return files


__all__ = ["BMC", "CTI", "INDUCTION", "NOT_INDUCTIVE", "NO_VIOLATION", "PROVED", "TYPING",
           "UNKNOWN", "VIOLATED", "ProveResult", "QueryRecord", "TargetResult", "Transition",
           "cti_text", "prove", "prove_json", "prove_text", "read_cells", "write_traces"]
