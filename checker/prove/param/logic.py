"""The parametric Z3 reading of the rule data: sorts, fields as functions, expressions as
terms, effects as post-state closures.

Vocabulary (``Vocab``): an uninterpreted sort per object kind, ``page`` (with ``NULL``),
``td`` (with ``TD0``, the slot a zeroed ``owner`` names), ``vp`` (with ``VP0``), ``hkid``
(with ``ZERO``, the host's KeyID 0 and "no HKID", and ``GLOBAL``, the module's KeyID;
the others are the private HKIDs), ``pkg``, ``cpu`` (with ``NOLP``, an association to no
LP) and ``entry0`` .. ``entry{levels-1}`` (the S-EPT entries of each level, with
``parent_L : entryL -> entry{L+1}``); a CPU's package is ``cpu_pkg``.  The model's
``IntEnum``s are enumeration sorts.  A field is a function from its object sorts
(``td_entry``: one function per level) to its value: an enum, Int (counters), Bool (flags),
an object (a pointer, total: 0 is the sort's zero constant), or, for a bitmap, a relation
with the bit's objects as extra arguments (``dirty(page, keyid, pkg)``,
``pkg_config(td, pkg)``, ``kot_wbinvd(hkid, pkg)``, ``wbt_snap(pkg, hkid)``).
``OBJECT_INTS`` names the ``int`` fields that hold an object (``TDR.hkid``).

Expressions are read by type (``Enc.enc``): a comparison reads its non-constant side
first and the constant in that side's type (``0`` is ``NULL``/``ZERO``/``NOLP``/``TD0``/
``VP0`` or the empty set); a bitmap expression is a set, read as a membership predicate
(``|`` union, ``&`` intersection, ``AndNot`` difference, ``1 << x`` a singleton,
``Sym("lines", k[, q])`` a KeyID's lines, ``x == 0`` emptiness, ``(b >> x) & 1``
membership); ``cpu + 1`` (an association) is the CPU.  A question the types do not
answer raises ``Unsupported``: the reading never guesses.

A rule's effects read the pre-state and build the post-state as closures: a field of the
post-state is a Python function of its index terms, an ``If`` chain over the pre-state's
function (a point update ``If(i == i0, v, old(i))``; a ``ForEach`` ``If(dom(i) ∧ ..., v,
old(i))`` with the loop variable solved from the index, or under ``∃`` when the index is
computed from it and the value depends on the index only).  No frame axioms: every cell a
rule does not write is the pre-state's by construction.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import z3
from tdxcheck.model.compile import NOT_ENABLED
from tdxcheck.model.expr import (
    Agg,
    Bin,
    BoolOp,
    Const,
    Expr,
    In,
    Ite,
    NotE,
    Read,
    Sym,
    SymDomain,
    Var,
    nodes,
)
from tdxcheck.model.rule import Assign, Check, Effect, Fault, ForEach, Rule, When
from tdxcheck.model.state import FIELD_BY_NAME, FIELDS, FieldSpec

#: ``int`` fields that hold a reference to an object (read as that sort)
OBJECT_INTS = {"hkid": "hkid"}
#: the object sorts (entry sorts are added per level)
OBJECT_KINDS = ("page", "td", "vp", "hkid", "pkg", "cpu")
#: the dimension of a field -> the sorts of its index (``td_entry``: the level's entry)
DIM_SORTS = {"one": (), "pkg": ("pkg",), "hkid": ("hkid",), "page": ("page",),
             "td": ("td",), "vp": ("vp",), "td_entry": ("td", "entry")}

Ty = tuple[Any, ...]
INT: Ty = ("int",)
BOOL: Ty = ("bool",)


def OBJ(kind: str) -> Ty:
    return ("obj", kind)


def SET(*kinds: str) -> Ty:
    return ("set", tuple(kinds))


def ENUM(e: type[IntEnum]) -> Ty:
    return ("enum", e)


class Unsupported(ValueError):
    """The parametric reading has no meaning for this expression (by design: it fails
    loudly instead of guessing)."""


def field_type(f: FieldSpec) -> Ty:
    if isinstance(f.kind, type):
        return ENUM(f.kind)
    if f.name in OBJECT_INTS:
        return OBJ(OBJECT_INTS[f.name])
    return {"int": INT, "bool": BOOL, "bitmap_pkg": SET("pkg"), "bitmap_hkid": SET("hkid"),
            "dirty": SET("hkid", "pkg"), "page": OBJ("page"), "td": OBJ("td"),
            "vp": OBJ("vp"), "cpu1": OBJ("cpu")}[f.kind]


def level_of(kind: str) -> int:
    assert kind.startswith("entry") and kind != "entry", kind
    return int(kind[5:])


# ------------------------------------------------------------------ vocabulary
_ENUMS: dict[type, tuple[Any, dict[int, Any]]] = {}
_BOUNDED = itertools.count()


def _enum_sorts() -> dict[type, tuple[Any, dict[int, Any]]]:
    """One enumeration sort per ``IntEnum`` of the state (Z3 declares a name once)."""
    if not _ENUMS:
        for f in FIELDS:
            if isinstance(f.kind, type) and f.kind not in _ENUMS:
                srt, consts = z3.EnumSort(f.kind.__name__, [m.name for m in f.kind])
                _ENUMS[f.kind] = (srt, {int(m): c for m, c in zip(f.kind, consts,
                                                                    strict=True)})
    return _ENUMS


class Vocab:
    """Sorts, constants, rigid functions and per-state field functions for one S-EPT
    depth."""

    def __init__(self, levels: int, sizes: dict[str, int] | None = None) -> None:
        self.levels = levels
        self.kinds = (*OBJECT_KINDS, *(f"entry{i}" for i in range(levels)))
        #: bounded (``sizes``): every sort an enumeration of that many elements, every
        #: quantifier expanded over them (``ground``), counts read as sums: one finite
        #: instance, for counterexamples and cross-checks; else uninterpreted sorts
        self.sizes = sizes
        self.elems: dict[str, list[Any]] = {}
        if sizes is None:
            self.sort = {k: z3.DeclareSort(k.upper()) for k in self.kinds}
            self.zero = {"page": z3.Const("NULL", self.sort["page"]),
                         "hkid": z3.Const("ZERO", self.sort["hkid"]),
                         "cpu": z3.Const("NOLP", self.sort["cpu"]),
                         "td": z3.Const("TD0", self.sort["td"]),
                         "vp": z3.Const("VP0", self.sort["vp"])}
            self.GLOBAL = z3.Const("GLOBAL", self.sort["hkid"])
        else:
            uid = next(_BOUNDED)
            self.sort = {}
            for k in self.kinds:
                n = sizes[k]
                if n < {"hkid": 2, "cpu": 2}.get(k, 1):
                    raise ValueError(f"a bounded {k} sort needs more than {n} elements")
                srt, cs = z3.EnumSort(f"{k.upper()}#{uid}", [f"{k}{i}#{uid}" for i in range(n)])
                self.sort[k], self.elems[k] = srt, list(cs)
            self.zero = {k: self.elems[k][0] for k in ("page", "hkid", "cpu", "td", "vp")}
            self.GLOBAL = self.elems["hkid"][-1]
        self.enums = _enum_sorts()
        self.cpu_pkg = z3.Function("cpu_pkg", self.sort["cpu"], self.sort["pkg"])
        self.parent = [z3.Function(f"parent{i}", self.sort[f"entry{i}"],
                                   self.sort[f"entry{i + 1}"]) for i in range(levels - 1)]
        self._fresh = itertools.count()

    def sort_of(self, ty: Ty) -> Any:
        if ty == INT:
            return z3.IntSort()
        if ty == BOOL:
            return z3.BoolSort()
        if ty[0] == "enum":
            return self.enums[ty[1]][0]
        if ty[0] == "obj":
            return self.sort[ty[1]]
        raise Unsupported(f"no sort for {ty}")

    def fresh(self, kind: str, hint: str = "x") -> Any:
        return z3.Const(f"{hint}!{next(self._fresh)}", self.sort[kind])

    def private(self, h: Any) -> Any:
        return z3.And(h != self.zero["hkid"], h != self.GLOBAL)

    def in_domain(self, kind: str, x: Any, dom: SymDomain | None = None,
                  of: Any = None) -> Any:
        """``x`` is an object of a domain (the model's loops): pages but NULL, private
        HKIDs, children of ``of``; other kinds: every object."""
        if dom is not None and dom.kind == "children":
            return self.parent[level_of(kind)](x) == of
        if dom is not None and dom.kind in ("anypage", "anyhkid"):
            return z3.BoolVal(True)
        if kind == "page":
            return x != self.zero["page"]
        if kind == "hkid":
            return self.private(x)
        return z3.BoolVal(True)

    def base_facts(self) -> list[Any]:
        """What every state of every instance satisfies: the special constants differ."""
        return [self.zero["hkid"] != self.GLOBAL]

    def ground(self, f: Any) -> Any:
        """``f`` with every quantifier expanded over the bounded sorts' elements (a
        quantifier-free formula); unbounded: ``f``."""
        if self.sizes is None:
            return f
        return _ground(f, self.elems_by_sort, {})

    @functools.cached_property
    def elems_by_sort(self) -> dict[Any, list[Any]]:
        out = {self.sort[k]: self.elems[k] for k in self.kinds}
        for srt, consts in self.enums.values():
            out[srt] = list(consts.values())
        return out


def _ground(t: Any, elems: dict[Any, list[Any]], memo: dict[int, Any]) -> Any:
    """``t`` with its outermost quantifiers replaced by their expansions (each instance
    grounded in turn)."""
    found: dict[int, Any] = {}
    stack, seen = [t], set()
    while stack:
        x = stack.pop()
        if x.get_id() in seen:
            continue
        seen.add(x.get_id())
        if z3.is_quantifier(x):
            found[x.get_id()] = x
        elif z3.is_app(x):
            stack.extend(x.children())
    if not found:
        return t
    pairs = []
    for key, q in found.items():
        hit = memo.get(key)  # (q, expansion): q kept alive, so its id stays its own
        if hit is not None and z3.eq(hit[0], q):
            out = hit[1]
        else:
            choices = [elems[q.var_sort(i)] for i in range(q.num_vars())]
            inst = [_ground(z3.substitute_vars(q.body(), *reversed(combo)), elems, memo)
                    for combo in itertools.product(*choices)]
            out = z3.And(*inst) if q.is_forall() else z3.Or(*inst)
            memo[key] = (q, out)
        pairs.append((q, out))
    return z3.substitute(t, *pairs)


# ------------------------------------------------------------------ states
def fkey(name: str, level: int | None) -> str:
    return name if level is None else f"{name}@{level}"


class PState:
    """A state: ``get(fkey, idx, bits)`` is the term of a cell (a bit of a bitmap)."""

    def get(self, key: str, idx: Sequence[Any], bits: Sequence[Any] = ()) -> Any:
        raise NotImplementedError


class FuncState(PState):
    """A state given by uninterpreted functions named ``<prefix>.<field>``."""

    def __init__(self, vocab: Vocab, prefix: str) -> None:
        self.vocab, self.prefix = vocab, prefix
        self.funcs: dict[str, Any] = {}

    def func(self, key: str) -> Any:
        fn = self.funcs.get(key)
        if fn is None:
            name, _, lv = key.partition("@")
            f = FIELD_BY_NAME[name]
            ty = field_type(f)
            dims = [k if k != "entry" else f"entry{lv}" for k in DIM_SORTS[f.dim]]
            args = [self.vocab.sort[k] for k in dims]
            if ty[0] == "set":
                args += [self.vocab.sort[k] for k in ty[1]]
                rng = z3.BoolSort()
            else:
                rng = self.vocab.sort_of(ty)
            fn = self.funcs[key] = z3.Function(f"{self.prefix}.{key}", *args, rng)
        return fn

    def get(self, key: str, idx: Sequence[Any], bits: Sequence[Any] = ()) -> Any:
        fn = self.func(key)
        return fn(*idx, *bits) if (idx or bits) else fn()


class InitState(PState):
    """The any host's initial state in every instance (``AnyHost.initial``): every page
    PT_NDA and allocated to the TDX code, the NULL page PT_RSVD in the kernel, every
    private HKID taken by the host, everything else zero."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def get(self, key: str, idx: Sequence[Any], bits: Sequence[Any] = ()) -> Any:
        from tdxcheck.model.enums import HostPage, PageType

        v = self.vocab
        name = key.partition("@")[0]
        ty = field_type(FIELD_BY_NAME[name])
        if name == "pt":
            enum = v.enums[PageType][1]
            return z3.If(idx[0] == v.zero["page"], enum[int(PageType.PT_RSVD)],
                         enum[int(PageType.PT_NDA)])
        if name == "host":
            enum = v.enums[HostPage][1]
            return z3.If(idx[0] == v.zero["page"], enum[int(HostPage.KERNEL)],
                         enum[int(HostPage.TDX)])
        if name == "host_hkid":
            return v.private(idx[0])
        return zero_of(v, ty)


