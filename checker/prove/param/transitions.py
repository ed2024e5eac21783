"""The parametric any host: one transition per (leaf, level, resume, exit reason, KeyID
kind, fault point), its object operands fresh constants.

The transitions are not written here: they are the any host's actions
(``programs.any_host_actions``) of a reference universe with the proof's platform
constants, each with its object operands abstracted (a TD, vCPU, page or CPU operand a
``Var``, an HKID a ``PrivateHkid``, a GPA the ``SymGpa`` of its level, the WBINVD KeyID a
private HKID or the global KeyID) and the duplicates dropped.  Every finite any-host
action is an instance of exactly one of them (``instance_of`` finds it: the tests check
every action of several universes maps to one).  The rule of each is built by the leaf's
own builder on a ``SymUniverse`` (``rule_of``), with the any host's guard
(``any_host_guard``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tdxcheck.checker.explore.programs import any_host_actions, any_host_guard, make_config
from tdxcheck.model.actions import Action, rule_of
from tdxcheck.model.expr import Expr, Sym, Var
from tdxcheck.model.rule import LEAVES, Ctx, Rule
from tdxcheck.model.state import Platform, Universe
from tdxcheck.model.status import status_name

from .sym import PrivateHkid, SymGpa, SymUniverse, entry_var, name_of

#: operand name -> the kind of object it names
PAGE_OPERANDS = ("tdr", "page", "tdvpr")


@dataclass
class PTransition:
    """One parametric transition."""

    eid: int
    step: str
    kind: str
    args: tuple[tuple[str, Any], ...]  # symbolic operands (Var, PrivateHkid, SymGpa, Sym)
    cpu: Var
    fault: int
    fault_name: str | None
    guard: Expr | None
    rule: Rule
    shape: tuple[Any, ...]

    @property
    def action(self) -> Action:
        return Action(self.step, self.kind, self.args, self.cpu)  # type: ignore[arg-type]

    @property
    def operands(self) -> list[Var]:
        """The fresh constants of the transition (the CPU first)."""
        out: list[Var] = [self.cpu]
        for _k, v in self.args:
            if isinstance(v, Var):
                out.append(v)
            elif isinstance(v, SymGpa):
                out.append(v.entry)
        return out

    @property
    def text(self) -> str:
        parts = []
        for k, v in self.args:
            if isinstance(v, SymGpa):
                parts.append(f"gpa=<a level-{v.level} GPA {v.entry.name}>")
            elif isinstance(v, (Var, Sym)):
                parts.append(f"{k}={name_of(v) if not isinstance(v, Sym) else 'global'}")
            else:
                parts.append(f"{k}={v}")
        name = self.step
        label = f"{name}({', '.join(parts)})"
        if self.kind in LEAVES and LEAVES[self.kind].family != "guest":
            label += " [cpu]"
        return label + (f" [fault {self.fault_name}]" if self.fault_name else "")


def shape_of(a: Action, u: Universe) -> tuple[Any, ...]:
    """What a concrete any-host action is an instance of: its step and kind, and per
    operand its kind of object (or its value, for a level, a resume or an exit reason;
    for a WBINVD KeyID whether it is private or the global one)."""
    out: list[Any] = [a.step, a.kind]
    for k, v in a.args:
        if k in PAGE_OPERANDS:
            out.append((k, "page"))
        elif k in ("td", "vp"):
            out.append((k, k))
        elif k == "hkid":
            assert 1 <= v < u.platform.hkids
            out.append((k, "private"))
        elif k == "keyid":
            out.append((k, "global" if v == u.platform.global_keyid else "private"))
        elif k == "gpa":
            out.append((k, "gpa"))
        else:
            out.append((k, v))
    return tuple(out)


def _symbolic_args(shape: tuple[Any, ...], depth: int) -> tuple[tuple[str, Any], ...]:
    items = dict(shape[2:])
    level = items.get("level", 0)
    names = {"tdr": "tdr", "page": "pg", "tdvpr": "tdvpr", "td": "t", "vp": "v"}
    args: list[tuple[str, Any]] = []
    for k, v in shape[2:]:
        if k in PAGE_OPERANDS:
            args.append((k, Var("page", names[k])))
        elif k in ("td", "vp"):
            args.append((k, Var(k, names[k])))
        elif k == "hkid" or (k == "keyid" and v == "private"):
            args.append((k, PrivateHkid("hkid", "h")))
        elif k == "keyid":
            args.append((k, Sym("global_keyid")))
        elif k == "gpa":
            args.append((k, SymGpa(level, entry_var(level, f"e{level}"), depth)))
        else:
            args.append((k, v))
    return tuple(args)


def reference_universe(fixed: Platform) -> Universe:
    """A finite universe with every kind of any-host action on ``fixed``'s constants: a
    GPA aligned to every level, a private HKID and the global KeyID."""
    plat = {k: str(v) for k, v in fixed.__dict__.items()}
    plat.update({"hkids": "2", "packages": "2", "cpus_per_package": "1"})
    return make_config("default", plat).universe()


def transitions(fixed: Platform, faults: bool = False, ablate: Sequence[str] = ()
                ) -> list[PTransition]:
    """Every parametric transition, in the any host's order of first appearance."""
    u_ref = reference_universe(fixed)
    su = SymUniverse(fixed)
    shapes: list[tuple[Any, ...]] = []
    seen: set[tuple[Any, ...]] = set()
    for a, _g in any_host_actions(u_ref):
        s = shape_of(a, u_ref)
        if s not in seen:
            seen.add(s)
            shapes.append(s)
    out: list[PTransition] = []
    for s in shapes:
        step, kind = s[0], s[1]
        args = _symbolic_args(s, fixed.sept_levels)
        cpu = Var("cpu", "cpu")
        action = Action(step, kind, args, cpu)  # type: ignore[arg-type]
        rule = rule_of(action, Ctx(su, None, cpu, frozenset(ablate)))  # type: ignore[arg-type]
        d = dict(args)
        slot = d.get("td", d.get("vp"))
        guard = any_host_guard(kind, slot) if slot is not None else None
        out.append(PTransition(len(out), step, kind, args, cpu, -1, None, guard, rule, s))
        if faults:
            for k, f in enumerate(rule.faults):
                out.append(PTransition(len(out), step, kind, args, cpu, k,
                                       status_name(f.status), guard, rule, s))
    return out


def instance_of(a: Action, u: Universe, trans: Sequence[PTransition],
                fault: int = -1) -> PTransition:
    """The parametric transition a finite any-host action (with a fault choice) is an
    instance of."""
    s = shape_of(a, u)
    for t in trans:
        if t.shape == s and t.fault == fault:
            return t
    raise KeyError(f"no parametric transition for {a} (fault {fault})")
