"""State graphs of ``--host any``: the full graph of a small configuration, and projections.

A *projection* maps each state to one object's small machine and sums the transitions:

``td``     a TD slot's (TDR lifecycle, TDCS op state, fatal), or "no TD";
``page``   a page's PAMT type, and whether its owner TD still exists;
``hkid``   a private HKID's KOT state and WBINVD bitmap;
``vcpu``   a vCPU slot's TDVPS state, in the guest or not, associated or not, or "no vCPU".

Every object of the kind is interchangeable with the others (symmetry), so each graph is
*one* object's machine with the counts summed over all objects of that kind.  An edge is
(from node, to node, wrapper, status) with a count; its ``kind`` is ``change`` (the node
changed), ``error`` (an error status, node unchanged: a self-loop) or ``same`` (a success
that left the node as it was).  Self-loops are drawn only for calls that *name* the object
(an operand is its page, its TD, its vCPU, its HKID, or the call is global, like CACHE.WB)
and whose rule can write the projected fields, so that an HKID's node does not collect
every ``tdh_mng_rd``.  ``full`` keeps every explored state as a node (small configurations
only: ``max_states``).

How every transition, self-loops included, is seen at the fused code's speed: the
coverage walk (``coverage.walk``) hands the fused successor function, per state, the
counter array of that state's *signature* (the cells the projections read), so self-loops
are counted per signature without being yielded; state changes come from ``successors``.
One walk gives the coverage table and all four projections.  The graphs are checked
against a reference that steps every action through the engine (tests/test_graphs.py).
With symmetry on, counts are per explored canonical state.

Formats: DOT (written here, integer node ids, deterministic), GraphML and JSON node-link
(networkx), SVG and PNG when Graphviz's ``dot`` is on the PATH.  DOT and the renderings
merge each node pair's edges of one kind into one arrow listing the wrappers and statuses;
GraphML and JSON keep one edge per wrapper and status.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, cast

import networkx as nx
from networkx.readwrite import json_graph
from tdxcheck.checker.analyses.coverage import (
    Coverage,
    Walk,
    collect,
    program,
    walk,
    wrapper_of,
)
from tdxcheck.checker.scenario import InputError
from tdxcheck.model.enums import KotState, OpState, PageType, TdLifecycle, VcpuState
from tdxcheck.model.rule import LEAVES, Assign, Effect, Fault, Rule, When
from tdxcheck.model.state import Layout, State
from tdxcheck.model.status import is_error, status_name

PROJECTIONS = ("td", "page", "hkid", "vcpu")
ALL_GRAPHS = ("full", *PROJECTIONS)
FORMATS = ("dot", "graphml", "json", "svg", "png")
KIND_ORDER = {"change": 0, "same": 1, "error": 2}
DEFAULT_MAX_FULL_STATES = 5000

Progress = Callable[[dict[str, float]], None]


class GraphError(InputError):
    """A graph that cannot be made as asked (no Graphviz, an unknown name)."""


# ------------------------------------------------------------------ projections
_FIELDS = {
    "td": ("tdr", "lifecycle", "op_state", "fatal", "hkid"),
    "vcpu": ("tdvpr", "state", "in_guest", "assoc"),
    "page": ("pt", "owner"),
    "hkid": ("kot_state", "kot_wbinvd"),
}
#: the fields whose change a projection shows (a call that can write none of them is not
#: drawn as a self-loop on that projection)
_WRITES = {
    "td": {"tdr", "lifecycle", "op_state", "fatal"},
    "vcpu": {"tdvpr", "state", "in_guest", "assoc"},
    "page": {"pt", "owner"},
    "hkid": {"kot_state", "kot_wbinvd"},
}
_UNOWNED = (int(PageType.PT_NDA), int(PageType.PT_RSVD))


def _written(effects: Sequence[Effect], out: set[str]) -> None:
    for e in effects:
        if isinstance(e, Assign):
            out.add(e.field)
        elif isinstance(e, When):
            _written(e.effects, out)


def fields_written(rule: Rule) -> set[str]:
    """Every field some path of the rule assigns (success, failure effects, faults)."""
    out: set[str] = set()
    _written(rule.effects, out)
    for step in rule.steps:
        _written(step.effects if isinstance(step, Fault) else step.fail_effects, out)
    return out


class Signature:
    """The cells the four projections read, as one tuple (``itemgetter``), and readers."""

    def __init__(self, layout: Layout) -> None:
        self.L = layout
        u = layout.u
        self.n_tds, self.n_vps = len(u.tds), len(u.vps)
        self.pages = range(1, u.n_pages)
        self.hkids = range(1, u.platform.hkids)
        cells: list[int] = []
        self.pos: dict[tuple[str, int], int] = {}
        for kind in PROJECTIONS:
            for f in _FIELDS[kind]:
                for i, c in enumerate(layout.cells(f)):
                    self.pos[(f, i)] = len(cells)
                    cells.append(c)
        self.cells = cells
        self.get = itemgetter(*cells)

    def __call__(self, s: State, _canon: State | None = None) -> tuple[int, ...]:
        return self.get(s)  # type: ignore[no-any-return]

    def at(self, sig: Sequence[int], f: str, i: int) -> int:
        return sig[self.pos[(f, i)]]


def _short(e: Any, prefix: str) -> str:
    return str(e.name).removeprefix(prefix)


@dataclass(frozen=True)
class Projection:
    name: str
    title: str
    subjects: Callable[[Signature], Sequence[int]]
    node: Callable[[Signature, Sequence[int], int], tuple[int, ...]]
    label: Callable[[tuple[int, ...], Layout], str]
    names: Callable[[Any, Signature, Sequence[int], int], bool]  # (action, sig, key, obj)


def _td_node(S: Signature, k: Sequence[int], t: int) -> tuple[int, ...]:
    if not S.at(k, "tdr", t):
        return (-1,)
    return (S.at(k, "lifecycle", t), S.at(k, "op_state", t), S.at(k, "fatal", t))


def _td_label(n: tuple[int, ...], _L: Layout) -> str:
    if n[0] < 0:
        return "no TD"
    lab = f"{_short(TdLifecycle(n[0]), 'TD_')}\n{_short(OpState(n[1]), 'OP_STATE_')}"
    return lab + ("\nFATAL" if n[2] else "")


def _td_names(a: Any, S: Signature, k: Sequence[int], t: int) -> bool:
    if a.arg("td") == t:
        return True
    tdr = S.at(k, "tdr", t)
    return bool(tdr) and a.arg("tdr") == tdr


def _page_node(S: Signature, k: Sequence[int], p: int) -> tuple[int, ...]:
    pt = S.at(k, "pt", p)
    if pt in _UNOWNED:
        return (pt, 0)
    live = S.at(k, "tdr", S.at(k, "owner", p)) != 0
    return (pt, 1 if live else 2)


def _page_label(n: tuple[int, ...], _L: Layout) -> str:
    return str(PageType(n[0]).name) + {0: "", 1: "\nowner TD exists",
                                       2: "\nowner TD gone"}[n[1]]


def _page_names(a: Any, S: Signature, k: Sequence[int], p: int) -> bool:
    ops = LEAVES[a.kind].hands if a.kind in LEAVES else ()
    return any(a.arg(o) == p for o in (*ops, "page"))


def _hkid_node(S: Signature, k: Sequence[int], h: int) -> tuple[int, ...]:
    return (S.at(k, "kot_state", h), S.at(k, "kot_wbinvd", h))


def _hkid_label(n: tuple[int, ...], L: Layout) -> str:
    pk = L.u.platform.packages
    bits = ",".join(f"pkg{i}" for i in range(pk) if n[1] >> i & 1)
    return f"{_short(KotState(n[0]), 'KOT_STATE_')}\nwbinvd {{{bits}}}"


def _hkid_names(a: Any, S: Signature, k: Sequence[int], h: int) -> bool:
    if a.arg("hkid") == h or a.arg("keyid") == h:
        return True
    tdr = a.arg("tdr")
    if tdr is not None:
        return any(S.at(k, "tdr", t) == tdr and S.at(k, "hkid", t) == h
                   for t in range(S.n_tds))
    return all(a.arg(o) is None for o in _OBJECT_OPERANDS)  # a global call (CACHE.WB)


_OBJECT_OPERANDS = ("td", "vp", "tdr", "tdvpr", "page", "hkid", "keyid", "gpa")


def _vcpu_node(S: Signature, k: Sequence[int], v: int) -> tuple[int, ...]:
    if not S.at(k, "tdvpr", v):
        return (-1,)
    return (S.at(k, "state", v), S.at(k, "in_guest", v), 1 if S.at(k, "assoc", v) else 0)


def _vcpu_label(n: tuple[int, ...], _L: Layout) -> str:
    if n[0] < 0:
        return "no vCPU"
    return (f"{_short(VcpuState(n[0]), 'VCPU_')}\n{'in guest' if n[1] else 'not in guest'}"
            f"\n{'associated' if n[2] else 'not associated'}")


def _vcpu_names(a: Any, S: Signature, k: Sequence[int], v: int) -> bool:
    if a.arg("vp") == v:
        return True
    tdvpr = S.at(k, "tdvpr", v)
    return bool(tdvpr) and a.arg("tdvpr") == tdvpr


PROJECTION: dict[str, Projection] = {
    "td": Projection("td", "TD lifecycle x op state (one TD slot; counts summed over slots)",
                     lambda S: range(S.n_tds), _td_node, _td_label, _td_names),
    "page": Projection("page", "PAMT page type and owner (one page; counts summed over pages)",
                       lambda S: S.pages, _page_node, _page_label, _page_names),
    "hkid": Projection("hkid", "KOT entry (one private HKID; counts summed over HKIDs)",
                       lambda S: S.hkids, _hkid_node, _hkid_label, _hkid_names),
    "vcpu": Projection("vcpu", "vCPU (one vCPU slot; counts summed over slots)",
                       lambda S: range(S.n_vps), _vcpu_node, _vcpu_label, _vcpu_names),
}


def _kind(changed: bool, status: int) -> str:
    if changed:
        return "change"
    return "error" if is_error(status) else "same"


def project(w: Walk, S: Signature, name: str, meta: dict[str, Any]) -> nx.MultiDiGraph:
    """The projection ``name`` of a walk keyed by ``S`` signatures."""
    P = PROJECTION[name]
    prog = w.prog
    L = prog.engine.layout
    subjects = list(P.subjects(S))
    acts = [entry[0].action for entry in prog._table]
    wrappers = [wrapper_of(a) for a in acts]
    relevant = [bool(fields_written(entry[0].rule) & _WRITES[name]) for entry in prog._table]
    edges: dict[tuple[tuple[int, ...], tuple[int, ...], str, int, str], int] = {}
    nodes: dict[tuple[int, ...], int] = {}

    def add(a: tuple[int, ...], b: tuple[int, ...], eid: int, st: int, kind: str,
            c: int) -> None:
        key = (a, b, wrappers[eid], st, kind)
        edges[key] = edges.get(key, 0) + c
        nodes.setdefault(a, 0)
        nodes.setdefault(b, 0)

    def sig(k: Hashable) -> Sequence[int]:
        return cast(Sequence[int], k)  # the walk was keyed by signatures

    for k, v in w.visits.items():
        for o in subjects:
            n = P.node(S, sig(k), o)
            nodes[n] = nodes.get(n, 0) + v
    for k in w.errors:
        for o in subjects:
            nodes.setdefault(P.node(S, sig(k), o), 0)
    for (k, eid, st), c in w.loops().items():
        if not relevant[eid]:
            continue
        for o in subjects:
            if P.names(acts[eid], S, sig(k), o):
                a = P.node(S, sig(k), o)
                add(a, a, eid, st, _kind(False, st), c)
    for (k, eid, st, kn), c in w.changes.items():
        for o in subjects:
            a, b = P.node(S, sig(k), o), P.node(S, sig(kn), o)
            if a != b:
                add(a, b, eid, st, "change", c)
            elif relevant[eid] and P.names(acts[eid], S, sig(k), o):
                add(a, a, eid, st, _kind(False, st), c)
    ids = {n: i for i, n in enumerate(sorted(nodes))}
    G = nx.MultiDiGraph(name=name, title=P.title, rankdir="LR" if name == "page" else "TB",
                        **meta)
    for n, i in ids.items():
        G.add_node(i, label=P.label(n, L), states=nodes[n], node=",".join(map(str, n)))
    _add_edges(G, ((ids[a], ids[b], wr, st, kind, c)
                   for (a, b, wr, st, kind), c in edges.items()))
    return G


def _add_edges(G: nx.MultiDiGraph, items: Any) -> None:
    rows = sorted(items, key=lambda r: (r[0], r[1], KIND_ORDER[r[4]], r[2], r[3]))
    for a, b, wr, st, kind, c in rows:
        name = status_name(st)
        G.add_edge(a, b, wrapper=wr, status=name, count=c, kind=kind,
                   label=f"{wr}\n{name} x{c:,}")


def _meta(config: Any, w: Walk) -> dict[str, Any]:
    return {"config": config.name, "description": config.describe(),
            "symmetry": w.symmetry, "states": w.states, "transitions": w.transitions,
            "counting": ("counts per explored canonical state (symmetry on)" if w.symmetry
                         else "counts per explored state (symmetry off)")}


def projections_and_coverage(
    config: Any,
    names: Sequence[str] = PROJECTIONS,
    *,
    symmetry: bool = True,
    faults: bool = False,
    ablate: Sequence[str] = (),
    progress: Progress | None = None,
) -> tuple[Coverage, dict[str, nx.MultiDiGraph]]:
    """One coverage walk of ``config``, keyed by signature: the coverage and each named
    projection."""
    for n in names:
        if n not in PROJECTION:
            raise GraphError(f"unknown projection {n!r} (have: {', '.join(PROJECTIONS)})")
    S = Signature(Layout(config.universe()))
    cov, w = collect(config, faults=faults, ablate=ablate, symmetry=symmetry,
                     progress=progress, key_of=S.get, succ_key=S)
    meta = _meta(config, w)
    return cov, {n: project(w, S, n, meta) for n in names}


def explore_once(
    config: Any,
    names: Sequence[str] = PROJECTIONS,
    *,
    faults: bool = False,
    ablate: Sequence[str] = (),
    progress: Progress | None = None,
) -> tuple[Walk, Coverage, dict[str, nx.MultiDiGraph]]:
    """One traced coverage walk of ``config`` (symmetry on, as ``check``): the walk, whose
    ``result`` is what ``check --all`` returns; the coverage; each named projection.
    ``tdxcheck report`` needs nothing else from the state space."""
    for n in names:
        if n not in PROJECTION:
            raise GraphError(f"unknown projection {n!r} (have: {', '.join(PROJECTIONS)})")
    S = Signature(Layout(config.universe()))
    cov, w = collect(config, faults=faults, ablate=ablate, progress=progress, key_of=S.get,
                     succ_key=S, trace=True)
    meta = _meta(config, w)
    return w, cov, {n: project(w, S, n, meta) for n in names}


def projection_graphs(config: Any, names: Sequence[str] = PROJECTIONS, symmetry: bool = True,
                      progress: Progress | None = None) -> dict[str, nx.MultiDiGraph]:
    return projections_and_coverage(config, names, symmetry=symmetry, progress=progress)[1]


# ------------------------------------------------------------------ the full graph
def full_graph(config: Any, symmetry: bool = True, max_states: int = DEFAULT_MAX_FULL_STATES,
               progress: Progress | None = None) -> nx.MultiDiGraph:
    """Every explored state a node (ids in breadth-first order), every transition an edge
    (counted per wrapper and status; self-loops per state)."""
    prog, canon = program(config, symmetry=symmetry)
    w = walk(prog, lambda s: s, lambda n, cn: cn, canon, max_states=max_states,
             progress=progress)
    return full_from_walk(w, _meta(config, w))


def full_from_walk(w: Walk, meta: dict[str, Any]) -> nx.MultiDiGraph:
    prog = w.prog
    L = prog.engine.layout
    wrappers = [wrapper_of(entry[0].action) for entry in prog._table]
    order = list(w.order)
    known = set(order)
    for k in sorted(cast(set[State], set(w.errors) - known)):
        order.append(k)
        known.add(k)
    ids = {k: i for i, k in enumerate(order)}
    errors = set(w.errors)
    G = nx.MultiDiGraph(name="full", title="every explored state", **meta)
    init = prog.initial()
    for k, i in ids.items():
        s = k  # the key is the state
        G.add_node(i, label=f"#{i}\n{state_summary(L, s)}", states=w.visits.get(k, 0),
                   error=k in errors,
                   node="; ".join(f"{L.label(c)}={L.show(c, y)}"
                                  for c, _x, y in L.diff(init, s)) or "initial")
    edges: dict[tuple[int, int, str, int, str], int] = {}
    for (k, eid, st), c in w.loops().items():
        key = (ids[k], ids[k], wrappers[eid], st, _kind(False, st))
        edges[key] = edges.get(key, 0) + c
    for (k, eid, st, kn), c in w.changes.items():
        key = (ids[k], ids[kn], wrappers[eid], st, "change" if kn != k else _kind(False, st))
        edges[key] = edges.get(key, 0) + c
    _add_edges(G, ((a, b, wr, st, kind, c) for (a, b, wr, st, kind), c in edges.items()))
    return G


def state_summary(L: Layout, s: State) -> str:
    """A state in a few words: live TDs, vCPUs, used pages, HKIDs not free."""
    u = L.u
    parts = []
    for t, name in enumerate(u.tds):
        if s[L.flat("tdr", (t,))]:
            lc = TdLifecycle(s[L.flat("lifecycle", (t,))])
            op = OpState(s[L.flat("op_state", (t,))])
            parts.append(f"{name} {_short(lc, 'TD_')}/{_short(op, 'OP_STATE_')}")
    for v, name in enumerate(u.vps):
        if s[L.flat("tdvpr", (v,))]:
            st = VcpuState(s[L.flat("state", (v,))])
            g = " in guest" if s[L.flat("in_guest", (v,))] else ""
            parts.append(f"{name} {_short(st, 'VCPU_')}{g}")
    used = [f"{u.page_name(p)}:{_short(PageType(s[L.flat('pt', (p,))]), 'PT_')}"
            for p in range(1, u.n_pages) if s[L.flat("pt", (p,))] not in _UNOWNED]
    if used:
        parts.append(" ".join(used))
    for h in range(1, u.platform.hkids):
        k = KotState(s[L.flat("kot_state", (h,))])
        if k != KotState.KOT_STATE_HKID_FREE:
            parts.append(f"hkid{h} {_short(k, 'KOT_STATE_HKID_')}")
    return "\n".join(parts) or "initial"


def graph(config: Any, projection: str, symmetry: bool = True,
          max_states: int = DEFAULT_MAX_FULL_STATES,
          progress: Progress | None = None) -> nx.MultiDiGraph:
    if projection == "full":
        return full_graph(config, symmetry, max_states, progress)
    return projection_graphs(config, [projection], symmetry, progress)[projection]


# ------------------------------------------------------------------ writers
def _q(text: str) -> str:
    """A DOT double-quoted string (backslash, quote and newline escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_STYLE = {
    "change": 'color="black", fontcolor="black"',
    "same": 'style="dotted", color="gray45", fontcolor="gray35"',
    "error": 'style="dashed", color="firebrick", fontcolor="firebrick"',
}
_MAX_LINES = 5  # lines of an arrow's label
_LOOP_LINES = {"error": 3, "same": 2}  # lines of a node's self-loop summary, per kind
_LOOP_HEAD = {"error": "errors", "same": "unchanged"}


@dataclass
class DrawNode:
    """A node as drawn: its label, and its self-loops summed up inside it (``error``: the
    calls that failed there, ``same``: successes that left it as it was), largest first.
    Drawing them inside the node keeps their text off the arrows (it cannot overlap)."""

    id: int
    title: list[str]
    loops: dict[str, list[str]]  # kind -> ["errors x1,296", "wrapper STATUS x288", ...]
    tooltip: str


@dataclass
class DrawEdge:
    """One arrow: a node pair's state changes (the wrappers and statuses, largest first)."""

    a: int
    b: int
    lines: list[str]
    tooltip: str


@dataclass
class Drawing:
    head: str
    nodes: list[DrawNode]
    edges: list[DrawEdge]
    loops: list[tuple[int, str, str]]  # (node, kind, tooltip): the self-loops, for DOT


def drawing(G: nx.MultiDiGraph) -> Drawing:
    """What both renderers (Graphviz's dot and ``draw.layered_svg``) draw: one arrow per
    node pair that changed, its label at most five lines (the rest in its tooltip), and
    each node's self-loops as a few lines inside the node."""
    title = G.graph.get("title", G.graph.get("name", ""))
    cfg = G.graph.get("config", "")
    head = f"{title}\nconfig {cfg}; {G.graph.get('counting', '')}".strip()
    groups: dict[tuple[int, int, str], list[tuple[int, str, str]]] = {}
    for a, b, d in G.edges(data=True):
        groups.setdefault((a, b, d["kind"]), []).append(
            (d["count"], d["wrapper"], d["status"]))
    nodes = []
    loops = []
    for n, d in sorted(G.nodes(data=True)):
        node_loops = {}
        tips = [f"{d.get('states', 0):,} state(s)"]
        for kind in ("error", "same"):
            items = sorted(groups.get((n, n, kind), []), key=lambda x: (-x[0], x[1], x[2]))
            if not items:
                continue
            total = sum(c for c, _w, _s in items)
            lines = [f"{w} {st.removeprefix('TDX_')} x{c:,}" for c, w, st in items]
            k = _LOOP_LINES[kind]
            shown = lines[:k] + ([f"... {len(lines) - k} more"] if len(lines) > k else [])
            node_loops[kind] = [f"{_LOOP_HEAD[kind]} x{total:,}", *shown]
            full = [f"{w} {st} x{c:,}" for c, w, st in items]
            tips.append(f"{_LOOP_HEAD[kind]} x{total:,}:\n" + "\n".join(full))
            loops.append((n, kind, "\n".join(full)))
        nodes.append(DrawNode(n, str(d.get("label", n)).split("\n"), node_loops,
                              "\n".join(tips)))
    edges = []
    for (a, b, kind), items in sorted(groups.items(), key=lambda kv: kv[0][:2]):
        if a == b:
            continue
        items.sort(key=lambda x: (-x[0], x[1], x[2]))
        lines = [f"{w} {st} x{c:,}" for c, w, st in items]
        shown = lines[:_MAX_LINES]
        if len(lines) > _MAX_LINES:
            shown.append(f"... {len(lines) - _MAX_LINES} more")
        edges.append(DrawEdge(a, b, shown, "\n".join(lines)))
    return Drawing(head, nodes, edges, loops)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _node_label(n: DrawNode) -> str:
    """A plain label, or an HTML-like one when the node has self-loops to list."""
    if not n.loops:
        return _q("\n".join(n.title))
    rows = [f"<TR><TD>{_html(t)}</TD></TR>" for t in n.title]
    for kind, color in (("error", "firebrick"), ("same", "gray35")):
        lines = n.loops.get(kind)
        if lines:
            body = "<BR ALIGN=\"LEFT\"/>".join(_html(x) for x in lines)
            rows.append(f'<TR><TD ALIGN="LEFT" BALIGN="LEFT"><FONT COLOR="{color}" '
                        f'POINT-SIZE="8">{body}<BR ALIGN="LEFT"/></FONT></TD></TR>')
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
            + "".join(rows) + "</TABLE>>")


