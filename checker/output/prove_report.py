"""``tdxcheck prove`` for people and tools: the per-target table, counterexamples to
induction, reachable counterexamples, totals (``prove_text``/``prove_json``), and the same for
``prove --host FILE`` (``scenario_text``/``scenario_json``).  The engines in ``prove/`` return
``ProveResult``/``ScenarioProveResult``; this file only formats them."""

from __future__ import annotations

from typing import Any

from tdxcheck.checker.prove.common import (
    CTI,
    INDUCTION,
    NO_VIOLATION,
    NOT_INDUCTIVE,
    PROVED,
    VIOLATED,
    ProveResult,
    QueryRecord,
    TargetResult,
)
from tdxcheck.checker.prove.scenario_bmc import ScenarioProveResult

from .report import counterexample_text


def options_lines(r: ProveResult) -> list[str]:
    """The header line naming the options that change what was proved, if any."""
    extra = (["fault points on"] if r.faults else []) + (
        ["ablated: " + ", ".join(r.ablate)] if r.ablate else [])
    return ["  " + "; ".join(extra)] if extra else []


def prove_text(result: ProveResult, verbose: bool = False) -> str:
    """For people: one line per invariant and lemma (status, time, queries), then each
    counterexample to induction and each violation, then the totals."""
    r = result
    out = [f"tdxcheck prove ({r.mode}): host any, config {r.config.describe()}",
           *options_lines(r)]
    out.append(f"  {r.transitions} transitions, per-query timeout {r.timeout_ms} ms")
    if r.only and r.mode == INDUCTION:
        out.append("  shown: " + ", ".join(r.only) + "; proved together with every other "
                   "invariant, lemma and state-encoding (each query assumes them all)")
    out.append("")
    width = max([len(t.invariant) for t in r.results] + [10])
    for t in r.results:
        kind = {"lemma": " (lemma)", "typing": " (cells in range)"}.get(t.kind, "")
        line = (f"  {t.invariant:<{width}}  {t.status:<13} {t.seconds:7.2f}s  "
                f"{t.queries:5d} queries")
        if r.mode == INDUCTION:
            line += f", {t.frame} by frame"
        out.append(line + kind)
        if verbose and t.slowest:
            out.append(f"      slowest: {t.slowest[0]:.3f}s on {t.slowest[1]}")
        if t.uses is not None and t.status == PROVED:
            out.append("      uses: " + (", ".join(t.uses) or "itself only") + (
                f" ({t.no_core} queries without a core: may use any)" if t.no_core else ""))
        if t.note and t.status != PROVED:
            out.append(f"      {t.note}")
    for t in r.results:
        if t.cti is not None and (t.status == NOT_INDUCTIVE or verbose):
            out.append("")
            out.append(cti_text(t.cti, "not inductive" if t.status == NOT_INDUCTIVE
                                else t.status))
        if t.counterexample is not None:
            out.append("")
            out.append(_cx_text(r, t))
    scope = r.scope()
    if scope:
        out.append("")
        out.append("not proved by this run (--host any):")
        for why in dict.fromkeys(w for _i, w in scope):
            out.append("  " + ", ".join(i for i, w in scope if w == why) + ":")
            out.append(f"      {why}")
    out.append("")
    if verbose and r.records:
        out.append("queries (target, edge, answer, seconds):")
        ctx = r._ctx
        for q in r.records:
            where = ctx.trans[q.edge].text if r.mode == INDUCTION and q.round else \
                f"depth {q.edge}"
            out.append(f"  {q.target:<{width}} {q.answer:<8} {q.seconds:8.4f}s  {where}")
        out.append("")
    qps = f"{r.queries_per_second:,.0f} queries/s" if r.queries else "no queries"
    n_ok = sum(t.status in (PROVED, NO_VIOLATION) for t in r.results)
    verdict = "all proved" if r.ok and r.mode == INDUCTION else (
        f"no violation in {r.depth} steps" if r.ok else "NOT PROVED" if r.mode == INDUCTION
        else "VIOLATED")
    out.append(f"{verdict}: {n_ok}/{len(r.results)} "
               f"{'proved' if r.mode == INDUCTION else 'without violation'}; "
               f"{r.queries} queries in {r.solver_seconds:.1f}s ({qps}), "
               f"{r.rounds if r.mode == INDUCTION else r.depth} "
               f"{'round(s)' if r.mode == INDUCTION else 'steps'}, total {r.seconds:.1f}s, "
               f"peak memory {r.peak_rss_mib:.0f} MiB")
    return "\n".join(out)


def cti_text(c: CTI, label: str) -> str:
    out = [f"[{c.invariant}] {label}: counterexample to induction"
           + (" (a lemma is missing)" if label == "not inductive" else
              " (and reachable: see the trace)" if label == VIOLATED else ""),
           f"  step: {c.transition}" + (f" -> {c.status}" if c.status else "")]
    for m in c.clauses:
        out.append(f"  breaks: {m}")
    out.append("  the step changes:")
    for f, a, b in c.changes:
        out.append(f"       {f}: {a} -> {b}")
    if not c.changes:
        out.append("       nothing")
    if c.context:
        out.append("  in a state where (every hypothesis holds; fields not shown are as in "
                   "the initial state):")
        for f, v, mark in c.context:
            out.append(f"       {f} = {v}{'   <- read by the broken clause' if mark else ''}")
    if not c.replayed:
        out.append("  !! the concrete engine gives a different next state (encoding bug)")
    elif not c.confirmed:
        out.append("  !! the compiled Python reading does not confirm this CTI")
    return "\n".join(out)


