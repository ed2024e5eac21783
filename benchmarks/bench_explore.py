"""Explorer benchmark: distinct states/s, bytes per stored state, peak memory, symmetry
factor, and the ratio to a naive BFS (tuples in a set) of the same model.

    python benchmarks/bench_explore.py [--configs tiny,default] [--naive] [--time-limit S]
        [--max-states N] [--no-symmetry-only]

Targets (issue: explorer): on `default`, symmetry off, single process: >= 100,000
distinct states/s and <= 150 bytes per stored state.  Figures go in closing notes; the
machine is shared, so compare ratios (the CPU-time rate, states per second of this
process's CPU time, is less disturbed by other processes than the wall-clock rate).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from collections import deque

from tdxcheck.checker.explore.bfs import Limits, explore
from tdxcheck.checker.explore.programs import AnyHost, make_config
from tdxcheck.checker.explore.symmetry import Symmetry


def naive(prog: AnyHost, time_limit: float,
          max_states: int | None = None) -> tuple[int, float]:
    t0 = time.monotonic()
    init = prog.initial()
    seen = {init}
    q = deque([init])
    while q and time.monotonic() - t0 < time_limit and (
            max_states is None or len(seen) < max_states):
        s = q.popleft()
        for _e, _st, n, _v in prog.successors(s):
            if n not in seen:
                seen.add(n)
                q.append(n)
        prog.state_violations(s)
    return len(seen), time.monotonic() - t0


def stored_bytes(prog: AnyHost, n: int, sym: bool) -> float:
    """Bytes per stored state, measured with tracemalloc over a run of n states.

    A first, tiny run builds the program's generated code for the explorer (the fused
    successor function that also encodes states) before the measurement, as the program's
    own constructor builds the rest: what is measured is the storage, not the compiler."""
    canon = Symmetry(prog.engine.layout).canonical if sym else None
    explore(prog, Limits(max_states=2), canon=canon)
    gc.collect()
    # a (no-op) trace function keeps tracemalloc from looking each allocation's line up in
    # the generated functions' long line tables (a thousandfold slowdown otherwise); it
    # changes nothing that is allocated
    sys.settrace(lambda *_a: None)
    tracemalloc.start()
    try:
        r = explore(prog, Limits(max_states=n), canon=canon)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sys.settrace(None)
    return peak / r.states  # everything the run held at its peak, per state


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="tiny,default")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--naive", action="store_true", help="also time a naive BFS")
    ap.add_argument("--max-states", type=int, default=None,
                    help="stop each run at this many states (the rates of a part)")
    ap.add_argument("--no-symmetry-only", action="store_true",
                    help="only the runs without symmetry (the issue's target)")
    ap.add_argument("--bytes-states", type=int, default=300_000,
                    help="states of the run that measures bytes per stored state")
    a = ap.parse_args()
    for name in a.configs.split(","):
        cfg = make_config(name, {})
        print(f"== {cfg.describe()}")
        counts = {}
        for sym in (False,) if a.no_symmetry_only else (False, True):
            prog = AnyHost(cfg.universe())
            canon = Symmetry(prog.engine.layout).canonical if sym else None
            cpu = time.process_time()
            r = explore(prog, Limits(time_limit=a.time_limit, max_states=a.max_states),
                        canon=canon)
            cpu = time.process_time() - cpu
            print(f"symmetry {'on ' if sym else 'off'}: {r.verdict:10} {r.states:>10,} states "
                  f"{r.transitions:>12,} transitions depth {r.depth:>3} {r.seconds:7.1f}s "
                  f"{r.states_per_second:>9,.0f} states/s "
                  f"({r.states / max(cpu, 1e-9):,.0f} per CPU second) "
                  f"{r.transitions / max(r.seconds, 1e-9):>11,.0f} transitions/s")
            counts[sym] = (r.states, r.verdict)
            if not sym:
                rate = r.states_per_second
        if len(counts) == 2 and counts[False][1] == counts[True][1] == "holds":
            print(f"  symmetry factor: {counts[False][0] / counts[True][0]:.1f}x fewer states")
        prog = AnyHost(cfg.universe())
        print(f"  bytes per stored state (exact, symmetry off, peak over a "
              f"{a.bytes_states:,}-state run): "
              f"{stored_bytes(prog, a.bytes_states, False):.0f}")
        if a.naive:
            n, sec = naive(AnyHost(cfg.universe()), a.time_limit, a.max_states)
            print(f"  naive BFS (tuples in a set): {n:,} states in {sec:.1f}s = "
                  f"{n / sec:,.0f} states/s; explorer / naive = {rate / (n / sec):.1f}x")
        print(f"  peak RSS so far: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
