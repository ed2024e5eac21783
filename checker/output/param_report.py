"""``tdxcheck prove --parametric`` for people and tools: one line on what "all sizes"
covers and what stays fixed, the per-target table, each counterexample to induction (the
smallest finite instance, confirmed on the engine), each reachable violation, the totals
(``param_text``/``param_json``); and the trace files (``write_param_traces``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tdxcheck.checker.prove.param import (
    NOT_INDUCTIVE,
    PROVED,
    SIZES,
    VIOLATED,
    ParamResult,
    PTargetResult,
)
from tdxcheck.checker.prove.param.cti import ParamCTI

from .report import counterexample_text

#: what the any host leaves to the host (printed under every run)
HOST_SCOPE = ("the host's obligations (flush-before-reclaim, flush-before-alloc, "
              "clear-before-reuse, no-leak, the host clauses of no-double-assignment and "
              "keyid-after-vpflushdone): prove them on a host, 'prove --host FILE' or "
              "'check --host kvm'")


def param_text(result: ParamResult, verbose: bool = False) -> str:
    r = result
    extra = (["fault points on"] if r.faults else []) + (
        ["ablated: " + ", ".join(r.ablate)] if r.ablate else [])
    out = ["tdxcheck prove --parametric: host any, for all sizes",
           f"  all sizes: {SIZES}; fixed: {r.fixed_text()}"]
    if extra:
        out.append("  " + "; ".join(extra))
    out.append(f"  {r.transitions} transitions, per-query timeout {r.timeout_ms} ms")
    if r.only:
        out.append("  shown: " + ", ".join(r.only) + "; proved together with every other "
                   "invariant, lemma and state-encoding (each query assumes them all)")
    out.append("")
    width = max([len(t.invariant) for t in r.results] + [10])
    for t in r.results:
        kind = {"lemma": " (lemma)", "typing": " (counters in range)"}.get(t.kind, "")
        out.append(f"  {t.invariant:<{width}}  {t.status:<13} {t.seconds:7.2f}s  "
                   f"{t.queries:5d} queries, {t.frame} by frame{kind}")
        if verbose and t.slowest:
            out.append(f"      slowest: {t.slowest[0]:.3f}s on {t.slowest[1]}")
        if t.note and t.status != PROVED:
            out.append(f"      {t.note}")
    for t in r.results:
        if t.cti is not None and t.status != PROVED:
            out.append("")
            out.append(cti_text(t.cti, t))
        if t.counterexample is not None:
            out.append("")
            out.append(f"[{t.invariant}] violated: a reachable counterexample, found by "
                       "bounded model checking at the CTI's sizes and replayed on the model")
            prog = r.program(t.invariant)
            cx = t.counterexample
            out.append(counterexample_text(prog, cx, _labels(prog, cx)))
    out.append("")
    out.append("not proved by this run (--host any):")
    out.append(f"  {HOST_SCOPE}")
    out.append("")
    n_ok = sum(t.status == PROVED for t in r.results)
    verdict = "all proved for every size" if r.ok else "NOT PROVED"
    out.append(f"{verdict}: {n_ok}/{len(r.results)} proved; {r.queries} queries in "
               f"{r.solver_seconds:.1f}s, {r.rounds} round(s), total {r.seconds:.1f}s, "
               f"peak memory {r.peak_rss_mib:.0f} MiB")
    return "\n".join(out)


def _labels(prog: Any, cx: Any) -> list[str]:
    from tdxcheck.model.actions import describe

    return [describe(prog.action_of(e), prog.u) for e, _ in cx.path]


def cti_text(c: ParamCTI, t: PTargetResult) -> str:
    label = "not inductive" if t.status == NOT_INDUCTIVE else t.status
    out = [f"[{c.target}] {label}: counterexample to induction"
           + (" (a lemma is missing)" if t.status == NOT_INDUCTIVE else
              " (and reachable: see the trace)" if t.status == VIOLATED else ""),
           f"  transition: {c.transition}", f"  goal: {c.what}"]
    if c.config is None:
        out.append(f"  no finite instance: {c.note}")
        return "\n".join(out)
    out.append(f"  smallest instance found: {c.config.describe()}")
    out.append(f"  step: {c.step_text}" + (f" -> {c.status}" if c.status else ""))
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
        for f, v in c.context:
            out.append(f"       {f} = {v}")
    if c.confirmed:
        out.append("  confirmed on the concrete engine (same next state, hypotheses hold, "
                   "the target breaks)")
    else:
        out.append(f"  !! not confirmed on the concrete engine: {c.note}")
    return "\n".join(out)


def param_json(result: ParamResult, queries: bool = False) -> dict[str, Any]:
    """As ``prove_json``, plus ``"sizes": "all"`` and the fixed constants."""
    r = result
    rows = []
    for t in r.results:
        row: dict[str, Any] = {"invariant": t.invariant, "status": t.status,
                               "seconds": round(t.seconds, 4), "kind": t.kind,
                               "queries": t.queries, "frame": t.frame}
        if t.slowest:
            row["slowest"] = {"seconds": round(t.slowest[0], 4), "transition": t.slowest[1]}
        if t.cti is not None and t.status != PROVED:
            row["cti"] = t.cti.to_json()
        if t.counterexample is not None:
            cx = t.counterexample
            prog = r.program(t.invariant)
            row["counterexample"] = {"message": cx.message, "length": cx.length,
                                     "trace": _labels(prog, cx)}
        if t.note:
            row["note"] = t.note
        rows.append(row)
    p = r.fixed
    out: dict[str, Any] = {
        "mode": "parametric", "sizes": "all", "covers": SIZES,
        "fixed": {"sept_levels": p.sept_levels, "tdcs_pages": p.tdcs_pages,
                  "tdcx_pages": p.tdcx_pages, "max_vcpus": p.max_vcpus},
        "faults": r.faults, "ablate": list(r.ablate), "transitions": r.transitions,
        "results": rows, "not_proved_here": [{"invariant": "host obligations",
                                              "why": HOST_SCOPE}],
        "queries": r.queries, "solver_seconds": round(r.solver_seconds, 3),
        "seconds": round(r.seconds, 3), "rounds": r.rounds,
        "peak_rss_mib": round(r.peak_rss_mib, 1), "ok": r.ok}
    if queries:
        out["query_log"] = [{"target": q.target, "answer": q.answer,
                             "seconds": round(q.seconds, 5), "round": q.round,
                             "transition": r._ctx.trans[q.edge].text} for q in r.records]
    return out


def write_param_traces(result: ParamResult, out: Any) -> list[list[str]]:
    """Each reachable counterexample as ``OUT/<invariant>.tdx`` (its universe in the
    ``config`` line) and ``.itf.json``; each confirmed CTI's state as a comment block."""
    from tdxcheck.checker.explore.traces import any_host_tdx, dumps_itf, itf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for t in result.results:
        cx = t.counterexample
        if cx is None or not cx.path:
            continue
        prog = result.program(t.invariant)
        base = out / t.invariant
        text = any_host_tdx(prog, cx, "tdxcheck prove --parametric: a CTI's universe").replace(
            "found by tdxcheck check --host any (breadth-first: shortest)",
            "found by tdxcheck prove --parametric (bounded model checking at the CTI's "
            "sizes: shortest)")
        base.with_suffix(".tdx").write_text(text)
        base.with_suffix(".itf.json").write_text(dumps_itf(itf(prog, cx, _labels(prog, cx))))
        files.append([str(base.with_suffix(".tdx")), str(base.with_suffix(".itf.json"))])
    return files


__all__ = ["cti_text", "param_json", "param_text", "write_param_traces"]
