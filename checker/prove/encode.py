"""The Z3 reading of the rule data: rules, expressions, effects and invariant clauses as
bit-vector terms over the flat state vector.

This is the second interpreter of the one definition of every rule (``model/compile.py`` is
the concrete one; mypyvy's "one AST, two interpreters", style-and-ecosystem.md §1.2, §1.8).
It walks ``Rule``, ``Expr``, effect and clause trees generically, exactly as the Python
compiler does, and names no leaf, field or status: everything comes from the data and the
``Layout``.  z3 is imported in ``checker/prove/`` only.

Semantics, and where they meet the generated Python (``compile.rule_source``):

* A state is a list of ``width``-bit bit-vectors, one per ``Layout`` cell, read unsigned.
  ``width`` is one bit more than the largest ``Layout.value_bound`` needs (headroom for a
  counter's ``+ 1`` or a sum of two counters), and at least 8.
* Every Python value the rules compute is a non-negative int.  While the values stay in
  ``[0, 2**width)`` the two readings agree exactly: comparisons are unsigned, ``>>`` is a
  logical shift, ``andnot`` is ``a & ~b``.  A Python value outside that range has no
  counterpart (``x - 1`` at 0 is -1 in Python and ``2**width - 1`` here); a state whose
  cells satisfy ``typing`` and whose next state does too never gets there.  A constant
  outside the range is an error when it is encoded.
* Truth values: comparisons, ``Not`` and ``In`` are Bool terms; a Bool in a value position
  is 0/1 (Python's ``True == 1``), a value in a condition is ``!= 0`` (Python's truth).
  ``And``/``Or`` over Bools are Bool; over values they keep Python's value semantics
  (``a or b`` is ``a`` if ``a`` is true, else ``b``).
* ``Read`` with a constant index is the cell at the offset ``compile.py`` computes
  (``base + i * stride + j``).  With a non-constant index it is an ite chain over the
  field's index domain; an index outside the domain reads the domain's last cell (no typed
  state has one: index-valued fields are bounded by their domain).  A write with a
  non-constant index is a per-cell ite; outside the domain it writes nothing.
* A rule: pre-effects (the wrapper's CLFLUSH) first, whatever the outcome; then, if
  ``enabled`` is false, status ``NOT_ENABLED`` with the state after the pre-effects and
  ``where == -2``; else the steps in order, the first failing check (or the chosen fault
  point, if its ``cond`` holds) decides the status, the ``where`` and the state (its
  ``fail_effects``/``effects`` applied to the pre-state); else the success effects.
  Effects read the pre-state and write in order (a later write to a cell wins).
* The status is a 64-bit bit-vector; ``NOT_ENABLED`` (-1) is ``2**64 - 1``, which no TDX
  status is (``rule`` checks).  ``where`` is a ``WHERE_BITS``-bit bit-vector read signed;
  "enabled" is ``where != -2`` (``enabled_term``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import z3
from tdxcheck.model.actions import Action, rule_of, wrapper_pre
from tdxcheck.model.compile import NOT_ENABLED
from tdxcheck.model.expr import Bin, BoolOp, Const, Expr, In, Ite, NotE, Read
from tdxcheck.model.rule import Assign, Check, Ctx, Effect, Fault, Rule, When
from tdxcheck.model.state import Layout

if TYPE_CHECKING:  # engine imports compile/properties; only its type is needed here
    from tdxcheck.checker.explore.engine import Engine

#: width of the status term (a TDX completion status is 64 bits)
STATUS_BITS = 64
#: width of the ``where`` term, read signed: -2 not enabled, -1 success, else a step index
WHERE_BITS = 16

Term = Any  # z3.BoolRef | z3.BitVecRef: z3-solver ships no type hints
FaultChoice = int | Any  # an int (-1: no fault point fires) or a z3 bit-vector term


class _Env:
    """The states one expression reads (``pre``, and ``post`` for step clauses), with a
    memo of the nodes already encoded against them (keyed by node identity)."""

    __slots__ = ("memo", "post", "pre")

    def __init__(self, pre: Sequence[Term], post: Sequence[Term] | None) -> None:
        self.pre = pre
        self.post = post
        self.memo: dict[int, tuple[Expr, Term]] = {}


class Z3Encoder:
    """Encodes the rule data of one ``Layout`` as Z3 bit-vector terms."""

    def __init__(self, layout: Layout, width: int | None = None) -> None:
        self.layout = layout
        self.bounds: tuple[int, ...] = layout.bounds
        need = max(self.bounds, default=1).bit_length()
        if width is None:
            width = max(8, need + 1)
        elif width < need:
            raise ValueError(f"width {width} cannot hold the largest cell bound "
                             f"({max(self.bounds)} needs {need} bits)")
        self.width = width
        self._consts: dict[int, Term] = {}
        self._zero = self.const(0)
        self._one = self.const(1)
        self._not_enabled = z3.BitVecVal(NOT_ENABLED % (1 << STATUS_BITS), STATUS_BITS)
        #: (cell, value) that never change: the NULL page's non-zero cells (its PT_RSVD)
        self.fixed: tuple[tuple[int, int], ...] = layout.fixed_cells

    # ---- states --------------------------------------------------------------------
    def fresh_state(self, prefix: str) -> list[Term]:
        """One fresh bit-vector constant per cell, named ``<prefix>.<cell label>``."""
        lay = self.layout
        return [z3.BitVec(f"{prefix}.{lay.label(i)}", self.width) for i in range(lay.size)]

    def const_state(self, s: Sequence[int]) -> list[Term]:
        """A concrete state as bit-vector values."""
        return [self.const(v) for v in s]

    def typing(self, state: Sequence[Term], members: bool = False) -> Term:
        """Every cell is at most its ``value_bound``, and the NULL page keeps the non-zero
        values ``Layout.initial`` gives it (``pt == PT_RSVD``).  With ``members`` an enum
        cell also holds one of its enum's values, not just one below the largest."""
        lay = self.layout
        out = []
        for i, (t, b) in enumerate(zip(state, self.bounds, strict=True)):
            kind = lay.field_of(i).kind
            if members and isinstance(kind, type):
                out.append(z3.Or(*(t == int(m) for m in kind)))
            elif b < (1 << self.width) - 1:
                out.append(z3.ULE(t, b))
        out += [state[i] == v for i, v in self.fixed]
        return z3.And(*out)

    def values(self, state: Sequence[Term], model: Any = None) -> tuple[int, ...]:
        """The ints of a state's terms: evaluated in ``model``, or simplified (then every
        term must be ground)."""
        out = []
        for t in state:
            v = model.eval(t, model_completion=True) if model is not None else z3.simplify(t)
            if not z3.is_bv_value(v):
                raise ValueError(f"not a ground value: {v}")
            out.append(v.as_long())
        return tuple(out)

    # ---- expressions ---------------------------------------------------------------
    def const(self, v: int) -> Term:
        """``v`` as a ``width``-bit value; a value that does not fit is an error."""
        t = self._consts.get(v)
        if t is None:
            if not 0 <= v < (1 << self.width):
                raise ValueError(f"constant {v} does not fit in {self.width} unsigned bits")
            t = self._consts[v] = z3.BitVecVal(v, self.width)
        return t

    def expr(self, e: Expr, pre: Sequence[Term], post: Sequence[Term] | None = None) -> Term:
        """``e`` over ``pre`` (and ``post`` for ``POST`` reads): a Bool for comparisons,
        ``Not``, ``In`` and ``And``/``Or`` of those, else a ``width``-bit bit-vector."""
        return self._enc(e, _Env(pre, post))

    def value(self, e: Expr, pre: Sequence[Term], post: Sequence[Term] | None = None) -> Term:
        """``e`` as a bit-vector (a truth value is 0/1)."""
        return self._bv(self._enc(e, _Env(pre, post)))

    def cond(self, e: Expr, pre: Sequence[Term], post: Sequence[Term] | None = None) -> Term:
        """``e`` as a Bool (a value is true when it is not 0)."""
        return self._truth(self._enc(e, _Env(pre, post)))

    def clauses(self, exprs: Sequence[Expr], pre: Sequence[Term],
                post: Sequence[Term] | None = None) -> list[Term]:
        """Invariant clauses as Bools: state clauses over ``pre``, step clauses over ``pre``
        and ``post`` (one environment, so shared subtrees are encoded once)."""
        env = _Env(pre, post)
        return [self._truth(self._enc(e, env)) for e in exprs]

    def _bv(self, t: Term) -> Term:
        return z3.If(t, self._one, self._zero) if z3.is_bool(t) else t

    def _truth(self, t: Term) -> Term:
        return t if z3.is_bool(t) else t != self._zero

    def _enc(self, e: Expr, env: _Env) -> Term:
        hit = env.memo.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        t = self._enc_node(e, env)
        env.memo[id(e)] = (e, t)  # keeps ``e`` alive, so its id stays its own
        return t

    def _enc_node(self, e: Expr, env: _Env) -> Term:
        if isinstance(e, Const):
            return self.const(e.value)
        if isinstance(e, Read):
            cells = env.post if e.post else env.pre
            if cells is None:
                raise ValueError(f"POST.{e.field} read without a post-state")
            return self._read(e, cells, env)
        if isinstance(e, Bin):
            return self._bin(e.op, self._enc(e.a, env), self._enc(e.b, env))
        if isinstance(e, BoolOp):
            args = [self._enc(a, env) for a in e.args]
            if all(z3.is_bool(a) for a in args):
                return z3.And(*args) if e.op == "and" else z3.Or(*args)
            # Python's ``and``/``or`` return an operand: keep that value
            out = self._bv(args[-1])
            for a in reversed(args[:-1]):
                if e.op == "and":
                    out = z3.If(self._truth(a), out, self._zero)
                else:
                    out = z3.If(self._truth(a), self._bv(a), out)
            return out
        if isinstance(e, NotE):
            return z3.Not(self._truth(self._enc(e.a, env)))
        if isinstance(e, Ite):
            c = self._truth(self._enc(e.c, env))
            a, b = self._enc(e.a, env), self._enc(e.b, env)
            if z3.is_bool(a) and z3.is_bool(b):
                return z3.If(c, a, b)
            return z3.If(c, self._bv(a), self._bv(b))
        if isinstance(e, In):
            a = self._bv(self._enc(e.a, env))
            top = 1 << self.width
            return z3.Or(*(a == self.const(v) for v in e.values if 0 <= v < top))
        raise TypeError(f"cannot encode {e!r}")

    def _bin(self, op: str, a: Term, b: Term) -> Term:
        if op in ("==", "!="):
            if not (z3.is_bool(a) and z3.is_bool(b)):
                a, b = self._bv(a), self._bv(b)
            return a == b if op == "==" else a != b
        a, b = self._bv(a), self._bv(b)
        if op == "<":
            return z3.ULT(a, b)
        if op == "<=":
            return z3.ULE(a, b)
        if op == ">":
            return z3.UGT(a, b)
        if op == ">=":
            return z3.UGE(a, b)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "&":
            return a & b
        if op == "|":
            return a | b
        if op == ">>":
            return z3.LShR(a, b)
        if op == "<<":
            return a << b
        if op == "andnot":
            return a & ~b
        raise TypeError(f"unknown operator {op!r}")

    # ---- cells ---------------------------------------------------------------------
    def _split(self, field: str, index: tuple[Expr, ...], env: _Env
               ) -> tuple[int, list[tuple[Term, int, int]]]:
        """The constant part of a cell's flat offset, and (term, stride, size) of each
        non-constant index, as ``compile._Gen.index`` computes the offset."""
        lay = self.layout
        shape = lay.shape[field]
        strides = (1,) if len(shape) == 1 else (shape[1], 1)
        off = lay.base[field]
        sym: list[tuple[Term, int, int]] = []
        for i, stride, size in zip(index, strides, shape, strict=True):
            if isinstance(i, Const):
                off += i.value * stride
            else:
                sym.append((self._bv(self._enc(i, env)), stride, size))
        return off, sym

    def _cell(self, cells: Sequence[Term], off: int) -> Term:
        # an offset past the state is an IndexError in Python; never on a path it runs
        return cells[off] if 0 <= off < len(cells) else self._zero

    def _read(self, r: Read, cells: Sequence[Term], env: _Env) -> Term:
        off, sym = self._split(r.field, r.index, env)
        if not sym:
            return self._cell(cells, off)

        def chain(k: int, base: int) -> Term:
            if k == len(sym):
                return self._cell(cells, base)
            term, stride, size = sym[k]
            if size == 0:
                return self._zero
            out = chain(k + 1, base + (size - 1) * stride)
            for v in range(size - 2, -1, -1):
                out = z3.If(term == self.const(v), chain(k + 1, base + v * stride), out)
            return out

        return chain(0, off)

    # ---- effects -------------------------------------------------------------------
    def _effects(self, effects: Sequence[Effect], s: Sequence[Term], env: _Env
                 ) -> dict[int, Term]:
        """The cells ``effects`` change, as terms (reads from ``s``, writes in order)."""
        changed: dict[int, Term] = {}
        size = len(s)

        def walk(effs: Sequence[Effect], guard: Term | None) -> None:
            for eff in effs:
                if isinstance(eff, Assign):
                    value = self._bv(self._enc(eff.value, env))
                    off, sym = self._split(eff.field, eff.index, env)
                    targets: list[tuple[int, Term | None]]
                    if not sym:
                        targets = [(off, None)]
                    else:
                        targets = []
                        for combo in itertools.product(*(range(n) for _t, _s, n in sym)):
                            cell = off + sum(v * st for v, (_t, st, _n) in zip(combo, sym))
                            conds = [t == self.const(v) for v, (t, _s, _n) in zip(combo, sym)]
                            targets.append((cell, z3.And(*conds) if len(conds) > 1
                                            else conds[0]))
                    for cell, c in targets:
                        if not 0 <= cell < size:
                            continue
                        g = c if guard is None else (guard if c is None else z3.And(guard, c))
                        if g is None:
                            changed[cell] = value
                        else:
                            changed[cell] = z3.If(g, value, changed.get(cell, s[cell]))
                elif isinstance(eff, When):
                    if isinstance(eff.cond, Const):
                        if eff.cond.value:
                            walk(eff.effects, guard)
                        continue
                    c = self._truth(self._enc(eff.cond, env))
                    walk(eff.effects, c if guard is None else z3.And(guard, c))
                else:  # pragma: no cover
                    raise TypeError(f"cannot encode effect {eff!r}")

        walk(effects, None)
        return changed

    def apply(self, effects: Sequence[Effect], s: Sequence[Term]) -> list[Term]:
        """The state after ``effects`` (unconditional: a host action's body, pre-effects)."""
        changed = self._effects(effects, s, _Env(s, None))
        return [changed.get(i, t) for i, t in enumerate(s)]

    # ---- rules ---------------------------------------------------------------------
    def _fixed_truth(self, e: Expr, env: _Env) -> Term:
        if isinstance(e, Const):
            return z3.BoolVal(bool(e.value))
        return self._truth(self._enc(e, env))

    def rule(self, rule: Rule, pre: Sequence[Term], pre_effects: Sequence[Effect] = (),
             fault: FaultChoice = -1) -> tuple[Term, list[Term], Term]:
        """``(status, post_state, where)`` of ``rule`` from ``pre``: ``compile.rule_source``
        read as terms.  ``fault`` is the index of the fault point that fires (-1: none),
        an int or a bit-vector term (then the solver picks it)."""
        s = self.apply(pre_effects, pre) if pre_effects else list(pre)
        env = _Env(s, None)
        enabled = self._fixed_truth(rule.enabled, env)
        # (condition to take this exit when reached, status, where, changed cells)
        exits: list[tuple[Term, int, int, dict[int, Term]]] = []
        k = 0
        for i, step in enumerate(rule.steps):
            if isinstance(step, Check):
                if isinstance(step.ok, Const) and step.ok.value:
                    continue
                c = (z3.BoolVal(True) if isinstance(step.ok, Const)
                     else z3.Not(self._truth(self._enc(step.ok, env))))
                changed = self._effects(step.fail_effects, s, env)
            elif isinstance(step, Fault):
                if isinstance(fault, int):
                    if fault != k:
                        k += 1
                        continue
                    c = self._fixed_truth(step.cond, env)
                else:
                    c = z3.And(fault == z3.BitVecVal(k, fault.size()),
                               self._fixed_truth(step.cond, env))
                k += 1
                changed = self._effects(step.effects, s, env)
            else:  # pragma: no cover
                raise TypeError(f"cannot encode step {step!r}")
            if (step.status - NOT_ENABLED) % (1 << STATUS_BITS) == 0:
                raise ValueError(f"status {step.status:#x} of {step.name} is NOT_ENABLED")
            if z3.is_false(c):
                continue
            exits.append((c, step.status, i, changed))
            if z3.is_true(c):  # a check that always fails: later steps never run
                break
        else:
            exits.append((z3.BoolVal(True), rule.success, -1, self._effects(rule.effects, s, env)))

        # status and where: the nested If of the checks in order
        status = where = None
        for c, code, w, _ch in reversed(exits):
            st_t = z3.BitVecVal(code % (1 << STATUS_BITS), STATUS_BITS)
            w_t = z3.BitVecVal(w, WHERE_BITS)
            if status is None:
                status, where = st_t, w_t
            else:
                status, where = z3.If(c, st_t, status), z3.If(c, w_t, where)
        if not z3.is_true(enabled):
            status = z3.If(enabled, status, self._not_enabled)
            where = z3.If(enabled, where, z3.BitVecVal(-2, WHERE_BITS))

        # next state: each changed cell under the exclusive path condition of its exit
        paths: list[tuple[Term, dict[int, Term]]] = []
        reached = enabled
        for c, _code, _w, ch in exits:
            if z3.is_true(c):
                take, reached = reached, z3.BoolVal(False)
            else:
                take = c if z3.is_true(reached) else z3.And(reached, c)
                reached = z3.Not(c) if z3.is_true(reached) else z3.And(reached, z3.Not(c))
            if ch:
                paths.append((take, ch))
        post = list(s)
        for cell in sorted({c for _t, ch in paths for c in ch}):
            t = s[cell]
            for take, ch in reversed(paths):
                if cell in ch:
                    t = ch[cell] if z3.is_true(take) else z3.If(take, ch[cell], t)
            post[cell] = t
        assert status is not None and where is not None
        return status, post, where

    def action(self, engine: Engine, action: Action, pre: Sequence[Term],
               fault: FaultChoice = -1) -> tuple[Term, list[Term], Term]:
        """``rule`` for one action, built from its single definition as ``Engine`` builds
        it (same universe, CPU and ablations; the wrapper's CLFLUSH first)."""
        if engine.layout.u != self.layout.u:
            raise ValueError("the engine's universe is not this encoder's")
        ctx = Ctx(engine.u, engine.layout, action.cpu, engine.ablate)
        return self.rule(rule_of(action, ctx), pre, wrapper_pre(action, engine.u), fault)


def enabled_term(where: Term) -> Term:
    """The step could happen (``Rule.enabled`` held): ``where != -2``."""
    return where != z3.BitVecVal(-2, WHERE_BITS)


def where_value(where: Term) -> int:
    """A ground ``where`` term as a Python int (-2, -1 or a step index)."""
    w = z3.simplify(where)
    if not z3.is_bv_value(w):
        raise ValueError(f"not a ground value: {w}")
    return int(w.as_signed_long())


def status_value(status: Term) -> int:
    """A ground status term as a Python int (``NOT_ENABLED`` is -1)."""
    v = z3.simplify(status)
    if not z3.is_bv_value(v):
        raise ValueError(f"not a ground value: {v}")
    n = int(v.as_long())
    return NOT_ENABLED if n == (1 << STATUS_BITS) - 1 else n


__all__ = ["STATUS_BITS", "WHERE_BITS", "Z3Encoder", "enabled_term", "status_value",
           "where_value"]