def to_dot(G: nx.MultiDiGraph) -> str:
    """DOT text: one arrow per node pair that changed, labelled with the wrappers and
    statuses and their counts (largest first, at most five lines, the rest in the
    tooltip); each node's self-loops listed inside it (errors in red, unchanged successes
    in gray) and drawn as an unlabelled loop (dashed red, dotted gray) whose tooltip lists
    them all, so that no label text lies across an arrow."""
    D = drawing(G)
    out = [f"digraph {_q('tdxcheck_' + str(G.graph.get('name', 'graph')))} {{",
           (f"  graph [label={_q(D.head)}, labelloc=\"t\", fontname=\"Helvetica\", "
            f"fontsize=11, nodesep=0.2, rankdir={_q(str(G.graph.get('rankdir', 'TB')))}];"),
           '  node [shape="box", style="rounded", fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=8];',
           ('  // edges: solid = the node changed; dashed red = error self-loop; '
            'dotted gray = success that left the node unchanged')]
    for n in D.nodes:
        out.append(f"  {n.id} [label={_node_label(n)}, tooltip={_q(n.tooltip)}];")
    for e in D.edges:
        # each call on two lines (wrapper, then status and count): half as wide, and dot
        # places a label beside its arrow, so width is what makes a drawing unreadable
        lines = [part for x in e.lines for part in
                 (x.split(" ", 1) if not x.startswith("...") else [x])]
        out.append(f"  {e.a} -> {e.b} [label={_q(chr(10).join(lines))}, "
                   f"tooltip={_q(e.tooltip)}, {_STYLE['change']}];")
    for n_id, kind, tip in D.loops:
        out.append(f"  {n_id} -> {n_id} [tooltip={_q(tip)}, {_STYLE[kind]}];")
    out.append("}")
    return "\n".join(out) + "\n"


