"""The breadth-first search in several processes, with the single-process result.

``explore(..., workers=N)`` runs here.  Each worker process owns the states whose
encoding hashes to it (``_MIX``; an int's hash does not depend on PYTHONHASHSEED): it
keeps their part of the visited set and expands them.  The search goes level by level
(level-synchronous BFS), so every trace is still a shortest one, and each level takes
three steps:

1. *expand*: each worker expands its states of the level, in the order the
   single-process search would (by state number), canonicalises each successor, and
   sends it, tagged with the number of its parent and its rank among the parent's
   transitions, to the worker that owns it (a file per pair of workers, in a temporary
   directory);
2. *merge*: each owner reads what it was sent in (parent, rank) order, which is the
   order in which the single-process search meets those successors, so the first time a
   key comes is the time that search would store it; it stores the new ones and checks
   them (invariants, witnesses);
3. *number*: the coordinating process merges the owners' new states by (parent, rank)
   and numbers them as the single-process search does.  It keeps each state's parent and
   edge (as ``bfs.explore``), so traces are rebuilt the same way.

A run that stops inside a level (the first violation, a state limit) is cut where the
single-process search stops: the coordinator knows every event's (parent, rank), takes
the first, and asks the workers for the transitions counted before it.  So the verdict,
state and transition counts, depth, violations (which, and their traces) and witnesses
are the same for every number of workers; only the time and ``peak_queue`` (here: the
largest level) differ.  A time limit, the memory budget, or a worker that dies ends the
run ``incomplete`` with the reason, after the last whole level.

On a cluster (Ray, Dask or Spark) the same partitioning carries over; see the section
"explore/: more than one machine" in ARCHITECTURE.md.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import traceback
from array import array
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from tdxcheck.model.state import State

from .bfs import (
    _CANON_CACHE,
    _EMPTY,
    HOLDS,
    INCOMPLETE,
    VIOLATED,
    ExploreResult,
    Limits,
    Packing,
    Program,
    Progress,
    _canonical_key,
    _fingerprint,
    canon_keyer,
    memory_mib,
    memory_reason,
    result_of,
)
from .engine import STATE_ENCODING, Violation

_LAST = 1 << 62  # the rank of a deadlock: after every transition of its state
# an encoding's owner is (hash(key) * _MIX >> 61) % workers: an int's hash is the int
# modulo 2**61 - 1, whose low bits follow a few cells; the multiplication (Fibonacci
# hashing) spreads every bit over the high ones
_MIX = 0x9E3779B97F4A7C15
_FOREIGN = 1 << 20  # how many other workers' keys a worker keeps (then it forgets them)
# event kinds, in the order the single-process search meets them at one (parent, rank)
_STEP, _STATE, _DEADLOCK = 0, 1, 2


class _Stop(Exception):
    """The coordinator asked the workers to stop (time limit, memory budget)."""


class _Worker:
    """One worker process: its part of the visited set, its states of the current level."""

    def __init__(self, wid: int, n: int, prog: Program, packing: Packing,
                 canon: Callable[[State], State] | None, keyer: tuple[Any, int],
                 fingerprint: bool, witnesses: Callable[[State], list[str]] | None,
                 tmp: str, flag: Any, counters: Any) -> None:
        self.wid, self.n, self.prog, self.tmp = wid, n, prog, tmp
        self.flag, self.counters = flag, counters
        self.pack, self.unpack, self.nbytes = packing.pack, packing.unpack, packing.nbytes
        self.keyed = (prog.keyed_successors(packing.key)  # type: ignore[attr-defined]
                      if hasattr(prog, "keyed_successors") else None)
        self.fingerprint = fingerprint
        self.fast = self.keyed is not None and not fingerprint
        self.canon = canon
        self.keyer, self.sens = keyer
        self.witnesses = witnesses
        self.seen: set[int] = set()
        self.foreign: list[int] = []  # other workers' keys in ``seen`` (``expand``)
        self.pending: set[int] = set()  # own keys met in this level's ``expand``
        # this worker's states of the current level: number, encoding, settled
        self.js = array("q")
        self.keys: list[int] = []
        self.settled = bytearray()
        self.totals = array("q")  # per expanded state: its transitions ...
        self.gens = array("q")  # ... and its non-loop transitions
        self.new: list[tuple[int, int, int, int | None, int, bool]] = []
        self.own: list[tuple[Any, ...]] = []

    # ------------------------------------------------------------------ helpers
    def _fp(self, k: int) -> int:
        return _fingerprint(k.to_bytes(self.nbytes, "little"))

    def _items(self, s: State, key: int, seen: Any) -> tuple[list[Any], int]:
        """The transitions of ``s`` as ``bfs.explore`` takes them: (edge, status, key,
        successor, violations, rank) and how many there are, self-loops included."""
        if self.keyed is not None:
            return self.keyed(s, key, seen)  # type: ignore[no-any-return]
        loops0 = getattr(self.prog, "self_loops", 0)
        items = [(eid, st, None, n, viol, r)
                 for r, (eid, st, n, viol) in enumerate(self.prog.successors(s))]
        return items, len(items) + getattr(self.prog, "self_loops", 0) - loops0

    def _loop(self, s: State, key: int, kn: Any, n: Any) -> bool:
        """Whether a transition is skipped before its successor is stored or sent (as
        ``bfs.explore``: a self-loop, or with the fused code a key already stored)."""
        if self.fast:
            return kn in self.seen
        if self.keyed is not None:
            return bool(kn == key)
        return n is s

    # ------------------------------------------------------------------ commands
    def start(self, j: int, key: int, settled: int) -> None:
        self.seen.add(self._fp(key) if self.fingerprint else key)
        self.js.append(j)
        self.keys.append(key)
        self.settled.append(settled)

    def expand(self, level: int, stop_at_first: bool, reported: set[str],
               deadline: float) -> dict[str, Any]:
        n, wid, fast = self.n, self.wid, self.fast
        out: list[list[tuple[Any, ...]]] = [[] for _ in range(n)]
        own = []  # successors out of the encoding's range: new states, kept here
        events: list[tuple[tuple[int, int, int], int, Any, Any]] = []
        reported = set(reported)
        sent: set[int] = set()
        canon_of: dict[int, tuple[int | None, int]] = {}
        self.totals, self.gens = array("q"), array("q")
        keyer, sens, canon, pack = self.keyer, self.sens, self.canon, self.pack
        if len(self.foreign) > _FOREIGN:
            self.seen.difference_update(self.foreign)
            self.foreign = []
        stopped = False
        for x, (j, key) in enumerate(zip(self.js, self.keys, strict=True)):
            if not x & 63:
                if self.flag.value or time.monotonic() > deadline:
                    raise _Stop
                self.counters[wid] = x
            s = self.unpack(key)
            succ, total = self._items(s, key, self.seen if fast else ())
            par_settled = self.settled[x] if keyer is not None else 0
            gen = 0
            for eid, _st, kn, nx, viol, rank in succ:
                if viol:
                    if stop_at_first or any(v.invariant not in reported for v in viol):
                        reported.update(v.invariant for v in viol)
                        events.append(((j, rank, _STEP), eid, [
                            (v.invariant, v.message) for v in viol], None))
                    if stop_at_first:
                        stopped = True
                        break
                if self._loop(s, key, kn, nx):
                    continue
                gen += 1
                st = 0
                if self.keyed is not None:
                    if kn is not None:
                        if keyer is not None:
                            if par_settled and not (kn ^ key) & sens:
                                kc, st = kn, 1
                            else:
                                kc, st = canon_of.get(kn) or _EMPTY
                                if kc is None:
                                    if len(canon_of) >= _CANON_CACHE:
                                        canon_of.clear()
                                    kc, st = canon_of[kn] = keyer(nx)
                        elif canon is not None:
                            kc = _canonical_key(canon, pack, tuple(nx))
                        else:
                            kc = kn
                    else:
                        kc = None
                else:
                    try:
                        kc = pack(canon(nx) if canon is not None else nx)
                    except OverflowError:  # a negative cell: only a broken (ablated) rule
                        kc = None
                if kc is None:
                    own.append((j, rank, eid, None, tuple(nx)))
                    continue
                o = (hash(kc) * _MIX >> 61) % n
                if fast:
                    # a key met once is left out from then on, by the fused code too: an
                    # own key is stored at once (``pending`` until the merge decides who
                    # met it first); another worker's is stored by its owner once sent
                    if kc in self.seen:
                        continue
                    self.seen.add(kc)
                    if o == wid:
                        self.pending.add(kc)
                    else:
                        self.foreign.append(kc)
                elif o == wid:
                    if (self._fp(kc) if self.fingerprint else kc) in self.seen or kc in sent:
                        continue
                    sent.add(kc)
                else:
                    if kc in sent:
                        continue
                    sent.add(kc)
                out[o].append((j, rank, eid, kc, st))
            if stopped:
                self.totals.append(total)
                self.gens.append(gen)
                break
            if not (total if fast else succ):
                msg = self.prog.stuck(s)
                if msg and (stop_at_first or "deadlock" not in reported):
                    reported.add("deadlock")
                    events.append(((j, _LAST, _DEADLOCK), -1, [("deadlock", msg)], None))
                    if stop_at_first:
                        stopped = True
            self.totals.append(total)
            self.gens.append(gen)
            if stopped:
                break
        for o in range(n):
            if o != wid:
                _write(os.path.join(self.tmp, f"{level}.{wid}.{o}"), out[o], self.nbytes)
        self.own = list(heapq.merge(out[wid], own))
        self.counters[wid] = len(self.keys)
        return {"events": events, "transitions": sum(self.totals),
                "generated": sum(self.gens)}

    def merge(self, level: int, stop_at_first: bool, before: tuple[int, int, int] | None,
              reported: set[str], todo: set[str]) -> dict[str, Any]:
        srcs: list[Any] = [self.own]
        for o in range(self.n):
            if o != self.wid:
                path = os.path.join(self.tmp, f"{level}.{o}.{self.wid}")
                srcs.append(_read(path, self.nbytes))
                os.unlink(path)
        self.own = []
        new: list[tuple[int, int, int, int | None, int, bool]] = []
        events: list[tuple[tuple[int, int, int], int, Any, Any]] = []
        reported = set(reported)
        todo = set(todo)
        prog, witnesses, seen, pending = self.prog, self.witnesses, self.seen, self.pending
        encoding = Violation(STATE_ENCODING, "a state cell left its declared range "
                             "(a counter below 0 or above its bound)", 0)
        for c, (j, rank, eid, kc, x) in enumerate(heapq.merge(*srcs)):
            if not c & 1023 and self.flag.value:
                raise _Stop
            if before is not None and (j, rank, _STATE) > before:
                break  # after the first violation: the run stops before this
            if kc is None:
                st: State = x
                sv = [*prog.state_violations(st), encoding]
                settled = 0
            else:
                m = self._fp(kc) if self.fingerprint else kc
                if m in pending:
                    pending.discard(m)  # stored at expand; this is its first meeting
                elif m in seen:
                    continue
                else:
                    seen.add(m)
                st = self.unpack(kc)
                sv = prog.state_violations(st)
                settled = x
            idx = len(new)
            new.append((j, rank, eid, kc, settled, bool(sv)))
            if todo:
                assert witnesses is not None
                for w in witnesses(st):
                    if w in todo:
                        todo.discard(w)
                        events.append(((j, rank, _STATE), idx, None, w))
            if sv:
                if stop_at_first or any(v.invariant not in reported for v in sv):
                    reported.update(v.invariant for v in sv)
                    events.append(((j, rank, _STATE), idx,
                                   [(v.invariant, v.message) for v in sv], None))
                if stop_at_first:
                    before = (j, rank, _STATE)
        self.new = new
        if pending:  # only after a cut (the run stops): keys met past it, never stored
            seen.difference_update(pending)
            pending.clear()
        return {"j": array("q", [r[0] for r in new]), "rank": array("q", [r[1] for r in new]),
                "eid": array("q", [r[2] for r in new]),
                "error": bytes(r[5] for r in new), "events": events}

    def number(self, numbers: Sequence[int]) -> None:
        """The numbers of this worker's new states (those before a cut): the next level."""
        self.js, self.keys, self.settled = array("q"), [], bytearray()
        for g, (_j, _r, _e, kc, settled, err) in zip(numbers, self.new, strict=False):
            if not err:
                self.js.append(g)
                self.keys.append(kc)  # type: ignore[arg-type]
                self.settled.append(settled)
        self.new = []

    def cut(self, at: tuple[int, int, int]) -> tuple[int, int]:
        """Transitions (and non-loop transitions) of this worker's expanded states that
        the single-process search counts before it stops at ``at``: every transition of
        a state numbered below the cut's state; of that state, as ``bfs.explore`` counts
        when it stops at rank ``at[1]`` (self-loops in full, the others up to the rank)."""
        cj, crank, kind = at
        trans = gens = 0
        for x, j in enumerate(self.js[:len(self.totals)]):
            if j < cj:
                trans += self.totals[x]
                gens += self.gens[x]
            elif j == cj:
                key = self.keys[x]
                s = self.unpack(key)
                items, total = self._items(s, key, ())
                trans += total - sum(1 for it in items if it[5] > crank)
                gens += sum(1 for it in items if it[5] < crank and not self._loop(
                    s, key, it[2], it[3])) + (kind == _STATE)
        return trans, gens


