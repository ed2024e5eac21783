"""Houdini over the parametric targets, with one incremental solver per round.

A round asserts the hypotheses once (every ∀-clause of every target still in, and the
counting consequences of the counting targets still in), then for each transition pushes
its facts (operands of their sorts, the host's guard, ``Rule.enabled``) and asks, for each
target, one query per goal the transition may change (``push``/``pop``): a state clause
whose fields the transition does not write holds by the frame (no query); a step clause
and a counting obligation are asked whenever the transition writes a field they read.  A
``sat`` query drops its target with a counterexample to induction (the model), an
``unknown`` one (timeout) drops it as ``unknown``; the next round proves the rest
without them, until a round drops nothing: what is left is inductive, for every size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import z3
from tdxcheck.model.expr import Var
from tdxcheck.model.state import Platform

from .logic import OBJ, Enc, FuncState, InitState, RuleReader, Step, Vocab
from .obligations import Goal, Obligations
from .sym import PrivateHkid
from .targets import PTarget, targets
from .transitions import PTransition, transitions

PROVED, NOT_INDUCTIVE, UNKNOWN, VIOLATED = "proved", "not-inductive", "unknown", "violated"
#: the solver's first budget per query before the bounded CTI search is tried (ms): well
#: above the slowest unsat query of the proof (under a second on this machine)
FAST_MS = 10_000


@dataclass
class Query:
    target: str
    edge: int
    answer: str
    seconds: float
    round: int
    what: str = ""


@dataclass
class Failure:
    """Why a target was dropped: the answer, the query, and (sat) the model."""

    answer: str  # sat | unknown | initial
    edge: int  # -1: the initial state
    goal: Goal
    model: Any = None
    round: int = 0
    cti: Any = None  # a bounded CTI found for a query the solver had not settled


@dataclass
class Context:
    """One proof's vocabulary, readers, transitions and targets."""

    fixed: Platform
    faults: bool
    ablate: tuple[str, ...]
    #: bounded: one finite instance of these sizes (``Vocab``); every formula grounded,
    #: every counting clause exact
    sizes: dict[str, int] | None = None
    vocab: Vocab = field(init=False)
    enc: Enc = field(init=False)
    reader: RuleReader = field(init=False)
    obl: Obligations = field(init=False)
    pre: FuncState = field(init=False)
    init: InitState = field(init=False)
    trans: list[PTransition] = field(init=False)
    targets: list[PTarget] = field(init=False)

    def __post_init__(self) -> None:
        self.vocab = Vocab(self.fixed.sept_levels, self.sizes)
        self.enc = Enc(self.vocab)
        self.reader = RuleReader(self.enc)
        self.obl = Obligations(self.enc)
        self.pre = FuncState(self.vocab, "s")
        self.init = InitState(self.vocab)
        self.trans = transitions(self.fixed, self.faults, self.ablate)
        self.su, self.targets = targets(self.fixed)
        self._steps: dict[int, tuple[Step, dict[str, Any], list[Any]]] = {}
        self._hyps: dict[str, list[Any]] = {}
        self._goals: dict[tuple[str, int], list[Goal]] = {}

    # ---- transitions ---------------------------------------------------------------
    def step(self, tr: PTransition) -> tuple[Step, dict[str, Any], list[Any]]:
        """The transition's post-state, its operand bindings and its facts."""
        hit = self._steps.get(tr.eid)
        if hit is None:
            v = self.vocab
            binds: dict[str, Any] = {}
            facts: list[Any] = []
            for x in tr.operands:
                c = z3.Const(f"op.{x.name}", v.sort[x.kind])
                binds[x.name] = (c, OBJ(x.kind))
                if x.kind == "page":
                    facts.append(c != v.zero["page"])
                elif isinstance(x, PrivateHkid):
                    facts.append(v.private(c))
                elif x.kind == "cpu":
                    facts.append(c != v.zero["cpu"])
            st = self.reader.rule(tr.rule, self.pre, binds, tr.fault)
            facts += st.facts
            if tr.guard is not None:
                from .logic import Env

                facts.append(self.enc.truth(tr.guard, Env(self.pre, None, dict(binds))))
            facts = [v.ground(f) for f in facts]
            hit = self._steps[tr.eid] = (st, binds, facts)
        return hit

    # ---- hypotheses and goals ------------------------------------------------------
    def hypotheses(self, t: PTarget) -> list[Any]:
        h = self._hyps.get(t.id)
        if h is None:
            h = []
            for c in t.clauses:
                h += self.obl.hypothesis(c, self.pre)
            for cc in t.counts:
                if self.bounded:
                    h += self.obl.hypothesis(cc.clause, self.pre)
                else:
                    h.append(self.obl.count_consequence(cc, self.pre))
            h = self._hyps[t.id] = [self.vocab.ground(f) for f in h]
        return h

    @property
    def bounded(self) -> bool:
        return self.sizes is not None

    def _ground(self, goals: list[Goal]) -> list[Goal]:
        for g in goals:
            g.neg = self.vocab.ground(g.neg)
        return goals

    def initial_goals(self, t: PTarget) -> list[Goal]:
        out = []
        for c in t.clauses:
            out += self.obl.goals(c, self.init)
        for cc in t.counts:
            if self.bounded:
                out += self.obl.goals(cc.clause, self.init)
            else:
                out.append(self.obl.count_initial(cc, self.init))
        return self._ground(out)

    def goals(self, t: PTarget, tr: PTransition) -> tuple[list[Goal], bool]:
        """The target's goals after ``tr`` (and whether the frame discharged them all)."""
        key = (t.id, tr.eid)
        hit = self._goals.get(key)
        if hit is not None:
            return hit, False
        st, binds, _f = self.step(tr)
        out: list[Goal] = []
        for c in t.clauses:
            from .logic import fields_read

            if (fields_read(c.ok) | fields_read(c.where)) & st.written:
                out += self.obl.goals(c, st.post, binds=binds)
        for cc in t.counts:
            if cc.reads & st.written:
                if self.bounded:
                    out += self.obl.goals(cc.clause, st.post, binds=binds)
                else:
                    out.append(self.obl.count_step(cc, tr.rule, st, self.pre, binds))
        if t.step is not None:
            for c in t.step(tr.action):
                out += self.obl.goals(c, st.post, self.pre, binds, step=True)
        self._goals[key] = out = self._ground(out)
        return out, not out


