"""The small expression language every rule, effect and invariant is written in.

Rules are data: trees of these nodes over the state's fields.  ``model/compile.py`` turns a
tree into Python source for the explorer and the replay; ``checker/prove/encode.py`` reads the
same tree as Z3 terms.  Nothing else interprets rules, so there is one definition of each
(the mypyvy pattern: one AST, several interpreters; ``style-and-ecosystem.md`` §1.8).

Values are non-negative integers (enum members, counters, bitmaps).  Python operators build
nodes: ``S.pt[p] == PT_TDR`` is an ``Expr``, not a bool.  Operands of an action are plain
Python ints, folded into ``Const`` when a rule is built for that action.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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

    def __bool__(self) -> bool:
        raise TypeError("an Expr has no truth value; use And/Or/Not (did you write `and`?)")

    def isin(self, values: Iterable[int]) -> Expr:
        """Membership in a constant set (the permission tables use this)."""
        vals = tuple(sorted({int(v) for v in values}))
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


def reads(e: Expr) -> Iterable[Read]:
    """Every Read node in a tree (for dependency reports)."""
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Read):
            yield x
            stack.extend(x.index)
        elif isinstance(x, Bin):
            stack.extend((x.a, x.b))
        elif isinstance(x, BoolOp):
            stack.extend(x.args)
        elif isinstance(x, NotE):
            stack.append(x.a)
        elif isinstance(x, Ite):
            stack.extend((x.c, x.a, x.b))
        elif isinstance(x, In):
            stack.append(x.a)
