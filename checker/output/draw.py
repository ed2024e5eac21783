"""Pictures without Graphviz: a graph drawn as SVG from a layered layout computed with
networkx, so that a plain ``pip install`` (no Graphviz) still shows the projection graphs.

The layout is the classic layered one (Sugiyama et al.; what Graphviz's ``dot`` does too):

1. **cycles broken**: a depth-first search from the nodes nothing enters (then by id)
   turns every edge back into the search stack around, so the rest is a DAG;
2. **layers**: ``networkx.topological_generations`` of that DAG (longest path from the
   sources): each arrow points one or more layers down (or up, when it was turned);
3. **label ranks**: between two layers a rank holds the arrows' labels as boxes of their
   own, and every arrow longer than one layer gets a point per rank it crosses; so labels
   and nodes are items of ranks, and items of a rank never overlap;
4. **order**: barycentre sweeps, up and down, keeping the order with fewest crossings;
5. **x**: each item pulled to the mean of its neighbours' x in the next rank, then the
   least-squares placement that keeps the rank's order and gaps (isotonic regression,
   pool-adjacent-violators); alternating down and up.

Each node lists its self-loops inside it (``graphs.drawing``), so no text lies on an arrow.
Text is monospace, whose width is known from its character count (0.6 em per character),
so boxes fit their text in any browser.  Coordinates are rounded to 0.1: the same graph
gives the same bytes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

import networkx as nx

FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
EM = 0.6  # advance of a monospace character, in em (DejaVu Sans Mono: 0.602)
TITLE_PX, SMALL_PX = 11.0, 9.0
TITLE_LINE, SMALL_LINE = 13.5, 11.0
PAD = 6.0  # inside a node box
GAP = {"node": 28.0, "label": 14.0, "point": 10.0}  # least room beside an item
RANK_GAP = 18.0
MARGIN = 10.0
COLORS = {"error": "#b22222", "same": "#595959"}
SWEEPS = 12
LABEL_ROW = 760.0  # the widest row of arrow labels before they take two rows


def _w(lines: list[str], px: float) -> float:
    return max((len(x) for x in lines), default=0) * px * EM


@dataclass
class Item:
    kind: str  # node | label | point
    key: Any  # node id, or (edge index, step)
    w: float
    h: float
    rank: int = 0
    x: float = 0.0
    up: list[Item] = field(default_factory=list)  # neighbours in the rank above
    down: list[Item] = field(default_factory=list)  # ... and below


def _dfs_back_edges(G: nx.DiGraph) -> set[tuple[int, int]]:
    """The edges that close a cycle in a depth-first search from the nodes with no
    incoming edge, then the others, in id order (iterative: deep graphs are fine)."""
    back: set[tuple[int, int]] = set()
    state: dict[int, int] = {}  # 1 on the stack, 2 done
    roots = sorted(G, key=lambda n: (G.in_degree(n) > 0, n))
    for r in roots:
        if r in state:
            continue
        state[r] = 1
        stack = [(r, iter(sorted(G.successors(r))))]
        while stack:
            n, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[n] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((n, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(G.successors(nxt)))))
    return back


def _wrap(line: str) -> list[str]:
    """``wrapper STATUS xN`` as two lines (the wrapper, then the rest, indented)."""
    head, _sp, rest = line.partition(" ")
    return [head, "  " + rest] if rest and not line.startswith("...") else [line]


def _crossings(ranks: list[list[Item]]) -> int:
    total = 0
    for r in range(len(ranks) - 1):
        pos = {id(it): i for i, it in enumerate(ranks[r + 1])}
        seq = sorted((i, pos[id(d)]) for i, it in enumerate(ranks[r]) for d in it.down)
        total += _inversions([b for _a, b in seq])
    return total


def _inversions(xs: list[int]) -> int:
    if len(xs) < 2:
        return 0
    mid = len(xs) // 2
    left, right = xs[:mid], xs[mid:]
    n = _inversions(left) + _inversions(right)
    left.sort()
    right.sort()
    i = 0
    for b in right:  # pairs (a in left, b in right) with a > b
        while i < len(left) and left[i] <= b:
            i += 1
        n += len(left) - i
    return n


def _order(ranks: list[list[Item]]) -> list[list[Item]]:
    """Barycentre sweeps; the order with fewest crossings wins (ties: the earlier)."""
    best = [list(r) for r in ranks]
    best_c = _crossings(best)
    cur = [list(r) for r in ranks]
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        seq = range(1, len(cur)) if down else range(len(cur) - 2, -1, -1)
        for r in seq:
            ref = cur[r - 1] if down else cur[r + 1]
            pos = {id(it): i for i, it in enumerate(ref)}
            keyed = []
            for i, it in enumerate(cur[r]):
                ns = it.up if down else it.down
                b = sum(pos[id(n)] for n in ns) / len(ns) if ns else float(i)
                keyed.append((b, i, it))
            cur[r] = [it for _b, _i, it in sorted(keyed, key=lambda x: (x[0], x[1]))]
        c = _crossings(cur)
        if c < best_c:
            best, best_c = [list(r) for r in cur], c
    return best


def _place(items: list[Item], desired: list[float]) -> None:
    """x for a rank's items, in order, at least their gaps apart, as near ``desired`` as
    possible in least squares (pool adjacent violators on x minus each item's offset)."""
    offs = [0.0]
    for a, b in itertools.pairwise(items):
        offs.append(offs[-1] + a.w / 2 + max(GAP[a.kind], GAP[b.kind]) + b.w / 2)
    blocks: list[list[float]] = []  # [sum, count]
    for d, o in zip(desired, offs, strict=True):
        blocks.append([d - o, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    i = 0
    for s, c in blocks:
        for _ in range(int(c)):
            items[i].x = s / c + offs[i]
            i += 1


def _xs(ranks: list[list[Item]]) -> None:
    for rank in ranks:
        _place(rank, [0.0] * len(rank))
    for sweep in range(2 * SWEEPS):
        down = sweep % 2 == 0
        seq = range(1, len(ranks)) if down else range(len(ranks) - 2, -1, -1)
        for r in seq:
            rank = ranks[r]
            want = []
            for it in rank:
                ns = it.up if down else it.down
                want.append(sum(n.x for n in ns) / len(ns) if ns else it.x)
            _place(rank, want)


def _t(x: float) -> str:
    """A coordinate, rounded (deterministic text)."""
    v = round(x, 1)
    return f"{v:g}" if v != int(v) else str(int(v))


def _text(lines: list[str], x: float, y: float, px: float, line: float, anchor: str,
          color: str = "#222", bold: bool = False) -> list[str]:
    weight = ' font-weight="bold"' if bold else ""
    out = []
    for i, t in enumerate(lines):
        out.append(f'<text x="{_t(x)}" y="{_t(y + line * i + px)}" font-size="{_t(px)}" '
                   f'text-anchor="{anchor}" fill="{color}"{weight}>{escape(t)}</text>')
    return out


def layered_svg(D: Any) -> str:
    """An SVG document of ``D`` (a ``graphs.Drawing``)."""
    nodes = {n.id: n for n in D.nodes}
    G = nx.DiGraph()
    G.add_nodes_from(sorted(nodes))
    for e in D.edges:
        G.add_edge(e.a, e.b)
    back = _dfs_back_edges(G)
    dag = nx.DiGraph()
    dag.add_nodes_from(sorted(nodes))
    for a, b in G.edges():
        dag.add_edge(*((b, a) if (a, b) in back else (a, b)))
    layer = {n: i for i, gen in enumerate(nx.topological_generations(dag)) for n in gen}
    # between two layers, one rank of labels, or more when one row of them would be wider
    # than LABEL_ROW (then the labels take turns, row by row)
    turned_of = [(e.a, e.b) in back for e in D.edges]
    ends = [((e.b, e.a) if t else (e.a, e.b)) for e, t in zip(D.edges, turned_of, strict=True)]
    gap_of = [layer[v] - 1 if t else layer[u]
              for (u, v), t in zip(ends, turned_of, strict=True)]
    n_layers = max(layer.values(), default=0) + 1
    lines = [list(e.lines) for e in D.edges]

    def row_widths() -> dict[int, float]:
        out: dict[int, float] = {}
        for ls, g in zip(lines, gap_of, strict=True):
            out[g] = out.get(g, 0.0) + _w(ls, SMALL_PX) + 8 + GAP["label"]
        return out

    widths = row_widths()
    for k, g in enumerate(gap_of):  # too wide: each call on two lines (wrapper, status)
        if widths[g] > LABEL_ROW:
            lines[k] = [part for x in lines[k] for part in _wrap(x)]
    widths = row_widths()
    rows = {g: max(1, math.ceil(widths.get(g, 0.0) / (1.5 * LABEL_ROW)))
            for g in range(n_layers)}
    rank_of = [0]
    for g in range(n_layers - 1):
        rank_of.append(rank_of[-1] + rows[g] + 1)
    ranks: list[list[Item]] = [[] for _ in range(rank_of[-1] + 1)]
    items: dict[int, Item] = {}
    # nodes in depth-first discovery order (a good first order for the sweeps)
    disc = list(nx.dfs_preorder_nodes(dag))  # nodes and edges were added sorted
    for n in disc:
        d = nodes[n]
        loops = [x for k in ("error", "same") for x in d.loops.get(k, [])]
        w = max(_w(d.title, TITLE_PX), _w(loops, SMALL_PX)) + 2 * PAD
        h = 2 * PAD + len(d.title) * TITLE_LINE + sum(
            4 + len(d.loops[k]) * SMALL_LINE for k in ("error", "same") if k in d.loops)
        it = Item("node", n, w, h, rank_of[layer[n]])
        items[n] = it
        ranks[it.rank].append(it)
    chains: list[tuple[Any, list[Item], bool]] = []  # (edge, items top to bottom, turned)
    taken: dict[int, int] = {}
    for k, e in enumerate(D.edges):
        turned = turned_of[k]
        u, v = ends[k]
        top, bottom = items[u], items[v]
        # the label next to the arrow's source: below it, or above it for a turned edge
        g = gap_of[k]
        at = rank_of[g] + 1 + taken.get(g, 0) % rows[g]
        taken[g] = taken.get(g, 0) + 1
        chain = [top]
        for r in range(top.rank + 1, bottom.rank):
            if r == at:
                it = Item("label", (k, r), _w(lines[k], SMALL_PX) + 8,
                          len(lines[k]) * SMALL_LINE + 4, r)
            else:
                it = Item("point", (k, r), 0.0, 0.0, r)
            ranks[r].append(it)
            chain.append(it)
        chain.append(bottom)
        for a, b in itertools.pairwise(chain):
            a.down.append(b)
            b.up.append(a)
        chains.append((e, chain, turned))
    for it in items.values():  # room for every arrow's own port
        it.w = max(it.w, 14.0 * max(len(it.up), len(it.down)) + 2 * PAD)
    ranks = _order(ranks)
    _xs(ranks)
    # y: each rank as tall as its tallest item, items centred in it
    head = D.head.split("\n")
    y = MARGIN + len(head) * TITLE_LINE + 8
    cy: dict[int, float] = {}
    for r, rank in enumerate(ranks):
        h = max((it.h for it in rank), default=0.0)
        if h == 0.0:
            h = 6.0  # a rank of points only: a little room to bend
        cy[r] = y + h / 2
        y += h + RANK_GAP
    height = y - RANK_GAP + MARGIN
    left = min((it.x - it.w / 2 for rank in ranks for it in rank), default=0.0)
    right = max((it.x + it.w / 2 for rank in ranks for it in rank), default=0.0)
    shift = MARGIN - left
    width = max(right - left + 2 * MARGIN, _w(head, TITLE_PX) + 2 * MARGIN)
    for rank in ranks:
        for it in rank:
            it.x += shift

    def top_of(it: Item) -> float:
        return cy[it.rank] - it.h / 2

    def bottom_of(it: Item) -> float:
        return cy[it.rank] + it.h / 2

    # ports: the arrows leaving a node's bottom (or entering its top) spread along it, in
    # the order of where they go, so they do not start from one point
    ports: dict[tuple[int, int, str], float] = {}
    for n, it in items.items():
        for side, ns in (("bottom", it.down), ("top", it.up)):
            order = sorted(range(len(ns)), key=lambda i, ns=ns: (ns[i].x, i))
            m = len(ns)
            for rank_i, i in enumerate(order):
                off = 0.0 if m == 1 else (rank_i / (m - 1) - 0.5) * min(it.w - 2 * PAD, 14.0 * m)
                ports[(n, i, side)] = it.x + off
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_t(width)}" '
            f'height="{_t(height)}" viewBox="0 0 {_t(width)} {_t(height)}" '
            f'font-family="{FONT}">'),
           f'<rect x="0" y="0" width="{_t(width)}" height="{_t(height)}" fill="#fff"/>']
    out += _text(head, MARGIN, MARGIN, TITLE_PX, TITLE_LINE, "start", "#222")
    labels: list[str] = []
    for k, (e, chain, turned) in enumerate(chains):
        top, bottom = chain[0], chain[-1]
        pts = [(ports[(top.key, top.down.index(chain[1]), "bottom")], bottom_of(top))]
        pts += [(it.x, cy[it.rank]) for it in chain[1:-1]]
        pts.append((ports[(bottom.key, bottom.up.index(chain[-2]), "top")], top_of(bottom)))
        # the arrowhead sits at the target: the bottom end, or the top end of a turned edge
        tip, pre = (pts[0], pts[1]) if turned else (pts[-1], pts[-2])
        d = [f"M{_t(pts[0][0])},{_t(pts[0][1])}"]
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            ym = (y0 + y1) / 2
            d.append(f"C{_t(x0)},{_t(ym)} {_t(x1)},{_t(ym)} {_t(x1)},{_t(y1)}")
        sign = 1.0 if tip[1] >= pre[1] else -1.0  # the last stretch runs vertically
        tx, ty = tip
        head_pts = (f"{_t(tx)},{_t(ty)} {_t(tx - 4)},{_t(ty - 9 * sign)} "
                    f"{_t(tx + 4)},{_t(ty - 9 * sign)}")
        tip_text = escape(f"{nodes[e.a].title[0]} -> {nodes[e.b].title[0]}\n{e.tooltip}")
        out.append(f'<g><title>{tip_text}</title><path d="{" ".join(d)}" fill="none" '
                   f'stroke="#222" stroke-width="1.1"/><polygon points="{head_pts}" '
                   f'fill="#222"/></g>')
        lab = next((it for it in chain if it.kind == "label"), None)
        if lab is not None:
            x0, y0 = lab.x - lab.w / 2, cy[lab.rank] - lab.h / 2
            labels.append(f'<g><title>{tip_text}</title><rect x="{_t(x0)}" y="{_t(y0)}" '
                          f'width="{_t(lab.w)}" height="{_t(lab.h)}" rx="3" fill="#fff" '
                          f'fill-opacity="0.94" stroke="#ccc" stroke-width="0.6"/>')
            labels += _text(lines[k], x0 + 4, y0 + 2, SMALL_PX, SMALL_LINE, "start")
            labels.append("</g>")
    out += labels
    for n in sorted(items):
        it, d = items[n], nodes[n]
        x0, y0 = it.x - it.w / 2, top_of(it)
        out.append(f"<g><title>{escape(' / '.join(d.title))}: {escape(d.tooltip)}</title>")
        out.append(f'<rect x="{_t(x0)}" y="{_t(y0)}" width="{_t(it.w)}" height="{_t(it.h)}" '
                   f'rx="6" fill="#fff" stroke="#333" stroke-width="1.2"/>')
        out += _text(d.title, it.x, y0 + PAD, TITLE_PX, TITLE_LINE, "middle", "#111", True)
        yy = y0 + PAD + len(d.title) * TITLE_LINE
        for kind in ("error", "same"):
            lines = d.loops.get(kind)
            if lines:
                yy += 4
                out += _text(lines, x0 + PAD, yy, SMALL_PX, SMALL_LINE, "start",
                             COLORS[kind])
                yy += len(lines) * SMALL_LINE
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