@dataclass
class RoundResult:
    failed: dict[str, Failure]
    frame: dict[str, int]
    queries: list[Query]


def run_round(ctx: Context, hyps: Sequence[PTarget], timeout_ms: int, round_no: int,
              progress: Callable[[dict[str, Any]], None] | None = None,
              t0: float = 0.0, edges: Sequence[int] | None = None,
              facts: Sequence[Any] = (),
              fallback: Callable[[str, int, Goal, list[str]], Any] | None = None
              ) -> RoundResult:
    """One round over ``edges`` (default: every transition); ``facts`` are asserted with
    the hypotheses (a bounded instance's structure).

    A query the solver does not settle in ``FAST_MS`` goes to ``fallback`` (the bounded
    CTI search on the smallest instances, ``cti.Search.find(quick=True)``): a
    counterexample in a finite instance is a counterexample here too (its hypotheses hold
    there, exactly), so the query is ``sat`` with that CTI; else the solver gets the rest
    of ``timeout_ms``."""
    sol = z3.Solver()
    sol.set("timeout", timeout_ms)
    sol.add(*ctx.vocab.base_facts(), *facts)
    for t in hyps:
        sol.add(*ctx.hypotheses(t))
    failed: dict[str, Failure] = {}
    frame: dict[str, int] = {}
    queries: list[Query] = []
    trans = ctx.trans if edges is None else [ctx.trans[e] for e in edges]
    last = time.monotonic()
    for n, tr in enumerate(trans):
        _st, _b, facts = ctx.step(tr)
        sol.push()
        sol.add(*facts)
        for t in hyps:
            if t.id in failed:
                continue
            goals, _framed = ctx.goals(t, tr)
            if not goals:
                frame[t.id] = frame.get(t.id, 0) + 1
                continue
            for g in goals:
                sol.push()
                sol.add(g.neg)
                q0 = time.monotonic()
                cti = None
                if fallback is not None and timeout_ms > FAST_MS:
                    sol.set("timeout", FAST_MS)
                r = sol.check()
                if r == z3.unknown and fallback is not None and timeout_ms > FAST_MS:
                    cti = fallback(t.id, tr.eid, g, [h.id for h in hyps])
                    if cti is None:
                        sol.set("timeout", max(1, int(timeout_ms - FAST_MS)))
                        r = sol.check()
                sol.set("timeout", timeout_ms)
                dt = time.monotonic() - q0
                answer = "sat" if r == z3.sat or cti is not None else \
                    "unsat" if r == z3.unsat else "unknown"
                model = sol.model() if r == z3.sat else None
                sol.pop()
                queries.append(Query(t.id, tr.eid, answer, dt, round_no, g.what))
                if answer != "unsat":
                    failed[t.id] = Failure(answer, tr.eid, g, model, round_no, cti)
                    break
        sol.pop()
        now = time.monotonic()
        if progress is not None and (now - last > 1.0 or n == len(trans) - 1):
            last = now
            progress({"phase": "parametric", "round": round_no, "done": n + 1,
                      "total": len(trans), "queries": len(queries), "failed": len(failed),
                      "seconds": now - t0})
    return RoundResult(failed, frame, queries)


def initial_check(ctx: Context, t: PTarget, timeout_ms: int) -> Failure | None:
    """The target in the initial state of every instance (no hypotheses)."""
    sol = z3.Solver()
    sol.set("timeout", timeout_ms)
    sol.add(*ctx.vocab.base_facts())
    for g in ctx.initial_goals(t):
        sol.push()
        sol.add(g.neg)
        r = sol.check()
        if r != z3.unsat:
            f = Failure("initial" if r == z3.sat else "unknown", -1, g,
                        sol.model() if r == z3.sat else None)
            sol.pop()
            return f
        sol.pop()
    return None


_ = Var  # operand variables are ``Var``s (``PTransition.operands``)
