"""Counterexamples to induction: minimise a sat model of an induction query (cells back
to the initial state's values, object by object, then cell by cell, while the query stays
sat), read it as a two-state diff with the broken clauses, and confirm it on the concrete
engine (``CTI.replayed``, ``CTI.confirmed``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import z3
from tdxcheck.model.status import status_name

from .common import (
    CTI,
    Target,
    Transition,
    _object_of,
)

if TYPE_CHECKING:
    from .induction import _Induction


def read_cti(ind: _Induction, h: Target, tr: Transition, st: Any, post: list[Any],
             goal: Any, model: Any) -> CTI:
    """Minimise the model (cells back to the initial state's values where the query
    stays sat, object by object, then cell by cell), then read it."""
    ctx, enc, sol = ind.ctx, ind.ctx.enc, ind.sol
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
    sol.set("timeout", min(ind.timeout_ms, 2000))

    def try_fix(cells: list[int]) -> bool:
        nonlocal pushed, model
        cells = [i for i in cells
                 if model.eval(ind.pre[i], model_completion=True).as_long() != base[i]]
        if not cells:
            return True
        sol.push()
        sol.add(*(ind.pre[i] == enc.const(base[i]) for i in cells))
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
    sol.set("timeout", ind.timeout_ms)
    pre_v = enc.values(ind.pre, model)
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
        if z3.is_false(model.eval(enc.cond(c.ok, ind.pre, post), model_completion=True)):
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
        ctx.concrete_violation(x, None, pre_v, None) is None for x in ind.hyps)
        and ctx.concrete_violation(h, pre_v, r.state, tr.action) is not None)
    changes = [(lay.label(i), lay.show(i, pre_v[i]), lay.show(i, post_v[i]))
               for i in range(lay.size) if pre_v[i] != post_v[i]]
    context = [(lay.label(i), lay.show(i, pre_v[i]), i in viol_cells)
               for i in range(lay.size) if pre_v[i] != base[i] and pre_v[i] == post_v[i]]
    return CTI(h.id, tr.eid, tr.text, status, msgs, changes, context, pre_v, post_v,
               replayed, ind.round, confirmed)