def zero_of(v: Vocab, ty: Ty) -> Any:
    if ty == INT:
        return z3.IntVal(0)
    if ty == BOOL or ty[0] == "set":
        return z3.BoolVal(False)
    if ty[0] == "enum":
        return v.enums[ty[1]][1][0]
    if ty[0] == "obj" and ty[1] in v.zero:
        return v.zero[ty[1]]
    raise Unsupported(f"no zero of {ty}")


Update = tuple[Callable[[Sequence[Any], Sequence[Any]], Any],
               Callable[[Sequence[Any], Sequence[Any]], Any]]


class PostState(PState):
    """The pre-state with per-field ``If`` chains on top (``updates[key]``: a list of
    (condition, value) functions of the index and bit terms; the last that holds wins)."""

    def __init__(self, base: PState, updates: dict[str, list[Update]]) -> None:
        self.base, self.updates = base, updates

    def get(self, key: str, idx: Sequence[Any], bits: Sequence[Any] = ()) -> Any:
        t = self.base.get(key, idx, bits)
        for cond, val in self.updates.get(key, ()):
            c = cond(idx, bits)
            if z3.is_true(c):
                t = val(idx, bits)
            elif not z3.is_false(c):
                t = z3.If(c, val(idx, bits), t)
        return t


# ------------------------------------------------------------------ quantifier helpers
def _occurs(x: Any, t: Any) -> bool:
    if z3.eq(x, t):
        return True
    return any(_occurs(x, c) for c in t.children())