def _write(path: str, recs: Sequence[tuple[Any, ...]], nbytes: int) -> None:
    ints = array("q")
    keys = []
    for j, rank, eid, kc, st in recs:
        ints.extend((j, rank, eid, st))
        keys.append(kc.to_bytes(nbytes, "little"))
    with open(path, "wb") as f:
        f.write(len(recs).to_bytes(8, "little"))
        f.write(ints.tobytes())
        f.write(b"".join(keys))


def _read(path: str, nbytes: int) -> list[tuple[Any, ...]]:
    with open(path, "rb") as f:
        data = f.read()
    cnt = int.from_bytes(data[:8], "little")
    ints = array("q")
    ints.frombytes(data[8:8 + 32 * cnt])
    mv = memoryview(data)[8 + 32 * cnt:]
    keys = [int.from_bytes(mv[i * nbytes:(i + 1) * nbytes], "little") for i in range(cnt)]
    return list(zip(ints[0::4], ints[1::4], ints[2::4], keys, ints[3::4], strict=True))


def _serve(worker: _Worker, conn: Connection) -> None:
    """A worker process's loop: run each command the coordinator sends, reply."""
    try:
        while True:
            cmd, *args = conn.recv()
            if cmd == "quit":
                return
            try:
                out = getattr(worker, cmd)(*args)
            except _Stop:
                out = _Stop
            conn.send(("ok", out))
    except (EOFError, KeyboardInterrupt):
        return
    except BaseException:  # noqa: BLE001 - reported to the coordinator, which says so
        conn.send(("error", traceback.format_exc()))


