"""Replay a scenario through the model: statuses, changed fields, violations, mismatches.

``tdxcheck replay FILE`` (scenario-format.md §5, §6): the common prefix, then each thread in
file order; every step's status is compared with its ``-> STATUS`` expectation, and every
invariant is checked after every step.  Returns data (``ReplayResult``); ``reports/`` print.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tdxcheck.checker.scenario import Scenario, ScenarioError, Step
from tdxcheck.model.actions import (
    Action,
    StepError,
    actions_for_step,
    describe,
    raw_gpas,
)
from tdxcheck.model.compile import NOT_ENABLED
from tdxcheck.model.rule import OperandError
from tdxcheck.model.state import Platform, State, Universe
from tdxcheck.model.status import parse_status, status_matches, status_name
from tdxcheck.model.steps import hidden_object

from .engine import Engine, Violation


def platform_of(sc: Scenario) -> Platform:
    """The scenario's config line is the model's platform (``Config`` is a ``Platform``)."""
    return sc.config


def universe_of(sc: Scenario) -> Universe:
    """The named objects of a scenario, in order of first use."""
    gpas = set(sc.gpas)
    for st in sc.steps:
        if st.name == "seamcall":
            gpas.update(raw_gpas(st.operands["leaf"], st.operands))
    return Universe(platform_of(sc), tuple(sc.tds), tuple(sc.vps), tuple(sc.pages),
                    tuple(sorted(gpas)))


def actions_of(sc: Scenario, u: Universe, st: Step) -> list[Action]:
    try:
        return actions_for_step(u, st.name, st.operands, st.cpu, sc.td_tdr, sc.vp_tdvpr)
    except StepError as e:
        raise ScenarioError(sc.file, st.line, str(e)) from None


@dataclass(frozen=True)
class StepPlan:
    """One scenario step as the model runs it: its actions and, per action, the fault index
    its ``fault=`` selects (-1: none).  Every engine that runs scenario steps (replay, the
    scenario explorer, the scenario prover) gets its steps from ``plan_step``: one place
    decides what a step means and refuses what it cannot mean."""

    step: Step
    actions: tuple[Action, ...]
    faults: tuple[int, ...]


def plan_step(sc: Scenario, eng: Engine, st: Step) -> StepPlan:
    """The model's reading of step ``st``; ``ScenarioError`` (``FILE:LINE: reason``) for a
    step the model cannot give a meaning to, or a ``fault=`` its leaf cannot return."""
    acts = actions_of(sc, eng.u, st)
    faults = []
    for a in acts:
        try:
            compiled = eng.compiled(a)  # builds the rule: operands it cannot follow raise
        except OperandError as e:
            raise ScenarioError(sc.file, st.line, str(e)) from None
        fi: int | None = -1
        if st.fault:
            fi = compiled.fault_index(st.fault)
            if fi is None:
                if not _fails_before_faults(compiled.rule):
                    names = ", ".join(status_name(f.status) for f in compiled.rule.faults)
                    raise ScenarioError(sc.file, st.line,
                                        f"{a.kind} has no fault point for {st.fault} "
                                        f"(its fault points: {names or 'none'})")
                fi = -1  # it fails at an operand check before any fault point
        faults.append(fi)
    return StepPlan(st, tuple(acts), tuple(faults))


@dataclass
class Change:
    label: str
    old: str
    new: str


@dataclass
class ReplayStep:
    index: int  # 0-based position in the replay order
    line: int
    text: str
    calls: list[str]
    status: int | None
    expected: str | None
    ok: bool
    failed_check: str = ""
    note: str = ""
    changes: list[Change] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)


@dataclass
class Mismatch:
    line: int
    step_index: int
    expected: str
    actual: str
    message: str


@dataclass
class Disagreement:
    """A status or an observed effect on which the model and the executor differ."""

    step_index: int
    line: int
    model: str
    executor: str


@dataclass
class ReplayResult:
    file: str
    steps: list[ReplayStep]
    mismatches: list[Mismatch]
    final_state: State
    ablate: tuple[str, ...] = ()
    engine: str = "model"
    consequences: list[object] = field(default_factory=list)  # executor Consequence objects
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def violations(self) -> list[tuple[ReplayStep, Violation]]:
        return [(s, v) for s in self.steps for v in s.violations]

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.violations and not self.disagreements


def replay_order(sc: Scenario) -> list[Step]:
    """The prefix, then each thread's steps, threads in file order (§5)."""
    prefix = [s for s in sc.steps if s.thread is None]
    rest = [s for t in sc.threads for s in sc.steps if s.thread == t]
    return prefix + rest