def _conjuncts(f: Any) -> list[Any]:
    if z3.is_and(f):
        return [c for a in f.children() for c in _conjuncts(a)]
    return [f]


def exists(xs: Sequence[Any], body: Any) -> Any:
    """``∃xs. body``, each variable that a top-level conjunct ``x == t`` defines
    substituted away (one-point rule)."""
    rest = []
    for x in xs:
        t = None
        for c in _conjuncts(body):
            if z3.is_eq(c):
                a, b = c.children()
                if z3.eq(a, x) and not _occurs(x, b):
                    t = b
                elif z3.eq(b, x) and not _occurs(x, a):
                    t = a
                if t is not None:
                    break
        if t is not None:
            body = z3.substitute(body, (x, t))
        else:
            rest.append(x)
    if z3.is_false(body):
        return body
    return z3.Exists(rest, body) if rest else body


def forall(xs: Sequence[Any], body: Any) -> Any:
    return z3.Not(exists(xs, z3.Not(body)))


# ------------------------------------------------------------------ the encoder
@dataclass
class Env:
    """What an expression reads: ``pre`` (``S``), ``post`` (``POST``), and the terms bound
    to variables (``binds``: Var name -> (term, type))."""

    pre: PState
    post: PState | None = None
    binds: dict[str, tuple[Any, Ty]] = field(default_factory=dict)

    def bind(self, name: str, term: Any, ty: Ty) -> Env:
        return Env(self.pre, self.post, {**self.binds, name: (term, ty)})