class _WorkerLost(Exception):
    pass


def explore_parallel(prog: Program, limits: Limits, stop_at_first: bool,
                     progress: Progress | None, progress_every: float,
                     canon: Callable[[State], State] | None, fingerprint: bool,
                     witnesses: Callable[[State], list[str]] | None,
                     witness_ids: Sequence[str], workers: int) -> ExploreResult:
    """``bfs.explore`` in ``workers`` processes (see the module docstring)."""
    t0 = time.monotonic()
    packing = Packing(prog.bounds(), getattr(prog, "counter_cells", list)())
    norm: Callable[[State], State] = canon if canon is not None else (lambda x: x)
    keyer, sens = canon_keyer(canon, packing)
    # build the generated code before the workers fork, so that they share it
    if hasattr(prog, "keyed_successors"):
        prog.keyed_successors(packing.key)  # type: ignore[attr-defined]
    init = norm(prog.initial())
    k0 = packing.pack(init)
    n = workers
    try:
        ctx = mp.get_context("fork")
    except ValueError:  # no fork (Windows): one process, the same result
        from .bfs import explore

        return explore(prog, limits, stop_at_first, progress, progress_every, canon,
                       fingerprint, witnesses, witness_ids)
    flag = ctx.RawValue("i", 0)
    counters = ctx.RawArray("q", n)
    tmp = tempfile.mkdtemp(prefix="tdxcheck-bfs-")
    procs, conns = [], []
    try:
        for wid in range(n):
            parent_end, child_end = ctx.Pipe()
            w = _Worker(wid, n, prog, packing, canon, (keyer, sens), fingerprint, witnesses,
                        tmp, flag, counters)
            p = ctx.Process(target=_serve, args=(w, child_end), daemon=True)
            p.start()
            child_end.close()
            procs.append(p)
            conns.append(parent_end)
        return _coordinate(prog, limits, stop_at_first, progress, progress_every, norm,
                           fingerprint, witnesses, witness_ids, packing, init, k0,
                           keyer(init)[1] if keyer is not None else 0, procs, conns, flag,
                           counters, t0)
    finally:
        for c in conns:
            try:
                c.send(("quit",))
            except (OSError, BrokenPipeError):
                pass
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        shutil.rmtree(tmp, ignore_errors=True)


