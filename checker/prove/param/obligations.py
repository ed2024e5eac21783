"""The queries of the parametric proof: hypotheses, goals and the counting obligation.

A ∀-clause (``Clause.vars``) is one formula per choice of S-EPT level for each entry
variable.  As a hypothesis it is ``∀x̄. dom(x̄) ∧ where(x̄) ⇒ ok(s, x̄)`` over the pre-state;
as a goal after a transition its negation with the variables as fresh (Skolem) constants:
``dom(c̄) ∧ where(c̄) ∧ ¬ok(s', c̄)`` (a step clause reads ``s`` and ``s'``).

Counting (``CountClause``, ``∀t. g(t) ⇒ cnt(t) = |{x ∈ D : cond(x, t)}|``).  A sum over a
sort has no first-order reading, so the clause is proved as a *delta obligation* per
transition τ, and the other queries assume only a first-order consequence of it.

* ``X_τ``: the objects of D's sort that τ writes a cell of by a point update (the index
  terms of its ``Assign``s to fields kept per object of that sort, on every outcome).
* Obligation, for a fresh TD ``u`` and fresh ``x1, x2 ∈ D``: if ``g'(u)`` then
  (A) ``g(u)`` and ``cnt'(u) - cnt(u) = Σ_{distinct x ∈ X_τ ∩ D} ([cond'(x, u)] -
  [cond(x, u)])`` and membership is unchanged at ``x1`` unless ``x1 ∈ X_τ``; or
  (B) ``cnt'(u) = 0`` and ``¬cond'(x2, u)``.  (``x1``, ``x2`` free: the negation is
  checked, so they stand for every object.)
* Initially: ``cnt(u) = 0`` and ``¬cond(x, u)`` for every ``u``, ``x``.

Why this proves the clause in every finite instance (any number of TDs, pages, vCPUs,
...): let ``I(s)`` be the clause itself.  It holds initially (every set empty, every count
0).  Let ``s`` be reachable with ``I(s)`` and every other proved hypothesis ``H(s)``, and
``s' = τ(s)``; take any ``u`` with ``g'(u)`` (else the clause holds at ``u`` vacuously).
The obligation was checked under ``H(s)`` (a superset of what it assumed), so (A) or (B)
holds at ``u``.  (B): ``cnt'(u) = 0 = |∅|``.  (A): ``g(u)``, so ``cnt(u) = |S|`` by
``I(s)`` (``S``, ``S'`` the sets before and after); ``S'`` and ``S`` differ only inside
``X_τ``, so ``|S'| - |S|`` is the sum of the membership changes over the distinct
objects of ``X_τ`` in D, which is ``cnt'(u) - cnt(u)``; so ``cnt'(u) = |S'|``.  Hence
``I(s')``: by induction on the run, ``I`` holds in every reachable state.  The
consequence the other queries assume, ``∀t, x ∈ D. g(t) ∧ cond(x, t) ⇒ cnt(t) >= 1``,
follows from ``I`` (a member makes the set non-empty), so assuming it is sound exactly
when the counting target is proved; it is a hypothesis only while its target is one
(Houdini drops both together), and never a target of its own.  Arithmetic is over Z3's
unbounded Int: no wrap-around.  Fixed per proof: the platform constants
(``tdcs_pages``, ``tdcx_pages``, ``max_vcpus``) and the S-EPT depth; a count's bound that
grows with the universe (``chldcnt <= pages``) follows from ``cnt = |S| <= |D|``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import z3
from tdxcheck.model.expr import Var
from tdxcheck.model.rule import Assign, Effect, ForEach, Rule, When
from tdxcheck.model.state import FIELD_BY_NAME
from tdxcheck.properties.base import Clause

from .logic import OBJ, Enc, Env, PState, Step
from .targets import CountClause


@dataclass
class Goal:
    """One query: its negated goal and what it is about (for records and CTIs)."""

    what: str  # the clause message, or "count: <message>"
    neg: Any
    consts: dict[str, Any]  # the Skolem constants, by variable name
    clause: Clause | None = None
    count: CountClause | None = None


class Obligations:
    def __init__(self, enc: Enc) -> None:
        self.enc = enc
        self.v = enc.v

    # ---- clause instances ----------------------------------------------------------
    def kinds(self, var: Var) -> list[str]:
        if var.kind == "entry":
            return [f"entry{i}" for i in range(self.v.levels)]
        return [var.kind]

    def instances(self, c: Clause) -> list[list[tuple[Var, str]]]:
        return [list(zip(c.vars, combo, strict=True))
                for combo in itertools.product(*(self.kinds(x) for x in c.vars))]

    def hypothesis(self, c: Clause, pre: PState, binds: dict[str, Any] | None = None
                   ) -> list[Any]:
        out = []
        for inst in self.instances(c):
            xs = [self.v.fresh(k, var.name) for var, k in inst]
            env = Env(pre, None, dict(binds or {}))
            dom = []
            for (var, k), x in zip(inst, xs, strict=True):
                env = env.bind(var.name, x, OBJ(k))
                dom.append(self.v.in_domain(k, x, var.dom))
            body = z3.Implies(z3.And(*dom, self.enc.truth(c.where, env)),
                              self.enc.truth(c.ok, env))
            out.append(z3.ForAll(xs, body) if xs else body)
        return out

    def goals(self, c: Clause, state: PState, pre: PState | None = None,
              binds: dict[str, Any] | None = None, step: bool = False) -> list[Goal]:
        """The negated goals of a clause over ``state`` (a step clause: ``pre`` and
        ``state`` as post)."""
        out = []
        for inst in self.instances(c):
            env = Env(pre if step else state, state if step else None, dict(binds or {}))
            consts, dom = {}, []
            for var, k in inst:
                x = self.v.fresh(k, f"sk.{var.name}")
                consts[var.name] = x
                env = env.bind(var.name, x, OBJ(k))
                dom.append(self.v.in_domain(k, x, var.dom))
            neg = z3.And(*dom, self.enc.truth(c.where, env), z3.Not(self.enc.truth(c.ok, env)))
            out.append(Goal(c.message, neg, consts, c))
        return out

    # ---- counting ------------------------------------------------------------------
    def count_consequence(self, cc: CountClause, pre: PState) -> Any:
        """``∀t, x ∈ D. g(t) ∧ cond(x, t) ⇒ cnt(t) >= 1``."""
        t = self.v.fresh("td", "t")
        x = self.v.fresh(cc.agg.var.kind, "x")
        env = Env(pre).bind(cc.t.name, t, OBJ("td")).bind(cc.agg.var.name, x,
                                                          OBJ(cc.agg.var.kind))
        cnt, _ = self.enc.enc(cc.cnt, env)
        body = z3.Implies(z3.And(self.v.in_domain(cc.agg.var.kind, x, cc.agg.dom),
                                 self.enc.truth(cc.guard, env),
                                 self.enc.truth(cc.agg.body, env)), cnt >= 1)
        return z3.ForAll([t, x], body)

    def count_initial(self, cc: CountClause, init: PState) -> Goal:
        u = self.v.fresh("td", "sk.u")
        x = self.v.fresh(cc.agg.var.kind, "sk.x")
        env = Env(init).bind(cc.t.name, u, OBJ("td")).bind(cc.agg.var.name, x,
                                                           OBJ(cc.agg.var.kind))
        cnt, _ = self.enc.enc(cc.cnt, env)
        member = z3.And(self.v.in_domain(cc.agg.var.kind, x, cc.agg.dom),
                        self.enc.truth(cc.agg.body, env))
        return Goal("count: " + cc.clause.message, z3.Or(cnt != 0, member),
                    {cc.t.name: u, cc.agg.var.name: x}, count=cc)

    def touched(self, rule: Rule, kind: str, env: Env) -> list[Any]:
        """``X_τ``: the index terms of the rule's point updates of fields kept per object
        of ``kind`` (every outcome's effects)."""
        dim = kind
        effs: list[Effect] = list(rule.effects)
        for s in rule.steps:
            effs += list(getattr(s, "fail_effects", ())) + list(getattr(s, "effects", ()))
        out: list[Any] = []

        def walk(es: Sequence[Effect]) -> None:
            for e in es:
                if isinstance(e, Assign):
                    if FIELD_BY_NAME[e.field].dim == dim:
                        t, _ = self.enc.enc(e.index[0], env, OBJ(kind))
                        if not any(z3.eq(t, o) for o in out):
                            out.append(t)
                elif isinstance(e, When):
                    walk(e.effects)
                elif isinstance(e, ForEach):
                    continue  # a loop's writes are not touched objects: (A) must hold
        walk(effs)
        return out

    def count_step(self, cc: CountClause, rule: Rule, step: Step, pre: PState,
                   binds: dict[str, Any]) -> Goal:
        v, enc = self.v, self.enc
        kind = cc.agg.var.kind
        u = v.fresh("td", "sk.u")
        x1, x2 = v.fresh(kind, "sk.x1"), v.fresh(kind, "sk.x2")
        base = dict(binds)
        e_pre = Env(pre, None, base).bind(cc.t.name, u, OBJ("td"))
        e_post = Env(step.post, None, base).bind(cc.t.name, u, OBJ("td"))

        def member(env: Env, x: Any) -> Any:
            return z3.And(v.in_domain(kind, x, cc.agg.dom),
                          enc.truth(cc.agg.body, env.bind(cc.agg.var.name, x, OBJ(kind))))

        def b(f: Any) -> Any:
            return z3.If(f, z3.IntVal(1), z3.IntVal(0))

        xs = self.touched(rule, kind, Env(pre, None, base))
        delta = []
        for i, x in enumerate(xs):
            fresh = z3.And(*(x != y for y in xs[:i]))
            delta.append(z3.If(fresh, b(member(e_post, x)) - b(member(e_pre, x)), 0))
        cnt, _ = enc.enc(cc.cnt, e_pre)
        cnt2, _ = enc.enc(cc.cnt, e_post)
        changed = z3.And(*(x1 != x for x in xs), member(e_post, x1) != member(e_pre, x1))
        a = z3.And(enc.truth(cc.guard, e_pre), cnt2 - cnt == z3.Sum(delta) if delta
                   else cnt2 == cnt, z3.Not(changed))
        bb = z3.And(cnt2 == 0, z3.Not(member(e_post, x2)))
        neg = z3.And(enc.truth(cc.guard, e_post), z3.Not(a), z3.Not(bb))
        return Goal("count: " + cc.clause.message, neg,
                    {cc.t.name: u, "x1": x1, "x2": x2}, count=cc)
