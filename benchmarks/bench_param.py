"""Parametric prover benchmark (issue 13) and the ablation cross-check.

    python benchmarks/bench_param.py table [--levels 2,4] [--finite default,larger]
                                           [--json FILE]
    python benchmarks/bench_param.py ablation [--finite tiny,default] [--only CHECK ...]
                                              [--json FILE]

``table``: ``prove --parametric`` for each S-EPT depth, without and with fault points
(each run in its own process, one after the other), with the per-target table; then the
finite prover (``prove --config``) on ``default`` and on the 2x configuration ``larger``
(4 TDs, 8 pages, 2 private HKIDs) in the same run, for comparison.  Target: every run
proved, no ``unknown``, under 60 s each (aim: 20 s).

``ablation``: every module check (``ablate --list``) removed in turn; caught by the
explorer (``--host any`` on tiny, symmetry on, module invariants), by the finite prover
(induction on each ``--finite`` configuration, no BMC) and by the parametric prover (the
first Houdini round over the transitions whose rule runs the check: the others' queries
are the unablated proof's), with the parametric CTI's confirmation on the engine.  Every
check a finite engine catches must be caught by the parametric prover.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from typing import Any

from tdxcheck.checker.explore.programs import make_config

LARGER = ("default", {"tds": "4", "pages": "8", "hkids": "3"})


def _param_run(levels: int, faults: bool, q: Any) -> None:
    import resource

    from tdxcheck.checker.prove.param import prove_parametric

    cpu0 = time.process_time()
    r = prove_parametric(make_config("default", {}), sept_levels=levels, faults=faults)
    q.put({"levels": levels, "faults": faults, "ok": r.ok, "seconds": round(r.seconds, 2),
           "cpu_seconds": round(time.process_time() - cpu0, 2),
           "solver_seconds": round(r.solver_seconds, 2), "queries": r.queries,
           "transitions": r.transitions, "rounds": r.rounds,
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "results": [{"target": t.invariant, "kind": t.kind, "status": t.status,
                        "seconds": round(t.seconds, 3), "queries": t.queries}
                       for t in r.results]})


def _finite_run(name: str, q: Any) -> None:
    from tdxcheck.checker.prove import prove

    base, ov = LARGER if name == "larger" else (name, {})
    cfg = make_config(base, ov)
    cpu0 = time.process_time()
    r = prove(cfg, confirm_depth=0)
    q.put({"config": name, "describe": cfg.describe(), "ok": r.ok,
           "seconds": round(r.seconds, 2), "cpu_seconds": round(time.process_time() - cpu0, 2),
           "queries": r.queries,
           "proved": sum(t.status == "proved" for t in r.results), "targets": len(r.results)})


def _in_process(fn: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def table(a: argparse.Namespace) -> dict[str, Any]:
    import os

    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    runs = []
    for lv in [int(x) for x in a.levels.split(",")]:
        for faults in (False, True):
            r = _in_process(_param_run, lv, faults)
            runs.append(r)
            print(f"parametric sept_levels={lv} faults={'on ' if faults else 'off'}: "
                  f"{'all proved' if r['ok'] else 'NOT PROVED'} {r['seconds']:6.1f}s wall, "
                  f"{r['cpu_seconds']:.1f}s CPU "
                  f"({r['queries']} queries, {r['solver_seconds']:.1f}s in the solver, "
                  f"{r['transitions']} transitions, {r['rounds']} round(s), "
                  f"{r['peak_rss_mib']} MiB)", flush=True)
    targets = [t["target"] for t in runs[0]["results"]]
    head = "target".ljust(34) + "".join(
        f"  L{r['levels']}{'+f' if r['faults'] else '  '}".rjust(12) for r in runs)
    print("\n" + head)
    for i, tid in enumerate(targets):
        cells = []
        for r in runs:
            t = r["results"][i]
            mark = "" if t["status"] == "proved" else f" {t['status']}"
            cells.append(f"{t['seconds']:7.2f}s{mark}".rjust(12))
        print(tid.ljust(34) + "".join(cells))
    finite = []
    for name in [x for x in a.finite.split(",") if x]:
        r = _in_process(_finite_run, name)
        finite.append(r)
        print(f"\nfinite prover {name} ({r['describe']}): {r['proved']}/{r['targets']} "
              f"proved, {r['seconds']:.1f}s wall, {r['cpu_seconds']:.1f}s CPU, "
              f"{r['queries']} queries", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return {"parametric": runs, "finite": finite}


def _ablation_rows(names: list[str], finite: list[str], q: Any) -> None:
    """One batch of checks, in a fresh process (Z3's and the engines' caches grow)."""
    from tdxcheck.checker.analyses.ablation import run_ablation
    from tdxcheck.checker.explore.bfs import Limits
    from tdxcheck.checker.prove import prove
    from tdxcheck.checker.prove.param import affected, first_round
    from tdxcheck.checker.prove.param.houdini import Context

    fixed = make_config("default", {}).platform
    ctx = Context(fixed, False, ())
    for check in names:
        t0 = time.monotonic()
        ex = run_ablation("any", "tiny", checks=[check], limits=Limits(time_limit=60))[0]
        row: dict[str, Any] = {"check": check, "explorer_tiny": sorted(ex["broken"]),
                               "explorer_limit": ex.get("limit")}
        for cfg in finite:
            r = prove(make_config(cfg, {}), ablate=[check], confirm_depth=0)
            row[f"finite_{cfg}"] = sorted(t.invariant for t in r.results
                                          if t.status != "proved")
        t1 = time.monotonic()
        # a CTI for one failed target: one a finite engine names, else the first
        named = set(row["explorer_tiny"]).union(*(row[k] for k in row
                                                  if k.startswith("finite_")))
        c = first_round(fixed, ablate=(check,), edges=affected(ctx, check),
                        timeout_ms=10_000, cti_seconds=30, prefer=sorted(named))
        row["parametric"] = dict(c.failed)
        row["cti"] = {k: {"confirmed": v.confirmed, "replayed": v.replayed,
                          "universe": v.config.describe() if v.config else None,
                          "step": v.step_text, "breaks": v.clauses, "note": v.note}
                      for k, v in c.ctis.items()}
        row["finite_caught"] = bool(named)
        row["param_caught"] = bool(c.failed)
        row["confirmed"] = any(v.confirmed for v in c.ctis.values())
        row["finite_seconds"] = round(t1 - t0, 1)
        row["param_seconds"] = round(time.monotonic() - t1, 1)
        q.put(row)
    q.put(None)


def ablation(a: argparse.Namespace) -> dict[str, Any]:
    from tdxcheck.checker.analyses.ablation import check_names

    names = a.only or check_names(make_config("default", {}).universe())
    finite = [x for x in a.finite.split(",") if x]
    rows: list[dict[str, Any]] = []
    mctx = mp.get_context("spawn")
    for i in range(0, len(names), a.batch):
        q = mctx.Queue()
        p = mctx.Process(target=_ablation_rows, args=(names[i:i + a.batch], finite, q))
        p.start()
        while (row := q.get()) is not None:
            rows.append(row)
            flag = ("MISSED" if row["finite_caught"] and not row["param_caught"] else
                    "caught" if row["param_caught"] else "-")
            conf = "" if not row["param_caught"] else (
                " (CTI confirmed)" if row["confirmed"] else " (CTI NOT confirmed)")
            print(f"[{len(rows)}/{len(names)}] {row['check']:40} finite "
                  f"{'yes' if row['finite_caught'] else 'no ':3} parametric {flag:6} "
                  f"{','.join(sorted(row['parametric'])) or '-'}{conf}  "
                  f"{row['finite_seconds']}s + {row['param_seconds']}s", flush=True)
        p.join()
    missed = [r["check"] for r in rows if r["finite_caught"] and not r["param_caught"]]
    unconfirmed = [r["check"] for r in rows if r["param_caught"] and not r["confirmed"]]
    extra = [r["check"] for r in rows if r["param_caught"] and not r["finite_caught"]]
    print(f"\nchecks {len(rows)}; caught by a finite engine "
          f"{sum(r['finite_caught'] for r in rows)}; by the parametric prover "
          f"{sum(r['param_caught'] for r in rows)}; missed {len(missed)} {missed}; "
          f"parametric only {len(extra)} {extra}; CTI not confirmed {len(unconfirmed)} "
          f"{unconfirmed}")
    return {"rows": rows, "missed": missed, "parametric_only": extra,
            "unconfirmed": unconfirmed}


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("--levels", default="2,4")
    t.add_argument("--finite", default="default,larger")
    t.add_argument("--json")
    b = sub.add_parser("ablation")
    b.add_argument("--finite", default="tiny")
    b.add_argument("--only", nargs="*")
    b.add_argument("--batch", type=int, default=8, help="checks per worker process")
    b.add_argument("--json")
    a = ap.parse_args()
    out = table(a) if a.cmd == "table" else ablation(a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
