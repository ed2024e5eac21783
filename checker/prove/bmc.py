"""BMC (``mode="bmc"``): unrolls the transition relation from the initial state one step at a
time (the unrolling is kept and extended; each depth asks one query for all invariants not
yet violated, then one per invariant when that is sat); the first depth that answers sat is
the shortest violation.  As in the explorer, a path never runs through a state that breaks a
state invariant.  The trace is replayed on the concrete model (``AnyHost.apply_edge``) and
returned as an ``explore.Counterexample``, so ``report.counterexample_text`` and
``traces.any_host_tdx``/``itf`` print and write it as they do the explorer's
(``write_traces`` does what ``check.write_traces`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import z3
from tdxcheck.checker.explore.bfs import Counterexample

from .common import (
    NO_VIOLATION,
    UNKNOWN,
    VIOLATED,
    Progress,
    QueryRecord,
    Target,
    _Ctx,
    two_stage_check,
)
from .encode import enabled_term


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
                  timeout: Callable[[], int] | None = None,
                  progress: Progress | None = None
                  ) -> tuple[str, list[tuple[Any, str, Any]]]:
    """The BMC queries at depth ``k``: one for every open goal together, and only when that
    is not unsat, each goal (a (target, term) pair) on its own.  Returns the joint answer
    and (target, answer, model) per goal asked alone; each query is recorded, its time and
    count charged to ``stats[target.id]`` (``.seconds``, ``.queries``; the joint one
    shared out).  ``timeout()`` gives each query's budget (else ``bmc.timeout_ms``); the
    joint query that runs out of it is not split."""
    if timeout is not None:
        bmc.timeout_ms = timeout()
    if progress is not None:
        progress({"phase": f"bmc depth {k}", "query": f"all {len(goals)} open target(s) "
                  "together"})
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
    for i, (t, g) in enumerate(goals, start=1):
        if timeout is not None:
            bmc.timeout_ms = max(timeout(), 1)
        if progress is not None:
            progress({"phase": f"bmc depth {k}", "query": f"{i}/{len(goals)} ({t.id})"})
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
            joint, alone = depth_queries(bmc, goals, k, records, out, left_ms, progress)
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
