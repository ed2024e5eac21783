"""``tdxcheck prove --parametric``: the module's invariants for every number of TDs, vCPUs,
pages, HKIDs, packages and CPUs (Ivy/mypyvy style: uninterpreted sorts, ∀-invariants,
Z3), the third reader of the rule data.

What is proved.  The any host (every SEAMCALL with every operand, the guest's exits and
accepts, in any order; ``--faults``: every fault point too) keeps every module invariant,
every lemma of ``properties/lemmas.py`` and ``state-encoding``'s bounds, in every
reachable state of every finite instance whose platform constants (``tdcs_pages``,
``tdcx_pages``, ``max_vcpus``) and S-EPT depth are the proof's: with at least one TD
slot and one vCPU slot, and any number of pages, private HKIDs, packages, CPUs per
package and S-EPT entries (GPAs).  The invariant is inductive over uninterpreted sorts
(``houdini.py``), so it holds for each instance; the counting clauses are proved by a
per-transition delta obligation whose soundness argument is in ``obligations.py``.

What is not.  The host's obligations (scenario files, ``check --host kvm``); a different
S-EPT depth or platform constant (one proof each); 2M/1G pages and the migration leaves
(not in the model).  Readers and files:

* ``sym.py``: the symbolic universe the leaf builders run on (operands as terms);
* ``logic.py``: sorts, fields as functions, expressions, effects as post-state closures;
* ``transitions.py``: the parametric any host (shapes of ``any_host_actions``);
* ``targets.py``: invariants, lemmas and ``state-encoding`` as ∀-clauses, counts split out;
* ``obligations.py``: hypotheses, goals, the counting delta obligation (and its proof);
* ``houdini.py``: the rounds; ``cti.py``: bounded counterexamples to induction;
* ``finite.py``: a bounded instance paired cell for cell with a finite ``Universe``.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tdxcheck.checker.explore.bfs import Counterexample
from tdxcheck.checker.explore.programs import Config
from tdxcheck.checker.scenario import InputError
from tdxcheck.model.state import Platform

from .cti import ParamCTI, Search, confirm
from .houdini import (
    FAST_MS,
    NOT_INDUCTIVE,
    PROVED,
    UNKNOWN,
    VIOLATED,
    Context,
    Failure,
    Query,
    initial_check,
    run_round,
)
from .targets import TYPING

#: the fewest pages bounded model checking looks for a violation with
BMC_PAGES = 3
#: what "all sizes" covers, and what a proof keeps fixed (the reports print it)
SIZES = ("every number of TDs and vCPUs (>= 1 each), pages, private HKIDs, packages, CPUs "
         "per package and S-EPT entries")


@dataclass
class PTargetResult:
    invariant: str
    kind: str
    summary: str
    status: str
    seconds: float = 0.0
    queries: int = 0
    frame: int = 0
    slowest: tuple[float, str] | None = None
    cti: ParamCTI | None = None
    counterexample: Counterexample | None = None
    note: str = ""


@dataclass
class ParamResult:
    fixed: Platform
    faults: bool
    ablate: tuple[str, ...]
    results: list[PTargetResult]
    transitions: int
    queries: int
    seconds: float
    solver_seconds: float
    rounds: int
    timeout_ms: int
    peak_rss_mib: float
    records: list[Query] = field(default_factory=list)
    only: tuple[str, ...] = ()
    _ctx: Any = None
    _finite: dict[str, Any] = field(default_factory=dict)  # target -> finite _Ctx (traces)

    mode = "parametric"

    @property
    def ok(self) -> bool:
        return all(r.status == PROVED for r in self.results)

    @property
    def exit_status(self) -> int:
        if self.ok:
            return 0
        bad = {r.status for r in self.results} - {PROVED}
        return 3 if bad == {UNKNOWN} else 1

    def fixed_text(self) -> str:
        p = self.fixed
        return (f"S-EPT depth {p.sept_levels}, TDCS pages {p.tdcs_pages}, TDCX pages "
                f"{p.tdcx_pages}, max_vcpus {p.max_vcpus}")

    def program(self, target: str) -> Any:
        return self._finite[target].program()


def prove_parametric(config: Config, *, sept_levels: int | None = None, faults: bool = False,
                     ablate: Sequence[str] = (), timeout_ms: int = 60_000,
                     invariants: Sequence[str] | None = None, confirm_depth: int = 12,
                     confirm_seconds: float = 60.0, cti_seconds: float = 60.0,
                     progress: Callable[[dict[str, Any]], None] | None = None,
                     edges: Sequence[int] | None = None) -> ParamResult:
    """Houdini over every module invariant, every lemma, ``state-encoding``'s bounds and
    the counting obligations, for all sizes, on ``config``'s platform constants (and
    ``sept_levels``, if given).  A dropped target gets a bounded CTI (``cti.py``, at most
    ``cti_seconds``) confirmed on the engine, and is ``violated`` when bounded model
    checking at the CTI's sizes (``confirm_depth`` steps, ``confirm_seconds``) reaches
    it.  ``edges``: only these transitions in the first round (the ablation sweep: the
    other transitions' queries are the unablated proof's)."""
    t0 = time.monotonic()
    fixed = config.platform
    if sept_levels is not None:
        if sept_levels < 1:
            raise InputError("--sept-levels must be >= 1")
        fixed = Platform(**{**fixed.__dict__, "sept_levels": sept_levels})
    ctx = Context(fixed, faults, tuple(ablate))
    known = {t.id for t in ctx.targets}
    if invariants:
        bad = [i for i in invariants if i not in known]
        if bad:
            raise InputError(f"unknown invariant(s): {', '.join(bad)} (have: "
                             f"{', '.join(sorted(known))})")
    res = {t.id: PTargetResult(t.id, t.kind, t.summary, PROVED) for t in ctx.targets}
    records: list[Query] = []
    dropped: dict[str, Failure] = {}
    hyps = []
    for t in ctx.targets:
        f = initial_check(ctx, t, timeout_ms)
        if f is None:
            hyps.append(t)
        else:
            dropped[t.id] = f
    rounds = 0
    search = Search(fixed, faults, tuple(ablate), timeout_ms)

    def fallback(tid: str, eid: int, goal: Any, ids: list[str]) -> ParamCTI | None:
        cti = search.find(tid, eid, goal.what, ctx.trans[eid].text, ids, cti_seconds,
                          quick=True)
        return cti if cti.config is not None else None

    while True:
        if not any(t.id == TYPING for t in hyps):
            break  # sorts stand for the finite cells only while the counters are in range
        rounds += 1
        r = run_round(ctx, hyps, timeout_ms, rounds, progress, t0,
                      edges=edges if rounds == 1 else None, fallback=fallback)
        records += r.queries
        for t in hyps:
            res[t.id].frame = r.frame.get(t.id, 0)
        if not r.failed:
            break
        dropped.update(r.failed)
        hyps = [t for t in hyps if t.id not in r.failed]
    if not any(t.id == TYPING for t in hyps):
        for t in hyps:
            dropped[t.id] = Failure("assumes-typing", -1, None)  # type: ignore[arg-type]
        hyps = []
    for q in records:
        tr = res[q.target]
        tr.seconds += q.seconds
        tr.queries += 1
        if tr.slowest is None or q.seconds > tr.slowest[0]:
            tr.slowest = (q.seconds, ctx.trans[q.edge].text)
    proved = [t.id for t in hyps]
    result = ParamResult(fixed, faults, tuple(ablate), [], len(ctx.trans), len(records),
                         0.0, sum(q.seconds for q in records), rounds, timeout_ms, 0.0,
                         records, tuple(invariants or ()), ctx)
    for tid, f in dropped.items():
        out = res[tid]
        if f.answer == "assumes-typing":
            out.status = UNKNOWN
            out.note = (f"not proved: every query assumes {TYPING} (the counters in range), "
                        "which is not proved")
            continue
        lost = sorted(k for k, v in dropped.items() if v.round and v.round < f.round)
        if f.answer == "initial":
            out.status = VIOLATED
            out.note = f"false in the initial state: {f.goal.what}"
            continue
        hyp_ids = [t.id for t in ctx.targets if t.id not in dropped or
                   (dropped[t.id].round >= f.round and dropped[t.id].round > 0)]
        text = ctx.trans[f.edge].text
        searched = ""
        cti = f.cti or search.find(tid, f.edge, f.goal.what, text, hyp_ids, cti_seconds)
        out.cti = cti
        if cti.config is not None:
            from tdxcheck.checker.prove.common import _Ctx

            fin = _Ctx(cti.config, faults, ablate, None, None)
            result._finite[tid] = fin
            confirm(cti, fin, hyp_ids)
            if confirm_depth > 0:
                searched, result._finite[tid] = _bmc(out, fin, proved, confirm_depth,
                                                     timeout_ms, confirm_seconds)
        if out.status == VIOLATED:
            continue
        if f.answer == "unknown" and cti.config is None:
            out.status = UNKNOWN
            out.note = f"a query timed out ({timeout_ms} ms)"
        else:
            out.status = NOT_INDUCTIVE
            out.note = (searched + "; " if searched else "") + (
                "a lemma is missing" if not lost else
                f"not inductive once {', '.join(lost)} (not proved) left the hypotheses")
            if f.cti is not None:
                out.note += (f" (the solver had not settled the query in {FAST_MS} ms; a "
                             "bounded instance has the counterexample)")
    results = [res[t.id] for t in ctx.targets]
    if invariants:
        results = [r for r in results if r.invariant in invariants]
    result.results = results
    result.seconds = time.monotonic() - t0
    result.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def affected(ctx: Context, check: str) -> list[int]:
    """The transitions whose rule (unablated) runs the module check ``check``: the only
    ones whose queries its ablation changes."""
    from tdxcheck.model.actions import rule_of
    from tdxcheck.model.rule import Check, Ctx

    out = []
    for tr in ctx.trans:
        rule = rule_of(tr.action, Ctx(ctx.su, None, tr.cpu, frozenset()))  # type: ignore[arg-type]
        if any(isinstance(st, Check) and st.name == check for st in rule.steps):
            out.append(tr.eid)
    return out


@dataclass
class Caught:
    """What the first Houdini round says about an ablated (or mutated) model."""

    failed: dict[str, str]  # target -> sat | unknown
    ctis: dict[str, ParamCTI]
    seconds: float


def first_round(fixed: Platform, *, faults: bool = False, ablate: Sequence[str] = (),
                edges: Sequence[int] | None = None, timeout_ms: int = 60_000,
                cti_seconds: float = 60.0, only: Sequence[str] | None = None,
                prefer: Sequence[str] | None = None) -> Caught:
    """The first round of the parametric proof over ``edges`` (the other transitions'
    queries are the unablated proof's, all unsat), each failed target (of ``only``) with
    its bounded CTI confirmed on the engine (``prefer``: only one, the first failed of
    these, else the first failed): enough to say whether a check's removal is caught."""
    from tdxcheck.checker.prove.common import _Ctx

    t0 = time.monotonic()
    ctx = Context(fixed, faults, tuple(ablate))
    hyps = [t for t in ctx.targets if initial_check(ctx, t, timeout_ms) is None]
    search = Search(fixed, faults, tuple(ablate), timeout_ms)

    def fallback(tid: str, eid: int, goal: Any, ids: list[str]) -> ParamCTI | None:
        cti = search.find(tid, eid, goal.what, ctx.trans[eid].text, ids, cti_seconds,
                          quick=True)
        return cti if cti.config is not None else None

    r = run_round(ctx, hyps, timeout_ms, 1, edges=edges, fallback=fallback)
    ctis = {}
    ids = [t.id for t in hyps]
    if prefer is not None and r.failed:  # one CTI: a preferred target's, else the first
        only = [next((p for p in prefer if p in r.failed), min(r.failed))]
    for tid, f in sorted(r.failed.items()):
        if only is not None and tid not in only:
            continue
        cti = f.cti or search.find(tid, f.edge, f.goal.what, ctx.trans[f.edge].text, ids,
                                   cti_seconds)
        if cti.config is not None:
            confirm(cti, _Ctx(cti.config, faults, tuple(ablate), None, None), ids)
        ctis[tid] = cti
    return Caught({k: f.answer for k, f in sorted(r.failed.items())}, ctis,
                  time.monotonic() - t0)


def _bmc(out: PTargetResult, fin: Any, proved: list[str], depth: int, timeout_ms: int,
         budget: float) -> tuple[str, Any]:
    """``violated`` if bounded model checking from the initial state of the CTI's
    universe reaches a violation (the finite prover's BMC, replayed on the engine); else
    what was searched; and the finite context searched."""
    from tdxcheck.checker.prove.bmc import _bmc_search

    targets = [t for t in fin.targets if t.id == out.invariant]
    if not targets:
        return "", fin
    facts = [t for t in fin.targets if t.id in proved]
    found, searched = _bmc_search(fin, targets, fin.path_targets, depth, timeout_ms, None,
                                  time.monotonic(), [], facts=facts, budget=budget)
    if found[out.invariant].status != VIOLATED and fin.config.pages < BMC_PAGES:
        # a CTI with one or two pages may be too small to reach: a TD needs its TDR, TDCS
        # and data pages before most violations; the same universe with inert pages added
        from tdxcheck.checker.prove.common import _Ctx

        big = _Ctx(Config(fin.config.name, fin.config.platform, fin.config.tds,
                          fin.config.vps, BMC_PAGES, fin.config.gpas),
                   fin.faults, fin.ablate, None, None)
        targets = [t for t in big.targets if t.id == out.invariant]
        facts = [t for t in big.targets if t.id in proved]
        found, searched = _bmc_search(big, targets, big.path_targets, depth, timeout_ms,
                                      None, time.monotonic(), [], facts=facts, budget=budget)
        fin = big
    f = found[out.invariant]
    if f.status == VIOLATED and f.trace is not None:
        out.status, out.counterexample = VIOLATED, f.trace
        out.note = (f"reachable: a {f.trace.length}-step run breaks it at the CTI's sizes "
                    f"(at least {BMC_PAGES} pages: {fin.config.describe()})")
        return "", fin
    return (f"no violation within {max(searched, 0)} steps at the CTI's sizes (at least "
            f"{BMC_PAGES} pages)"), fin


__all__ = [
    "NOT_INDUCTIVE",
    "PROVED",
    "SIZES",
    "UNKNOWN",
    "VIOLATED",
    "Caught",
    "PTargetResult",
    "ParamResult",
    "affected",
    "first_round",
    "prove_parametric",
]