SetVal = Callable[[Sequence[Any]], Any]


def _is_zero(e: Expr) -> bool:
    return isinstance(e, Const) and e.value == 0


class Enc:
    """Reads ``Expr`` trees over a ``Vocab`` (see the module docstring)."""

    def __init__(self, vocab: Vocab) -> None:
        self.v = vocab

    # ---- entry points --------------------------------------------------------------
    def truth(self, e: Expr, env: Env) -> Any:
        t, ty = self.enc(e, env)
        return self._truth(t, ty)

    def _truth(self, t: Any, ty: Ty) -> Any:
        if ty == BOOL:
            return t
        if ty == INT:
            return t != 0
        raise Unsupported(f"a {ty} as a truth value")

    # ---- typing --------------------------------------------------------------------
    def infer(self, e: Expr, env: Env) -> Ty | None:
        """The type of ``e`` if it has one of its own (a constant has none)."""
        if isinstance(e, Const):
            return None
        if isinstance(e, Read):
            return field_type(FIELD_BY_NAME[e.field])
        if isinstance(e, Var):
            return self._var(e, env)[1]
        if isinstance(e, Sym):
            return self.enc(e, env)[1]
        if isinstance(e, Bin):
            if e.op in ("==", "!=", "<", "<=", ">", ">="):
                return BOOL
            if e.op == "&" and isinstance(e.a, Bin) and e.a.op == ">>" and \
                    isinstance(e.b, Const) and e.b.value == 1:
                return BOOL  # a bit of a bitmap
            if e.op == "<<" and isinstance(e.a, Const) and e.a.value == 1:
                ta = self.infer(e.b, env)
                return SET(ta[1]) if ta and ta[0] == "obj" else None
            ta = self.infer(e.a, env)
            tb = self.infer(e.b, env)
            if e.op in ("|", "&", "andnot"):
                for t in (ta, tb):
                    if t is not None and t[0] == "set":
                        return t
                return ta or tb
            if e.op == "+" and ta is not None and ta == OBJ("cpu"):
                return ta
            if e.op in ("+", "-", "*"):
                return INT if (ta or tb) in (INT, None) else ta or tb
            return ta or tb
        if isinstance(e, (BoolOp, NotE, In)):
            return BOOL
        if isinstance(e, Ite):
            return self.infer(e.a, env) or self.infer(e.b, env)
        if isinstance(e, Agg):
            if e.op in ("all", "any"):
                return BOOL
            if e.op == "count":
                return INT
            return self.infer(e.body, self._bind_any(e.dom, e.var, env))
        raise Unsupported(f"cannot type {e!r}")

    def _bind_any(self, dom: SymDomain, var: Var, env: Env) -> Env:
        """``env`` with ``var`` bound to some term of its sort (for typing only)."""
        kind = self._var_kind(var, dom, 0)
        return env.bind(var.name, self.v.fresh(kind), OBJ(kind))

    def _var_kind(self, var: Var, dom: SymDomain | None, level: int) -> str:
        if var.kind == "entry":
            return f"entry{level}"
        return var.kind

    def _var(self, e: Var, env: Env) -> tuple[Any, Ty]:
        b = env.binds.get(e.name)
        if b is None:
            raise Unsupported(f"unbound variable {e.name}")
        return b

    # ---- encoding ------------------------------------------------------------------
    def enc(self, e: Expr, env: Env, want: Ty | None = None) -> tuple[Any, Ty]:
        """(term, type); a set's term is a function of its bit terms."""
        v = self.v
        if isinstance(e, Const):
            return self.const(e.value, want or INT), want or INT
        if isinstance(e, Var):
            return self._var(e, env)
        if isinstance(e, Read):
            return self._read(e, env)
        if isinstance(e, Sym):
            return self._sym(e, env)
        if isinstance(e, Bin):
            return self._bin(e, env, want)
        if isinstance(e, BoolOp):
            args = [self.truth(a, env) for a in e.args]
            return (z3.And(*args) if e.op == "and" else z3.Or(*args)), BOOL
        if isinstance(e, NotE):
            return z3.Not(self.truth(e.a, env)), BOOL
        if isinstance(e, Ite):
            c = self.truth(e.c, env)
            ty = want or self.infer(e.a, env) or self.infer(e.b, env) or INT
            a, _ = self.enc(e.a, env, ty)
            b, _ = self.enc(e.b, env, ty)
            if ty[0] == "set":
                return self._set_ite(c, a, b, e), ty
            return z3.If(c, a, b), ty
        if isinstance(e, In):
            ta = self.infer(e.a, env) or INT
            a, _ = self.enc(e.a, env, ta)
            opts = []
            for val in e.values:
                if ta[0] == "enum":
                    consts = v.enums[ta[1]][1]
                    if val in consts:
                        opts.append(a == consts[val])
                else:
                    opts.append(a == self.const(val, ta))
            return z3.Or(*opts) if opts else z3.BoolVal(False), BOOL
        if isinstance(e, Agg):
            return self._agg(e, env)
        raise Unsupported(f"cannot encode {e!r}")

    def const(self, c: int, ty: Ty) -> Any:
        v = self.v
        if ty == INT:
            return z3.IntVal(c)
        if ty == BOOL:
            return z3.BoolVal(bool(c))
        if ty[0] == "enum":
            consts = v.enums[ty[1]][1]
            if c not in consts:
                raise Unsupported(f"{c} is not a value of {ty[1].__name__}")
            return consts[c]
        if c == 0 and ty[0] == "obj" and ty[1] in v.zero:
            return v.zero[ty[1]]
        if c == 0 and ty[0] == "set":
            return lambda bits: z3.BoolVal(False)
        raise Unsupported(f"the constant {c} as a {ty}")

    def _read(self, e: Read, env: Env) -> tuple[Any, Ty]:
        f = FIELD_BY_NAME[e.field]
        state = env.post if e.post else env.pre
        if state is None:
            raise Unsupported(f"POST.{e.field} without a post-state")
        sorts = DIM_SORTS[f.dim]
        idx = []
        level = None
        for i, k in zip(e.index, sorts, strict=True):
            if k == "entry":
                t, ty = self.enc(i, env)
                if ty[0] != "obj" or not ty[1].startswith("entry"):
                    raise Unsupported(f"{e.field} indexed by a {ty}")
                level = level_of(ty[1])
            else:
                t, ty = self.enc(i, env, OBJ(k))
                if ty != OBJ(k):
                    raise Unsupported(f"{e.field} indexed by a {ty}, not a {k}")
            idx.append(t)
        key = fkey(e.field, level)
        ty = field_type(f)
        if ty[0] == "set":
            return (lambda bits, state=state, key=key, idx=tuple(idx):
                    state.get(key, idx, bits)), ty
        return state.get(key, idx), ty

    def _sym(self, e: Sym, env: Env) -> tuple[Any, Ty]:
        v = self.v
        if e.name == "cpu_pkg":
            c, ty = self.enc(e.args[0], env, OBJ("cpu"))
            return v.cpu_pkg(c), OBJ("pkg")
        if e.name == "parent":
            c, ty = self.enc(e.args[0], env)
            lv = level_of(ty[1])
            if lv + 1 >= v.levels:
                raise Unsupported("the root entry has no parent")
            return v.parent[lv](c), OBJ(f"entry{lv + 1}")
        if e.name == "global_keyid":
            return v.GLOBAL, OBJ("hkid")
        if e.name == "all_pkgs":
            return (lambda bits: z3.BoolVal(True)), SET("pkg")
        if e.name == "lines":
            k, _ = self.enc(e.args[0], env, OBJ("hkid"))
            if len(e.args) == 1:
                return (lambda bits: bits[0] == k), SET("hkid", "pkg")
            q, _ = self.enc(e.args[1], env, OBJ("pkg"))
            return (lambda bits: z3.And(bits[0] == k, bits[1] == q)), SET("hkid", "pkg")
        raise Unsupported(f"the symbol {e.name} in a module rule")

    def _set_ite(self, c: Any, a: SetVal, b: SetVal, e: Ite) -> SetVal:
        if _is_zero(e.b):
            return lambda bits: z3.And(c, a(bits))
        if _is_zero(e.a):
            return lambda bits: z3.And(z3.Not(c), b(bits))
        return lambda bits: z3.If(c, a(bits), b(bits))

    def _cmp_sides(self, e: Bin, env: Env) -> tuple[Any, Any, Ty]:
        ta = self.infer(e.a, env)
        tb = self.infer(e.b, env)
        ty = ta or tb or INT
        if ta is not None and tb is not None and ta != tb:
            if ta[0] == "obj" and tb[0] == "obj" and ta[1].startswith("entry") and \
                    tb[1].startswith("entry"):
                return None, None, ("mixed",)  # entries of two levels: never equal
            if {ta, tb} == {INT, BOOL}:
                ty = INT
            else:
                raise Unsupported(f"comparing a {ta} with a {tb}: {e!r}")
        a, _ = self.enc(e.a, env, ty)
        b, _ = self.enc(e.b, env, ty)
        if ty == INT:
            a, b = self._as_int(a), self._as_int(b)
        return a, b, ty

    @staticmethod
    def _as_int(t: Any) -> Any:
        return z3.If(t, z3.IntVal(1), z3.IntVal(0)) if z3.is_bool(t) else t

    def _bin(self, e: Bin, env: Env, want: Ty | None) -> tuple[Any, Ty]:
        v = self.v
        op = e.op
        if op in ("==", "!="):
            a, b, ty = self._cmp_sides(e, env)
            if ty == ("mixed",):
                return z3.BoolVal(op == "!="), BOOL
            if ty[0] == "set":
                sorts = ty[1]
                bits = [v.fresh(k, "bit") for k in sorts]
                if _is_zero(e.b) or _is_zero(e.a):
                    some = exists(bits, (a if not _is_zero(e.a) else b)(bits))
                    return (z3.Not(some) if op == "==" else some), BOOL
                same = forall(bits, a(bits) == b(bits))
                return (same if op == "==" else z3.Not(same)), BOOL
            return (a == b if op == "==" else a != b), BOOL
        if op in ("<", "<=", ">", ">="):
            ta = self.infer(e.a, env) or self.infer(e.b, env)
            if ta == OBJ("hkid"):
                return self._hkid_cmp(e, env), BOOL
            a, b, ty = self._cmp_sides(e, env)
            if ty != INT:
                raise Unsupported(f"order on a {ty}: {e!r}")
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op], BOOL
        if op == "&" and isinstance(e.a, Bin) and e.a.op == ">>" and _is_zero_one(e.b):
            s, ty = self.enc(e.a.a, env)
            if ty[0] != "set" or len(ty[1]) != 1:
                raise Unsupported(f"a bit of a {ty}")
            x, _ = self.enc(e.a.b, env, OBJ(ty[1][0]))
            return s([x]), BOOL
        if op == "<<" and isinstance(e.a, Const) and e.a.value == 1:
            x, tx = self.enc(e.b, env)
            if tx[0] != "obj":
                raise Unsupported(f"1 << a {tx}")
            return (lambda bits: bits[0] == x), SET(tx[1])
        if op in ("|", "&", "andnot"):
            ty = want if want is not None and want[0] == "set" else self.infer(e, env)
            if ty is None or ty[0] != "set":
                raise Unsupported(f"{op} on a {ty}: {e!r}")
            a, _ = self.enc(e.a, env, ty)
            b, _ = self.enc(e.b, env, ty)
            if op == "|":
                return (lambda bits: z3.Or(a(bits), b(bits))), ty
            if op == "&":
                return (lambda bits: z3.And(a(bits), b(bits))), ty
            return (lambda bits: z3.And(a(bits), z3.Not(b(bits)))), ty
        if op == "+" and self.infer(e.a, env) == OBJ("cpu") and isinstance(e.b, Const) \
                and e.b.value == 1:
            return self.enc(e.a, env)  # an association: LP + 1 is the LP itself
        if op in ("+", "-", "*"):
            ta = self.infer(e.a, env) or self.infer(e.b, env) or INT
            if ta not in (INT, BOOL):
                raise Unsupported(f"arithmetic on a {ta}: {e!r}")
            a = self._as_int(self.enc(e.a, env, INT)[0])
            b = self._as_int(self.enc(e.b, env, INT)[0])
            return {"+": a + b, "-": a - b, "*": a * b}[op], INT
        raise Unsupported(f"the operator {op} here: {e!r}")

    def _hkid_cmp(self, e: Bin, env: Env) -> Any:
        """An order between an HKID and 0, 1, ``hkids`` or the global KeyID: ZERO < the
        private HKIDs < GLOBAL (= hkids) is all the model's comparisons need."""
        v = self.v
        op, a, b = e.op, e.a, e.b
        if self.infer(a, env) != OBJ("hkid"):
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
            a, b = b, a
        h, _ = self.enc(a, env, OBJ("hkid"))
        if isinstance(b, Const) and b.value in (0, 1):
            n = b.value
        elif isinstance(b, Sym) and b.name in ("hkids", "global_keyid"):
            n = 2
        else:
            raise Unsupported(f"an HKID compared with {b!r}")
        is_zero, is_glob = h == v.zero["hkid"], h == v.GLOBAL
        r_ge = {0: z3.BoolVal(True), 1: z3.Not(is_zero), 2: is_glob}  # rank(h) >= n
        if op == ">=":
            return r_ge[n]
        if op == "<":
            return z3.Not(r_ge[n])
        if op == ">":
            return r_ge[n + 1] if n < 2 else z3.BoolVal(False)
        return z3.Not(r_ge[n + 1]) if n < 2 else z3.BoolVal(True)  # <=

    def _agg(self, e: Agg, env: Env) -> tuple[Any, Ty]:
        if e.op == "count":
            if self.v.sizes is None:
                raise Unsupported("a count over an unbounded sort (obligations.py proves it)")
            terms = []
            for kind, _x, _d in self.binders(e.dom, e.var, env):
                for x in self.v.elems[kind]:
                    benv = env.bind(e.var.name, x, OBJ(kind))
                    terms.append(z3.If(z3.And(self.v.in_domain(kind, x, e.dom),
                                              self.truth(e.body, benv)), 1, 0))
            return (z3.Sum(terms) if terms else z3.IntVal(0)), INT
        parts = []
        ty: Ty = BOOL
        for kind, x, dom_ok in self.binders(e.dom, e.var, env):
            benv = env.bind(e.var.name, x, OBJ(kind))
            if e.op == "union":
                body, ty = self.enc(e.body, benv, None)
                if ty[0] != "set":
                    raise Unsupported(f"a union of {ty}")
                parts.append((x, dom_ok, body))
            else:
                body = self.truth(e.body, benv)
                parts.append((x, dom_ok, body))
        if e.op == "all":
            return z3.And(*(forall([x], z3.Implies(d, b)) for x, d, b in parts)), BOOL
        if e.op == "any":
            return z3.Or(*(exists([x], z3.And(d, b)) for x, d, b in parts)), BOOL
        if e.op == "union":
            return (lambda bits: z3.Or(*(exists([x], z3.And(d, b(bits)))
                                         for x, d, b in parts))), ty
        raise Unsupported(f"aggregate {e.op}")

    def binders(self, dom: SymDomain, var: Var, env: Env
                ) -> list[tuple[str, Any, Any]]:
        """(sort kind, fresh bound term, in-domain condition) per sort the variable ranges
        over: one, or one per S-EPT level for every entry."""
        v = self.v
        if dom.kind == "entry":
            kinds = [f"entry{i}" for i in range(v.levels)]
        elif dom.kind == "children":
            assert dom.level is not None
            kinds = [f"entry{dom.level - 1}"]
        else:
            kinds = [var.kind]
        out = []
        of = None
        if dom.kind == "children":
            of, _ = self.enc(dom.of, env)  # type: ignore[arg-type]
        for k in kinds:
            x = v.fresh(k, var.name)
            out.append((k, x, v.in_domain(k, x, dom, of)))
        return out