def _cx_text(r: ProveResult, t: TargetResult) -> str:
    cx = t.counterexample
    assert cx is not None
    how = "by bounded model checking" if cx.length else "in the initial state"
    head = f"[{t.invariant}] violated: a reachable counterexample, found {how}"
    if not cx.path:
        return f"{head}: {cx.message}"
    prog = r.program()
    return head + " and replayed on the model\n" + counterexample_text(
        prog, cx, r.labels(cx))


def prove_json(result: ProveResult, queries: bool = False) -> dict[str, Any]:
    """``{"results": [{"invariant", "status", "seconds", "cti"?}], ...totals}``; with
    ``queries`` also every query (target, transition or depth, answer, seconds)."""
    r = result
    rows = []
    for t in r.results:
        row: dict[str, Any] = {"invariant": t.invariant, "status": t.status,
                               "seconds": round(t.seconds, 4), "kind": t.kind,
                               "queries": t.queries}
        if r.mode == INDUCTION:
            row["frame"] = t.frame
        if t.slowest:
            row["slowest"] = {"seconds": round(t.slowest[0], 4), "transition": t.slowest[1]}
        if t.cti is not None and t.status != PROVED:
            row["cti"] = t.cti.to_json()
        if t.counterexample is not None:
            cx = t.counterexample
            row["counterexample"] = {
                "message": cx.message, "length": cx.length,
                "trace": r.labels(cx) if cx.path else []}
        if t.note:
            row["note"] = t.note
        if t.uses is not None and t.status == PROVED:
            row["uses"] = t.uses
            if t.no_core:
                row["queries_without_core"] = t.no_core
        rows.append(row)
    return {
        "mode": r.mode, "config": r.config.name, "faults": r.faults, "ablate": list(r.ablate),
        "depth": r.depth, "transitions": r.transitions, "results": rows,
        "not_proved_here": [{"invariant": i, "why": why} for i, why in r.scope()],
        "queries": r.queries, "solver_seconds": round(r.solver_seconds, 3),
        "seconds": round(r.seconds, 3), "queries_per_second": round(r.queries_per_second, 1),
        "rounds": r.rounds, "peak_rss_mib": round(r.peak_rss_mib, 1), "ok": r.ok,
        **({"query_log": [_query_json(r, q) for q in r.records]} if queries else {}),
    }


def _query_json(r: ProveResult, q: QueryRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"target": q.target, "answer": q.answer,
                           "seconds": round(q.seconds, 5)}
    if q.round:  # an induction query
        out.update(transition=r._ctx.trans[q.edge].text, round=q.round,
                   solver_calls=q.calls)
    else:
        out["depth"] = q.edge
    return out


def scenario_text(result: ScenarioProveResult, verbose: bool = False) -> str:
    """For people: one line per invariant (status, time, queries), then each violation as
    the explorer prints it, then the totals."""
    r = result
    out = [f"tdxcheck prove: {r.config.describe()}",
           f"  bounded model checking to depth {r.depth} (every run: a complete proof)",
           *options_lines(r)]
    out.append(f"  {r.transitions} edges, per-query timeout {r.timeout_ms} ms")
    out.append("")
    width = max([len(t.invariant) for t in r.results] + [10])
    for t in r.results:
        out.append(f"  {t.invariant:<{width}}  {t.status:<9} {t.seconds:7.2f}s  "
                   f"{t.queries:5d} queries")
        if t.note and (t.status != PROVED or verbose):
            out.append(f"      {t.note}")
    prog = r.program()
    for t in r.results:
        cx = t.counterexample
        if cx is not None:
            out.append("")
            out.append(f"[{t.invariant}] violated: found by bounded model checking "
                       "(shortest) and replayed on the model")
            out.append(counterexample_text(prog, cx, r.labels(cx)))
    out.append("")
    if verbose and r.records:
        out.append("queries (target, answer, seconds, depth):")
        for q in r.records:
            out.append(f"  {q.target:<{width}} {q.answer:<8} {q.seconds:8.4f}s  "
                       f"depth {q.edge}")
        out.append("")
    n_ok = sum(t.status == PROVED for t in r.results)
    verdict = "all proved" if r.ok else (
        "VIOLATED" if any(t.status == VIOLATED for t in r.results) else "NOT PROVED")
    out.append(f"{verdict}: {n_ok}/{len(r.results)} proved; {r.queries} queries in "
               f"{r.solver_seconds:.1f}s, depth {r.depth}, total {r.seconds:.1f}s, "
               f"peak memory {r.peak_rss_mib:.0f} MiB")
    return "\n".join(out)


def scenario_json(result: ScenarioProveResult, queries: bool = False) -> dict[str, Any]:
    """``{"results": [{"invariant", "status", "seconds", ...}], ...}`` as ``prove_json``."""
    r = result
    rows = []
    for t in r.results:
        row: dict[str, Any] = {"invariant": t.invariant, "status": t.status,
                               "seconds": round(t.seconds, 4), "kind": t.kind,
                               "queries": t.queries}
        if t.counterexample is not None:
            cx = t.counterexample
            row["counterexample"] = {"message": cx.message, "length": cx.length,
                                     "trace": r.labels(cx)}
        if t.note:
            row["note"] = t.note
        rows.append(row)
    out: dict[str, Any] = {
        "mode": r.mode, "host": r.file, "threads": r.threads, "faults": r.faults,
        "ablate": list(r.ablate), "depth": r.depth, "transitions": r.transitions,
        "results": rows, "queries": r.queries, "solver_seconds": round(r.solver_seconds, 3),
        "seconds": round(r.seconds, 3), "peak_rss_mib": round(r.peak_rss_mib, 1),
        "ok": r.ok}
    if queries:
        out["query_log"] = [{"target": q.target, "answer": q.answer,
                             "seconds": round(q.seconds, 5), "depth": q.edge}
                            for q in r.records]
    return out