def to_graphml(G: nx.MultiDiGraph) -> bytes:
    buf = io.BytesIO()
    nx.write_graphml(G, buf)
    return buf.getvalue()


def to_json(G: nx.MultiDiGraph) -> str:
    data = json_graph.node_link_data(G, edges="edges")
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def dot_available() -> bool:
    return shutil.which("dot") is not None


#: the largest graph either renderer is asked to draw: past this a drawing is unreadable
#: and Graphviz runs for minutes (the full graph of ``tiny``, 2,886 states, did not finish
#: in 300 s); DOT, GraphML and JSON have no limit
MAX_DRAW_NODES = 300
MAX_DRAW_ARROWS = 1500
#: how long Graphviz may run on one drawing
DOT_TIMEOUT = 120.0


def renderer() -> str:
    """Who draws SVG here: Graphviz's ``dot`` when it is on the PATH, else tdxcheck's own
    layered layout (``draw.layered_svg``, networkx only), so a plain ``pip install`` draws
    pictures too."""
    return "dot" if dot_available() else "networkx"


def check_drawable(G: nx.MultiDiGraph) -> None:
    """GraphError (one line, exit 2 in the CLI) for a graph too large to draw."""
    arrows = len({(a, b) for a, b in G.edges() if a != b})
    n = G.number_of_nodes()
    if n > MAX_DRAW_NODES or arrows > MAX_DRAW_ARROWS:
        raise GraphError(
            f"the {G.graph.get('name', '')} graph has {n:,} nodes and {arrows:,} arrows: too "
            f"large to draw (at most {MAX_DRAW_NODES} nodes and {MAX_DRAW_ARROWS:,} arrows); "
            "write it with --format dot, graphml or json, or draw a projection "
            "(--projection td|page|hkid|vcpu)")


