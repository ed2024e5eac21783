"""Explorer benchmark: distinct states/s, bytes per stored state, peak memory, symmetry
factor, the ratio to a naive BFS (tuples in a set) of the same model, and (issue 16) the
symmetry-on rate as a share of the symmetry-off rate, canonicalisation's share of the
time, and the speedup from 1 to N worker processes.

    python benchmarks/bench_explore.py [--configs tiny,default] [--naive] [--time-limit S]
        [--off-time-limit S] [--max-states N] [--no-symmetry-only] [--workers 1,2]
        [--reference]

Targets (issue: explorer): on `default`, symmetry off, single process: >= 100,000
distinct states/s and <= 150 bytes per stored state.  Figures go in closing notes; the
machine is shared, so compare ratios (the CPU-time rate, states per second of this
process's CPU time, is less disturbed by other processes than the wall-clock rate) and
quote the load average this prints.

Canonicalisation's share is the time spent in the canonicaliser (timed around each call,
in the single-process symmetry-on run) over the run's time; ``--reference`` also runs the
canonicaliser issue 16 replaced (``Symmetry.reference_canonical``, called for every
successor as before) for the before/after figure.  ``--workers 1,2`` runs the
symmetry-on exploration once per worker count with the same limits and prints the
speedup (the rate ratio; the runs explore the same states when they finish or stop on
``--max-states``).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import tracemalloc
from collections import deque

from tdxcheck.checker.explore.bfs import Limits, explore
from tdxcheck.checker.explore.programs import AnyHost, make_config
from tdxcheck.checker.explore.symmetry import Symmetry


class TimedSymmetry(Symmetry):
    """``Symmetry`` whose canonicaliser counts its calls and time."""

    spent = 0.0
    calls = 0

    def canonical_key(self, spec):  # type: ignore[no-untyped-def]
        fn, mask = super().canonical_key(spec)
        clock = time.perf_counter

        def timed(s):  # type: ignore[no-untyped-def]
            t = clock()
            r = fn(s)
            self.spent += clock() - t
            self.calls += 1
            return r

        return timed, mask

    def timed_reference(self, s):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        r = self.reference_canonical(s)
        self.spent += time.perf_counter() - t
        self.calls += 1
        return r


def cpu_all() -> float:
    """CPU seconds of this process and of its finished children (the worker processes)."""
    me, ch = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def line(label: str, r, cpu: float | None = None) -> str:  # type: ignore[no-untyped-def]
    per_cpu = f" ({r.states / max(cpu, 1e-9):,.0f} per CPU second)" if cpu else ""
    return (f"{label}: {r.verdict:10} {r.states:>10,} states {r.transitions:>12,} "
            f"transitions depth {r.depth:>3} {r.seconds:7.1f}s "
            f"{r.states_per_second:>9,.0f} states/s{per_cpu}")


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
    ap.add_argument("--configs", default="tiny,default",
                    help="named configurations, each with key=value overrides after a "
                    "colon: default:hkids=3,large")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--off-time-limit", type=float, default=None,
                    help="the symmetry-off run's limit (default: --time-limit); a rate needs "
                    "less time than a verdict")
    ap.add_argument("--naive", action="store_true", help="also time a naive BFS")
    ap.add_argument("--max-states", type=int, default=None,
                    help="stop each run at this many states (the rates of a part)")
    ap.add_argument("--no-symmetry-only", action="store_true",
                    help="only the runs without symmetry (the issue's target)")
    ap.add_argument("--bytes-states", type=int, default=300_000,
                    help="states of the run that measures bytes per stored state")
    ap.add_argument("--workers", default="",
                    help="worker counts to compare, symmetry on: 1,2")
    ap.add_argument("--reference", action="store_true",
                    help="also run the previous canonicaliser (before/after share)")
    a = ap.parse_args()
    print(f"cores: {os.cpu_count()}, {load()}")
    for spec in a.configs.split(";") if ";" in a.configs else a.configs.split(","):
        name, _, ov = spec.partition(":")
        cfg = make_config(name, dict(x.split("=", 1) for x in ov.split("+") if x))
        print(f"== {cfg.describe()}")
        lim = Limits(time_limit=a.time_limit, max_states=a.max_states)
        runs = {}
        for sym in (False,) if a.no_symmetry_only else (False, True):
            prog = AnyHost(cfg.universe())
            ts = TimedSymmetry(prog.engine.layout) if sym else None
            cpu = time.process_time()
            off = Limits(time_limit=a.off_time_limit or a.time_limit, max_states=a.max_states)
            r = explore(prog, lim if sym else off, canon=ts.canonical if ts else None)
            cpu = time.process_time() - cpu
            print(line(f"symmetry {'on ' if sym else 'off'}", r, cpu) +
                  f" {r.transitions / max(r.seconds, 1e-9):>11,.0f} transitions/s")
            if ts is not None:
                print(f"  canonicalisation: {ts.spent / max(r.seconds, 1e-9):.0%} of the time "
                      f"({ts.calls:,} calls, {ts.spent / max(ts.calls, 1) * 1e6:.1f} us each, "
                      f"{ts.calls / max(r.states, 1):.2f} per stored state)")
            runs[sym] = r
        if len(runs) == 2:
            print(f"  symmetry-on rate / symmetry-off rate: "
                  f"{runs[True].states_per_second / runs[False].states_per_second:.2f}")
            if runs[False].verdict == runs[True].verdict == "holds":
                print(f"  symmetry factor: {runs[False].states / runs[True].states:.1f}x "
                      f"fewer states")
        if a.reference:
            prog = AnyHost(cfg.universe())
            ts = TimedSymmetry(prog.engine.layout)
            r = explore(prog, lim, canon=ts.timed_reference)
            print(line("previous canonicaliser", r) +
                  f"\n  canonicalisation: {ts.spent / max(r.seconds, 1e-9):.0%} of the time "
                  f"({ts.calls:,} calls, {ts.spent / max(ts.calls, 1) * 1e6:.1f} us each)")
        rates, cpus = {}, {}
        for w in [int(x) for x in a.workers.split(",") if x]:
            prog = AnyHost(cfg.universe())
            cpu = cpu_all()
            r = explore(prog, lim, canon=Symmetry(prog.engine.layout).canonical, workers=w)
            cpu = cpu_all() - cpu
            print(line(f"workers {w}", r, cpu) + f"  ({load()})")
            rates[w] = r
            cpus[w] = cpu
        if len(rates) > 1:
            w0 = min(rates)
            for w, r in sorted(rates.items()):
                same = (r.states, r.transitions) == (rates[w0].states, rates[w0].transitions)
                print(f"  speedup {w0} -> {w} workers: "
                      f"{r.states_per_second / rates[w0].states_per_second:.2f}x"
                      + ("" if same else " (the runs stopped at different states)")
                      + f"; CPU seconds {cpus[w0]:.0f} -> {cpus[w]:.0f}, so on {w} idle "
                      f"cores at most {w * cpus[w0] / max(cpus[w], 1e-9):.2f}x")
        if not a.no_symmetry_only or a.naive:
            prog = AnyHost(cfg.universe())
            print(f"  bytes per stored state (exact, symmetry off, peak over a "
                  f"{a.bytes_states:,}-state run): "
                  f"{stored_bytes(prog, a.bytes_states, False):.0f}")
        if a.naive:
            n, sec = naive(AnyHost(cfg.universe()), a.time_limit, a.max_states)
            rate = runs[False].states_per_second
            print(f"  naive BFS (tuples in a set): {n:,} states in {sec:.1f}s = "
                  f"{n / sec:,.0f} states/s; explorer / naive = {rate / (n / sec):.1f}x")
        print(f"  peak RSS so far: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB; {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
