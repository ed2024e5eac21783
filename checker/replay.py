"""Replay a scenario through the model: statuses, changed fields, violations, mismatches.

``tdxcheck replay FILE`` (scenario-format.md §5, §6): the common prefix, then each thread in
file order; every step's status is compared with its ``-> STATUS`` expectation, and every
invariant is checked after every step.  Returns data (``ReplayResult``); ``reports/`` print.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tdxcheck.model.actions import Action, StepError, actions_for_step, describe
from tdxcheck.model.compile import NOT_ENABLED
from tdxcheck.model.state import Platform, State, Universe
from tdxcheck.model.status import parse_status, status_matches, status_name

from .engine import Engine, Violation
from .scenario import Scenario, ScenarioError, Step


def platform_of(sc: Scenario) -> Platform:
    """The scenario's config line is the model's platform (``Config`` is a ``Platform``)."""
    return sc.config


def universe_of(sc: Scenario) -> Universe:
    """The named objects of a scenario, in order of first use."""
    gpas = set(sc.gpas)
    for st in sc.steps:
        if st.name == "seamcall":
            for reg in ("rcx",):
                v = st.operands.get(reg)
                if isinstance(v, int) and st.operands["leaf"].startswith("TDH.MEM"):
                    gpas.add(v & ~0xFFF)
    return Universe(platform_of(sc), tuple(sc.tds), tuple(sc.vps), tuple(sc.pages),
                    tuple(sorted(gpas)))


def actions_of(sc: Scenario, u: Universe, st: Step) -> list[Action]:
    try:
        return actions_for_step(u, st.name, st.operands, st.cpu, sc.td_tdr, sc.vp_tdvpr)
    except StepError as e:
        raise ScenarioError(sc.file, st.line, str(e)) from None


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
class ReplayResult:
    file: str
    steps: list[ReplayStep]
    mismatches: list[Mismatch]
    final_state: State
    ablate: tuple[str, ...] = ()

    @property
    def violations(self) -> list[tuple[ReplayStep, Violation]]:
        return [(s, v) for s in self.steps for v in s.violations]

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.violations


def replay_order(sc: Scenario) -> list[Step]:
    """The prefix, then each thread's steps, threads in file order (§5)."""
    prefix = [s for s in sc.steps if s.thread is None]
    rest = [s for t in sc.threads for s in sc.steps if s.thread == t]
    return prefix + rest


def replay(sc: Scenario, engine: Engine | None = None) -> ReplayResult:
    u = universe_of(sc)
    eng = engine or Engine(u)
    lay = eng.layout
    s = eng.initial()
    seen: set[tuple[str, int]] = set()
    steps: list[ReplayStep] = []
    mismatches: list[Mismatch] = []
    for idx, st in enumerate(replay_order(sc)):
        acts = actions_of(sc, u, st)
        before = s
        status: int | None = None
        viol: list[Violation] = []
        where_name = ""
        note = ""
        for a in acts:
            fault = -1
            if st.fault:
                fi = eng.compiled(a).fault_index(st.fault)
                if fi is None:
                    names = ", ".join(status_name(f.status) for f in eng.compiled(a).rule.faults)
                    raise ScenarioError(sc.file, st.line,
                                        f"{a.kind} has no fault point for {st.fault} "
                                        f"(its fault points: {names or 'none'})")
                fault = fi
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
        changes = [Change(lay.label(i), lay.show(i, x), lay.show(i, y))
                   for i, x, y in lay.diff(before, s)]
        steps.append(ReplayStep(idx, st.line, st.text, [describe(a, u) for a in acts], status,
                                st.expected_text, ok, where_name, note, changes, viol))
    return ReplayResult(sc.file, steps, mismatches, s, tuple(sorted(eng.ablate)))


def _why_not(a: Action) -> str:
    if a.kind in ("td_exit", "TDG.MEM.PAGE.ACCEPT"):
        return "the vCPU is not running in the guest"
    return "its precondition does not hold"


__all__ = ["ReplayResult", "ReplayStep", "replay", "universe_of", "parse_status"]
