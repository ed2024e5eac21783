"""Rules as data: ordered checks, fault points, and effects; and the leaf registry.

A rule is what one action does to the state.  Its ``checks`` run in the module's order and
the first one that fails gives the status (``Check.ok`` is the condition for *passing*).
A ``Fault`` sits at the place in that order where the module can fail for a reason outside
the host program (a lock held by the guest, no entropy, an interrupt); it fires only when
asked (``fault=`` in a scenario, ``--faults`` in the explorer).  If every check passes the
``effects`` apply.  Effects read the state before the step and write the state after it.

Every leaf is registered once in ``LEAVES`` (the dispatcher's switch); each engine builds
the rule of an action from it, so no engine keeps a copy of a rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

from .expr import TRUE, Const, Domain, Expr, Operand, SymDomain, Var, lift
from .state import Layout, Platform, Universe
from .status import OperandId, Status


@dataclass(frozen=True)
class Assign:
    """``field[index] := value`` (value read from the pre-state)."""

    field: str
    index: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True)
class When:
    """Effects that apply only where ``cond`` holds in the pre-state."""

    cond: Expr
    effects: tuple[Effect, ...]


@dataclass(frozen=True)
class ForEach:
    """``effects`` for every object ``var`` of ``dom`` (a SymDomain): the parametric
    reading of a loop over objects inside a rule (``for_each``)."""

    dom: SymDomain
    var: Var
    effects: tuple[Effect, ...]


Effect = Union[Assign, When, ForEach]


def set_(view_read: Expr, value: Operand) -> Assign:
    """``set_(S.pt[p], PT_TDR)``: assign to the cell that ``S.pt[p]`` reads."""
    from .expr import Read

    assert isinstance(view_read, Read) and not view_read.post, "assign to an S.<field>[...] cell"
    return Assign(view_read.field, view_read.index, lift(value))


def when(cond: Operand, *effects: Effect) -> When:
    return When(lift(cond), tuple(effects))


def for_each(dom: Domain, body: Callable[..., Effect | Sequence[Effect]]) -> tuple[Effect, ...]:
    """The effects ``body`` gives for every object of ``dom``: over a finite domain exactly
    ``[e for i in dom for e in body(i)]`` (what a Python loop builds), over a SymDomain one
    ``ForEach``."""

    def listed(x: Effect | Sequence[Effect]) -> tuple[Effect, ...]:
        return (x,) if isinstance(x, (Assign, When, ForEach)) else tuple(x)

    if isinstance(dom, SymDomain):
        v = dom.var()
        return (ForEach(dom, v, listed(body(v))),)
    return tuple(e for i in dom for e in listed(body(i)))


@dataclass(frozen=True)
class Check:
    """One check in module order: ``ok`` must hold, else the leaf returns ``status``.

    ``name`` is ``<family>.<leaf>.<what>``: the handle coverage, ablation and property
    ``depends_on`` lists use.  ``fail_effects`` are what the module does on that failure
    path (rare: CACHE.WB START resets its progress before reporting NO_HKID_READY).
    """

    name: str
    ok: Expr
    status: int
    fail_effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class Fault:
    """A point where the module may fail for a reason outside the host program."""

    name: str
    status: int
    effects: tuple[Effect, ...] = ()  # what the module does before failing there
    cond: Expr = field(default_factory=lambda: TRUE)  # on the path only where this holds


Step = Union[Check, Fault]


@dataclass(frozen=True)
class Rule:
    """An action's checks (in order) and its success effects."""

    steps: tuple[Step, ...]
    effects: tuple[Effect, ...]
    success: int = int(Status.TDX_SUCCESS)
    enabled: Expr = field(default_factory=lambda: TRUE)  # host/guest: can it happen at all?

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(s for s in self.steps if isinstance(s, Check))

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(s for s in self.steps if isinstance(s, Fault))


def st(status: Status, opid: OperandId | int = 0) -> int:
    """``api_error_with_operand_id(status, opid)`` = status + opid (tdx_api_defs.h)."""
    return int(status) + int(opid)