def render(dot_text: str, fmt: str = "svg", timeout: float = DOT_TIMEOUT) -> bytes:
    """SVG or PNG from DOT through Graphviz's ``dot`` (GraphError if it is not installed,
    fails, or runs past ``timeout`` seconds)."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphError(f"--format {fmt} needs Graphviz's dot on the PATH (apt-get install "
                         f"graphviz); --format svg draws without it, and dot, graphml and "
                         f"json need nothing")
    try:
        p = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise GraphError(f"Graphviz's dot did not finish drawing in {timeout:.0f} s: write "
                         "the graph with --format dot, graphml or json, or draw a "
                         "projection") from None
    if p.returncode != 0:
        raise GraphError(f"dot failed: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def svg(G: nx.MultiDiGraph) -> str:
    """The graph as an SVG document: through Graphviz when it is there, else drawn by
    ``draw.layered_svg`` from a layered layout computed with networkx."""
    check_drawable(G)
    if dot_available():
        return render(to_dot(G), "svg").decode()
    from .draw import layered_svg

    return layered_svg(drawing(G))


def write(G: nx.MultiDiGraph, fmt: str) -> bytes:
    """The graph in ``fmt`` (one of ``FORMATS``) as bytes."""
    if fmt == "dot":
        return to_dot(G).encode()
    if fmt == "graphml":
        return to_graphml(G)
    if fmt == "json":
        return to_json(G).encode()
    if fmt == "svg":
        return svg(G).encode()
    if fmt == "png":
        check_drawable(G)
        return render(to_dot(G), fmt)
    raise GraphError(f"unknown format {fmt!r} (have: {', '.join(FORMATS)})")


def inline_svg(G: nx.MultiDiGraph, prefix: str = "") -> str:
    """An ``<svg>`` element for an HTML page: no XML declaration, no DOCTYPE, every ``id``
    prefixed (Graphviz names them ``graph0``, ``node1``, ... in every drawing, and ids must
    be unique in a page), and scaled to the page: ``width="100%"`` up to its natural
    width, the height following from its ``viewBox`` (no sideways scrolling)."""
    text = svg(G)
    start = text.find("<svg")
    text = text[start:].strip() if start >= 0 else text
    pre = prefix or f"{G.graph.get('name', 'g')}-"
    text = re.sub(r'\bid="([^"]*)"', lambda m: f'id="{pre}{m.group(1)}"', text)
    return fit_width(text)


def fit_width(text: str) -> str:
    """The root ``<svg>``'s fixed width and height replaced by "the page's width, at most
    the drawing's own" (its ``viewBox`` keeps the proportions)."""
    end = text.find(">")
    if not text.startswith("<svg") or end < 0:
        return text
    tag = text[:end]
    m = re.search(r'\swidth="([0-9.]+)(pt|px)?"', tag)
    if m is None or "viewBox" not in tag:
        return text
    natural = f"{m.group(1)}{m.group(2) or 'px'}"
    tag = re.sub(r'\s(width|height)="[^"]*"', "", tag)
    tag = re.sub(r'\sstyle="[^"]*"', "", tag)
    tag += f' width="100%" style="max-width: {natural}; height: auto"'
    return tag + text[end:]