def bound_by(st: Step) -> str | None:
    """The td or vp name step ``st`` binds to its page (a create, typed or raw), if any: a
    handle exists from the step that makes it, whatever that step returns."""
    if st.name == "tdh_mng_create":
        return str(st.operands["td"])
    if st.name == "tdh_vp_create":
        return str(st.operands["vp"])
    if st.name == "seamcall" and st.operands["leaf"] in ("TDH.MNG.CREATE", "TDH.VP.CREATE"):
        return hidden_object(st.operands.get("rcx", 0))
    return None


def observe_model(sc: Scenario, u: Universe, eng: Engine, s: State,
                  bound: set[str] | None = None) -> dict[str, int | None]:
    """The model's state in the executor's projection (``Executor.observe``): per named
    page its PAMT type and allocator bit, per td its lifecycle and op state (None unless its
    TDR is a TDR), per private HKID its KOT state and pool bit, per vp its TDVPS state and
    associated CPU (None unless its TDVPR is a TDVPR / it is associated).  A handle is a
    page: a td (vp) shows the object its page holds, whatever name made it; ``bound``: the
    names whose create has run (the others have no page yet)."""
    lay = eng.layout
    get = lambda f, *i: s[lay.flat(f, i)]
    out: dict[str, int | None] = {}
    for name in u.pages:
        p = u.page_index(name)
        out[f"page.{name}.pt"] = get("pt", p)
        out[f"page.{name}.allocated"] = get("host", p)

    def page_of(name: str | int | None) -> int:
        return u.page_index(name) if isinstance(name, str) else 0  # the NULL page

    # a handle is a page: a td (vp) shows the module object its TDR (TDVPR) page holds,
    # whichever name made it (two names on one page see one object)
    def handle(name: str, pages: dict[str, str]) -> int:
        return page_of(pages.get(name)) if bound is None or name in bound else 0

    for name in u.tds:
        page = handle(name, sc.td_tdr)
        live = page and get("pt", page) == 4
        t = get("owner", page)
        out[f"td.{name}.lifecycle"] = get("lifecycle", t) if live else None
        out[f"td.{name}.op_state"] = get("op_state", t) if live else None
    for h in range(1, u.platform.hkids):
        out[f"kot.{h}.state"] = get("kot_state", h)
        out[f"hkid.{h}.allocated"] = get("host_hkid", h)
    for name in u.vps:
        page = handle(name, sc.vp_tdvpr)
        live = page and get("pt", page) == 6
        v = get("vpslot", page)
        out[f"vp.{name}.state"] = get("state", v) if live else None
        assoc = get("assoc", v)
        out[f"vp.{name}.assoc_cpu"] = assoc - 1 if live and assoc else None
    return out


