"""Prover benchmark: the full ``prove`` (induction, ``--host any``) per configuration:
seconds, queries (one per invariant x transition that the frame rule does not discharge),
solver calls, queries per second, peak memory, and how the time grows with the size.

    python benchmarks/bench_prove.py [--configs default,larger] [--bmc-depth K] [--json FILE]

Each configuration runs in its own process, so each peak RSS is its own.  ``larger`` is
the issue's "at least twice the pages, TDs and HKIDs" of ``default`` (4 TDs, 8 pages,
2 private HKIDs); ``mid`` sits between them.  A name may carry overrides:
``default+tds=3,pages=6``.  Target (issue: Z3 back end): the full proof on ``default`` in
under 2 minutes on this machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from typing import Any

from tdxcheck.checker.programs import make_config

NAMED = {
    "mid": ("default", {"tds": "3", "pages": "6", "hkids": "3"}),
    "larger": ("default", {"tds": "4", "pages": "8", "hkids": "3"}),
    "larger-h3": ("default", {"tds": "4", "pages": "8", "hkids": "4"}),
}


def config_of(name: str) -> Any:
    if name in NAMED:
        base, ov = NAMED[name]
        return make_config(base, ov)
    if "+" in name:
        base, rest = name.split("+", 1)
        return make_config(base, dict(kv.split("=", 1) for kv in rest.split(",")))
    return make_config(name, {})


def one(name: str, bmc_depth: int, q: Any) -> None:
    from tdxcheck.checker.z3_prove import prove

    cfg = config_of(name)
    r = prove(cfg)
    row = {
        "config": name, "describe": cfg.describe(), "ok": r.ok,
        "statuses": {t.invariant: t.status for t in r.results},
        "transitions": r.transitions, "seconds": round(r.seconds, 2),
        "solver_seconds": round(r.solver_seconds, 2), "queries": r.queries,
        "solver_calls": sum(x.calls for x in r.records),
        "frame": sum(t.frame for t in r.results),
        "queries_per_second": round(r.queries_per_second, 1),
        "peak_rss_mib": round(r.peak_rss_mib, 1),
        "slowest": sorted(((round(t.seconds, 2), t.invariant) for t in r.results),
                          reverse=True)[:3],
    }
    if bmc_depth:
        b = prove(cfg, mode="bmc", depth=bmc_depth)
        row["bmc"] = {"depth": bmc_depth, "ok": b.ok, "seconds": round(b.seconds, 2),
                      "per_depth": [round(x.seconds, 3) for x in b.records if x.target == "*"]}
    q.put(row)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="default,larger")
    ap.add_argument("--bmc-depth", type=int, default=0,
                    help="also time BMC to this depth (per-depth seconds)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    a = ap.parse_args()
    rows = []
    ctx = mp.get_context("spawn")
    for name in a.configs.split(","):
        q = ctx.Queue()
        p = ctx.Process(target=one, args=(name, a.bmc_depth, q))
        p.start()
        row = q.get()
        p.join()
        rows.append(row)
        print(f"== {row['describe']}")
        print(f"   {'all proved' if row['ok'] else 'NOT PROVED'}: {row['transitions']} "
              f"transitions, {row['queries']} queries ({row['solver_calls']} solver calls, "
              f"{row['frame']} pairs by frame) in {row['seconds']:.1f}s "
              f"(solver {row['solver_seconds']:.1f}s, {row['queries_per_second']:.0f} "
              f"queries/s), peak RSS {row['peak_rss_mib']:.0f} MiB")
        print(f"   slowest invariants: {row['slowest']}")
        if "bmc" in row:
            print(f"   bmc depth {a.bmc_depth}: {row['bmc']['seconds']:.1f}s, per depth "
                  f"{row['bmc']['per_depth']}")
        sys.stdout.flush()
    if len(rows) > 1:
        base = rows[0]
        print("\ngrowth against", base["config"])
        for r in rows[1:]:
            print(f"   {r['config']}: transitions x{r['transitions'] / base['transitions']:.1f}"
                  f", queries x{r['queries'] / base['queries']:.1f}, time "
                  f"x{r['seconds'] / base['seconds']:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
