"""Counterexamples to induction a person can read: a failed parametric query made finite,
small and concrete.

The parametric query of a dropped target (the transition and the goal that were sat, or
``unknown``) is asked again on *bounded* instances (``Context(sizes=...)``: every sort an
enumeration, every quantifier expanded, every counting clause exact), smallest first
(mypyvy-style cardinality limits: ``SCHEDULE`` grows every sort together), then each sort
is shrunk while the query stays sat.  A model there is a state of a finite instance that
satisfies every hypothesis of the round exactly (counts included) and whose step breaks
the target.  ``finite.Mapping.of_model`` turns it into a ``Universe`` (padded with inert
objects), a pre-state, a post-state and an ``Action``; ``confirm`` checks it on the
finite prover's context of that universe: the pre-state is in range and satisfies every
hypothesis (compiled clauses), ``Engine.step`` gives the model's post-state
(``replayed``) and the post-state (or the step) breaks the target (``confirmed``).

A bounded search that finds nothing up to the largest sizes proves nothing either: the
target stays ``not-inductive`` (the unbounded query was sat) or ``unknown`` (it timed
out) without a finite CTI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import z3
from tdxcheck.checker.explore.programs import Config
from tdxcheck.model.actions import Action, describe
from tdxcheck.model.state import Platform, State
from tdxcheck.model.status import status_name

from .finite import Mapping
from .houdini import Context
from .transitions import PTransition

#: size increments tried, smallest first (added to ``MIN_SIZES``)
SCHEDULE = (0, 1, 2, 3)
#: the smallest bounded instance: NULL and a page, ZERO + a private HKID + GLOBAL, NOLP
#: and a CPU, one of everything else
MIN_SIZES = {"page": 2, "td": 1, "vp": 1, "hkid": 3, "pkg": 1, "cpu": 2}


@dataclass
class ParamCTI:
    """A parametric counterexample to induction, as a finite state and step."""

    target: str
    edge: int
    transition: str
    what: str  # the goal: a clause's message or a counting obligation
    sizes: dict[str, int] = field(default_factory=dict)
    config: Config | None = None
    action: Action | None = None
    fault: int = -1
    pre: State | None = None
    post: State | None = None  # the model's post-state
    status: str | None = None
    replayed: bool = False
    confirmed: bool = False
    clauses: list[str] = field(default_factory=list)  # what the finite step breaks
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    context: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0

    @property
    def step_text(self) -> str:
        if self.action is None or self.config is None:
            return self.transition
        return describe(self.action, self.config.universe()) + (
            f" [cpu{self.action.cpu}]" if self.action.is_seamcall else "")

    def to_json(self) -> dict[str, Any]:
        return {"transition": self.transition, "goal": self.what, "sizes": self.sizes,
                "universe": self.config.describe() if self.config else None,
                "step": self.step_text, "status": self.status,
                "violated_clauses": self.clauses,
                "changes": [{"field": f, "before": a, "after": b}
                            for f, a, b in self.changes],
                "pre_state": [{"field": f, "value": v} for f, v in self.context],
                "replayed_on_engine": self.replayed, "confirmed_concretely": self.confirmed,
                **({"note": self.note} if self.note else {})}


def _sizes(levels: int, b: int) -> dict[str, int]:
    out = {k: n + b for k, n in MIN_SIZES.items()}
    out["pkg"] = 1 + min(b, 1)
    for lv in range(levels):
        out[f"entry{lv}"] = 1 + (b + 1) // 2
    return out


class Search:
    """Bounded instances of one proof, built once per size and reused."""

    def __init__(self, fixed: Platform, faults: bool, ablate: tuple[str, ...],
                 timeout_ms: int) -> None:
        self.fixed, self.faults, self.ablate = fixed, faults, ablate
        self.timeout_ms = timeout_ms
        self._ctx: dict[tuple[tuple[str, int], ...], Context] = {}

    def context(self, sizes: dict[str, int]) -> Context:
        key = tuple(sorted(sizes.items()))
        ctx = self._ctx.get(key)
        if ctx is None:
            ctx = self._ctx[key] = Context(self.fixed, self.faults, self.ablate, sizes=sizes)
        return ctx

    def query(self, sizes: dict[str, int], target: str, edge: int, hyps: list[str]
              ) -> tuple[Context, Any, Any, Any, Any] | None:
        """(context, solver with the failed goal asserted, model, transition, goal) of the
        bounded query, or None (unsat or unknown)."""
        ctx = self.context(sizes)
        by_id = {t.id: t for t in ctx.targets}
        tr = ctx.trans[edge]
        sol = z3.Solver()
        sol.set("timeout", self.timeout_ms)
        for h in hyps:
            sol.add(*ctx.hypotheses(by_id[h]))
        _st, _b, facts = ctx.step(tr)
        sol.add(*facts)
        goals = ctx.initial_goals(by_id[target]) if edge < 0 else ctx.goals(by_id[target], tr)[0]
        for g in goals:
            sol.push()
            sol.add(g.neg)
            if sol.check() == z3.sat:
                return ctx, sol, sol.model(), tr, g
            sol.pop()
        return None

    def find(self, target: str, edge: int, what: str, text: str, hyps: list[str],
             budget: float, quick: bool = False) -> ParamCTI:
        """The smallest bounded CTI found within ``budget`` seconds (or one that says why
        there is none); ``quick``: the two smallest sizes only."""
        t0 = time.monotonic()
        cti = ParamCTI(target, edge, text, what)
        levels = self.fixed.sept_levels
        found = None
        for b in SCHEDULE[:2] if quick else SCHEDULE:
            if time.monotonic() - t0 > budget:
                break
            sizes = _sizes(levels, b)
            found = self.query(sizes, target, edge, hyps)
            if found is not None:
                break
        if found is None:
            cti.note = (f"no counterexample in a bounded instance up to "
                        f"{_sizes(levels, SCHEDULE[-1])} (or out of time): the CTI needs "
                        "more objects, or the unbounded query was a timeout")
            cti.seconds = time.monotonic() - t0
            return cti
        # shrink each sort while the query stays sat
        for kind in sorted(sizes):
            floor = {"hkid": 3, "cpu": 2}.get(kind, 1 if kind != "page" else 2)
            while sizes[kind] > floor and time.monotonic() - t0 < budget:
                smaller = {**sizes, kind: sizes[kind] - 1}
                again = self.query(smaller, target, edge, hyps)
                if again is None:
                    break
                sizes, found = smaller, again
        ctx, sol, model, tr, _goal = found
        cti.sizes = dict(sizes)
        m = Mapping.of_model(ctx.vocab, model, self.fixed)
        model = self._simplify(ctx, sol, model, m, t0 + budget)
        self._read(cti, ctx, model, tr, m)
        cti.seconds = time.monotonic() - t0
        return cti

    def _simplify(self, ctx: Context, sol: Any, model: Any, m: Mapping, until: float) -> Any:
        """Cells back to the any host's initial values where the query stays sat, object by
        object, then cell by cell (the model's structure kept)."""
        from tdxcheck.checker.explore.programs import AnyHost

        init = AnyHost(m.u).initial()
        terms = [ctx.vocab.ground(t) for t in m.cell_terms(ctx.pre)]
        sol.add(*m.facts())
        lay = m.layout
        groups: dict[tuple[str, int], list[int]] = {}
        for i in range(lay.size):
            f = lay.field_of(i)
            k = i - lay.base[f.name]
            obj = ("td", k // lay.shape[f.name][1]) if f.dim == "td_entry" else (f.dim, k)
            groups.setdefault(obj, []).append(i)

        def try_fix(cells: list[int]) -> None:
            nonlocal model
            same = [i for i in cells
                    if model.eval(terms[i], model_completion=True).as_long() == init[i]]
            sol.add(*(terms[i] == init[i] for i in same))  # keep them (the model has them)
            cells = [i for i in cells if i not in same]
            if not cells or time.monotonic() > until:
                return
            sol.push()
            sol.add(*(terms[i] == init[i] for i in cells))
            if sol.check() == z3.sat:
                model = sol.model()
            else:
                sol.pop()

        for _k, cells in sorted(groups.items()):
            try_fix(cells)
        for i in range(lay.size):
            try_fix([i])
        return model

    def _read(self, cti: ParamCTI, ctx: Context, model: Any, tr: PTransition,
              m: Mapping) -> None:
        st, binds, _f = ctx.step(tr)
        cti.config = m.config
        cti.action = m.action(tr, binds, model)
        cti.fault = tr.fault
        cti.pre = Mapping.values(model, [ctx.vocab.ground(t) for t in m.cell_terms(ctx.pre)])
        # the post-state as the model says (the closures' quantifiers expanded)
        cti.post = Mapping.values(model, [ctx.vocab.ground(t) for t in m.cell_terms(st.post)])
        code = model.eval(ctx.vocab.ground(st.status), model_completion=True).as_long()
        cti.status = None if tr.kind == "td_exit" else status_name(code)


def confirm(cti: ParamCTI, fin_ctx: Any, hyps: list[str]) -> None:
    """The CTI on the finite prover's ``_Ctx`` of its universe (same faults and
    ablations): see the module docstring."""
    if cti.pre is None or cti.action is None or cti.post is None:
        return
    lay = fin_ctx.layout
    r = fin_ctx.engine.step(cti.pre, cti.action, cti.fault)
    cti.replayed = tuple(r.state) == tuple(cti.post)
    by_id = {t.id: t for t in fin_ctx.targets}
    bad = [h for h in hyps if h in by_id and
           fin_ctx.concrete_violation(by_id[h], None, cti.pre, None) is not None]
    enc = lay.encoding_violation(cti.pre)
    t = by_id.get(cti.target)
    msg = fin_ctx.concrete_violation(t, cti.pre, r.state, cti.action) if t else None
    cti.confirmed = cti.replayed and not bad and enc is None and msg is not None
    if msg is not None:
        cti.clauses = [msg]
    if bad or enc is not None:
        cti.note = (cti.note + "; " if cti.note else "") + (
            "the pre-state breaks " + ", ".join(bad or [str(enc)]) + " in the finite reading")
    if not cti.replayed:
        cti.note = (cti.note + "; " if cti.note else "") + \
            "the engine's next state differs from the model's"
    cti.changes = [(lay.label(i), lay.show(i, cti.pre[i]), lay.show(i, r.state[i]))
                   for i in range(lay.size) if cti.pre[i] != r.state[i]]
    init = fin_ctx.initial
    cti.context = [(lay.label(i), lay.show(i, cti.pre[i])) for i in range(lay.size)
                   if cti.pre[i] != init[i] and cti.pre[i] == r.state[i]]
