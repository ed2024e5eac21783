"""Compile rules and invariants to Python functions over the flat state tuple.

This is the concrete reading of the rule data: the generated code is the rule's checks in
order, each ``if not (...): return (status, ...)``, then its effects, with every operand and
every cell offset folded to a constant.  It is what the replay and the explorer run.  The
Z3 back end reads the very same ``Rule`` objects instead (``checker/z3_encode.py``).
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
                     two_state: bool) -> str:
    """``def name(s[, n]) -> index of the first clause that does not hold, or -1``."""
    args = "s, n" if two_state else "s"
    out = [f"def {name}({args}):"]
    for i, c in enumerate(clauses):
        if isinstance(c, Const):
            if c.value:
                continue
            out.append(f"    return {i}")
            return "\n".join(out)
        out.append(f"    if not {gen.ex(c)}:")
        out.append(f"        return {i}")
    out.append("    return -1")
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


def _outcome(gen: _Gen, effects: Sequence[Effect], status: int | None, eid: int,
             key: KeySpec | None, sinv: Sequence[StepCheck]) -> list[str]:
    """The body (unindented lines) of one outcome of an action in fused code.

    Without ``key`` a state change appends ``(eid, status, n, violations)`` to ``out``, with
    ``n`` the next state as a tuple; with ``key`` it appends ``(eid, status, k, n,
    violations)``, with ``k`` the successor's key (``K`` its parent's, ``None``: a cell left
    its range) and ``n`` the next state as a list (or ``s``).  A step that changes nothing
    and breaks no step invariant only counts a self-loop (``loops += 1``)."""
    out: list[str] = []

    def checks(nv: str) -> None:
        out.append("v = []")
        for sc in sinv:
            out.append(f"k_ = {sc.pred}(s, {nv})")
            out.append(f"if k_ >= 0: v.append({sc.make}(k_))")

    if not effects:
        if not sinv:
            return ["loops += 1"]
        checks("s")
        out.append(f"if v: out.append(({eid}, {status}, {'K, ' if key else ''}s, v))")
        out.append("else: loops += 1")
        return out
    gen.apply(effects, "", out)
    if key is None:
        out.append("n = tuple(n)")
        same = "n == s"
        item = f"({eid}, {status}, n, {{}})"
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
            out.append(f"k = None if {' or '.join(bad)} else K + {delta}")
        else:
            out.append(f"k = K + {delta}")
        same = "k == K"
        item = f"({eid}, {status}, k, n, {{}})"
    if sinv:
        checks("n")
        out.append(f"if {same} and not v: loops += 1")
        out.append(f"else: out.append({item.format('v')})")
    else:
        out.append(f"if {same}: loops += 1")
        out.append(f"else: out.append({item.format('[]')})")
    return out


Arm = tuple[str, list[str]]


def chain_arms(rule: Rule, fault: int, gen: _Gen, eid: int, visible: bool,
               skip_first: bool = False, cov: int | None = None,
               key: KeySpec | None = None, sinv: Sequence[StepCheck] = (),
               guard: Expr | None = None) -> tuple[list[Arm], list[str]]:
    """One action as an if/elif chain inside a fused successor function, as data: the arms
    ``(condition, body)`` in order and the body of the final ``else`` (success).

    The same reading of the rule as ``rule_source``: checks in order, the chosen fault
    point, then the effects (each outcome as ``_outcome`` writes it).  ``guard`` (a host-side
    condition for the action to exist at all) comes first: where it fails nothing happens.
    ``skip_first`` leaves out the first check when the caller has already tested it.  With
    ``cov`` (a base index), every outcome also counts ``C[cov + where + 1]`` (``where`` as
    in ``rule_source``: -1 success, else the index of the failing check or fault).
    """
    arms: list[Arm] = []
    k = 0
    first = True
    st_ok = rule.success if visible else None

    def count(where: int) -> list[str]:
        return [f"C[{cov + where + 1}] += 1"] if cov is not None else []

    def arm(cond: str, body: list[str]) -> None:
        assert "n[" not in cond, "a check reads the post-state"
        arms.append((cond, body or ["pass"]))

    if guard is not None:
        arm(f"not {gen.ex(guard)}", [])
    if not (isinstance(rule.enabled, Const) and rule.enabled.value):
        arm(f"not {gen.ex(rule.enabled)}", [])
    for i, step in enumerate(rule.steps):
        if isinstance(step, Check):
            if isinstance(step.ok, Const) and step.ok.value:
                continue
            if first and skip_first:
                first = False
                continue
            first = False
            cond = "True" if isinstance(step.ok, Const) else f"not {gen.ex(step.ok)}"
            arm(cond, count(i) + _outcome(gen, step.fail_effects,
                                          step.status if visible else None, eid, key, sinv))
        elif isinstance(step, Fault):
            if k == fault:
                cond = "True" if isinstance(step.cond, Const) and step.cond.value else \
                    gen.ex(step.cond)
                arm(cond, count(i) + _outcome(gen, step.effects,
                                              step.status if visible else None, eid, key, sinv))
            k += 1
    return arms, count(-1) + _outcome(gen, rule.effects, st_ok, eid, key, sinv)


def chain_source(rule: Rule, fault: int, gen: _Gen, ind: str, eid: int, visible: bool,
                 skip_first: bool = False, cov: int | None = None) -> list[str]:
    """One action as an if/elif chain (``chain_arms``) inside a fused successor function;
    a state change is appended to ``out`` as ``(eid, status, next_state, violations)``."""
    return merged_chains([chain_arms(rule, fault, gen, eid, visible, skip_first, cov)], ind)


def _merge_bodies(bodies: Sequence[list[str]]) -> list[str]:
    """The bodies of several actions' arms one after the other; consecutive self-loop
    counts are added up."""
    out: list[str] = []
    for b in bodies:
        for line in b:
            if line == "pass":
                continue
            if line.startswith("loops += ") and out and out[-1].startswith("loops += "):
                n = int(out[-1][9:]) + int(line[9:])
                out[-1] = f"loops += {n}"
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


def _emit(items: list[tuple[list[Arm], list[str], int]], ind: str, out: list[str]) -> None:
    i = 0
    while i < len(items):
        arms, els, p = items[i]
        if p == len(arms):
            out.extend(ind + line for line in _merge_bodies([els]))
            i += 1
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
