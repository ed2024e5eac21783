"""Explicit-state explorer: breadth-first over every reachable state of a host program.

Breadth-first, so the first violation found of each invariant has a shortest trace.
Storage is exact by default: each visited state is kept as its bit-packed encoding (an
int of a few dozen bytes, ``Packing``) in a set; an optional fingerprint mode keeps a
64-bit hash instead and reports the chance that a collision hid a state.  A program with
``keyed_successors`` (the any host's fused rule code) computes each successor's encoding
from its parent's and leaves out the successors already seen, so the common case builds
no state it does not keep.  Each state also keeps its parent and the
edge that reached it (two ints), which is all a trace needs: traces are rebuilt by
re-running the edges from the initial state.  A run that stops on a limit says
``incomplete``, never ``holds``.  The engine returns data; reporters print it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tdxcheck.model.state import State

from .engine import STATE_ENCODING, Engine, Violation

HOLDS, VIOLATED, INCOMPLETE = "holds", "violated", "incomplete"


@dataclass(frozen=True)
class Edge:
    """A kind of transition: what the host (or guest) does, with a fault choice."""

    label: str
    thread: int = -1
    fault: str | None = None


Succ = tuple[int, "int | None", State, list[Violation]]


class Program(Protocol):
    """What the explorer explores: an initial state and labelled successors."""

    engine: Engine
    edges: list[Edge]

    def initial(self) -> State: ...

    def successors(self, s: State) -> Iterator[Succ]:
        """(edge id, status, next state, violations of this step)."""
        ...

    def apply_edge(self, s: State, eid: int) -> Succ | None:
        """The one successor of ``s`` by edge ``eid`` (None if not enabled)."""
        ...

    def state_violations(self, s: State) -> list[Violation]: ...

    def stuck(self, s: State) -> str | None:
        """A message if ``s`` has no successor but should (a deadlock), else None."""
        ...

    def bounds(self) -> list[int]:
        """The largest value of each cell of the program's state (for packing)."""
        ...


@dataclass
class Counterexample:
    invariant: str
    message: str
    path: list[tuple[int, int | None]]  # (edge id, status) from the initial state
    states: list[State]  # initial state, then the state after each edge

    @property
    def length(self) -> int:
        return len(self.path)


@dataclass
class ExploreResult:
    verdict: str
    reason: str  # why incomplete; for a violated run, the limit that cut it short; or ""
    states: int
    transitions: int
    depth: int
    seconds: float
    violations: list[Counterexample] = field(default_factory=list)
    witnesses: dict[str, Counterexample | None] = field(default_factory=dict)
    peak_queue: int = 0
    new_states_by_edge: list[int] = field(default_factory=list)
    bytes_per_state: float = 0.0
    fingerprint_collision_probability: float | None = None
    memory_mib: float = 0.0  # the most memory the run's processes held together (sampled)

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else float(self.states)


@dataclass
class Limits:
    """Where a run stops short (its verdict is then ``incomplete``, never ``holds``).

    ``memory_mib`` is the memory budget: the explorer reads its resident memory (every
    process's, with workers) as it goes, and a run that reaches the budget stops with the
    reason instead of being killed by the kernel when memory runs out (``memory_budget``
    gives the default ``tdxcheck check`` uses)."""

    max_states: int | None = None
    max_depth: int | None = None
    time_limit: float | None = None
    memory_mib: float | None = None


