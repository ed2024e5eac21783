"""Explicit-state explorer: breadth-first over every reachable state of a host program.

Breadth-first, so the first violation found of each invariant has a shortest trace.
States are stored exactly, packed into ``bytes``; each stored state keeps its parent and
the edge that reached it, which is all a trace needs.  A run that stops on a limit says
``incomplete``: never ``holds``.  The engine returns data (``ExploreResult``); reporters
print it.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tdxcheck.model.state import State

from .engine import Engine, Violation

HOLDS, VIOLATED, INCOMPLETE = "holds", "violated", "incomplete"


@dataclass(frozen=True)
class Edge:
    """A kind of transition: what the host (or guest) does, with a fault choice."""

    label: str
    thread: int = -1
    fault: str | None = None


class Program(Protocol):
    """What the explorer explores: an initial state and labelled successors."""

    engine: Engine
    edges: list[Edge]

    def initial(self) -> State: ...

    def successors(self, s: State) -> Iterator[tuple[int, int | None, State, list[Violation]]]:
        """(edge id, status, next state, violations of this step)."""
        ...

    def state_violations(self, s: State) -> list[Violation]: ...

    def stuck(self, s: State) -> str | None:
        """A message if ``s`` has no successor but should (a deadlock), else None."""
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
    reason: str  # why incomplete, or ""
    states: int
    transitions: int
    depth: int
    seconds: float
    violations: list[Counterexample] = field(default_factory=list)
    peak_queue: int = 0

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else float(self.states)


@dataclass
class Limits:
    max_states: int | None = None
    max_depth: int | None = None
    time_limit: float | None = None


Progress = Callable[[dict[str, float]], None]


def _packer(width: int) -> tuple[Callable[[State], bytes], Callable[[bytes], State]]:
    if width <= 255:
        return bytes, tuple
    if width <= 0xFFFF:
        return (lambda s: array("H", s).tobytes(),
                lambda b: tuple(array("H", b)))
    return (lambda s: array("L", s).tobytes(), lambda b: tuple(array("L", b)))


def explore(
    prog: Program,
    limits: Limits = Limits(),
    stop_at_first: bool = True,
    progress: Progress | None = None,
    progress_every: float = 2.0,
) -> ExploreResult:
    """Breadth-first search of ``prog`` checking every invariant on every state and step."""
    t0 = time.monotonic()
    lay = prog.engine.layout
    width = max((lay.value_bound(lay.field_of(i)) for i in range(lay.size)), default=0)
    width = max(width, getattr(prog, "extra_bound", 0))
    pack, unpack = _packer(width)
    init = prog.initial()
    index: dict[bytes, int] = {pack(init): 0}
    order: list[bytes] = [pack(init)]
    parent = array("l", [-1])
    via = array("l", [-1])
    vstat: list[int | None] = [None]
    depth_of = array("l", [0])
    queue: deque[int] = deque([0])
    found: dict[str, Counterexample] = {}
    transitions = 0
    max_depth = 0
    reason = ""
    next_report = t0 + progress_every
    peak = 1

    def trace(i: int, extra: tuple[int, int | None, State] | None) -> tuple[
            list[tuple[int, int | None]], list[State]]:
        path: list[tuple[int, int | None]] = []
        sts: list[State] = []
        j = i
        while j >= 0:
            sts.append(unpack(order[j]))
            if parent[j] >= 0:
                path.append((via[j], vstat[j]))
            j = parent[j]
        path.reverse()
        sts.reverse()
        if extra is not None:
            path.append((extra[0], extra[1]))
            sts.append(extra[2])
        return path, sts

    def record(viol: list[Violation], i: int, extra: tuple[int, int | None, State] | None
               ) -> bool:
        for v in viol:
            if v.invariant not in found:
                path, sts = trace(i, extra)
                found[v.invariant] = Counterexample(v.invariant, v.message, path, sts)
        return bool(found) and stop_at_first

    stop = record(prog.state_violations(init), 0, None)
    while queue and not stop:
        i = queue.popleft()
        d = depth_of[i]
        if limits.max_depth is not None and d >= limits.max_depth:
            reason = reason or f"depth bound {limits.max_depth} reached"
            continue
        s = unpack(order[i])
        any_succ = False
        for eid, status, n, viol in prog.successors(s):
            any_succ = True
            transitions += 1
            if viol and record(viol, i, (eid, status, n)):
                stop = True
                break
            key = pack(n)
            if key in index:
                continue
            j = len(order)
            index[key] = j
            order.append(key)
            parent.append(i)
            via.append(eid)
            vstat.append(status)
            depth_of.append(d + 1)
            max_depth = max(max_depth, d + 1)
            queue.append(j)
            sv = prog.state_violations(n)
            if sv and record(sv, j, None):
                stop = True
                break
            if limits.max_states is not None and len(order) >= limits.max_states:
                reason = f"state limit {limits.max_states} reached"
                stop = True
                break
        if not any_succ and not stop:
            msg = prog.stuck(s)
            if msg and record([Violation("deadlock", msg, 0)], i, None):
                stop = True
        peak = max(peak, len(queue))
        now = time.monotonic()
        if limits.time_limit is not None and now - t0 > limits.time_limit:
            reason = f"time limit {limits.time_limit:g}s reached"
            break
        if progress is not None and now >= next_report:
            next_report = now + progress_every
            progress({"states": len(order), "queue": len(queue), "depth": d,
                      "transitions": transitions, "seconds": now - t0})
    seconds = time.monotonic() - t0
    if found:
        verdict = VIOLATED
    elif reason or queue:
        verdict = INCOMPLETE
        reason = reason or "stopped early"
    else:
        verdict = HOLDS
    viols = sorted(found.values(), key=lambda c: (c.length, c.invariant))
    return ExploreResult(verdict, reason if verdict == INCOMPLETE else "", len(order),
                         transitions, max_depth, seconds, viols, peak)


def edge_sequence(prog: Program, cx: Counterexample) -> Sequence[Edge]:
    return [prog.edges[e] for e, _ in cx.path]
