"""``tdxcheck prove --host FILE``: a scenario file's invariants proved with Z3, by bounded
model checking to the scenario's own length (a complete proof: its threads are finite).

The program is ``programs.ScenarioHost`` (what ``tdxcheck check FILE`` explores): the common
prefix, then every interleaving of the threads' steps, each step one or more model actions
(its ``fault=`` choice, or with ``faults`` every fault variant the explorer tries), its
``-> STATUS`` expectation checked.  Every run has at most ``N`` steps (the number of steps
in the file: each step moves one thread's program counter), so a BMC to depth ``N`` covers
every run; an invariant no query at any depth ``<= N`` can break (and none timed out) is
``proved``.  The unrolling, per depth ``k``:

* the state: the model cells (``Z3Encoder`` bit-vectors; a cell whose term simplifies to a
  value is kept as that value: the prefix is concrete) and one program counter per thread;
* the edge chosen at ``k`` (``edge@k``, an edge id of ``ScenarioHost.edges``): only the
  edges whose thread can be at that pc at depth ``k`` are encoded (the prefix runs first;
  after it the threads' pcs sum to ``k - len(prefix)``); an edge may be taken when its
  thread's pc is its position, the prefix is done (for a thread's edge), and each of its
  actions is enabled (``Rule.enabled``) in turn, as ``ScenarioHost._run`` runs them;
* the next state: each action's ``Z3Encoder.action`` (the rule data's Z3 reading, as the
  any-host prover uses it) applied in order.

As in the explorer (``explore.explore`` over ``ScenarioHost``): every invariant (host
obligations too, ``Engine(u)``) is checked; a state that breaks a state invariant or leaves
its range (``state-encoding``) is not expanded (paths run through in-range states where every
state invariant holds); step invariants (each action's ``step_clauses``) and
``expected-status`` are violations of a transition; ``deadlock`` is a state (not an error
state) where some thread has steps left and no step can run.  The first depth at which a
target's violation is satisfiable is its shortest violation: the model's edge choices are
replayed on the concrete model (``ScenarioHost.apply_edge``, every state compared with the
Z3 one) and returned as an ``explore.Counterexample`` over the ``ScenarioHost`` program, so
``traces.scenario_tdx``/``itf`` write it (``write_scenario_traces``).

A solver timeout is ``unknown``, never ``proved``.  The Z3 and the Python readings agree on
in-range states; if ``state-encoding`` is not proved, no other target is reported proved
(``unknown``, "assumes state-encoding"); violations found stay violations (each replayed).

API: ``prove_scenario(sc, ...) -> ScenarioProveResult`` (a ``common.ProveResult``:
``exit_status`` 0 all proved, 1 a violation, 3 only timeouts), ``scenario_text``,
``scenario_json`` (``{"results": [{"invariant", "status", "seconds", ...}], ...}``) and
``write_scenario_traces``.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import z3
from tdxcheck.checker.explore.bfs import Counterexample
from tdxcheck.checker.explore.programs import ScenarioHost
from tdxcheck.checker.scenario import InputError
from tdxcheck.model.actions import Action
from tdxcheck.model.status import TDX_SEAMCALL_STATUS_MASK, status_class
from tdxcheck.properties import Clause, Invariant

from .bmc import Unconfirmed, depth_queries
from .common import (
    PROVED,
    TYPING,
    UNKNOWN,
    VIOLATED,
    Progress,
    ProveResult,
    QueryRecord,
    TargetResult,
    two_stage_check,
)
from .encode import STATUS_BITS, Z3Encoder, enabled_term

#: ``ProveResult.mode`` of a scenario proof
SCENARIO = "scenario"
EXPECTED = "expected-status"
DEADLOCK = "deadlock"


# ------------------------------------------------------------------ data
@dataclass(frozen=True)
class ScenarioConfig:
    """Stands where ``ProveResult.config`` holds an any-host ``Config``: the scenario."""

    name: str
    text: str

    def describe(self) -> str:
        return self.text


@dataclass
class ScenarioProveResult(ProveResult):
    """``ProveResult`` of a scenario: ``depth`` is the scenario's length ``N`` (the BMC
    bound that makes the search complete), ``transitions`` its number of edges."""

    file: str = ""
    threads: list[str] = field(default_factory=list)
    steps: int = 0

    @property
    def ok(self) -> bool:
        return all(r.status == PROVED for r in self.results)

    def program(self) -> ScenarioHost:  # type: ignore[override]
        return self._ctx.prog

    def labels(self, cx: Counterexample) -> list[str]:
        from tdxcheck.checker.explore.check import labels_of

        return labels_of(self.program(), cx)


@dataclass
class _Target:
    id: str
    kind: str  # "invariant" | "expected" | "deadlock" | "typing"
    summary: str
    inv: Invariant | None = None
    clauses: list[Clause] = field(default_factory=list)


@dataclass
class _Move:
    """One edge encoded from the state at one depth."""

    eid: int
    cond: Any  # Bool: the edge can be taken there
    post: list[Any]  # model cells after its actions
    step_viol: dict[str, Any]  # invariant id -> Bool: some action breaks a step clause
    expected_viol: Any  # Bool or None: the status differs from ``-> STATUS``


# ------------------------------------------------------------------ context
class _Ctx:
    def __init__(self, sc: Any, faults: bool, ablate: Sequence[str],
                 invariants: Sequence[str] | None) -> None:
        self.sc = sc
        self.prog = prog = ScenarioHost(sc, faults=faults, ablate=ablate)
        self.engine = prog.engine  # every invariant, host obligations too (Engine(u))
        self.u = u = prog.u
        self.layout = lay = self.engine.layout
        self.n = lay.size
        self.enc = Z3Encoder(lay)
        self.lens = [len(t) for t in prog.threads]
        self.P = self.lens[0]
        self.N = sum(self.lens)
        self.pc_bits = max(2, (max(self.lens) + 1).bit_length())
        self.bounds = self.enc.bounds
        typing = _Target(TYPING, "typing", "every cell within its declared range")
        inv_targets = [_Target(inv.id, "invariant", inv.summary, inv, inv.state_clauses(u))
                       for inv in self.engine.invariants]
        #: a path never runs through a state that breaks one of these (the explorer's
        #: error states are not expanded)
        self.path_targets = [t for t in inv_targets if t.clauses] + [typing]
        all_targets = inv_targets + [
            _Target(EXPECTED, "expected", "each step returns the status its -> STATUS "
                    "expects"),
            _Target(DEADLOCK, "deadlock", "no state where a thread has steps left and no "
                    "step can run"),
            typing]
        if invariants is not None:
            have = {t.id for t in all_targets}
            bad = [i for i in invariants if i not in have]
            if bad:
                raise InputError(f"unknown invariant(s): {', '.join(bad)} "
                                 f"(have: {', '.join(sorted(have))})")
        #: searched: the targets asked for, and state-encoding always (the other verdicts
        #: rest on it); reported: those asked for
        self.targets = [t for t in all_targets
                        if invariants is None or t.id in invariants or t.kind == "typing"]
        self.reported = [t.id for t in self.targets
                         if invariants is None or t.id in invariants]
        self._step_cls: dict[tuple[str, Action], list[Clause]] = {}

    def step_clauses(self, inv: Invariant, a: Action) -> list[Clause]:
        key = (inv.id, a)
        cls = self._step_cls.get(key)
        if cls is None:
            cls = self._step_cls[key] = inv.step_clauses(self.u, a)
        return cls

    def possible(self, eid: int, k: int) -> bool:
        """Can edge ``eid`` be taken at depth ``k`` at all (its thread at its pc)?"""
        ti, pc, _acts, _fv = self.prog.edge_move[eid]
        if ti == 0:
            return pc == k
        d = k - self.P
        others = self.N - self.P - self.lens[ti]
        return 0 <= pc <= d and d - pc <= others

    def encode_move(self, eid: int, s: list[Any], pcs: list[Any]) -> _Move | None:
        """Edge ``eid`` from the state ``s``/``pcs`` (``ScenarioHost._run`` as terms)."""
        enc = self.enc
        ti, pc, acts, fv = self.prog.edge_move[eid]
        conds = [pcs[ti] == z3.BitVecVal(pc, self.pc_bits)]
        if ti > 0:
            conds.append(pcs[0] == z3.BitVecVal(self.P, self.pc_bits))
        pc_ok = z3.simplify(z3.And(*conds))
        if z3.is_false(pc_ok):
            return None
        cur = list(s)
        en: list[Any] = [pc_ok]
        viol: dict[str, list[Any]] = {}
        status = None
        for a, fault in zip(acts, fv, strict=True):
            st, post, where = enc.action(self.engine, a, cur, fault)
            en.append(enabled_term(where))
            for inv in self.engine.invariants:
                cls = self.step_clauses(inv, a)
                if cls:
                    viol.setdefault(inv.id, []).append(
                        z3.Not(z3.And(*enc.clauses([c.ok for c in cls], cur, post))))
            status = st if (a.is_seamcall or a.kind == "TDG.MEM.PAGE.ACCEPT") else None
            cur = post
        cond = z3.simplify(z3.And(*en))
        if z3.is_false(cond):
            return None
        step = self.prog.threads[ti][pc]
        exp = None
        if step.expected is not None:
            if status is None:
                exp = z3.BoolVal(True)
            elif step.expected_has_opid:
                exp = status != z3.BitVecVal(step.expected, STATUS_BITS)
            else:
                exp = (status & z3.BitVecVal(TDX_SEAMCALL_STATUS_MASK, STATUS_BITS)) != \
                    z3.BitVecVal(status_class(step.expected), STATUS_BITS)
        return _Move(eid, cond, cur, {k: z3.Or(*v) for k, v in viol.items()}, exp)


# ------------------------------------------------------------------ the unrolling
class _Bmc:
    def __init__(self, ctx: _Ctx, timeout_ms: int) -> None:
        self.ctx = ctx
        self.enc = ctx.enc
        self.sol = z3.Solver()
        self.timeout_ms = timeout_ms
        self.states: list[list[Any]] = [self.enc.const_state(ctx.engine.initial())]
        self.pcs: list[list[Any]] = [[z3.BitVecVal(0, ctx.pc_bits) for _ in ctx.lens]]
        self.choices: list[Any] = []
        self.moves: list[list[_Move]] = []  # moves[k]: the edges from state k
        self.ebits = max(1, (len(ctx.prog.edges) - 1).bit_length())
        self._terms: dict[tuple[int, str], Any] = {}

    def holds(self, t: _Target, k: int) -> Any:
        """``t``'s state clauses (or the typing) on state ``k``, one Bool (cached)."""
        key = (k, t.id)
        term = self._terms.get(key)
        if term is None:
            s = self.states[k]
            if t.kind == "typing":
                term = self.enc.typing(s, members=True)
            else:
                term = z3.And(*self.enc.clauses([c.ok for c in t.clauses], s))
            term = self._terms[key] = z3.simplify(term)
        return term

    def encode_moves(self, k: int) -> None:
        ctx = self.ctx
        out = []
        for eid in range(len(ctx.prog.edges)):
            if ctx.possible(eid, k):
                m = ctx.encode_move(eid, self.states[k], self.pcs[k])
                if m is not None:
                    out.append(m)
        self.moves.append(out)

    def constrain_path(self, k: int) -> None:
        """State ``k`` is expanded: no state invariant broken, every cell in range."""
        for t in self.ctx.path_targets:
            term = self.holds(t, k)
            if not z3.is_true(term):
                self.sol.add(term)

    def _value_or_var(self, t: Any, name: str, width: int) -> Any:
        t = z3.simplify(t)
        if z3.is_bv_value(t):
            return t
        v = z3.BitVec(name, width)
        self.sol.add(v == t)
        return v

    def add_step(self, k: int) -> None:
        """The edge taken from state ``k`` and state ``k + 1``."""
        ctx = self.ctx
        moves = self.moves[k]
        e = z3.BitVec(f"edge@{k}", self.ebits)
        self.choices.append(e)
        self.sol.add(z3.Or(*[e == m.eid for m in moves]) if moves else z3.BoolVal(False))
        for m in moves:
            if not z3.is_true(m.cond):
                self.sol.add(z3.Implies(e == m.eid, m.cond))
        s, pcs = self.states[k], self.pcs[k]
        nxt = []
        lay = ctx.layout
        for i in range(ctx.n):
            t = s[i]
            for m in reversed(moves):
                if not z3.eq(m.post[i], s[i]):
                    t = m.post[i] if len(moves) == 1 else z3.If(e == m.eid, m.post[i], t)
            nxt.append(t if z3.eq(t, s[i]) else
                       self._value_or_var(t, f"s{k + 1}.{lay.label(i)}", self.enc.width))
        npcs = []
        for ti in range(len(ctx.lens)):
            t = pcs[ti]
            for m in moves:
                if ctx.prog.edge_move[m.eid][0] == ti:
                    t = z3.If(e == m.eid, pcs[ti] + 1, t)
            npcs.append(t if z3.eq(t, pcs[ti]) else
                        self._value_or_var(t, f"pc{k + 1}.{ctx.prog.names[ti]}", ctx.pc_bits))
        self.states.append(nxt)
        self.pcs.append(npcs)

    def violation(self, t: _Target, k: int) -> Any:
        """A violation of ``t`` at depth ``k`` (state ``k``, or the step into it)."""
        parts: list[Any] = []
        prev = self.moves[k - 1] if k > 0 else []
        e = self.choices[k - 1] if k > 0 else None
        if t.kind == "typing":
            parts.append(z3.Not(self.holds(t, k)))
        elif t.kind == "invariant":
            if t.clauses:
                parts.append(z3.Not(self.holds(t, k)))
            for m in prev:
                v = m.step_viol.get(t.id)
                if v is not None:
                    parts.append(z3.And(e == m.eid, v))
        elif t.kind == "expected":
            for m in prev:
                if m.expected_viol is not None:
                    parts.append(z3.And(e == m.eid, m.expected_viol))
        elif t.kind == "deadlock":
            pcs = self.pcs[k]
            unfinished = z3.Or(*[p != z3.BitVecVal(n, self.ctx.pc_bits)
                                 for p, n in zip(pcs, self.ctx.lens, strict=True)])
            clean = [self.holds(pt, k) for pt in self.ctx.path_targets]
            parts.append(z3.And(unfinished, *clean, *[z3.Not(m.cond) for m in self.moves[k]]))
        if not parts:
            return None
        g = z3.simplify(z3.Or(*parts))
        return None if z3.is_false(g) else g

    def check(self, goal: Any) -> tuple[str, Any]:
        """``common.two_stage_check`` on this unrolling."""
        return two_stage_check(self.sol, goal, self.timeout_ms)

    def trace(self, t: _Target, model: Any, k: int) -> Counterexample:
        """Replay the model's edge choices on ``ScenarioHost``; confirm the violation."""
        ctx, prog = self.ctx, self.ctx.prog
        s = prog.initial()
        states = [s]
        path: list[tuple[int, int | None]] = []
        last_viol: list[Any] = []
        top = 1 << self.enc.width
        for d in range(k):
            eid = model.eval(self.choices[d], model_completion=True).as_long()
            r = prog.apply_edge(s, eid)
            if r is None:
                raise AssertionError(f"scenario bmc trace step {d + 1} "
                                     f"({prog.edges[eid].label}) is not enabled on the "
                                     "concrete model")
            want = self.enc.values(self.states[d + 1], model)
            if tuple(v % top for v in r[2][: ctx.n]) != want:
                raise AssertionError(f"scenario bmc trace step {d + 1} "
                                     f"({prog.edges[eid].label}): the Z3 and the concrete "
                                     "next states differ")
            path.append((eid, r[1]))
            s = r[2]
            states.append(s)
            last_viol = r[3]
        msg = None
        if t.kind == "typing":
            msg = ctx.layout.encoding_violation(s[: ctx.n])
        elif t.kind == "deadlock":
            if not list(prog.successors(s)) and not prog.state_violations(s):
                msg = prog.stuck(s)
        else:
            for v in [*last_viol, *prog.state_violations(s)]:
                if v.invariant == t.id:
                    msg = v.message
                    break
        if msg is None:
            bad = ctx.layout.encoding_violation(s[: ctx.n])
            if bad is not None and t.kind != "typing":
                raise Unconfirmed(
                    f"a {k}-step run breaks it in the Z3 reading, but its last state has a "
                    f"cell out of range ({bad}) and the model's reading does not break it")
            raise AssertionError(f"scenario bmc trace for {t.id} does not break it when "
                                 "replayed")
        return Counterexample(t.id, msg, path, states)


