"""What ``prove --parametric`` proves: the module invariants, the lemmas and
``state-encoding``'s bounds, as ∀-clauses read from the same definitions the finite
readers expand (``properties/invariants.py``, ``properties/lemmas.py`` built on a
``SymUniverse``), with each counting clause split out (``CountClause``).

``state-encoding`` here is what the sorts do not already give: every enum field holds a
member of its enum and every pointer an object by construction; left are the counters'
ranges (a bound that is the same in every universe is kept, e.g. ``bepoch_age <= 2``,
``num_tdcx <= tdcs_pages + 3``; a bound that grows with the universe becomes ``>= 0``),
``TDR.hkid`` below the global KeyID, the global KeyID outside CACHE.WB's HKID snapshot,
and the NULL page's fixed ``PT_RSVD`` (``Layout.fixed_cells``).  The bounds are found by
building two finite layouts of different sizes and comparing them, not written here.

The growing bounds follow from proved targets in every finite instance: ``chldcnt <=
pages`` (a live TD: ``chldcnt-matches-pages``, a count of pages; a dead slot:
``dead-td-slot-zero``), ``refcount[k] <= vCPUs`` (``epoch-refcounts``, a count of vCPUs in
every slot), ``num_assoc_vcpus <= vCPUs`` (an initialised TD: ``assoc-count-matches``; a TD
before INIT: ``uninitialised-td-unassociated``; a dead slot: ``dead-td-slot-zero``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tdxcheck.checker.explore.programs import has_clauses, make_config
from tdxcheck.model.expr import (
    Agg,
    And,
    Bin,
    BoolOp,
    Const,
    Expr,
    Not,
    NotE,
    Or,
    Read,
    Sym,
    SymDomain,
    Var,
)
from tdxcheck.model.state import FIELDS, POST, Layout, Platform, S
from tdxcheck.properties import INVARIANTS, Clause, Invariant
from tdxcheck.properties.base import forall
from tdxcheck.properties.lemmas import LEMMAS

from .logic import INT, OBJ, field_type, fields_read
from .sym import SymUniverse
from .transitions import reference_universe

TYPING = "state-encoding"


@dataclass
class CountClause:
    """``∀t. guard(t) ⇒ cnt(t) = |{x ∈ dom : cond(x, t)}|`` (see ``counting.py``)."""

    clause: Clause
    t: Var
    guard: Expr
    cnt: Read
    agg: Agg

    @property
    def reads(self) -> set[str]:
        return fields_read(self.guard) | fields_read(self.cnt) | fields_read(self.agg)


@dataclass
class PTarget:
    id: str
    kind: str  # invariant | lemma | typing
    summary: str
    clauses: list[Clause]
    counts: list[CountClause] = field(default_factory=list)
    step: Callable[[Any], list[Clause]] | None = None
    reads: set[str] = field(default_factory=set)


def split_count(c: Clause) -> CountClause | None:
    """The counting clause ``c`` is, or None."""
    ok = c.ok
    others: list[Expr] = []
    if isinstance(ok, BoolOp) and ok.op == "or":
        others, ok = list(ok.args[:-1]), ok.args[-1]
    if not (isinstance(ok, Bin) and ok.op == "==" and isinstance(ok.b, Agg)
            and ok.b.op == "count" and isinstance(ok.a, Read)):
        return None
    if len(c.vars) != 1 or ok.a.index != (c.vars[0],):
        raise ValueError(f"a count not over its clause's variable: {c.message}")
    guard = Not(Or(*others)) if others else Const(1)
    return CountClause(c, c.vars[0], guard, ok.a, ok.b)


def _target(su: SymUniverse, inv: Invariant, kind: str) -> PTarget:
    clauses, counts = [], []
    for c in inv.state_clauses(su, "module"):  # type: ignore[arg-type]
        cc = split_count(c)
        if cc is None:
            clauses.append(c)
        else:
            counts.append(cc)
    reads: set[str] = set()
    for c in clauses:
        reads |= fields_read(c.ok) | fields_read(c.where)
    for cc in counts:
        reads |= cc.reads
    step = None
    if inv.step is not None:
        def step(a: Any, inv: Invariant = inv) -> list[Clause]:
            return inv.step_clauses(su, a, "module")  # type: ignore[arg-type]
    return PTarget(inv.id, kind, inv.summary, clauses, counts, step, reads)


def _dom_of(dim: str) -> tuple[SymDomain, ...]:
    return {"one": (), "pkg": (SymDomain("pkg"),), "hkid": (SymDomain("anyhkid"),),
            "page": (SymDomain("anypage"),), "td": (SymDomain("td"),),
            "vp": (SymDomain("vp"),), "td_entry": (SymDomain("td"), SymDomain("entry"))}[dim]


def typing_clauses(fixed: Platform) -> list[Clause]:
    """``state-encoding`` as ∀-clauses (see the module docstring)."""
    small = Layout(make_config("default", {
        **{k: str(v) for k, v in fixed.__dict__.items()},
        "tds": "1", "vps": "1", "pages": "1", "hkids": "2", "packages": "1"}).universe())
    big = Layout(make_config("default", {
        **{k: str(v) for k, v in fixed.__dict__.items()},
        "tds": "3", "vps": "3", "pages": "5", "hkids": "4", "packages": "3"}).universe())
    out: list[Clause] = []
    for f in FIELDS:
        ty = field_type(f)
        view = getattr(S, f.name)
        doms = _dom_of(f.dim)
        if ty == INT:
            b1, b2 = small._int_bound(f.name), big._int_bound(f.name)

            def body(*xs: Any, view: Any = view, b: int | None = (b1 if b1 == b2 else None),
                     name: str = f.name) -> Clause:
                cell = view[xs]
                ok = (cell >= 0) if b is None else And(cell >= 0, cell <= b)
                rng = f"0..{b}" if b is not None else ">= 0"
                return Clause(ok, f"{name} outside its range ({rng})")

            out += _forall_dims(doms, body)
        elif ty == OBJ("hkid"):
            # an int of 0..hkids-1 in a finite state: never the global KeyID
            out += _forall_dims(doms, lambda *xs, view=view, name=f.name: Clause(
                view[xs] < Sym("hkids"), f"{name} is the global KeyID"))
        elif f.kind == "bitmap_hkid":
            out += _forall_dims(doms, lambda *xs, view=view, name=f.name: Clause(
                ((view[xs] >> Sym("global_keyid")) & 1) == 0,
                f"{name} holds the global KeyID (a bit outside its range)"))
    ref = small
    for i, val in ref.fixed_cells:
        spec = ref.field_of(i)
        idx = tuple(divmod(i - ref.base[spec.name], ref.shape[spec.name][-1])) \
            if len(ref.shape[spec.name]) > 1 else (i - ref.base[spec.name],)
        assert idx == (0,) and spec.dim == "page", "a fixed cell outside the NULL page"
        out.append(Clause(getattr(S, spec.name)[0] == val,
                          f"the NULL page's {spec.name} changed"))
    return out


def _forall_dims(doms: tuple[SymDomain, ...], body: Callable[..., Clause]) -> list[Clause]:
    if not doms:
        return [body()]
    if len(doms) == 1:
        return forall(doms[0], lambda x: body(x))
    return forall(doms[0], lambda x: forall(doms[1], lambda y: body(x, y)))


def targets(fixed: Platform) -> tuple[SymUniverse, list[PTarget]]:
    """Every module invariant with a module clause, every lemma, and ``state-encoding``."""
    su = SymUniverse(fixed)
    u_ref = reference_universe(fixed)
    out = [_target(su, inv, "invariant") for inv in INVARIANTS
           if has_clauses(inv, u_ref, "module")]
    out += [_target(su, lm, "lemma") for lm in LEMMAS]
    typ = typing_clauses(fixed)
    reads: set[str] = set()
    for c in typ:
        reads |= fields_read(c.ok)
    out.append(PTarget(TYPING, "typing", "counters in range, the NULL page fixed (what the "
                       "sorts do not already give)", typ, [], None, reads))
    return su, out


__all__ = ["TYPING", "CountClause", "PTarget", "split_count", "targets", "typing_clauses"]

_ = (NotE, POST)  # the readers' node types the splitter sees through Not/Implies
