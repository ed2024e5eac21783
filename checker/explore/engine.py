"""The concrete model engine: compiled actions and invariants over one universe.

Every engine that steps the model concretely (replay, explorer, coverage) goes through
``Engine``: it builds each action's rule from ``tdxcheck.model`` (the one definition),
compiles it once, and evaluates the invariants of ``tdxcheck.properties`` on states and
steps.  It returns data; reporters print it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tdxcheck.model.actions import Action, rule_of, wrapper_pre
from tdxcheck.model.compile import (
    NOT_ENABLED,
    StepFn,
    compile_functions,
    new_gen,
    predicate_source,
    rule_source,
)
from tdxcheck.model.rule import Ctx, Effect, Fault, Rule
from tdxcheck.model.state import Layout, State, Universe
from tdxcheck.model.status import Status, status_class
from tdxcheck.properties import INVARIANTS, Invariant


@dataclass
class CompiledAction:
    action: Action
    rule: Rule
    fn: StepFn
    step_invs: list[tuple[Invariant, list[str], object]] = field(default_factory=list)

    def fault_index(self, text: str) -> int | None:
        """Index of the fault point ``text`` names (``NAME`` = the first of that class)."""
        from tdxcheck.model.status import parse_status

        code, has_opid = parse_status(text)
        for i, f in enumerate(self.rule.faults):
            if (f.status == code) if has_opid else (status_class(f.status) == code):
                return i
        return None


@dataclass(frozen=True)
class Violation:
    invariant: str
    message: str
    clause: int


@dataclass(frozen=True)
class StepResult:
    status: int | None  # None: a host action; NOT_ENABLED: could not happen
    state: State
    where: int  # failing check/fault index in the rule, -1 success, -2 not enabled
    step_violations: tuple[Violation, ...]


#: the invariant id of a state outside its encoding (``Layout.encoding_violation``)
STATE_ENCODING = "state-encoding"


class Engine:
    """Compiles and runs actions of one universe."""

    def __init__(
        self,
        u: Universe,
        invariants: Sequence[Invariant] = INVARIANTS,
        ablate: Iterable[str] = (),
        only: str = "",
    ) -> None:
        self.u = u
        self.only = only  # "module": check only what the module guarantees
        self.layout = Layout(u)
        self.ablate = frozenset(ablate)
        self.invariants = tuple(invariants)
        self._cache: dict[Action, CompiledAction] = {}
        gen = new_gen(self.layout)
        srcs = []
        self._state_msgs: list[tuple[Invariant, list[str]]] = []
        for i, inv in enumerate(self.invariants):
            clauses = inv.state_clauses(u, only)
            if not clauses:
                continue
            srcs.append(predicate_source(f"inv{i}", [c.ok for c in clauses], self.layout, gen,
                                         two_state=False))
            self._state_msgs.append((inv, [c.message for c in clauses]))
        # one fast predicate over every state clause: the common case (all hold) is one call
        every = [c.ok for inv in self.invariants for c in inv.state_clauses(u, only)]
        srcs.append(predicate_source("all_hold", every, self.layout, gen, two_state=False))
        # ... and the same clauses as ``state_violations`` itself: [] when they all hold,
        # else the clause-by-clause search (``_state_violations``)
        srcs.append(predicate_source("state_violations", every, self.layout, gen,
                                     two_state=False, on_fail="_slow(s)", on_ok="[]"))
        ns = compile_functions(srcs, gen)
        self._all_hold = ns["all_hold"]
        self._state_fns = [
            ns[f"inv{i}"] for i, inv in enumerate(self.invariants) if inv.state_clauses(u, only)
        ]
        ns["_slow"] = self._state_violations
        self.state_violations = ns["state_violations"]  # type: ignore[method-assign]
        if self.ablate:
            # a rule with a check removed can leave the state's encoding (a counter out of
            # range, the NULL page written): that is ``state-encoding``, as the prover says
            # (``Layout.encoding_violation``), with a trace like any other invariant
            clauses = self.state_violations
            why_not = self.layout.encoding_violation

            def with_encoding(s: State) -> list[Violation]:
                out = clauses(s)
                why = why_not(s)
                return out if why is None else [*out, Violation(STATE_ENCODING, why, 0)]

            self.state_violations = with_encoding  # type: ignore[method-assign]

    def initial(self) -> State:
        return self.layout.initial()

    def compiled(self, a: Action) -> CompiledAction:
        ca = self._cache.get(a)
        if ca is not None:
            return ca
        ctx = Ctx(self.u, self.layout, a.cpu, self.ablate)
        return self._compile(a, rule_of(a, ctx), wrapper_pre(a, self.u))

    def compile_as(self, a: Action, rule: Rule) -> CompiledAction:
        """Compile ``rule`` as the rule of ``a`` and cache it like ``compiled``: a client's
        composition of a leaf's one definition with its own steps (the API lab folds a
        wrapper's CLFLUSH into the rule, so fused successor code can run it)."""
        return self._compile(a, rule, ())

    def _compile(self, a: Action, rule: Rule, pre: Sequence[Effect]) -> CompiledAction:
        gen = new_gen(self.layout)
        srcs = [rule_source("step", rule, self.layout, pre, gen)]
        step_invs = []
        for i, inv in enumerate(self.invariants):
            clauses = inv.step_clauses(self.u, a, self.only)
            if clauses:
                srcs.append(predicate_source(f"sinv{i}", [c.ok for c in clauses], self.layout,
                                             gen, two_state=True))
                step_invs.append((inv, [c.message for c in clauses], f"sinv{i}"))
        ns = compile_functions(srcs, gen)
        ca = CompiledAction(a, rule, ns["step"],
                            [(inv, msgs, ns[name]) for inv, msgs, name in step_invs])
        self._cache[a] = ca
        return ca

    def step(self, s: State, a: Action, fault: int = -1) -> StepResult:
        ca = self.compiled(a)
        status, n, where = ca.fn(s, fault)
        viol = []
        if status != NOT_ENABLED:
            for inv, msgs, fn in ca.step_invs:
                k = fn(s, n)  # type: ignore[operator]
                if k >= 0:
                    viol.append(Violation(inv.id, msgs[k], k))
        return StepResult(
            status if a.is_seamcall or a.kind == "TDG.MEM.PAGE.ACCEPT" or status == NOT_ENABLED
            else None,
            n, where, tuple(viol))

    def state_violations(self, s: State) -> list[Violation]:
        """The invariants ``s`` breaks (each with its first failing clause); in fact a
        generated function with the same answer (set in ``__init__``)."""
        return self._state_violations(s)

    def _state_violations(self, s: State) -> list[Violation]:
        if self._all_hold(s) < 0:
            return []
        out = []
        for (inv, msgs), fn in zip(self._state_msgs, self._state_fns, strict=True):
            k = fn(s)
            if k >= 0:
                out.append(Violation(inv.id, msgs[k], k))
        return out

    def check_name(self, a: Action, where: int) -> str:
        """Name of the check (or fault) at ``where`` in the action's rule."""
        if where < 0:
            return ""
        return self.compiled(a).rule.steps[where].name

    def is_fault(self, a: Action, where: int) -> bool:
        return where >= 0 and isinstance(self.compiled(a).rule.steps[where], Fault)


SUCCESS = int(Status.TDX_SUCCESS)