# ------------------------------------------------------------------ the entry point
def prove_scenario(sc: Any, *, timeout_ms: int = 60_000, ablate: Sequence[str] = (),
                   invariants: Sequence[str] | None = None, faults: bool = False,
                   progress: Progress | None = None) -> ScenarioProveResult:
    """Prove every invariant (or those in ``invariants``; ids as ``tdxcheck check FILE``
    reports them, plus ``expected-status``, ``deadlock`` and ``state-encoding``) for every
    interleaving of the scenario ``sc`` (a parsed ``scenario.Scenario``), by BMC to the
    scenario's length.  ``faults``: every fault variant of every single-SEAMCALL step, as
    ``check --faults``.  ``timeout_ms`` bounds each solver query; a timeout is ``unknown``.
    """
    t0 = time.monotonic()
    ctx = _Ctx(sc, faults, ablate, invariants)
    bmc = _Bmc(ctx, timeout_ms)
    records: list[QueryRecord] = []
    res = {t.id: TargetResult(t.id, t.kind, t.summary, PROVED) for t in ctx.targets}
    open_ = list(ctx.targets)
    for k in range(ctx.N + 1):
        if k > 0:
            bmc.constrain_path(k - 1)
            bmc.add_step(k - 1)
        if k < ctx.N:
            bmc.encode_moves(k)
        else:
            bmc.moves.append([])  # every thread is done at depth N
        goals = [(t, bmc.violation(t, k)) for t in open_]
        goals = [(t, g) for t, g in goals if g is not None]
        if goals:
            _joint, alone = depth_queries(bmc, goals, k, records, res, None, progress)
            for t, answer, model in alone:
                r = res[t.id]
                if answer == "sat":
                    try:
                        r.counterexample = bmc.trace(t, model, k)
                        r.status = VIOLATED
                        r.note = (f"a {k}-step interleaving breaks it (shortest; "
                                  "replayed on the model)")
                    except Unconfirmed as e:
                        r.status, r.note = UNKNOWN, str(e)
                    open_.remove(t)
                elif answer == "unknown":
                    r.status = UNKNOWN
                    r.note = f"a query at depth {k} timed out ({timeout_ms} ms)"
                    open_.remove(t)
        if progress is not None:
            progress({"phase": "bmc", "depth": k, "of": ctx.N, "open": len(open_),
                      "seconds": time.monotonic() - t0})
        if not open_:
            break
    typing_ok = res[TYPING].status == PROVED
    for r in res.values():
        if r.status == PROVED:
            if not typing_ok:
                r.status = UNKNOWN
                r.note = (f"not proved: the Z3 reading is the model's on in-range states, "
                          f"and {TYPING} is not proved")
            else:
                r.note = f"no violation in any of the runs (at most {ctx.N} steps)"
    seconds = time.monotonic() - t0
    threads = list(sc.threads)
    config = ScenarioConfig(str(sc.file), f"{sc.file}: every interleaving of "
                            f"{len(threads)} thread(s), {ctx.N} step(s)")
    return ScenarioProveResult(
        config,  # type: ignore[arg-type]  # stands where an any-host Config stands
        SCENARIO, ctx.N, faults, tuple(ablate), [res[i] for i in ctx.reported],
        len(ctx.prog.edges), len(records), seconds, sum(q.seconds for q in records), 0,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, timeout_ms, records, ctx,
        file=str(sc.file), threads=threads, steps=ctx.N)


# ------------------------------------------------------------------ trace files
def write_scenario_traces(result: ScenarioProveResult, out: Any, title: str = ""
                          ) -> list[list[str]]:
    """Each violation as ``OUT/<invariant>.tdx`` (one interleaving, replayable) and
    ``.itf.json``, as ``check.write_traces`` writes the explorer's; returns the paths."""
    from pathlib import Path

    from tdxcheck.checker.explore.traces import dumps_itf, itf, scenario_tdx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prog = result.program()
    files = []
    for cx in result.counterexamples:
        base = out / cx.invariant
        head = title or f"tdxcheck prove counterexample: {result.config.describe()}"
        base.with_suffix(".tdx").write_text(scenario_tdx(prog, cx, head))
        base.with_suffix(".itf.json").write_text(dumps_itf(itf(prog, cx, result.labels(cx))))
        files.append([str(base.with_suffix(".tdx")), str(base.with_suffix(".itf.json"))])
    return files


__all__ = ["DEADLOCK", "EXPECTED", "SCENARIO", "ScenarioProveResult", "prove_scenario",
           "write_scenario_traces"]
