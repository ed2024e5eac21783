"""What ``tdxcheck prove --host any`` shares between induction (``induction.py``), BMC
(``bmc.py``) and CTIs (``cti.py``): the solver calls, the result records, and ``_Ctx``
(the any host's transitions, hypotheses and the two readings of a state).

Solving: one incremental solver per round holds the hypotheses; each transition is pushed
once, and each clause of a target that the transition may change is one solver call
(``push``/``pop``; ¬(c1 ∧ … ∧ cn) is sat iff some ¬ci is, and the calls one at a time are
much faster than the disjunction).  A call the incremental solver does not settle within
``FAST_MS`` (the counting clauses: sums over pages or vCPUs) goes to a one-shot solver
that preprocesses and bit-blasts the whole query (``_TACTIC``); ``timeout_ms`` bounds each
call.  Every answer is recorded (``QueryRecord``: target, transition, answer, seconds).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import z3
from tdxcheck.checker.explore.bfs import Counterexample
from tdxcheck.checker.explore.engine import STATE_ENCODING, Engine
from tdxcheck.checker.explore.programs import (
    AnyHost,
    Config,
    any_host_actions,
    has_clauses,
    not_covered,
    partly_covered,
)
from tdxcheck.checker.scenario import InputError
from tdxcheck.model.actions import Action, describe, rule_of
from tdxcheck.model.compile import compile_functions, new_gen, predicate_source
from tdxcheck.model.expr import Const, Expr, reads
from tdxcheck.model.rule import Ctx
from tdxcheck.model.state import Layout, State
from tdxcheck.model.status import status_name
from tdxcheck.properties import INVARIANTS, Clause, Invariant
from tdxcheck.properties.lemmas import LEMMAS

from .encode import Z3Encoder

#: the incremental solver's budget per goal before the goal goes to a one-shot solver (ms)
FAST_MS = 100
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
                raise InputError(f"unknown lemma(s): {', '.join(unknown)}")
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
            raise InputError(f"unknown invariant(s): {', '.join(unknown)} (have: "
                             f"{', '.join(sorted(known - set(self.not_covered)))})")
        outside = [i for i in ids if i in self.not_covered]
        if outside:
            raise InputError("; ".join(f"{i} is not proved for --host any: "
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
