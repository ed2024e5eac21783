"""What an invariant is: a stable id, the rule in words, and clauses over the state.

A *state* invariant must hold in every reachable state; a *step* invariant constrains one
step (the state before, the action, the state after), like TLA+'s ``[][A]_v``.  Both are
written in the model's expression language (``tdxcheck.model.expr``), so the replay, the
explorer and the Z3 back end all read the same clauses.  Each clause carries the sentence a
violation prints.

``guarantee`` says who keeps the invariant: ``module`` (the TDX module's checks alone keep
it, whatever the host does) or ``host`` (it is an obligation of the host program).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tdxcheck.model.actions import Action
from tdxcheck.model.expr import TRUE, And, Domain, Expr, Or, SymDomain, Var
from tdxcheck.model.state import Universe


@dataclass(frozen=True)
class Clause:
    """One condition of an invariant; ``by`` overrides the invariant's ``guarantee``.

    A clause of a finite universe is about fixed objects.  In the parametric reading
    (``forall`` over a ``SymDomain``) it is a ∀-clause: ``ok`` holds for every value of
    ``vars`` where ``where`` holds (the distinctness of a pair)."""

    ok: Expr
    message: str
    by: str = ""
    vars: tuple[Var, ...] = ()
    where: Expr = field(default_factory=lambda: TRUE)


Clauses = Clause | Sequence[Clause]


def _listed(x: Clauses) -> list[Clause]:
    return [x] if isinstance(x, Clause) else list(x)


def forall(dom: Domain, body: Callable[[Any], Clauses]) -> list[Clause]:
    """The clauses ``body`` gives for every object of ``dom``: over a finite domain the
    list a Python loop builds (in loop order), over a SymDomain ∀-clauses."""
    if isinstance(dom, SymDomain):
        v = dom.var()
        return [replace(c, vars=(v, *c.vars)) for c in _listed(body(v))]
    return [c for i in dom for c in _listed(body(i))]


def forall_pairs(doms: Sequence[Domain], body: Callable[[Any, Any], Clauses]
                 ) -> list[Clause]:
    """The clauses ``body(a, b)`` gives for every unordered pair of distinct tuples of the
    product of ``doms`` (a tuple of one domain's objects is its object), in the order of
    ``for i, a in enumerate(xs): for b in xs[i + 1:]``.  ``body`` must be symmetric: the
    parametric reading states it for every ordered pair of distinct tuples."""
    def one(t: tuple[Any, ...]) -> Any:
        return t[0] if len(t) == 1 else t

    if any(isinstance(d, SymDomain) for d in doms):
        assert all(isinstance(d, SymDomain) for d in doms)
        a = tuple(d.var() for d in doms)  # type: ignore[union-attr]
        b = tuple(d.var() for d in doms)  # type: ignore[union-attr]
        apart = Or(*(x != y for x, y in zip(a, b, strict=True)))
        return [replace(c, vars=(*a, *b, *c.vars), where=And(apart, c.where))
                for c in _listed(body(one(a), one(b)))]
    xs: list[tuple[Any, ...]] = [()]
    for d in doms:
        xs = [(*x, i) for x in xs for i in d]  # type: ignore[union-attr]
    return [c for i, a in enumerate(xs) for b in xs[i + 1:] for c in _listed(body(one(a), one(b)))]


StateClauses = Callable[[Universe], list[Clause]]
StepClauses = Callable[[Universe, Action], list[Clause]]


@dataclass(frozen=True)
class Invariant:
    id: str
    summary: str
    guarantee: str  # "module" | "host"
    source: str
    state: StateClauses | None = None
    step: StepClauses | None = None
    depends_on: tuple[str, ...] = ()  # module check names that keep it (ablation targets)

    def state_clauses(self, u: Universe, only: str = "") -> list[Clause]:
        """The clauses over one state; ``only="module"`` keeps the module's guarantees."""
        return self._keep(self.state(u) if self.state else [], only)

    def step_clauses(self, u: Universe, a: Action, only: str = "") -> list[Clause]:
        return self._keep(self.step(u, a) if self.step else [], only)

    def _keep(self, clauses: list[Clause], only: str) -> list[Clause]:
        if not only:
            return clauses
        return [c for c in clauses if (c.by or self.guarantee) == only]


REGISTRY: dict[str, Invariant] = {}


def invariant(inv: Invariant) -> Invariant:
    assert inv.id not in REGISTRY, inv.id
    REGISTRY[inv.id] = inv
    return inv