def _is_zero_one(e: Expr) -> bool:
    return isinstance(e, Const) and e.value == 1


# ------------------------------------------------------------------ rules
@dataclass
class Step:
    """A transition read as terms: it can happen (``facts``), its status and ``where``
    (Int terms), the post-state, and the fields it may write."""

    facts: list[Any]
    status: Any
    where: Any
    post: PostState
    written: set[str]
    updates: dict[str, list[Update]]


class RuleReader:
    """Effects and rules as post-state closures (see the module docstring)."""

    def __init__(self, enc: Enc) -> None:
        self.enc = enc
        self.v = enc.v

    def effects(self, effects: Sequence[Effect], env: Env, guard: Any,
                out: dict[str, list[Update]]) -> None:
        for eff in effects:
            if isinstance(eff, Assign):
                self._assign(eff, env, guard, out)
            elif isinstance(eff, When):
                c = self.enc.truth(eff.cond, env)
                if z3.is_false(c):
                    continue
                self.effects(eff.effects, env, z3.And(guard, c) if not z3.is_true(c)
                             else guard, out)
            elif isinstance(eff, ForEach):
                self._for_each(eff, env, guard, out)
            else:  # pragma: no cover
                raise Unsupported(f"effect {eff!r}")

    def _target(self, field_name: str, index: Sequence[Expr], env: Env
                ) -> tuple[str, list[Any], Ty]:
        f = FIELD_BY_NAME[field_name]
        idx, level = [], None
        for i, k in zip(index, DIM_SORTS[f.dim], strict=True):
            if k == "entry":
                t, ty = self.enc.enc(i, env)
                level = level_of(ty[1])
            else:
                t, ty = self.enc.enc(i, env, OBJ(k))
                if ty != OBJ(k):
                    raise Unsupported(f"{field_name} indexed by a {ty}")
            idx.append(t)
        return fkey(field_name, level), idx, field_type(f)

    def _assign(self, eff: Assign, env: Env, guard: Any, out: dict[str, list[Update]]
                ) -> None:
        key, idx0, ty = self._target(eff.field, eff.index, env)
        val, vty = self.enc.enc(eff.value, env, ty)
        if ty[0] != "set" and vty != ty:
            raise Unsupported(f"{eff.field} := a {vty}")

        def cond(idx: Sequence[Any], bits: Sequence[Any]) -> Any:
            eqs = [a == b for a, b in zip(idx, idx0, strict=True)]
            return z3.And(guard, *eqs) if not z3.is_true(guard) else z3.And(*eqs) \
                if eqs else z3.BoolVal(True)

        if ty[0] == "set":
            out.setdefault(key, []).append((cond, lambda idx, bits: val(bits)))
        else:
            out.setdefault(key, []).append((cond, lambda idx, bits: val))

    def _for_each(self, fe: ForEach, env: Env, guard: Any, out: dict[str, list[Update]]
                  ) -> None:
        """Each assignment in the loop body, for every object of the domain: the loop
        variable solved from the written index when the index is the variable, else
        under ∃ (then the value may depend on the index only)."""
        for kind, _x, _d in self.enc.binders(fe.dom, fe.var, env):
            for inner_guards, eff in _flat_assigns(fe.effects):
                self._loop_assign(fe, kind, inner_guards, eff, env, guard, out)

    def _loop_assign(self, fe: ForEach, kind: str, inner: list[Expr], eff: Assign,
                     env: Env, guard: Any, out: dict[str, list[Update]]) -> None:
        enc, v = self.enc, self.v
        f = FIELD_BY_NAME[eff.field]
        ty = field_type(f)
        sorts = [k if k != "entry" else None for k in DIM_SORTS[f.dim]]
        pos = next((j for j, i in enumerate(eff.index)
                    if isinstance(i, Var) and i.name == fe.var.name), None)
        of = enc.enc(fe.dom.of, env)[0] if fe.dom.kind == "children" else None  # type: ignore[arg-type]
        if pos is not None:
            # the index is the loop variable: bind it to the cell's index
            probe = env.bind(fe.var.name, v.fresh(kind), OBJ(kind))
            key, _idx, _ = self._target(eff.field, eff.index, probe)

            def cond(idx: Sequence[Any], bits: Sequence[Any], pos: int = pos) -> Any:
                benv = env.bind(fe.var.name, idx[pos], OBJ(kind))
                _k, idx0, _t = self._target(eff.field, eff.index, benv)
                gs = [guard, v.in_domain(kind, idx[pos], fe.dom, of)]
                gs += [enc.truth(g, benv) for g in inner]
                gs += [a == b for j, (a, b) in enumerate(zip(idx, idx0, strict=True))
                       if j != pos]
                return z3.And(*gs)

            def val(idx: Sequence[Any], bits: Sequence[Any], pos: int = pos) -> Any:
                benv = env.bind(fe.var.name, idx[pos], OBJ(kind))
                t, _ = enc.enc(eff.value, benv, ty)
                return t(bits) if ty[0] == "set" else t

            out.setdefault(key, []).append((cond, val))
            return
        if len(eff.index) != 1 or ty[0] == "set":
            raise Unsupported(f"a loop writing {eff.field} at a computed index")
        hole = Var(f"__cell{next(v._fresh)}", "")
        value = _replace(eff.value, repr(eff.index[0]), hole)
        if _mentions(value, fe.var.name):
            raise Unsupported(f"a loop writes {eff.field} at a computed index with a value "
                              "that depends on more than the index")
        cell_kind = sorts[0]
        assert cell_kind is not None
        key = fkey(eff.field, None)

        def cond2(idx: Sequence[Any], bits: Sequence[Any]) -> Any:
            x = v.fresh(kind, fe.var.name)
            benv = env.bind(fe.var.name, x, OBJ(kind))
            _k, idx0, _t = self._target(eff.field, eff.index, benv)
            body = z3.And(v.in_domain(kind, x, fe.dom, of),
                          *(enc.truth(g, benv) for g in inner), idx0[0] == idx[0])
            return z3.And(guard, exists([x], body))

        def val2(idx: Sequence[Any], bits: Sequence[Any]) -> Any:
            benv = env.bind(hole.name, idx[0], OBJ(cell_kind))
            return enc.enc(value, benv, ty)[0]

        out.setdefault(key, []).append((cond2, val2))

    # ---- a whole rule --------------------------------------------------------------
    def rule(self, rule: Rule, pre: PState, binds: dict[str, tuple[Any, Ty]],
             fault: int = -1) -> Step:
        """The rule's outcomes as ``compile.rule_source`` runs them: not enabled, the first
        failing check (or the chosen fault point, if its condition holds), or success;
        each outcome's effects on the pre-state."""
        enc = self.enc
        env = Env(pre, None, dict(binds))
        enabled = enc.truth(rule.enabled, env) if not (
            isinstance(rule.enabled, Const) and rule.enabled.value) else z3.BoolVal(True)
        exits: list[tuple[Any, int, int, Sequence[Effect]]] = []
        k = 0
        for i, step in enumerate(rule.steps):
            if isinstance(step, Check):
                if isinstance(step.ok, Const) and step.ok.value:
                    continue
                c = z3.BoolVal(True) if isinstance(step.ok, Const) else \
                    z3.Not(enc.truth(step.ok, env))
                effs = step.fail_effects
            elif isinstance(step, Fault):
                if fault != k:
                    k += 1
                    continue
                k += 1
                c = enc.truth(step.cond, env) if not (
                    isinstance(step.cond, Const) and step.cond.value) else z3.BoolVal(True)
                effs = step.effects
            else:  # pragma: no cover
                raise Unsupported(step)
            if z3.is_false(c):
                continue
            exits.append((c, step.status, i, effs))
            if z3.is_true(c):
                break
        else:
            exits.append((z3.BoolVal(True), rule.success, -1, rule.effects))
        status = where = None
        for c, code, w, _e in reversed(exits):
            if status is None:
                status, where = z3.IntVal(code), z3.IntVal(w)
            else:
                status = z3.If(c, z3.IntVal(code), status)
                where = z3.If(c, z3.IntVal(w), where)
        updates: dict[str, list[Update]] = {}
        reached = z3.BoolVal(True)
        for c, _code, _w, effs in exits:
            take = z3.And(reached, c) if not z3.is_true(c) else reached
            reached = z3.And(reached, z3.Not(c))
            if effs:
                self.effects(effs, env, take, updates)
        assert status is not None
        return Step([enabled], status, where, PostState(pre, updates),
                    {k.partition("@")[0] for k in updates}, updates)