def replay(sc: Scenario, engine: Engine | None = None, run: str = "model") -> ReplayResult:
    """Replay ``sc`` on the model, the executor, or both in lockstep (``run``)."""
    u = universe_of(sc)
    eng = engine or Engine(u)
    ex = None
    if run in ("executor", "both"):
        from tdxcheck.checker.executor import Executor

        ex = Executor(sc.config.as_dict(), ablate=tuple(eng.ablate),
                      names={"page": list(u.pages), "td": list(u.tds), "vp": list(u.vps)})
    disagreements: list[Disagreement] = []
    lay = eng.layout
    s = eng.initial()
    seen: set[tuple[str, int]] = set()
    steps: list[ReplayStep] = []
    mismatches: list[Mismatch] = []
    plans = [plan_step(sc, eng, st) for st in replay_order(sc)]  # every error before any run
    bound: set[str] = set()
    for idx, plan in enumerate(plans):
        st, acts = plan.step, plan.actions
        made = bound_by(st)
        if made is not None:
            bound.add(made)
        before = s
        status: int | None = None
        viol: list[Violation] = []
        where_name = ""
        note = ""
        for a, fault in zip(acts, plan.faults, strict=True):
            r = eng.step(s, a, fault)
            if r.status == NOT_ENABLED:
                note = f"{describe(a, u)} cannot happen here: {_why_not(a)}"
                status = None
                break
            status = r.status
            where_name = eng.check_name(a, r.where)
            viol.extend(r.step_violations)
            s = r.state
        # state invariants: report a violated clause when it first appears
        now = eng.state_violations(s)
        for v in now:
            key = (v.invariant, v.clause)
            if key not in seen:
                viol.append(v)
        seen = {(v.invariant, v.clause) for v in now}
        ok = not note
        if st.expected is not None:
            if status is None or not status_matches(status, st.expected, st.expected_has_opid):
                ok = False
        if not ok:
            mismatches.append(Mismatch(
                st.line, idx, st.expected_text or "-",
                status_name(status) if status is not None else "not enabled",
                note or f"expected {st.expected_text}, got {status_name(status or 0)}"))
        if ex is not None:
            disagreements += _lockstep(ex, sc, u, eng, st, idx, status, bool(note), s, bound)
        changes = [Change(lay.label(i), lay.show(i, x), lay.show(i, y))
                   for i, x, y in lay.diff(before, s)]
        steps.append(ReplayStep(idx, st.line, st.text, [describe(a, u) for a in acts], status,
                                st.expected_text, ok, where_name, note, changes, viol))
    consequences: list[object] = []
    if ex is not None:
        ex.finish()
        consequences = list(ex.consequences)
    if run == "executor":
        # the executor's statuses are the answer; the model still ran to compare
        pass
    return ReplayResult(sc.file, steps, mismatches, s, tuple(sorted(eng.ablate)), run,
                        consequences, disagreements)


def _lockstep(ex: object, sc: Scenario, u: Universe, eng: Engine, st: Step, idx: int,
              status: int | None, not_enabled: bool, s: State,
              bound: set[str]) -> list[Disagreement]:
    """Run ``st`` on the executor and compare its status and observed state with the model's."""
    from tdxcheck.checker.executor import StepNotEnabled

    out: list[Disagreement] = []
    try:
        r = ex.step(st.name, st.operands, st.cpu, st.fault)  # type: ignore[attr-defined]
        ex_status, ex_enabled = r.status, True
    except StepNotEnabled:
        ex_status, ex_enabled = None, False
    if ex_enabled == not_enabled or (ex_enabled and ex_status != status):
        show = lambda x, en: ("not enabled" if not en
                              else status_name(x) if x is not None else "-")
        out.append(Disagreement(idx, st.line, show(status, not not_enabled),
                                show(ex_status, ex_enabled)))
    mine = observe_model(sc, u, eng, s, bound)
    theirs = ex.observe()  # type: ignore[attr-defined]
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if diff:
        out.append(Disagreement(idx, st.line,
                                "; ".join(f"{k}={mine.get(k)}" for k in diff),
                                "; ".join(f"{k}={theirs.get(k)}" for k in diff)))
    return out


def _fails_before_faults(rule: object) -> bool:
    """The rule fails at a check that does not depend on the state (an invalid operand),
    so no fault point can be reached whatever ``fault=`` asks for."""
    from tdxcheck.model.expr import Const
    from tdxcheck.model.rule import Check, Fault

    for step in rule.steps:  # type: ignore[attr-defined]
        if isinstance(step, Fault):
            return False
        if isinstance(step, Check) and isinstance(step.ok, Const) and not step.ok.value:
            return True
    return False


def _why_not(a: Action) -> str:
    if a.kind in ("td_exit", "TDG.MEM.PAGE.ACCEPT"):
        return "the vCPU is not running in the guest"
    if a.is_seamcall:
        return (f"cpu{a.cpu} is running a vCPU in the guest, and an LP in the guest makes no "
                "SEAMCALL (cannot happen on hardware)")
    return "its precondition does not hold"


__all__ = ["ReplayResult", "ReplayStep", "parse_status", "replay", "universe_of"]