@dataclass
class Ctx:
    """What a rule builder may know: the universe, the executing CPU, and ablations."""

    u: Universe
    layout: Layout
    cpu: int = 0
    ablate: frozenset[str] = frozenset()

    @property
    def p(self) -> Platform:
        return self.u.platform

    @property
    def pkg(self) -> int:
        return self.p.pkg(self.cpu)


@dataclass
class RuleBuilder:
    """Collects checks in order; a check named in ``ctx.ablate`` is left out.

    A check whose condition is a constant false (an operand the module refuses whatever the
    state: a level beyond the S-EPT, a shared GPA) is the last step the module takes with
    these operands: the builder is ``stopped`` there, later checks, faults and the success
    effects are dropped, and helpers that would compute state cells from the operand (an
    S-EPT entry that does not exist) skip it (``checks.entry_of``).
    """

    ctx: Ctx
    steps: list[Step] = field(default_factory=list)
    stopped: bool = False

    def check(
        self, name: str, ok: Operand, status: int, fail_effects: Sequence[Effect] = ()
    ) -> None:
        if name in self.ctx.ablate or self.stopped:
            return
        cond = lift(ok)
        self.steps.append(Check(name, cond, status, tuple(fail_effects)))
        if isinstance(cond, Const) and not cond.value:
            self.stopped = True

    def fault(
        self, name: str, status: int, effects: Sequence[Effect] = (), cond: Operand = TRUE
    ) -> None:
        if not self.stopped:
            self.steps.append(Fault(name, status, tuple(effects), lift(cond)))

    def extend(self, other: Sequence[Step]) -> None:
        for s in other:
            if isinstance(s, Check):
                self.check(s.name, s.ok, s.status, s.fail_effects)
            elif not self.stopped:
                self.steps.append(s)

    def done(self, *effects: Effect, success: int = 0, enabled: Operand = TRUE) -> Rule:
        return Rule(tuple(self.steps), () if self.stopped else tuple(effects), success,
                    lift(enabled))


@dataclass(frozen=True)
class LeafDef:
    """A SEAMCALL leaf (or guest TDCALL) as the dispatcher knows it.

    ``operands`` are the builder's keyword operands; ``regs`` maps raw-form registers to
    them (``seamcall LEAF rcx=... rdx=... r8=...``); ``hands`` are the operands that are
    pages given to the module; ``statuses`` lists every status the rule can return (from
    its checks and faults, filled by ``statuses_of``) for coverage.
    """

    spec: str  # TDH.MNG.KEY.CONFIG
    number: int  # leaf number, tdx_api_defs.h seamcall_leaf_opcode_e
    family: str  # mng, vp, mem, phymem, guest
    build: Callable[..., Rule]
    operands: tuple[str, ...]
    regs: tuple[tuple[str, str], ...] = ()
    hands: tuple[str, ...] = ()
    source: str = ""


LEAVES: dict[str, LeafDef] = {}


class OperandError(ValueError):
    """Operands the model cannot follow the module with (only with a check ablated: the
    check that refuses them is gone, and what comes after it needs state that does not
    exist, such as an S-EPT level beyond the configured depth).  Bad input, not a bug."""


def leaf(
    spec: str,
    number: int,
    family: str,
    operands: tuple[str, ...],
    regs: tuple[tuple[str, str], ...] = (),
    hands: tuple[str, ...] = (),
    source: str = "",
) -> Callable[[Callable[..., Rule]], Callable[..., Rule]]:
    """Register a leaf's rule builder under its spec name (the dispatcher's switch)."""

    def deco(fn: Callable[..., Rule]) -> Callable[..., Rule]:
        assert spec not in LEAVES, f"leaf {spec} defined twice"
        LEAVES[spec] = LeafDef(spec, number, family, fn, operands, regs, hands, source)
        return fn

    return deco


__all__ = [
    "LEAVES",
    "TRUE",
    "Assign",
    "Check",
    "Ctx",
    "Effect",
    "Fault",
    "ForEach",
    "LeafDef",
    "OperandError",
    "Rule",
    "RuleBuilder",
    "Step",
    "When",
    "for_each",
    "leaf",
    "set_",
    "st",
    "when",
]
