"""Compile rules and invariants to Python functions over the flat state tuple.

This is the concrete reading of the rule data: the generated code is the rule's checks in
order, each ``if not (...): return (status, ...)``, then its effects, with every operand and
every cell offset folded to a constant.  It is what the replay and the explorer run.  The
Z3 back end reads the very same ``Rule`` objects instead (``checker/prove/encode.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .expr import Bin, BoolOp, Const, Expr, In, Ite, NotE, Read
from .rule import Assign, Check, Effect, Fault, Rule, When
from .state import Layout, State

#: status of a host/guest step that cannot happen in this state (``Rule.enabled`` false)
NOT_ENABLED = -1

StepFn = Callable[..., tuple[int, State, int]]

_PYOP = {
    "==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
    "+": "+", "-": "-", "*": "*", "&": "&", "|": "|", ">>": ">>", "<<": "<<",
}


class _Gen:
    def __init__(self, layout: Layout) -> None:
        self.L = layout
        self.consts: dict[tuple[int, ...], str] = {}
        self.globals: dict[str, Any] = {}  # other names the generated code reads

    def index(self, r: Read) -> str:
        L = self.L
        base = L.base[r.field]
        shape = L.shape[r.field]
        parts: list[str] = []
        const = base
        strides = (1,) if len(shape) == 1 else (shape[1], 1)
        for i, stride in zip(r.index, strides, strict=True):
            if isinstance(i, Const):
                const += i.value * stride
            else:
                parts.append(f"{self.ex(i)}*{stride}" if stride != 1 else self.ex(i))
        if not parts:
            return str(const)
        return "+".join([str(const), *parts]) if const else "+".join(parts)

    def ex(self, e: Expr) -> str:
        if isinstance(e, Const):
            return str(e.value)
        if isinstance(e, Read):
            return f"{'n' if e.post else 's'}[{self.index(e)}]"
        if isinstance(e, Bin):
            if e.op == "andnot":
                return f"({self.ex(e.a)} & ~{self.ex(e.b)})"
            return f"({self.ex(e.a)} {_PYOP[e.op]} {self.ex(e.b)})"
        if isinstance(e, BoolOp):
            return "(" + f" {e.op} ".join(self.ex(a) for a in e.args) + ")"
        if isinstance(e, NotE):
            return f"(not {self.ex(e.a)})"
        if isinstance(e, Ite):
            return f"({self.ex(e.a)} if {self.ex(e.c)} else {self.ex(e.b)})"
        if isinstance(e, In):
            if len(e.values) == 1:
                return f"({self.ex(e.a)} == {e.values[0]})"
            name = self.consts.setdefault(e.values, f"_K{len(self.consts)}")
            return f"({self.ex(e.a)} in {name})"
        raise TypeError(f"cannot compile {e!r}")

    def effects(self, effects: Sequence[Effect], ind: str, out: list[str]) -> None:
        for eff in effects:
            if isinstance(eff, Assign):
                r = Read(eff.field, eff.index)
                out.append(f"{ind}n[{self.index(r)}] = {self.ex(eff.value)}")
            elif isinstance(eff, When):
                out.append(f"{ind}if {self.ex(eff.cond)}:")
                if eff.effects:
                    self.effects(eff.effects, ind + "    ", out)
                else:
                    out.append(f"{ind}    pass")
            else:  # pragma: no cover
                raise TypeError(eff)

    def apply(self, effects: Sequence[Effect], ind: str, out: list[str]) -> None:
        """``n = list(s); effects; `` (the caller returns ``tuple(n)``)."""
        out.append(f"{ind}n = list(s)")
        self.effects(effects, ind, out)


def rule_source(name: str, rule: Rule, layout: Layout, pre: Sequence[Effect] = (),
                gen: _Gen | None = None) -> str:
    """Python source of ``def name(s, fault=-1) -> (status, next_state, where)``.

    ``where`` is the index in ``rule.steps`` of the check or fault that failed, -1 on
    success, -2 when the step is not enabled.  ``pre`` are host effects that happen before
    the SEAMCALL whatever it returns (the wrapper's CLFLUSH).
    """
    g = gen or _Gen(layout)
    out = [f"def {name}(s, fault=-1):"]
    if pre:
        g.apply(pre, "    ", out)
        out.append("    s = tuple(n)")
    if not (isinstance(rule.enabled, Const) and rule.enabled.value):
        out.append(f"    if not {g.ex(rule.enabled)}:")
        out.append(f"        return ({NOT_ENABLED}, s, -2)")
    k = 0
    for i, step in enumerate(rule.steps):
        if isinstance(step, Check):
            if isinstance(step.ok, Const):
                if step.ok.value:
                    continue
                cond = "True"
            else:
                cond = f"not {g.ex(step.ok)}"
            out.append(f"    if {cond}:")
            if step.fail_effects:
                g.apply(step.fail_effects, "        ", out)
                out.append(f"        return ({step.status}, tuple(n), {i})")
            else:
                out.append(f"        return ({step.status}, s, {i})")
        elif isinstance(step, Fault):
            cond = f"fault == {k}"
            if not (isinstance(step.cond, Const) and step.cond.value):
                cond += f" and {g.ex(step.cond)}"
            out.append(f"    if {cond}:")
            if step.effects:
                g.apply(step.effects, "        ", out)
                out.append(f"        return ({step.status}, tuple(n), {i})")
            else:
                out.append(f"        return ({step.status}, s, {i})")
            k += 1
    if rule.effects:
        g.apply(rule.effects, "    ", out)
        out.append(f"    return ({rule.success}, tuple(n), -1)")
    else:
        out.append(f"    return ({rule.success}, s, -1)")
    return "\n".join(out)


def compile_functions(sources: Sequence[str], gen: _Gen) -> dict[str, Any]:
    ns: dict[str, Any] = {f"_K{i}": frozenset(v) for v, i in
                          ((v, int(n[2:])) for v, n in gen.consts.items())}
    ns.update(gen.globals)
    code = compile("\n\n".join(sources), "<tdxcheck-rules>", "exec")
    exec(code, ns)  # noqa: S102 - generated from the rule data above, nothing external
    return ns


@dataclass
class CompiledRule:
    rule: Rule
    fn: StepFn
    source: str


def compile_rule(rule: Rule, layout: Layout, pre: Sequence[Effect] = ()) -> CompiledRule:
    g = _Gen(layout)
    src = rule_source("step", rule, layout, pre, g)
    ns = compile_functions([src], g)
    return CompiledRule(rule, ns["step"], src)


def predicate_source(name: str, clauses: Sequence[Expr], layout: Layout, gen: _Gen,
                     two_state: bool, on_fail: str = "{i}", on_ok: str = "-1") -> str:
    """``def name(s[, n]) -> index of the first clause that does not hold, or -1``; or what
    ``on_fail`` (formatted with the clause index ``i``) and ``on_ok`` give instead."""
    args = "s, n" if two_state else "s"
    out = [f"def {name}({args}):"]
    for i, c in enumerate(clauses):
        if isinstance(c, Const):
            if c.value:
                continue
            out.append(f"    return {on_fail.format(i=i)}")
            return "\n".join(out)
        out.append(f"    if not {gen.ex(c)}:")
        out.append(f"        return {on_fail.format(i=i)}")
    out.append(f"    return {on_ok}")
    return "\n".join(out)


def new_gen(layout: Layout) -> _Gen:
    return _Gen(layout)


@dataclass(frozen=True)
class KeySpec:
    """How fused successor code computes a successor's packed key from its parent's.

    A state's key is ``sum(s[i] << offsets[i])``; a successor differs from its parent only
    in the cells its effects may write, so ``key(n) = K + sum((n[i] - s[i]) << offsets[i])``
    over those cells.  ``checked`` cells (the counters) must stay in ``0..bounds[i]``, and no
    cell may go below 0; a successor that breaks either gets the key ``None``."""

    offsets: tuple[int, ...]
    bounds: tuple[int, ...]
    checked: frozenset[int]


@dataclass(frozen=True)
class StepCheck:
    """A step invariant in fused code: ``pred(s, n)`` (from ``predicate_source``) gives the
    index of its first failing clause or -1; ``make(k)`` is the violation value."""

    pred: str  # name of the predicate in the generated namespace
    make: str  # name of the violation builder in the generated namespace
    on_self_loop: bool = True  # False: it holds on every step that changes nothing


def _nonneg(e: Expr) -> bool:
    """True if ``e`` cannot be negative when every cell it reads is in range."""
    if isinstance(e, Const):
        return e.value >= 0
    if isinstance(e, (Read, NotE, In)):
        return True
    if isinstance(e, Bin):
        if e.op in ("==", "!=", "<", "<=", ">", ">="):
            return True
        if e.op == "andnot":
            return _nonneg(e.a)
        return e.op in ("+", "*", "&", "|", ">>", "<<") and _nonneg(e.a) and _nonneg(e.b)
    if isinstance(e, BoolOp):
        return all(_nonneg(a) for a in e.args)
    if isinstance(e, Ite):
        return _nonneg(e.a) and _nonneg(e.b)
    return False


def on_self_loop(e: Expr) -> Expr:
    """``e`` over a step that changed nothing: post-state reads become pre-state reads, and
    what that decides folds away (``x != c and x == c`` is false, ``x == x`` true).  A step
    invariant whose every clause folds to true needs no check on a self-loop."""
    from .expr import And, Not, Or, _bin

    if isinstance(e, Const):
        return e
    if isinstance(e, Read):
        return Read(e.field, tuple(on_self_loop(i) for i in e.index), False)
    if isinstance(e, Bin):
        a, b = on_self_loop(e.a), on_self_loop(e.b)
        if e.op in ("==", "!=", "<=", ">=", "<", ">") and repr(a) == repr(b):
            return Const(int(e.op in ("==", "<=", ">=")))
        return _bin(e.op, a, b)
    if isinstance(e, BoolOp):
        args = [on_self_loop(x) for x in e.args]
        if e.op == "and":
            r = And(*args)
            if isinstance(r, BoolOp):
                cmp = {(x.op, repr(x.a), repr(x.b)) for x in r.args
                       if isinstance(x, Bin) and x.op in ("==", "!=")}
                if any(("!=" if op == "==" else "==", a, b) in cmp for op, a, b in cmp):
                    return Const(0)
            return r
        return Or(*args)
    if isinstance(e, NotE):
        return Not(on_self_loop(e.a))
    if isinstance(e, Ite):
        c = on_self_loop(e.c)
        a, b = on_self_loop(e.a), on_self_loop(e.b)
        return (a if c.value else b) if isinstance(c, Const) else Ite(c, a, b)
    if isinstance(e, In):
        a = on_self_loop(e.a)
        return Const(int(a.value in e.values)) if isinstance(a, Const) else In(a, e.values)
    raise TypeError(f"cannot fold {e!r}")


def written_cells(effects: Sequence[Effect], layout: Layout) -> tuple[set[int], set[int]]:
    """The cells ``effects`` may write (a write at a computed index: every cell of the
    field), and those of them that may be given a negative value."""
    cells: set[int] = set()
    neg: set[int] = set()
    for eff in effects:
        if isinstance(eff, Assign):
            if all(isinstance(i, Const) for i in eff.index):
                cs = {layout.flat(eff.field, [i.value for i in eff.index])}  # type: ignore[attr-defined]
            else:
                cs = set(layout.cells(eff.field))
            cells |= cs
            if not _nonneg(eff.value):
                neg |= cs
        elif isinstance(eff, When):
            c, ng = written_cells(eff.effects, layout)
            cells |= c
            neg |= ng
        else:  # pragma: no cover
            raise TypeError(eff)
    return cells, neg


def _unchanged(effects: Sequence[Effect], gen: _Gen) -> str | None:
    """A cheap test that ``effects`` change nothing, for a few assignments at constant
    indices of short values (``n[1] = 0``, ``n[45] = (s[45] & ~48)``), else None."""
    last: dict[int, str] = {}
    for eff in effects:
        if not isinstance(eff, Assign) or not all(isinstance(i, Const) for i in eff.index):
            return None
        v = gen.ex(eff.value)
        if "n[" in v or len(v) > 24:
            return None
        last[gen.L.flat(eff.field, [i.value for i in eff.index])] = v  # type: ignore[attr-defined]
    if len(last) > 4:
        return None
    return " and ".join(f"s[{i}] == {v}" for i, v in sorted(last.items()))


def _shared_subexpressions(gen: _Gen, effects: Sequence[Effect]) -> list[str]:
    """Sources of the compound subexpressions that ``effects`` compute more than once and
    always compute at least once (outside a ``When``, an ``if``-branch or the right side
    of ``and``/``or``), shortest first: worth computing once into a local."""
    count: dict[str, int] = {}
    always: set[str] = set()

    def visit(e: Expr, uncond: bool) -> None:
        if isinstance(e, (Const,)):
            return
        if isinstance(e, Read):
            if all(isinstance(i, Const) for i in e.index):
                return
            for i in e.index:
                visit(i, uncond)
        elif isinstance(e, Bin):
            visit(e.a, uncond)
            visit(e.b, uncond)
        elif isinstance(e, BoolOp):
            for k, a in enumerate(e.args):
                visit(a, uncond and k == 0)
        elif isinstance(e, NotE):
            visit(e.a, uncond)
        elif isinstance(e, Ite):
            visit(e.c, uncond)
            visit(e.a, False)
            visit(e.b, False)
        elif isinstance(e, In):
            visit(e.a, uncond)
        src = gen.ex(e)
        count[src] = count.get(src, 0) + 1
        if uncond:
            always.add(src)

    def walk(effs: Sequence[Effect], uncond: bool) -> None:
        for eff in effs:
            if isinstance(eff, When):
                visit(eff.cond, uncond)
                walk(eff.effects, False)
            elif isinstance(eff, Assign):
                for i in eff.index:
                    visit(i, uncond)
                visit(eff.value, uncond)

    walk(effects, True)
    return sorted((x for x, c in count.items() if c > 1 and x in always and len(x) >= 12),
                  key=len)


def _lazy_keyed(gen: _Gen, effects: Sequence[Effect], key: KeySpec,
                eager: list[str], changed_tail: Callable[[list[str]], list[str]],
                loop: list[str]) -> list[str]:
    """A keyed outcome that copies the state only if it changes.

    Each assignment's value (and computed index) goes into a local first, and the key's
    change ``d`` is summed from them: a write adds ``(x - before) << offset`` where
    ``before`` is the cell's value before that write (the pre-state's, or an earlier write's
    to the same cell: for writes that might hit the same cell it is picked at run time), so
    the sum over the writes is exactly the change of the key.  ``d == 0`` is then "nothing
    changed", as long as every written value is in its range; a value that might not be
    (a counter, or a value that might be negative) sends the step to the ``eager`` code,
    which checks the final state cell by cell."""
    L = gen.L
    pre: list[str] = []
    sets: list[str] = []
    bad: list[str] = []
    prior: dict[str, list[tuple[str | None, str, int | None, str]]] = {}
    counter = [0]

    def walk(effs: Sequence[Effect], cond: str | None, ind: str) -> None:
        for eff in effs:
            m = counter[0]
            counter[0] += 1
            if isinstance(eff, When):
                c = gen.ex(eff.cond)
                assert "n[" not in c, "an effect reads the post-state"
                pre.append(f"{ind}c{m} = {cond + ' and ' if cond else ''}{c}")
                pre.append(f"{ind}if c{m}:")
                sets.append(f"{ind}if c{m}:")
                n_pre, n_sets = len(pre), len(sets)
                walk(eff.effects, f"c{m}", ind + "    ")
                if len(pre) == n_pre:
                    pre.append(ind + "    pass")
                if len(sets) == n_sets:
                    sets.append(ind + "    pass")
                continue
            assert isinstance(eff, Assign)
            cells = list(L.cells(eff.field))
            const: int | None = None
            if all(isinstance(i, Const) for i in eff.index):
                const = L.flat(eff.field, [i.value for i in eff.index])  # type: ignore[attr-defined]
                idx, off, cells = str(const), str(key.offsets[const]), [const]
            else:
                pre.append(f"{ind}j{m} = {gen.index(Read(eff.field, eff.index))}")
                idx, off = f"j{m}", f"_O[j{m}]"
                gen.globals["_O"] = key.offsets
            val = gen.ex(eff.value)
            assert "n[" not in val and "n[" not in idx, "an effect reads the post-state"
            if isinstance(eff.value, Const):
                x = val
            else:
                pre.append(f"{ind}x{m} = {val}")
                x = f"x{m}"
            before = f"s[{idx}]"
            for pc, pidx, pconst, px in prior.get(eff.field, []):
                if const is not None and pconst is not None:
                    if const != pconst:
                        continue
                    before = f"({px} if {pc} else {before})" if pc else px
                else:
                    test = f"{pc} and {idx} == {pidx}" if pc else f"{idx} == {pidx}"
                    before = f"({px} if {test} else {before})"
            prior.setdefault(eff.field, []).append((cond, idx, const, x))
            term = f"({x} - {before})"
            pre.append(f"{ind}d += ({term} << {off})" if off != "0" else f"{ind}d += {term}")
            sets.append(f"{ind}n[{idx}] = {x}")
            check = None
            v = eff.value.value if isinstance(eff.value, Const) else None
            if any(c in key.checked for c in cells):
                bounds = {key.bounds[c] for c in cells}
                assert len(bounds) == 1 and all(c in key.checked for c in cells), eff.field
                hi = bounds.pop()
                if v is None or not 0 <= v <= hi:
                    check = f"not 0 <= {x} <= {hi}"
            elif not _nonneg(eff.value):
                check = f"{x} < 0"
            if check is not None:
                bad.append(f"({cond} and {check})" if cond else check)

    walk(effects, None, "    ")
    # a shared subexpression once, into a local, first (outermost first: what is left
    # of an inner one once the outer ones are replaced may be used only once)
    defs: list[tuple[str, str]] = []
    for src in reversed(_shared_subexpressions(gen, effects)):
        if sum(t.count(src) for t in pre) + sum(d.count(src) for _n, d in defs) < 2:
            continue
        name = f"e{len(defs)}"
        pre[:] = [t.replace(src, name) for t in pre]
        defs = [(nm, d.replace(src, name)) for nm, d in defs]
        defs.append((name, src))
    pre[:] = [f"    {nm} = {d}" for nm, d in reversed(defs)] + pre
    # consecutive additions at one level in one statement; the first one sets d
    merged: list[str] = []
    for line in ["    d = 0", *pre]:
        stmt = line.lstrip()
        ind = line[: len(line) - len(stmt)]
        if stmt.startswith("d += ") and merged and merged[-1].startswith(ind + "d "):
            prev = merged[-1][len(ind):]
            # every term is parenthesised: ``+`` binds tighter than ``<<``
            if prev == "d = 0":
                merged[-1] = f"{ind}d = {stmt[5:]}"
            else:
                merged[-1] = f"{ind}{prev} + {stmt[5:]}"
        else:
            merged.append(line)
    lines = [x[4:] for x in merged]
    cases = []
    if bad:
        cases.append((f"{' or '.join(bad)}", eager))
    cases.append(("d", ["k = K + d", *changed_tail(
        ["n = list(s)", *[x.removeprefix("    ") for x in sets]])]))
    for i, (test, body) in enumerate(cases):
        lines.append(f"{'if' if i == 0 else 'elif'} {test}:")
        lines.extend("    " + x for x in body)
    if loop:
        lines.append("else:")
        lines.extend("    " + x for x in loop)
    return lines


def outcome_source(gen: _Gen, effects: Sequence[Effect], status: int | None, eid: int,
                   key: KeySpec | None = None, sinv: Sequence[StepCheck] = (),
                   rank: int = 0) -> list[str]:
    """The body (unindented lines) of one outcome of an action in fused code.

    Without ``key`` a state change appends ``(eid, status, n, violations)`` to ``out``, with
    ``n`` the next state as a tuple.  With ``key`` it appends ``(eid, status, k, n,
    violations, t)`` for a successor whose key ``k`` is not in ``seen`` (``None``: a cell left
    its range), with ``n`` the next state as a list (or ``s``) and ``t`` how many
    transitions of this state come before this one (``rank``, the action's place in the
    function, less the actions before it that were not enabled).  A step that changes
    nothing and breaks no step invariant appends nothing: it is a self-loop, which the
    fused function counts as an enabled action that appended nothing."""

    def checks(nv: str) -> list[str]:
        out = ["v = []"]
        for sc in sinv:
            out.append(f"k_ = {sc.pred}(s, {nv})")
            out.append(f"if k_ >= 0: v.append({sc.make}(k_))")
        return out

    def item(k: str, n: str, v: str) -> str:
        if key is None:
            return f"({eid}, {status}, {n}, {v})"
        return f"({eid}, {status}, {k}, {n}, {v}, {rank} - dis)"

    if not effects:
        sinv = [sc for sc in sinv if sc.on_self_loop]
        if not sinv:
            return []
        return checks("s") + [f"if v: out.append({item('K', 's', 'v')})"]
    body: list[str] = []
    gen.apply(effects, "", body)
    if key is None:
        body.append("n = tuple(n)")
        new = "n != s"
    else:
        cells, neg = written_cells(effects, gen.L)
        bad = []
        for i in sorted(cells):
            if i in key.checked:
                bad.append(f"not 0 <= n[{i}] <= {key.bounds[i]}")
            elif i in neg:
                bad.append(f"n[{i}] < 0")
        delta = " + ".join(f"((n[{i}] - s[{i}]) << {key.offsets[i]})" if key.offsets[i]
                           else f"(n[{i}] - s[{i}])" for i in sorted(cells)) or "0"
        if bad:
            body.append(f"k = None if {' or '.join(bad)} else K + {delta}")
        else:
            body.append(f"k = K + {delta}")
        new = "k not in seen"  # the parent's key is in seen
    if sinv:
        body += checks("n")
        body.append(f"if {new} or v: out.append({item('k', 'n', 'v')})")
    else:
        body.append(f"if {new}: out.append({item('k', 'n', '[]' if key is None else '()')})")
    loop = outcome_source(gen, (), status, eid, key, sinv, rank)
    if key is not None:
        def changed_tail(build: list[str]) -> list[str]:
            if sinv:
                return [*build, *checks("n"),
                        f"if v or k not in seen: out.append({item('k', 'n', 'v')})"]
            return ["if k not in seen:", *("    " + x for x in build),
                    f"    out.append({item('k', 'n', '()')})"]
        return _lazy_keyed(gen, effects, key, body, changed_tail, loop)
    test = _unchanged(effects, gen)
    if test is None:
        return body
    # nothing to copy when the effects would change nothing
    if loop:
        return [f"if {test}:", *("    " + x for x in loop), "else:", *("    " + x for x in body)]
    return [f"if not ({test}):", *("    " + x for x in body)]


Arm = tuple[str, list[str]]


def chain_arms(rule: Rule, fault: int, gen: _Gen, eid: int, visible: bool,
               skip_first: bool = False, cov: int | None = None,
               key: KeySpec | None = None, sinv: Sequence[StepCheck] = (),
               guard: Expr | None = None, rank: int = 0,
               sinv_refused: Sequence[StepCheck] | None = None
               ) -> tuple[list[Arm], list[str]]:
    """One action as an if/elif chain inside a fused successor function, as data: the arms
    ``(condition, body)`` in order and the body of the final ``else`` (success).

    The same reading of the rule as ``rule_source``: checks in order, the chosen fault
    point, then the effects (each outcome as ``outcome_source`` writes it).  ``guard`` (a host-side
    condition for the action to exist at all) comes first: where it fails nothing happens.
    ``skip_first`` leaves out the first check when the caller has already tested it.  With
    ``cov`` (a base index), every outcome also counts ``C[cov + where + 1]`` (``where`` as
    in ``rule_source``: -1 success, else the index of the failing check or fault).
    ``sinv_refused`` (default ``sinv``): the step checks of the outcomes where a check or a
    fault point refuses the call.
    """
    refused = sinv if sinv_refused is None else sinv_refused
    arms: list[Arm] = []
    k = 0
    first = True
    st_ok = rule.success if visible else None

    def count(where: int) -> list[str]:
        return [f"C[{cov + where + 1}] += 1"] if cov is not None else []

    def arm(cond: str, body: list[str]) -> None:
        assert "n[" not in cond, "a check reads the post-state"
        arms.append((cond, body or ["pass"]))

    # an action whose guard fails, or that is not enabled, is no transition at all
    if guard is not None:
        arm(f"not {gen.ex(guard)}", ["dis += 1"])
    if not (isinstance(rule.enabled, Const) and rule.enabled.value):
        arm(f"not {gen.ex(rule.enabled)}", ["dis += 1"])
    for i, step in enumerate(rule.steps):
        if isinstance(step, Check):
            if isinstance(step.ok, Const) and step.ok.value:
                continue
            if first and skip_first:
                first = False
                continue
            first = False
            cond = "True" if isinstance(step.ok, Const) else f"not {gen.ex(step.ok)}"
            arm(cond, count(i) + outcome_source(gen, step.fail_effects,
                                          step.status if visible else None, eid, key,
                                          refused, rank))
        elif isinstance(step, Fault):
            if k == fault:
                cond = "True" if isinstance(step.cond, Const) and step.cond.value else \
                    gen.ex(step.cond)
                arm(cond, count(i) + outcome_source(gen, step.effects,
                                              step.status if visible else None, eid, key,
                                              refused, rank))
            k += 1
    return arms, count(-1) + outcome_source(gen, rule.effects, st_ok, eid, key, sinv, rank)


def chain_source(rule: Rule, fault: int, gen: _Gen, ind: str, eid: int, visible: bool,
                 skip_first: bool = False, cov: int | None = None) -> list[str]:
    """One action as an if/elif chain (``chain_arms``) inside a fused successor function;
    a state change is appended to ``out`` as ``(eid, status, next_state, violations)``; a
    self-loop appends nothing (the caller counts it: every action that is enabled and
    appended nothing), an action that is not enabled counts ``dis += 1``."""
    return merged_chains([chain_arms(rule, fault, gen, eid, visible, skip_first, cov)], ind)


def _merge_bodies(bodies: Sequence[list[str]]) -> list[str]:
    """The bodies of several actions' arms one after the other; consecutive counts of
    actions that are not enabled (``dis += 1``) are added up."""
    out: list[str] = []
    for b in bodies:
        for line in b:
            if line == "pass":
                continue
            if line.startswith("dis += ") and out and out[-1].startswith("dis += "):
                out[-1] = f"dis += {int(out[-1][7:]) + int(line[7:])}"
            else:
                out.append(line)
    return out or ["pass"]


def merged_chains(chains: Sequence[tuple[list[Arm], list[str]]], ind: str) -> list[str]:
    """Several actions' chains (``chain_arms``) as one piece of code, in order, each
    condition that consecutive actions share at the same place in their chains tested once.

    Each action still takes exactly the arm it would take alone (the conditions read only
    the pre-state), and every action's outcome comes out in the given order."""
    out: list[str] = []
    _emit([(arms, els, 0) for arms, els in chains], ind, out)
    return out