def memory_budget(fraction: float = 0.8) -> float | None:
    """The default memory budget in MiB: ``fraction`` of the memory the kernel says is
    available when the run starts (``MemAvailable``, Linux), or None where that is not
    known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024 * fraction
    except OSError:
        pass
    return None


def memory_mib(pids: Sequence[int] = ()) -> float:
    """Memory this process holds, with ``pids`` (forked workers) the memory of all of them
    together, in MiB.  Alone: resident memory (``/proc/self/statm``).  With workers: the
    sum of each one's proportional share (``Pss`` in ``/proc/PID/smaps_rollup``), so that
    the pages a fork shares are counted once.  Elsewhere: this process's peak
    (``ru_maxrss``)."""
    try:
        if not pids:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * _PAGE / 2**20
        total = 0.0
        for pid in ("self", *pids):
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) / 1024
                        break
        return total
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def memory_reason(budget: float, states: int) -> str:
    """Why a run stopped on its memory budget."""
    return (f"memory budget {budget:,.0f} MiB reached at {states:,} states (--fingerprint "
            f"stores less per state; --memory-budget sets the budget)")


Progress = Callable[[dict[str, float]], None]


def make_packer(bounds: Sequence[int], checked: Sequence[int] = ()) -> tuple[
        Callable[[State], bytes], Callable[[bytes], State]]:
    """Generated straight-line bit packing of a state into the fewest whole bytes.

    A negative cell makes ``pack`` raise OverflowError; a cell of ``checked`` (the counters:
    the only cells rules compute rather than copy from a constant or an operand) above its
    bound makes it raise OverflowError too, so no two states can share an encoding."""
    widths = [max(b, 1).bit_length() for b in bounds]
    total = sum(widths)
    nbytes = max(1, (total + 7) // 8)
    parts, outs, off = [], [], 0
    for i, w in enumerate(widths):
        parts.append(f"(s[{i}] << {off})" if off else f"s[{i}]")
        outs.append(f"(x >> {off}) & {(1 << w) - 1}" if off else f"x & {(1 << w) - 1}")
        off += w
    guard = " or ".join(f"s[{i}] > {bounds[i]}" for i in checked)
    check = f"    if {guard}: raise OverflowError\n" if guard else ""
    src = (f"def pack(s):\n{check}    return ({' | '.join(parts)}).to_bytes({nbytes}, 'little')\n"
           f"def unpack(b):\n    x = int.from_bytes(b, 'little')\n"
           f"    return ({', '.join(outs)},)\n")
    ns: dict[str, Callable[..., object]] = {}
    exec(compile(src, "<packer>", "exec"), ns)  # noqa: S102 - generated from bounds only
    return ns["pack"], ns["unpack"]  # type: ignore[return-value]


class Packing:
    """The explorer's exact encoding of a state: one int, each cell a fixed bit field.

    Cells are laid out in 30-bit words (CPython's int digit) without straddling a word, so
    ``pack`` and ``unpack`` work on small ints.  ``pack`` raises OverflowError for a
    negative cell or a cell of ``checked`` (the counters: the only cells rules compute
    rather than copy from a constant or an operand) above its bound, so no two states can
    share an encoding.  ``key`` tells fused successor code how to compute a successor's
    encoding from its parent's (``compile.KeySpec``)."""

    WORD = 30

    def __init__(self, bounds: Sequence[int], checked: Sequence[int] = ()) -> None:
        from tdxcheck.model.compile import KeySpec

        W = self.WORD
        widths = [max(b, 1).bit_length() for b in bounds]
        offsets: list[int] = []
        words: list[list[int]] = [[]]
        used = 0
        for i, w in enumerate(widths):
            if used + w > W and used:
                words.append([])
                used = 0
            offsets.append((len(words) - 1) * W + used)
            words[-1].append(i)
            used += w
            if used > W:  # a cell wider than a word has its own words
                words.extend([] for _ in range((used - 1) // W))
                used = W
        self.bits = len(words) * W
        self.nbytes = max(1, (self.bits + 7) // 8)
        self.key = KeySpec(tuple(offsets), tuple(bounds), frozenset(checked))
        wsrc = []
        for k, cells in enumerate(words):
            if not cells:
                continue
            parts = [f"(s[{i}] << {offsets[i] - k * W})" if offsets[i] > k * W else f"s[{i}]"
                     for i in cells]
            wsrc.append((k, "(" + " | ".join(parts) + ")"))
        body = " | ".join(f"({w} << {k * W})" if k else w for k, w in wsrc) or "0"
        guard = " or ".join(f"s[{i}] > {bounds[i]}" for i in checked)
        lines = ["def pack(s):", f"    x = {body}",
                 f"    if x < 0{' or ' + guard if guard else ''}: raise OverflowError",
                 "    return x", "def unpack(x):"]
        outs = []
        for k, cells in enumerate(words):
            if not cells:
                continue
            if len(cells) == 1 and widths[cells[0]] > W:
                i = cells[0]
                outs.append(f"(x >> {offsets[i]}) & {(1 << widths[i]) - 1}")
                continue
            lines.append(f"    w{k} = (x >> {k * W}) & {(1 << W) - 1}" if k else
                         f"    w0 = x & {(1 << W) - 1}")
            for i in cells:
                o = offsets[i] - k * W
                outs.append(f"(w{k} >> {o}) & {(1 << widths[i]) - 1}" if o else
                            f"w{k} & {(1 << widths[i]) - 1}")
        lines.append(f"    return ({', '.join(outs)},)")
        ns: dict[str, Callable[..., object]] = {}
        exec(compile("\n".join(lines), "<packer>", "exec"), ns)  # noqa: S102 - from bounds only
        self.pack: Callable[[State], int] = ns["pack"]  # type: ignore[assignment]
        self.unpack: Callable[[int], State] = ns["unpack"]  # type: ignore[assignment]


#: how many successors' canonical encodings the explorer keeps (a cache: cleared when full)
_CANON_CACHE = 1 << 17
_EMPTY = (None, 0)


def canon_keyer(canon: Callable[[State], State] | None, packing: Packing) -> tuple[
        Callable[[State], tuple[int, bool]] | None, int]:
    """The canonical-encoding function and renaming mask of ``canon``'s symmetry (see
    ``Symmetry.canonical_key``), when ``canon`` is a ``Symmetry``'s ``canonical``."""
    sym = getattr(canon, "__self__", None)
    if canon is None or not hasattr(sym, "canonical_key"):
        return None, 0
    return sym.canonical_key(packing.key)  # type: ignore[union-attr,no-any-return]


def _canonical_key(canon: Callable[[State], State], pack: Callable[[State], int],
                   n: State) -> int | None:
    """The encoding of ``n``'s canonical state (None: a cell out of range)."""
    try:
        return pack(canon(n))
    except OverflowError:  # pragma: no cover - a canonical state keeps its parent's cells
        return None


def _fingerprint(key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def explore(
    prog: Program,
    limits: Limits = Limits(),
    stop_at_first: bool = True,
    progress: Progress | None = None,
    progress_every: float = 2.0,
    canon: Callable[[State], State] | None = None,
    fingerprint: bool = False,
    witnesses: Callable[[State], list[str]] | None = None,
    witness_ids: Sequence[str] = (),
    workers: int = 1,
) -> ExploreResult:
    """Breadth-first search of ``prog`` checking every invariant on every state and step.

    With ``canon`` (symmetry reduction) only one canonical state per orbit is stored and
    expanded; counterexamples are turned back into concrete runs from the initial state.
    With ``workers`` > 1 the search runs in that many processes (``parallel.py``) and
    returns the same result.
    """
    if workers > 1:
        from .parallel import explore_parallel

        return explore_parallel(prog, limits, stop_at_first, progress, progress_every, canon,
                                fingerprint, witnesses, witness_ids, workers)
    t0 = time.monotonic()
    loops0 = getattr(prog, "self_loops", 0)
    packing = Packing(prog.bounds(), getattr(prog, "counter_cells", list)())
    pack, unpack, nbytes = packing.pack, packing.unpack, packing.nbytes
    # the program's fused successor function that also gives each successor's encoding;
    # with symmetry, a successor whose own encoding is stored (its parent, or a canonical
    # state seen before) is left out before it is canonicalised
    keyed = None
    if hasattr(prog, "keyed_successors"):
        keyed = prog.keyed_successors(packing.key)
    norm: Callable[[State], State] = canon if canon is not None else (lambda x: x)
    keyer, sens = canon_keyer(canon, packing)
    init = norm(prog.initial())
    k0 = pack(init)
    # per state (with symmetry): whether it is settled (``Symmetry.canonical_key``)
    settled = bytearray([keyer(init)[1]]) if keyer is not None else bytearray()

    def fp(k: int) -> int:
        return _fingerprint(k.to_bytes(nbytes, "little"))

    seen: set[int] = {fp(k0)} if fingerprint else {k0}
    new_by_edge = array("l", [0] * len(prog.edges))
    parent = array("i", [-1])
    via = array("i", [-1])
    queue: deque[int] = deque([k0])  # encodings of the states to expand ...
    qidx = array("i", [0])  # ... and their indices (qidx[qhead] is the next one's)
    qhead = 0
    found: dict[str, tuple[int, list[int], str]] = {}  # invariant -> (state idx, tail, msg)
    transitions = 0
    keyed_loops = 0
    depth = 0
    level_end = 0  # index of the last state of the current BFS level
    reason = ""
    next_report = t0 + progress_every
    peak = 1
    n_states = 1

    def record(viol: Sequence[Violation], i: int, tail: list[int]) -> bool:
        for v in viol:
            if v.invariant not in found:
                found[v.invariant] = (i, tail, v.message)
        return bool(found) and stop_at_first

    reached: dict[str, int] = {}
    todo = set(witness_ids)

    def reach(st: State, j: int) -> None:
        assert witnesses is not None
        for w in witnesses(st):
            if w in todo:
                todo.discard(w)
                reached[w] = j

    if witnesses is not None and todo:
        reach(init, 0)
    stop = record(prog.state_violations(init), 0, [])
    generated = 1
    state_violations = prog.state_violations
    fast = keyed is not None and not fingerprint
    seen_add, parent_append, via_append = seen.add, parent.append, via.append
    queue_append, qidx_append = queue.append, qidx.append
    max_states = limits.max_states if limits.max_states is not None else 1 << 62
    max_depth = limits.max_depth if limits.max_depth is not None else 1 << 62
    deadline = t0 + limits.time_limit if limits.time_limit is not None else float("inf")
    budget = limits.memory_mib
    next_mem = t0
    peak_mem = 0.0
    # with symmetry: the canonical encoding of recent successors' own encodings (a
    # successor is often reached again from another parent); cleared when full
    canon_of: dict[int, int | None] = {}
    canon_get = canon_of.get
    encoding = Violation(STATE_ENCODING, "a state cell left its declared range "
                         "(a counter below 0 or above its bound)", 0)
    while queue and not stop:
        key = queue.popleft()
        i = qidx[qhead]
        qhead += 1
        if i > level_end:
            depth += 1
            level_end = n_states - 1
        if depth >= max_depth:
            reason = reason or f"depth bound {limits.max_depth} reached"
            continue
        s = unpack(key)
        if fast:
            # the common case (exact storage, a fused program), kept tight
            succ, total = keyed(s, key, seen)  # type: ignore[misc]
            par_settled = settled[i] if keyer is not None else 0
            transitions += total
            for eid, _status, kn, n, viol, before in succ:
                if viol and record(viol, i, [eid]):
                    stop = True
                elif kn in seen:  # seen before (a self-loop's key is its parent's)
                    continue
                else:
                    if keyer is not None and kn is not None:
                        if par_settled and not (kn ^ key) & sens:
                            # only cells that choose no renaming changed: canonical
                            kc, st = kn, 1
                        else:
                            kc, st = canon_get(kn) or _EMPTY
                            if kc is None:
                                if len(canon_of) >= _CANON_CACHE:
                                    canon_of.clear()
                                kc, st = canon_of[kn] = keyer(n)
                        if kc in seen:
                            continue
                        kn = kc
                        settled.append(st)
                    elif canon is not None and kn is not None:
                        kn = _canonical_key(canon, pack, n)
                        if kn in seen:
                            continue
                    n = tuple(n)
                    j = n_states
                    sv = state_violations(n)
                    if kn is None:  # a cell left its range: only a broken (ablated) rule
                        sv = [*sv, encoding]
                        if keyer is not None:
                            settled.append(0)
                    else:
                        seen_add(kn)
                    n_states += 1
                    new_by_edge[eid] += 1
                    parent_append(i)
                    via_append(eid)
                    if todo:
                        reach(n, j)
                    if sv:
                        # an error state is reported, not expanded
                        stop = record(sv, j, [])
                    else:
                        queue_append(kn)
                        qidx_append(j)
                    if n_states >= max_states:
                        reason = f"state limit {limits.max_states} reached"
                        stop = True
                if stop:
                    # the state changes after this one were not taken (as if yielded one by
                    # one; self-loops count in full)
                    full, _t = keyed(s, key, ())  # type: ignore[misc]
                    transitions -= sum(1 for t in full if t[5] > before)
                    break
        elif keyed is not None:  # fingerprints: every successor, keys to hash
            succ, total = keyed(s, key, ())  # type: ignore[misc]
            keyed_loops += total - len(succ)
        else:
            succ = [(eid, st, None, n, viol, 0) for eid, st, n, viol in prog.successors(s)]
        for eid, _status, kn, n, viol, _b in (() if fast else succ):
            transitions += 1
            if viol and record(viol, i, [eid]):
                stop = True
                break
            if keyed is not None:
                if kn == key:  # a self-loop, yielded for its step violation
                    continue
                n = tuple(n)
                if canon is not None and kn is not None:
                    kn = _canonical_key(canon, pack, n)
            else:
                if n is s:  # an error status that changed nothing: a self-loop
                    continue
                try:
                    kn = pack(norm(n))
                except OverflowError:  # a negative cell: only a broken (ablated) rule
                    kn = None
            generated += 1
            if kn is not None:
                m = fp(kn) if fingerprint else kn
                if m in seen:
                    continue
            j = n_states
            sv = state_violations(n)
            if kn is None:
                sv = [*sv, encoding]
            else:
                seen.add(m)
            n_states += 1
            new_by_edge[eid] += 1
            parent.append(i)
            via.append(eid)
            if todo:
                reach(n, j)
            if sv:
                # an error state is reported, not expanded: what follows it follows a bug
                if record(sv, j, []):
                    stop = True
                    break
            else:
                queue.append(kn)
                qidx.append(j)
            if limits.max_states is not None and n_states >= limits.max_states:
                reason = f"state limit {limits.max_states} reached"
                stop = True
                break
        if not (total if fast else succ) and not stop:
            msg = prog.stuck(s)
            if msg and record([Violation("deadlock", msg, 0)], i, []):
                stop = True
        peak = max(peak, len(queue))
        now = time.monotonic()
        if now > deadline:
            reason = f"time limit {limits.time_limit:g}s reached"
            break
        if now >= next_mem:
            next_mem = now + 0.5
            peak_mem = max(peak_mem, memory_mib())
            if budget is not None and peak_mem >= budget:
                reason = memory_reason(budget, n_states)
                break
        if progress is not None and now >= next_report:
            next_report = now + progress_every
            progress({"states": n_states, "queue": len(queue), "depth": depth,
                      "transitions": transitions + keyed_loops + getattr(prog, "self_loops", 0)
                      - loops0, "seconds": now - t0})
    seconds = time.monotonic() - t0
    # gated self-loops the program counted without yielding them
    transitions += getattr(prog, "self_loops", 0) - loops0 + keyed_loops
    if found:
        verdict = VIOLATED
    elif reason or queue:
        verdict = INCOMPLETE
        reason = reason or "stopped early"
    else:
        verdict = HOLDS
    return result_of(prog, verdict, reason, n_states, transitions, seconds, found, reached,
                     witnesses, witness_ids, parent, via, norm, peak, new_by_edge,
                     fingerprint, generated, k0, max(peak_mem, memory_mib()))


def result_of(prog: Program, verdict: str, reason: str, n_states: int, transitions: int,
              seconds: float, found: dict[str, tuple[int, list[int], str]],
              reached: dict[str, int], witnesses: Callable[[State], list[str]] | None,
              witness_ids: Sequence[str], parent: array[int], via: array[int],
              norm: Callable[[State], State], peak: int, new_by_edge: array[int],
              fingerprint: bool, generated: int, k0: int, mem: float) -> ExploreResult:
    """The run's result: each counterexample and witness rebuilt from the initial state
    along its parent edges (shortest, as breadth-first found it); ``explore`` and
    ``parallel.explore_parallel`` both end here."""

    def edges_to(i: int) -> list[int]:
        edges: list[int] = []
        while i > 0:
            edges.append(via[i])
            i = parent[i]
        edges.reverse()
        return edges

    def stuck(st: State) -> bool:
        return prog.stuck(st) is not None

    cxs = [rebuild(prog, inv, msg, edges_to(i) + tail, norm,
                   check=stuck if inv == "deadlock" else None)
           for inv, (i, tail, msg) in found.items()]
    wit: dict[str, Counterexample | None] = {}
    for w in witness_ids:
        if w in reached:
            assert witnesses is not None
            wit[w] = rebuild(prog, w, "", edges_to(reached[w]), norm,
                             check=lambda st, w=w: w in witnesses(st))  # type: ignore[misc]
        else:
            wit[w] = None
    cxs.sort(key=lambda c: (c.length, c.invariant))
    per_state = (sys.getsizeof(k0) + 8 + 4 + 28) if not fingerprint else (32 + 8 + 4 + 28)
    fp_p = None
    if fingerprint:
        fp_p = n_states * max(generated - n_states, 0) / 2.0**64
    deepest, j = 0, n_states - 1
    while j > 0:
        deepest += 1
        j = parent[j]
    # a violated run keeps the limit that cut it short: with stop_at_first=False, more
    # invariants may break than it found (reporters say so; ablation marks the row)
    return ExploreResult(verdict, reason, n_states, transitions, deepest, seconds, cxs, wit,
                         peak, list(new_by_edge), per_state, fp_p, mem)


def rebuild(prog: Program, invariant: str, message: str, edges: Sequence[int],
            norm: Callable[[State], State],
            check: Callable[[State], bool] | None = None) -> Counterexample:
    """Re-run ``edges`` (taken from canonical states) as a concrete run from the initial
    state: at each step take the successor of the concrete state whose canonical form is
    what the edge gave from the canonical state (the last step must break the invariant)."""
    cur = prog.initial()
    canon_cur = norm(cur)
    path: list[tuple[int, int | None]] = []
    sts = [cur]
    for k, eid in enumerate(edges):
        r = prog.apply_edge(canon_cur, eid)
        assert r is not None, "a recorded edge is not enabled when re-run"
        target = norm(r[2])
        last = k == len(edges) - 1
        for e2, status, n, viol in prog.successors(cur):
            if norm(n) != target:
                continue
            if last and check is not None:
                if not check(n):
                    continue
            elif last and invariant not in {v.invariant for v in viol} and \
                    invariant not in {v.invariant for v in prog.state_violations(n)}:
                continue
            path.append((e2, status))
            sts.append(n)
            cur = n
            canon_cur = target
            break
        else:  # pragma: no cover - would mean the symmetry is not one
            raise AssertionError("counterexample does not concretize")
    for v in [*_step_viol(prog, sts, path), *prog.state_violations(cur)]:
        if v.invariant == invariant:
            message = v.message
            break
    return Counterexample(invariant, message, path, sts)


def _step_viol(prog: Program, sts: list[State], path: list[tuple[int, int | None]]
               ) -> list[Violation]:
    if not path:
        return []
    r = prog.apply_edge(sts[-2], path[-1][0])
    return r[3] if r else []


def edge_sequence(prog: Program, cx: Counterexample) -> Sequence[Edge]:
    return [prog.edges[e] for e, _ in cx.path]
