"""``tdxcheck prove``: the invariants for runs of any length (induction), and bounded model
checking, with Z3 over the rule data (``encode.py``, the one Z3 reading).

Scope: ``--host any`` (``programs.AnyHost``): its transitions are ``any_host_actions(u)``
with their host-side guards (plus every fault point with ``faults``), its initial state is
``AnyHost.initial()``, and only the clauses the *module* guarantees are proved
(``Invariant.state_clauses(u, "module")``, ``step_clauses(u, a, "module")``).  Scenario
files are not proved here (``tdxcheck check FILE`` explores them).

Induction (mypyvy ``verify``, Apalache ``--init=IndInv --length=1``): the *hypotheses* are
every module invariant, every lemma of ``properties/lemmas.py`` and ``state-encoding``
(every cell within its ``Layout.value_bound``, enum cells members of their enum: the
range in which the Z3 and the Python readings of a rule agree).  Each hypothesis must hold
in the initial state (in both readings, which must agree there), and for each hypothesis
*T* and each transition *a* the query

    typing(s) ∧ hypotheses(s) ∧ guard_a(s) ∧ enabled_a(s) ∧ s' = a(s) ∧ ¬T(s, s')

must be unsat (a step invariant's clauses read ``s`` and ``s'``).  A transition that
changes no cell a state hypothesis reads keeps it (the frame rule): no query is asked.
If every query is unsat the conjunction of the hypotheses is inductive, so each holds in
every reachable state.  If some query is sat (or unknown), that hypothesis is dropped and
the others are proved again without it (Houdini), until what is left is inductive: those
are ``proved``; a dropped one is ``violated`` if a bounded search from the initial state
reaches a violation (a trace that replays on ``Engine``), else ``not-inductive`` with its
counterexample to induction (CTI): the transition with its operands and a minimised
two-state diff.  A solver timeout is ``unknown``, never ``proved``.  Every query assumes
``typing(s)``, so once ``state-encoding`` is dropped nothing else is proved: the hypotheses
left are ``unknown`` ("assumes state-encoding"), or ``violated`` if the bounded search finds
a run.  The frame rule (``FRAME_RULE``) only skips a state clause none of whose cells
(``read_cells``, indices included) the transition's next-state terms change; step clauses
are asked for every transition.  With ``cores=True`` each proved target also lists the
hypotheses the (minimised) unsat cores of its queries name (``TargetResult.uses``).

The engine returns data (``ProveResult``); ``prove_text``/``prove_json`` format it, and
``ProveResult.exit_status`` is the exit code (0 proved, 1 violated or not inductive, 3 only
timeouts).  The front end maps ``tdxcheck prove [--config NAME] [key=value ...] [--faults]
[--ablate CHECK] [--bmc --depth K] [--timeout-ms N] [--json] [-v] [--trace-out DIR]`` onto
``prove(make_config(NAME, overrides), ...)``; ``--host FILE`` (a scenario) is not proved.

Where things are: ``common.py`` (solver calls, records, the context), this file
(Houdini rounds and the ``prove`` entry), ``cti.py`` (minimising and reading a CTI),
``bmc.py`` (bounded model checking), ``checker/output/prove_report.py`` (text, JSON).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from typing import Any

import z3
from tdxcheck.checker.explore.bfs import Counterexample
from tdxcheck.checker.explore.programs import (
    Config,
)

from .bmc import _bmc_search, _Found
from .common import (
    ASSUMES_TYPING,
    BMC,
    CTI,
    INDUCTION,
    NO_VIOLATION,
    NOT_INDUCTIVE,
    PROVED,
    TYPING,
    UNKNOWN,
    VIOLATED,
    Progress,
    ProveResult,
    QueryRecord,
    Target,
    TargetResult,
    Transition,
    _Ctx,
    _incremental,
    _one_shot,
)
from .cti import read_cti
from .encode import enabled_term

#: with ``cores``: the budget per goal for its unsat core (ms)
CORE_MS = 10_000
#: skip the clauses a transition cannot change (off: every clause of every target is a
#: goal for every transition; the tests check both give the same verdicts)
FRAME_RULE = True


# ------------------------------------------------------------------ induction
class _Induction:
    """One Houdini round: every (hypothesis, transition) query against one hypothesis set."""

    def __init__(self, ctx: _Ctx, hyps: list[Target], timeout_ms: int, round_no: int,
                 progress: Progress | None, t0: float, cores: bool = False) -> None:
        self.ctx, self.hyps, self.timeout_ms = ctx, hyps, timeout_ms
        self.round = round_no
        self.progress, self.t0 = progress, t0
        enc = ctx.enc
        self.pre = enc.fresh_state("s")
        self.sol = z3.Solver()
        self.sol.set("timeout", timeout_ms)
        assert any(h.kind == "typing" for h in hyps), "the background assumes the typing"
        self.background: list[Any] = [enc.typing(self.pre, members=True)]
        for h in hyps:
            if h.clauses:
                self.background += enc.clauses([c.ok for c in h.clauses], self.pre)
        self.sol.add(*self.background)
        self.records: list[QueryRecord] = []
        self.failed: dict[str, tuple[str, CTI | None]] = {}  # target -> (answer, CTI)
        self.frame: dict[str, int] = {}
        self.modes: dict[str, tuple[int, int]] = {}  # target -> (settled fast, fell through)
        # unsat cores (``cores``): which hypotheses each target's unsat queries used, on a
        # second solver where each hypothesis is guarded by a literal (only reported)
        self.cores = cores
        self.uses: dict[str, set[str]] = {}
        self.no_core: dict[str, int] = {}  # target -> queries whose core was not found
        if cores:
            self.lits = {h.id: z3.Bool(f"hyp:{h.id}") for h in hyps if h.clauses}
            self.core_sol = z3.Solver()
            self.core_sol.set("core.minimize", True)
            self.core_sol.add(self.background[0])
            for h in hyps:
                if h.clauses:
                    self.core_sol.add(z3.Implies(self.lits[h.id], z3.And(*enc.clauses(
                        [c.ok for c in h.clauses], self.pre))))

    def run(self) -> None:
        ctx, enc, sol = self.ctx, self.ctx.enc, self.sol
        n = len(ctx.trans)
        last = time.monotonic()
        for k, tr in enumerate(ctx.trans):
            st, post, where = enc.action(ctx.engine, tr.action, self.pre, tr.fault)
            changed = frozenset(i for i in range(len(post)) if not z3.eq(post[i], self.pre[i]))
            step_facts = [enabled_term(where)]
            if tr.guard is not None:
                step_facts.append(enc.cond(tr.guard, self.pre))
            sol.push()
            sol.add(*step_facts)
            if self.cores:
                self.core_sol.push()
                self.core_sol.add(*step_facts)
            for h in self.hyps:
                if h.id in self.failed:
                    continue  # already out of this round's conclusions
                goals = self._goals(h, tr, post, changed)
                if not goals:
                    self.frame[h.id] = self.frame.get(h.id, 0) + 1
                    continue
                # one solver call per clause: ¬(c1 ∧ ... ∧ cn) is sat iff some ¬ci is, and
                # the calls one at a time are much faster than the disjunction
                t1 = time.monotonic()
                answer = "unsat"
                for g in goals:
                    r, model = self._check(h.id, z3.Not(g), step_facts)
                    if r == "sat":
                        answer = "sat"
                        self.failed[h.id] = ("sat", read_cti(self, h, tr, st, post, g, model))
                        break
                    if r == "unknown":
                        answer = "unknown"
                if answer == "unknown":
                    self.failed.setdefault(h.id, ("unknown", None))
                self.records.append(QueryRecord(h.id, tr.eid, answer,
                                                time.monotonic() - t1, self.round,
                                                len(goals)))
                if answer == "unsat" and self.cores:
                    self._core(h, goals)  # not timed: only a report
            sol.pop()
            if self.cores:
                self.core_sol.pop()
            now = time.monotonic()
            if self.progress is not None and (now - last > 1.0 or k == n - 1):
                last = now
                self.progress({"phase": "induction", "round": self.round, "done": k + 1,
                               "total": n, "queries": len(self.records),
                               "failed": len(self.failed), "seconds": now - self.t0})

    def _core(self, h: Target, goals: list[Any]) -> None:
        """The hypotheses an unsat query used (its minimised unsat core), added to
        ``uses[h]``; a goal the core solver does not settle in ``CORE_MS`` is counted in
        ``no_core`` (then every hypothesis may have been used)."""
        cs = self.core_sol
        cs.set("timeout", CORE_MS)
        used = self.uses.setdefault(h.id, set())
        for g in goals:
            cs.push()
            cs.add(z3.Not(g))
            r = cs.check(*self.lits.values())
            if r == z3.unsat:
                used.update(str(x).removeprefix("hyp:") for x in cs.unsat_core())
            else:
                self.no_core[h.id] = self.no_core.get(h.id, 0) + 1
            cs.pop()

    def _check(self, target: str, negated_goal: Any, step_facts: list[Any]
               ) -> tuple[str, Any]:
        """sat | unsat | unknown, and a model when sat.

        First the incremental solver (the hypotheses asserted once, the transition pushed),
        briefly: most goals are settled in a few milliseconds there.  A goal it does not
        settle in ``FAST_MS`` (the counting clauses: a sum over pages or vCPUs) goes to a
        fresh solver that preprocesses and bit-blasts the whole query (``_TACTIC``), which
        is several times faster on those, with the full timeout.  A target whose goals
        keep falling through goes to the one-shot solver directly."""
        spent = 0.0
        fast_ok, slow = self.modes.get(target, (0, 0))
        if slow < 2 or slow * 3 < fast_ok:
            answer, model, spent = _incremental(self.sol, negated_goal, self.timeout_ms)
            if answer == "sat":
                return "sat", model
            if answer == "unsat":
                self.modes[target] = (fast_ok + 1, slow)
                return "unsat", None
            self.modes[target] = (fast_ok, slow + 1)
        return _one_shot([*self.background, *step_facts], negated_goal,
                         int(self.timeout_ms - spent))

    def _goals(self, h: Target, tr: Transition, post: list[Any],
               changed: frozenset[int]) -> list[Any]:
        """The target's clauses on the post-state that the step may change, one term each
        (a state clause reading a changed cell, each step clause; for ``state-encoding``
        each changed cell's range)."""
        enc, pre = self.ctx.enc, self.pre
        if not FRAME_RULE:  # every clause and cell (tests: the frame rule changes nothing)
            changed = frozenset(range(len(post)))
        if h.kind == "typing":
            return [z3.substitute(self.ctx.cell_typing(i, pre), (pre[i], post[i]))
                    for i in sorted(changed)]
        rel = [c.ok for c, rs in zip(h.clauses, h.read_sets, strict=True) if rs & changed]
        goals = enc.clauses(rel, post) if rel else []
        step = h.step_clauses(self.ctx, tr.action)
        if step:
            goals += enc.clauses([c.ok for c in step], pre, post)
        return goals


# ------------------------------------------------------------------ the entry point
def prove(config: Config, *, mode: str = INDUCTION, depth: int | None = None,
          timeout_ms: int = 60_000, ablate: Sequence[str] = (),
          invariants: Sequence[str] | None = None, lemmas: Sequence[str] | None = None,
          faults: bool = False, confirm_depth: int | None = None,
          confirm_seconds: float = 60.0, progress: Progress | None = None,
          cores: bool = False) -> ProveResult:
    """Prove the module invariants of ``config`` for ``--host any``.

    ``mode="induction"``: every module invariant (or the ids in ``invariants``), with the
    lemmas of ``properties/lemmas.py`` (or those in ``lemmas``), proved inductive together;
    a hypothesis that is not is searched for by BMC from the initial state, up to
    ``confirm_depth`` steps (default ``depth``, else 12) and ``confirm_seconds``, with the
    proved hypotheses as facts on every state, to tell ``violated`` from ``not-inductive``.
    ``mode="bmc"``: bounded model checking to ``depth`` (default 8) steps; every invariant
    (or those in ``invariants``) and ``state-encoding`` gets its shortest violation or
    ``no-violation``; as in the explorer, no path runs through a state that breaks any
    module invariant.
    ``timeout_ms`` bounds each solver query; a timeout is ``unknown``.
    ``cores``: also record, per proved target, the hypotheses its queries' unsat cores
    name (``TargetResult.uses``; "lemmas used"), at the cost of a second solver pass.
    """
    if mode not in (INDUCTION, BMC):
        raise ValueError(f"unknown mode {mode!r} (have: {INDUCTION}, {BMC})")
    t0 = time.monotonic()
    # induction proves the named invariants together with every other hypothesis (each
    # query assumes them all) and reports only the named ones; bmc searches the named ones
    ctx = _Ctx(config, faults, ablate, invariants if mode == BMC else None,
               lemmas if mode == INDUCTION else ())
    if invariants is not None:
        ctx.check_ids(invariants)
    records: list[QueryRecord] = []
    results: list[TargetResult] = []
    rounds = 0
    if mode == BMC:
        depth = 8 if depth is None else depth
        targets = ctx.targets
        found, _done = _bmc_search(ctx, targets, ctx.path_targets, depth, timeout_ms,
                                   progress, t0, records)
        for t in targets:
            f = found[t.id]
            note = ""
            if f.status == NO_VIOLATION:
                note = f"no violation in {depth} steps (not a proof)"
            elif f.status == UNKNOWN:
                note = f.note or f"a query timed out ({timeout_ms} ms)"
            results.append(TargetResult(t.id, t.kind, t.summary, f.status, f.seconds,
                                        f.queries, counterexample=f.trace, note=note))
    else:
        results, rounds, depth = _induction(
            ctx, timeout_ms, confirm_depth if confirm_depth is not None else depth,
            confirm_seconds, progress, t0, records, cores)
        if invariants is not None:
            results = [r for r in results if r.invariant in invariants]
    seconds = time.monotonic() - t0
    return ProveResult(
        config, mode, depth, faults, tuple(ablate), results, len(ctx.trans),
        len(records), seconds, sum(r.seconds for r in records), rounds,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, timeout_ms, records, ctx,
        tuple(invariants or ()))


def _induction(ctx: _Ctx, timeout_ms: int, confirm_depth: int | None,
               confirm_seconds: float, progress: Progress | None, t0: float,
               records: list[QueryRecord], cores: bool = False
               ) -> tuple[list[TargetResult], int, int | None]:
    res = {t.id: TargetResult(t.id, t.kind, t.summary, PROVED) for t in ctx.targets}
    # initially true, in both readings (they must agree: the initial state is in range)
    hyps: list[Target] = []
    dropped: dict[str, tuple[str, CTI | None, int]] = {}
    for t in ctx.targets:
        msg = ctx.concrete_violation(t, None, ctx.initial, None)
        if (msg is None) != ctx.z3_holds_initially(t):
            raise AssertionError(f"{t.id}: the Z3 and the Python readings disagree on the "
                                 "initial state")
        if msg is not None:
            res[t.id].status = VIOLATED
            res[t.id].counterexample = Counterexample(t.id, msg, [], [ctx.initial])
            res[t.id].note = "false in the initial state"
        else:
            hyps.append(t)
    rounds = 0
    while True:
        if not any(t.kind == "typing" for t in hyps):
            # every query assumes the cells in range (where the Z3 reading is the model's):
            # without state-encoding nothing else is proved
            for t in hyps:
                dropped[t.id] = (ASSUMES_TYPING, None, rounds)
            hyps = []
            break
        rounds += 1
        ind = _Induction(ctx, hyps, timeout_ms, rounds, progress, t0, cores)
        ind.run()
        records.extend(ind.records)
        for t in hyps:
            r = res[t.id]
            r.frame = ind.frame.get(t.id, 0)
            if cores:
                r.uses = sorted(ind.uses.get(t.id, set()) - {t.id})
                r.no_core = ind.no_core.get(t.id, 0)
        if not ind.failed:
            break
        for tid, (answer, cti) in ind.failed.items():
            dropped[tid] = (answer, cti, rounds)
        hyps = [t for t in hyps if t.id not in ind.failed]
    # per-target timing over every round
    for q in records:
        r = res[q.target]
        r.seconds += q.seconds
        r.queries += 1
        if r.slowest is None or q.seconds > r.slowest[0]:
            r.slowest = (q.seconds, ctx.trans[q.edge].text)
    # tell violated from not inductive: a bounded search from the initial state, with the
    # proved hypotheses as facts (they hold in every reachable state)
    depth = 12 if confirm_depth is None else confirm_depth
    failing = [t for t in ctx.targets if t.id in dropped]
    found: dict[str, _Found] = {}
    searched = -1
    if failing and depth > 0:
        bmc_records: list[QueryRecord] = []
        found, searched = _bmc_search(ctx, failing, ctx.path_targets, depth, timeout_ms,
                                      progress, t0, bmc_records, facts=hyps,
                                      budget=confirm_seconds)
        records.extend(bmc_records)
    for t in failing:
        answer, cti, rnd = dropped[t.id]
        r = res[t.id]
        r.cti = cti
        f = found.get(t.id, _Found())
        r.seconds += f.seconds
        if f.status == VIOLATED and f.trace is not None:
            r.status, r.counterexample = VIOLATED, f.trace
            r.note = f"reachable: a {f.trace.length}-step run breaks it"
        elif answer == "unknown":
            r.status = UNKNOWN
            r.note = f"a query timed out ({timeout_ms} ms)"
        elif answer == ASSUMES_TYPING:
            r.status = UNKNOWN
            r.note = (f"not proved: every induction query assumes {TYPING} (the cells in "
                      "range, where the Z3 reading is the model's), which is not proved")
        elif f.status == UNKNOWN and f.note:
            r.status = UNKNOWN
            r.note = f.note
        else:
            r.status = NOT_INDUCTIVE
            lost = sorted(k for k, v in dropped.items() if v[2] < rnd)
            searched_t = searched if f.status != UNKNOWN else searched - 1
            r.note = (f"no violation within {max(searched_t, 0)} steps; "
                      if depth > 0 else "") + (
                "a lemma is missing" if not lost else
                f"not inductive once {', '.join(lost)} (not proved) left the hypotheses")
    return [res[t.id] for t in ctx.targets], rounds, (searched if failing else None)


# ------------------------------------------------------------------ trace files
def write_traces(result: ProveResult, out: Any, title: str = "") -> list[list[str]]:
    """Each reachable counterexample as ``OUT/<invariant>.tdx`` (a replayable scenario) and
    ``.itf.json``, as ``check.write_traces`` writes the explorer's; returns the paths."""
    from pathlib import Path

    from tdxcheck.checker.explore.traces import any_host_tdx, dumps_itf, itf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prog = result.program() if result.counterexamples else None
    files = []
    for cx in result.counterexamples:
        if not cx.path:
            continue  # false initially: nothing to replay
        base = out / cx.invariant
        head = title or (f"tdxcheck prove ({result.mode}), host any, config "
                         f"{result.config.describe()}")
        text = any_host_tdx(prog, cx, head).replace(
            "found by tdxcheck check --host any (breadth-first: shortest)",
            "found by tdxcheck prove (bounded model checking: shortest)")
        base.with_suffix(".tdx").write_text(text)
        base.with_suffix(".itf.json").write_text(dumps_itf(itf(prog, cx, result.labels(cx))))
        files.append([str(base.with_suffix(".tdx")), str(base.with_suffix(".itf.json"))])
    return files
