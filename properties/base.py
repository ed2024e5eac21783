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

from collections.abc import Callable
from dataclasses import dataclass

from tdxcheck.model.actions import Action
from tdxcheck.model.expr import Expr
from tdxcheck.model.state import Universe


@dataclass(frozen=True)
class Clause:
    """One condition of an invariant; ``by`` overrides the invariant's ``guarantee``."""

    ok: Expr
    message: str
    by: str = ""


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