def _coordinate(prog: Program, limits: Limits, stop_at_first: bool,
                progress: Progress | None, progress_every: float,
                norm: Callable[[State], State], fingerprint: bool,
                witnesses: Callable[[State], list[str]] | None, witness_ids: Sequence[str],
                packing: Packing, init: State, k0: int, settled0: int, procs: list[Any],
                conns: list[Connection], flag: Any, counters: Any, t0: float
                ) -> ExploreResult:
    n = len(conns)
    deadline = t0 + limits.time_limit if limits.time_limit is not None else float("inf")
    budget = limits.memory_mib
    next_report = t0 + progress_every
    next_mem, peak_mem = t0, 0.0
    pids = [p.pid for p in procs]

    def call(cmds: dict[int, tuple[Any, ...]]) -> dict[int, Any]:
        """Send each worker its command and wait for every reply, watching the time, the
        memory budget and the workers' health meanwhile (a flag tells them to stop)."""
        nonlocal next_report, reason, next_mem, peak_mem
        for wid, cmd in cmds.items():
            conns[wid].send(cmd)
        out: dict[int, Any] = {}
        waiting = {conns[wid]: wid for wid in cmds}
        while waiting:
            for c in wait(list(waiting), timeout=0.5):
                wid = waiting.pop(c)  # type: ignore[index]
                try:
                    tag, val = c.recv()
                except EOFError:
                    raise _WorkerLost(f"worker {wid} ended unexpectedly (exit code "
                                      f"{procs[wid].exitcode})") from None
                if tag == "error":
                    raise RuntimeError(f"explorer worker {wid} failed:\n{val}")
                out[wid] = val
            now = time.monotonic()
            if now >= next_mem:
                next_mem = now + 0.5
                peak_mem = max(peak_mem, memory_mib(pids))
            if not flag.value:
                if now > deadline:
                    reason = f"time limit {limits.time_limit:g}s reached"
                    flag.value = 1
                elif budget is not None and peak_mem >= budget:
                    reason = memory_reason(budget, n_states)
                    flag.value = 1
            if progress is not None and now >= next_report:
                next_report = now + progress_every
                progress({"states": n_states, "queue": max(frontier - sum(counters), 0),
                          "depth": depth, "transitions": transitions, "seconds": now - t0})
        if any(v is _Stop for v in out.values()):
            raise _Stop
        return out

    reason = ""
    n_states, transitions, generated, depth, frontier, peak = 1, 0, 1, 0, 1, 1
    parent, via = array("i", [-1]), array("i", [-1])
    new_by_edge = array("l", [0] * len(prog.edges))
    found: dict[str, tuple[int, list[int], str]] = {}
    reached: dict[str, int] = {}
    todo = set(witness_ids)
    if witnesses is not None and todo:
        for w in witnesses(init):
            if w in todo:
                todo.discard(w)
                reached[w] = 0
    for v in prog.state_violations(init):
        found.setdefault(v.invariant, (0, [], v.message))
    stop = bool(found) and stop_at_first
    max_states = limits.max_states
    max_depth = limits.max_depth if limits.max_depth is not None else 1 << 62
    try:
        call({(hash(k0) * _MIX >> 61) % n: ("start", 0, k0, settled0)})
        while frontier and not stop:
            if depth >= max_depth:
                reason = f"depth bound {limits.max_depth} reached"
                break
            reported = set(found)
            ex = call({w: ("expand", depth, stop_at_first, reported, deadline)
                       for w in range(n)})
            steps = [e[0] for w in range(n) for e in ex[w]["events"]]
            first = min(steps) if steps and stop_at_first else None
            mg = call({w: ("merge", depth, stop_at_first, first, reported,
                           todo if witnesses is not None else set()) for w in range(n)})
            # the level's new states in the single-process order
            order = heapq.merge(*[zip(mg[w]["j"], mg[w]["rank"], [w] * len(mg[w]["j"]),
                                      range(len(mg[w]["j"])), strict=True)
                                  for w in range(n)])
            # every event (key, phase, worker, its place there, reference, violations,
            # witness) in the single-process order
            events = sorted((e[0], ph, w, x, *e[1:]) for ph, rep in enumerate((ex, mg))
                            for w in range(n) for x, e in enumerate(rep[w]["events"]))
            cut = None
            if stop_at_first:
                viol = [ev[0] for ev in events if ev[5] is not None]
                cut = viol[0] if viol else None
            numbers: list[array[int]] = [array("q") for _ in range(n)]
            queued = 0
            for j, rank, w, idx in order:
                if cut is not None and (j, rank, _STATE) > cut:
                    break
                g = n_states
                n_states += 1
                numbers[w].append(g)
                eid = mg[w]["eid"][idx]
                parent.append(j)
                via.append(eid)
                new_by_edge[eid] += 1
                queued += not mg[w]["error"][idx]
                if max_states is not None and n_states >= max_states:
                    reason = f"state limit {max_states} reached"
                    lim = (j, rank, _STATE)
                    cut = lim if cut is None or lim < cut else cut
                    break
            for key, _ph, w, _x, ref, viols, wit in events:
                if cut is not None and key > cut:
                    break
                if wit is not None:
                    reached.setdefault(wit, numbers[w][ref])
                    todo.discard(wit)
                    continue
                at = numbers[w][ref] if key[2] == _STATE else key[0]
                tail = [ref] if key[2] == _STEP else []
                for inv, msg in viols:
                    if inv not in found:
                        found[inv] = (at, tail, msg)
            if cut is not None:
                parts = call({w: ("cut", cut) for w in range(n)})
                transitions += sum(p[0] for p in parts.values())
                generated += sum(p[1] for p in parts.values())
                stop = True
                break
            call({w: ("number", numbers[w]) for w in range(n)})
            transitions += sum(ex[w]["transitions"] for w in range(n))
            generated += sum(ex[w]["generated"] for w in range(n))
            frontier = queued
            peak = max(peak, frontier)
            depth += 1
    except _Stop:
        pass
    except _WorkerLost as e:
        reason = str(e)
    seconds = time.monotonic() - t0
    if found:
        verdict = VIOLATED
    elif reason or (frontier and not stop):
        verdict = INCOMPLETE
        reason = reason or "stopped early"
    else:
        verdict = HOLDS
    peak_mem = max(peak_mem, memory_mib(pids))
    return result_of(prog, verdict, reason, n_states, transitions, seconds, found, reached,
                   witnesses, witness_ids, parent, via, norm, peak, new_by_edge, fingerprint,
                   generated, k0, peak_mem)
