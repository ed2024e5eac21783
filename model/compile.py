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


def chain_source(rule: Rule, fault: int, gen: _Gen, ind: str, eid: int, visible: bool,
                 skip_first: bool = False, cov: int | None = None) -> list[str]:
    """One action as an if/elif chain inside a fused successor function.

    The same reading of the rule as ``rule_source``: checks in order (a failing check with
    no effects is a self-loop: ``loops += 1``), the chosen fault point, then the effects;
    a state change is appended to ``out`` as ``(eid, status, next_state)``.
    ``skip_first`` leaves out the first check when the caller has already tested it.
    With ``cov`` (a base index), every outcome also counts ``C[cov + where + 1]`` (``where``
    as in ``rule_source``: -1 success, else the index of the failing check or fault).
    """
    out: list[str] = []
    kw = "if"
    k = 0
    first = True

    def count(where: int) -> None:
        if cov is not None:
            out.append(f"{ind}    C[{cov + where + 1}] += 1")

    def emit_fail(status: int, effects: Sequence[Effect]) -> None:
        if effects:
            gen.apply(effects, ind + "    ", out)
            out.append(f"{ind}    n = tuple(n)")
            out.append(f"{ind}    if n == s: loops += 1")
            out.append(f"{ind}    else: out.append(({eid}, {status if visible else None}, n))")
        else:
            out.append(f"{ind}    loops += 1")

    if not (isinstance(rule.enabled, Const) and rule.enabled.value):
        out.append(f"{ind}{kw} not {gen.ex(rule.enabled)}:")
        out.append(f"{ind}    pass")
        kw = "elif"
    for i, step in enumerate(rule.steps):
        if isinstance(step, Check):
            if isinstance(step.ok, Const) and step.ok.value:
                continue
            if first and skip_first:
                first = False
                continue
            first = False
            cond = "True" if isinstance(step.ok, Const) else f"not {gen.ex(step.ok)}"
            out.append(f"{ind}{kw} {cond}:")
            count(i)
            emit_fail(step.status, step.fail_effects)
            kw = "elif"
        elif isinstance(step, Fault):
            if k == fault:
                cond = "True" if isinstance(step.cond, Const) and step.cond.value else \
                    gen.ex(step.cond)
                out.append(f"{ind}{kw} {cond}:")
                count(i)
                emit_fail(step.status, step.effects)
                kw = "elif"
            k += 1
    if kw == "if":
        out.append(f"{ind}if True:")
    else:
        out.append(f"{ind}else:")
    count(-1)
    if rule.effects:
        gen.apply(rule.effects, ind + "    ", out)
        out.append(f"{ind}    n = tuple(n)")
        out.append(f"{ind}    if n == s: loops += 1")
        out.append(f"{ind}    else: out.append(({eid}, {rule.success if visible else None}, n))")
    else:
        out.append(f"{ind}    loops += 1")
    return out
