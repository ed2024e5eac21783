"""Prover benchmark: the full ``prove`` (induction, ``--host any``) per configuration:
seconds, queries (one per invariant x transition that the frame rule does not discharge),
solver calls, queries per second, peak memory, every invariant and lemma with its status,
seconds and the hypotheses it used, and how the time grows with the size.

    python benchmarks/bench_prove.py [--configs default,larger,default:faults,larger:faults]
                                     [--no-uses] [--bmc-depth K] [--json FILE]

Each configuration runs in its own process, so each peak RSS is its own.  ``larger`` is
the issue's "at least twice the pages, TDs and HKIDs" of ``default`` (4 TDs, 8 pages,
2 private HKIDs, against 2, 4 and 1); ``mid`` sits between them.  A name may carry
overrides (``default+tds=3,pages=6``) and ``:faults`` (every fault point a transition).
The timed run is a plain ``prove``; the "uses" column comes from a second run with
``cores=True`` (minimised unsat cores; not timed).  Target (issue: Z3 back end): the full
proof on ``default`` in under 2 minutes on this machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from typing import Any

from tdxcheck.checker.explore.programs import make_config

NAMED = {
    "mid": ("default", {"tds": "3", "pages": "6", "hkids": "3"}),
    "larger": ("default", {"tds": "4", "pages": "8", "hkids": "3"}),
    "larger-h3": ("default", {"tds": "4", "pages": "8", "hkids": "4"}),
}


def config_of(name: str) -> Any:
    name = name.split(":", 1)[0]
    if name in NAMED:
        base, ov = NAMED[name]
        return make_config(base, ov)
    if "+" in name:
        base, rest = name.split("+", 1)
        return make_config(base, dict(kv.split("=", 1) for kv in rest.split(",")))
    return make_config(name, {})


def one(name: str, uses: bool, bmc_depth: int, q: Any) -> None:
    from tdxcheck.checker.prove import prove

    cfg = config_of(name)
    faults = name.endswith(":faults")
    r = prove(cfg, faults=faults)
    used: dict[str, Any] = {}
    if uses:
        c = prove(cfg, faults=faults, cores=True)
        used = {t.invariant: (t.uses, t.no_core) for t in c.results}
    u = cfg.universe()
    row = {
        "config": name, "describe": cfg.describe(), "faults": faults, "ok": r.ok,
        "size": {"tds": len(u.tds), "pages": u.n_pages, "hkids": u.platform.hkids - 1,
                 "cells": r._ctx.layout.size},
        "results": [{"invariant": t.invariant, "kind": t.kind, "status": t.status,
                     "seconds": round(t.seconds, 2), "queries": t.queries, "frame": t.frame,
                     "uses": used.get(t.invariant, (None, 0))[0],
                     "no_core": used.get(t.invariant, (None, 0))[1]}
                    for t in r.results],
        "transitions": r.transitions, "seconds": round(r.seconds, 2),
        "solver_seconds": round(r.solver_seconds, 2), "queries": r.queries,
        "solver_calls": sum(x.calls for x in r.records),
        "frame": sum(t.frame for t in r.results),
        "queries_per_second": round(r.queries_per_second, 1),
        "peak_rss_mib": round(r.peak_rss_mib, 1),
    }
    if bmc_depth:
        b = prove(cfg, mode="bmc", depth=bmc_depth, faults=faults)
        row["bmc"] = {"depth": bmc_depth, "ok": b.ok, "seconds": round(b.seconds, 2),
                      "per_depth": [round(x.seconds, 3) for x in b.records if x.target == "*"]}
    q.put(row)


def table(row: dict[str, Any]) -> str:
    lemmas = {x["invariant"] for x in row["results"] if x["kind"] == "lemma"}
    width = max(len(x["invariant"]) + (8 if x["kind"] == "lemma" else 0)
                for x in row["results"])
    out = [f"   {'invariant':<{width}}  {'status':<13} {'seconds':>7}  {'queries':>7}  "
           "lemmas used (other hypotheses used)"]
    for x in row["results"]:
        if x["uses"] is None:
            used = ""
        else:
            lm = [u for u in x["uses"] if u in lemmas]
            other = [u for u in x["uses"] if u not in lemmas]
            used = (", ".join(lm) or "-") + (f" ({', '.join(other)})" if other else "")
            if x["no_core"]:
                used += f" [{x['no_core']} queries without a core]"
        kind = " (lemma)" if x["kind"] == "lemma" else ""
        out.append(f"   {x['invariant'] + kind:<{width}}  {x['status']:<13} "
                   f"{x['seconds']:7.2f}  {x['queries']:7d}  {used}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="default,larger,default:faults,larger:faults")
    ap.add_argument("--no-uses", action="store_true",
                    help="skip the unsat-core run (the 'lemmas used' column)")
    ap.add_argument("--bmc-depth", type=int, default=0,
                    help="also time BMC to this depth (per-depth seconds)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    a = ap.parse_args()
    rows = []
    ctx = mp.get_context("spawn")
    for name in a.configs.split(","):
        q = ctx.Queue()
        p = ctx.Process(target=one, args=(name, not a.no_uses, a.bmc_depth, q))
        p.start()
        row = q.get()
        p.join()
        rows.append(row)
        print(f"== {row['describe']}" + ("; fault points on" if row["faults"] else ""))
        print(f"   {'all proved' if row['ok'] else 'NOT PROVED'}: {row['transitions']} "
              f"transitions, {row['queries']} queries ({row['solver_calls']} solver calls, "
              f"{row['frame']} pairs by frame) in {row['seconds']:.1f}s "
              f"(solver {row['solver_seconds']:.1f}s, {row['queries_per_second']:.0f} "
              f"queries/s), peak RSS {row['peak_rss_mib']:.0f} MiB")
        print(table(row))
        if "bmc" in row:
            print(f"   bmc depth {a.bmc_depth}: {row['bmc']['seconds']:.1f}s, per depth "
                  f"{row['bmc']['per_depth']}")
        print()
        sys.stdout.flush()
    for faults in (False, True):
        group = [r for r in rows if r["faults"] == faults]
        if len(group) < 2:
            continue
        base = group[0]
        print(f"growth against {base['config']}:")
        for r in group[1:]:
            sz = ", ".join(f"{k} x{r['size'][k] / max(base['size'][k], 1):.1f}"
                           for k in ("tds", "pages", "hkids", "cells"))
            print(f"   {r['config']}: {sz}; transitions "
                  f"x{r['transitions'] / base['transitions']:.1f}, queries "
                  f"x{r['queries'] / base['queries']:.1f}, time "
                  f"x{r['seconds'] / base['seconds']:.1f}, memory "
                  f"x{r['peak_rss_mib'] / base['peak_rss_mib']:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