def _noop(item: tuple[list[Arm], list[str], int]) -> bool:
    """True if every way through what is left of a chain does nothing (then its conditions
    need not be tested: they read the state and nothing else)."""
    arms, els, p = item
    return _merge_bodies([els]) == ["pass"] and all(
        _merge_bodies([body]) == ["pass"] for _c, body in arms[p:])


def _emit(items: list[tuple[list[Arm], list[str], int]], ind: str, out: list[str]) -> None:
    items = [x for x in items if not _noop(x)]
    if not items:
        out.append(f"{ind}pass")
        return
    i = 0
    while i < len(items):
        arms, _els, p = items[i]
        if p == len(arms):
            j = i + 1
            while j < len(items) and items[j][2] == len(items[j][0]):
                j += 1
            out.extend(ind + line for line in _merge_bodies([e for _a, e, _p in items[i:j]]))
            i = j
            continue
        j = i + 1
        while j < len(items) and items[j][2] < len(items[j][0]) and \
                items[j][0][items[j][2]][0] == arms[p][0]:
            j += 1
        run = items[i:j]
        kw = "if"
        while True:
            a0, _e0, p0 = run[0]
            out.append(f"{ind}{kw} {a0[p0][0]}:")
            out.extend(f"{ind}    {line}" for line in _merge_bodies([a[q][1] for a, _e, q in run]))
            run = [(a, e, q + 1) for a, e, q in run]
            a0, e0, p0 = run[0]
            if len(run) == 1 and p0 == len(a0):
                out.append(f"{ind}else:")
                out.extend(f"{ind}    {line}" for line in _merge_bodies([e0]))
                break
            if all(q < len(a) and a[q][0] == a0[p0][0] for a, _e, q in run) and p0 < len(a0):
                kw = "elif"
                continue
            out.append(f"{ind}else:")
            _emit(run, ind + "    ", out)
            break
        i = j