def _flat_assigns(effects: Sequence[Effect], guards: Sequence[Expr] = ()
                  ) -> list[tuple[list[Expr], Assign]]:
    out: list[tuple[list[Expr], Assign]] = []
    for eff in effects:
        if isinstance(eff, Assign):
            out.append((list(guards), eff))
        elif isinstance(eff, When):
            out += _flat_assigns(eff.effects, [*guards, eff.cond])
        else:
            raise Unsupported(f"{eff!r} inside a loop")
    return out


def _replace(e: Expr, key: str, by: Expr) -> Expr:
    """``e`` with every subtree whose repr is ``key`` replaced by ``by``."""
    if repr(e) == key:
        return by
    if isinstance(e, Read):
        return Read(e.field, tuple(_replace(i, key, by) for i in e.index), e.post)
    if isinstance(e, Bin):
        return Bin(e.op, _replace(e.a, key, by), _replace(e.b, key, by))
    if isinstance(e, BoolOp):
        return BoolOp(e.op, tuple(_replace(a, key, by) for a in e.args))
    if isinstance(e, NotE):
        return NotE(_replace(e.a, key, by))
    if isinstance(e, Ite):
        return Ite(_replace(e.c, key, by), _replace(e.a, key, by), _replace(e.b, key, by))
    if isinstance(e, In):
        return In(_replace(e.a, key, by), e.values)
    return e


def _mentions(e: Expr, name: str) -> bool:
    return any(isinstance(x, Var) and x.name == name for x in walk(e))


def walk(e: Expr) -> list[Expr]:
    """Every node of a tree (aggregate bodies and symbol arguments included)."""
    return nodes(e)


def fields_read(e: Expr) -> set[str]:
    return {x.field for x in walk(e) if isinstance(x, Read)}


__all__ = ["BOOL", "INT", "NOT_ENABLED", "Enc", "Env", "FuncState", "InitState",
           "PostState", "RuleReader", "Step", "Unsupported", "Vocab", "exists", "fields_read",
           "forall", "walk"]
