"""The small expression language every rule, effect and invariant is written in.

Rules are data: trees of these nodes over the state's fields.  ``model/compile.py`` turns a
tree into Python source for the explorer and the replay; ``checker/prove/encode.py`` reads the
same tree as Z3 terms.  Nothing else interprets rules, so there is one definition of each
(the mypyvy pattern: one AST, several interpreters; ``style-and-ecosystem.md`` §1.8).

Values are non-negative integers (enum members, counters, bitmaps).  Python operators build
nodes: ``S.pt[p] == PT_TDR`` is an ``Expr``, not a bool.  Operands of an action are plain
Python ints, folded into ``Const`` when a rule is built for that action.

"For every object" is said with a *domain*: ``Universe.domain("page")`` and its kin.  In a
finite universe a domain is a ``range`` (or a list), and the aggregates ``All``/``Any``/
``Count``/``UnionOf`` (and the effect ``rule.ForEach``) expand on the spot into exactly the
trees a Python loop over it builds (``And(*...)``, a sum of ``If(x, 1, 0)``, an ``|``-fold):
the finite readers never see the new nodes, and their input is the same tree as before
(``tests/test_param_expand.py``).  Over a ``SymDomain`` (the parametric reading of
``checker/prove/param/``, where a sort has any number of objects) they build an ``Agg`` node
over a bound ``Var`` instead; ``Sym`` names the symbolic universe's rigid symbols (a CPU's
package, an S-EPT entry's parent, the global KeyID, the set of every package).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any as _AnyT
from typing import Union

Operand = Union["Expr", int]


def lift(x: Operand) -> Expr:
    """An int (or bool, or IntEnum member) becomes a Const; an Expr stays."""
    if isinstance(x, Expr):
        return x
    return Const(int(x))


class Expr:
    """Base class: operator overloads build nodes (no evaluation here)."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # == builds a node, so no hashing

    def __eq__(self, other: object) -> Expr:  # type: ignore[override]
        return _bin("==", self, other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> Expr:  # type: ignore[override]
        return _bin("!=", self, other)  # type: ignore[arg-type]

    def __lt__(self, other: Operand) -> Expr:
        return _bin("<", self, other)

    def __le__(self, other: Operand) -> Expr:
        return _bin("<=", self, other)

    def __gt__(self, other: Operand) -> Expr:
        return _bin(">", self, other)

    def __ge__(self, other: Operand) -> Expr:
        return _bin(">=", self, other)

    def __add__(self, other: Operand) -> Expr:
        return _bin("+", self, other)

    def __radd__(self, other: Operand) -> Expr:
        return _bin("+", other, self)

    def __sub__(self, other: Operand) -> Expr:
        return _bin("-", self, other)

    def __rsub__(self, other: Operand) -> Expr:
        return _bin("-", other, self)

    def __mul__(self, other: Operand) -> Expr:
        return _bin("*", self, other)

    def __and__(self, other: Operand) -> Expr:
        return _bin("&", self, other)

    def __rand__(self, other: Operand) -> Expr:
        return _bin("&", other, self)

    def __or__(self, other: Operand) -> Expr:
        return _bin("|", self, other)

    def __ror__(self, other: Operand) -> Expr:
        return _bin("|", other, self)

    def __rshift__(self, other: Operand) -> Expr:
        return _bin(">>", self, other)

    def __lshift__(self, other: Operand) -> Expr:
        return _bin("<<", self, other)

    def __rlshift__(self, other: Operand) -> Expr:
        return _bin("<<", other, self)

    def __rrshift__(self, other: Operand) -> Expr:
        return _bin(">>", other, self)

    def __bool__(self) -> bool:
        raise TypeError("an Expr has no truth value; use And/Or/Not (did you write `and`?)")

    def isin(self, values: Iterable[Operand]) -> Expr:
        """Membership in a constant set (the permission tables use this); a set with a
        non-constant member (a symbolic CPU) is the disjunction of equalities."""
        given = tuple(values)
        if any(isinstance(v, Expr) and not isinstance(v, Const) for v in given):
            return Or(*(self == v for v in given))
        vals = tuple(sorted({int(v.value if isinstance(v, Const) else v) for v in given}))
        return In(self, vals)


@dataclass(frozen=True, eq=False, slots=True)
class Const(Expr):
    value: int


@dataclass(frozen=True, eq=False, slots=True)
class Read(Expr):
    """A field cell; ``post`` reads the state after the step (step invariants only)."""

    field: str
    index: tuple[Expr, ...]
    post: bool = False


@dataclass(frozen=True, eq=False, slots=True)
class Bin(Expr):
    op: str
    a: Expr
    b: Expr


@dataclass(frozen=True, eq=False, slots=True)
class BoolOp(Expr):
    op: str  # "and" | "or"
    args: tuple[Expr, ...]


@dataclass(frozen=True, eq=False, slots=True)
class NotE(Expr):
    a: Expr


@dataclass(frozen=True, eq=False, slots=True)
class Ite(Expr):
    c: Expr
    a: Expr
    b: Expr


@dataclass(frozen=True, eq=False, slots=True)
class In(Expr):
    a: Expr
    values: tuple[int, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Var(Expr):
    """An object of a sort (``kind``: page, td, vp, hkid, pkg, cpu, entry, entry<L>): a
    variable bound by an ``Agg``, a ``ForEach`` or a ∀-clause (``dom``: what it ranges
    over), or an operand of a parametric transition.  Only the parametric reading builds
    one."""

    kind: str
    name: str
    dom: SymDomain | None = None

    def __str__(self) -> str:  # a clause message names the variable
        return self.name


@dataclass(frozen=True, eq=False, slots=True)
class Sym(Expr):
    """A rigid symbol of the symbolic universe (no state cell): ``cpu_pkg(cpu)``,
    ``parent(entry)``, ``global_keyid``, ``all_pkgs``, ``lines(keyid[, pkg])`` (the dirty-map
    bits of a KeyID), ``hkids`` (one past the private HKIDs).  Only the parametric reading
    builds one."""

    name: str
    args: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class SymDomain:
    """Every object of a sort, in the parametric reading: ``kind`` is page (not NULL), td,
    vp, hkid (the private HKIDs), pkg, entry (every S-EPT entry of every level), children
    (the entries whose parent is ``of``, one level below ``level``), anypage and anyhkid
    (NULL, the KeyID 0 and the global KeyID included: the state's every cell)."""

    kind: str
    of: Expr | None = None
    level: int | None = None

    def var(self) -> Var:
        kind = {"anypage": "page", "anyhkid": "hkid"}.get(self.kind, self.kind)
        if self.kind == "children":
            kind = f"entry{self.level - 1}"  # type: ignore[operator]
        return Var(kind, f"{kind[0]}{next(_VAR_IDS)}", self)


_VAR_IDS = itertools.count()

#: a domain: the objects' indices in a finite universe, or a ``SymDomain``
Domain = Iterable[int] | SymDomain


@dataclass(frozen=True, eq=False, slots=True)
class Agg(Expr):
    """``op`` (all | any | count | union) of ``body`` over ``var`` in ``dom`` (a SymDomain)."""

    op: str
    dom: SymDomain
    var: Var
    body: Expr


TRUE = Const(1)
FALSE = Const(0)

_FOLD = {
    "==": lambda x, y: int(x == y),
    "!=": lambda x, y: int(x != y),
    "<": lambda x, y: int(x < y),
    "<=": lambda x, y: int(x <= y),
    ">": lambda x, y: int(x > y),
    ">=": lambda x, y: int(x >= y),
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
    "&": lambda x, y: x & y,
    "|": lambda x, y: x | y,
    ">>": lambda x, y: x >> y,
    "<<": lambda x, y: x << y,
    "andnot": lambda x, y: x & ~y,
}


def _bin(op: str, a: Operand, b: Operand) -> Expr:
    ea, eb = lift(a), lift(b)
    if isinstance(ea, Const) and isinstance(eb, Const):
        return Const(_FOLD[op](ea.value, eb.value))
    return Bin(op, ea, eb)


def And(*args: Operand) -> Expr:
    """Conjunction; constants fold away (an empty And is TRUE)."""
    out: list[Expr] = []
    for x in args:
        e = lift(x)
        if isinstance(e, Const):
            if not e.value:
                return FALSE
            continue
        out.extend(e.args if isinstance(e, BoolOp) and e.op == "and" else (e,))
    if not out:
        return TRUE
    return out[0] if len(out) == 1 else BoolOp("and", tuple(out))


def Or(*args: Operand) -> Expr:
    """Disjunction; constants fold away (an empty Or is FALSE)."""
    out: list[Expr] = []
    for x in args:
        e = lift(x)
        if isinstance(e, Const):
            if e.value:
                return TRUE
            continue
        out.extend(e.args if isinstance(e, BoolOp) and e.op == "or" else (e,))
    if not out:
        return FALSE
    return out[0] if len(out) == 1 else BoolOp("or", tuple(out))


def Not(a: Operand) -> Expr:
    e = lift(a)
    if isinstance(e, Const):
        return Const(int(not e.value))
    if isinstance(e, NotE):
        return e.a
    return NotE(e)


def Implies(a: Operand, b: Operand) -> Expr:
    return Or(Not(a), b)


def If(c: Operand, a: Operand, b: Operand) -> Expr:
    ec = lift(c)
    if isinstance(ec, Const):
        return lift(a) if ec.value else lift(b)
    return Ite(ec, lift(a), lift(b))


def AndNot(a: Operand, mask: Operand) -> Expr:
    """``a`` with the bits of ``mask`` cleared."""
    return _bin("andnot", a, mask)


def Min(a: Operand, b: Operand) -> Expr:
    return If(lift(a) <= lift(b), a, b)


def bit(a: Operand, k: Operand) -> Expr:
    """Bit ``k`` of ``a`` as 0/1."""
    return (lift(a) >> k) & 1


def _agg(op: str, dom: Domain, body: Callable[[_AnyT], Operand]) -> Expr | None:
    if isinstance(dom, SymDomain):
        v = dom.var()
        return Agg(op, dom, v, lift(body(v)))
    return None


def All(dom: Domain, body: Callable[[_AnyT], Operand]) -> Expr:
    """``body`` holds for every object of ``dom`` (finite: ``And(*(body(i) for i in dom))``)."""
    sym = _agg("all", dom, body)
    return sym if sym is not None else And(*(body(i) for i in dom))  # type: ignore[union-attr]


def Any(dom: Domain, body: Callable[[_AnyT], Operand]) -> Expr:
    """``body`` holds for some object of ``dom`` (finite: ``Or(*...)``)."""
    sym = _agg("any", dom, body)
    return sym if sym is not None else Or(*(body(i) for i in dom))  # type: ignore[union-attr]


def Count(dom: Domain, body: Callable[[_AnyT], Operand]) -> Expr:
    """How many objects of ``dom`` satisfy ``body`` (finite: ``0 + If(body(i), 1, 0) + ...``).

    The parametric reading proves a count only as a delta obligation (checker/prove/param)."""
    sym = _agg("count", dom, body)
    if sym is not None:
        return sym
    total: Expr = lift(0)
    for i in dom:  # type: ignore[union-attr]
        total = total + If(body(i), 1, 0)
    return total


def UnionOf(dom: Domain, body: Callable[[_AnyT], Operand]) -> Expr:
    """The union (bitwise or) of the bitmaps ``body`` gives over ``dom`` (finite:
    ``0 | body(i) | ...``)."""
    sym = _agg("union", dom, body)
    if sym is not None:
        return sym
    out: Expr = lift(0)
    for i in dom:  # type: ignore[union-attr]
        out = out | body(i)
    return out


def children(x: Expr) -> tuple[Expr, ...]:
    """The subtrees of one node (aggregate bodies, their domains and symbol arguments too)."""
    if isinstance(x, Read):
        return tuple(x.index)
    if isinstance(x, Bin):
        return (x.a, x.b)
    if isinstance(x, BoolOp):
        return tuple(x.args)
    if isinstance(x, NotE | In):
        return (x.a,)
    if isinstance(x, Ite):
        return (x.c, x.a, x.b)
    if isinstance(x, Sym):
        return tuple(x.args)
    if isinstance(x, Agg):
        return (x.body,) if x.dom.of is None else (x.body, x.dom.of)
    return ()


def nodes(e: Expr) -> list[Expr]:
    """Every node of a tree, the one walk every reader uses."""
    out, stack = [], [e]
    while stack:
        x = stack.pop()
        out.append(x)
        stack.extend(children(x))
    return out


def reads(e: Expr) -> Iterable[Read]:
    """Every Read node in a tree (for dependency reports)."""
    return (x for x in nodes(e) if isinstance(x, Read))
