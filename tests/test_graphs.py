"""State graphs: the fast walk against a reference that steps every action through the
engine, GraphML and JSON round trips, symmetry, DOT, rendering, determinism, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from networkx.readwrite import json_graph
from tdxcheck.checker.analyses.coverage import wrapper_of
from tdxcheck.checker.explore.programs import AnyHost, make_config
from tdxcheck.checker.output import graphs
from tdxcheck.model.compile import NOT_ENABLED
from tdxcheck.model.status import is_error, status_name

SMALL = {"pages": "2"}  # 273 states without symmetry
TWO_TDS = {"tds": "2", "pages": "2"}  # 953 states: two TD slots contend for pages and HKIDs


def reference(prog: AnyHost) -> tuple[dict[Any, int], list[tuple[Any, Any, int, Any]]]:
    """Every action of the any host stepped through its compiled rule, one by one, from
    every reachable state (no gates, no fused code, no counters); error states are not
    expanded (as in explore)."""
    init = prog.initial()
    seen = {init: 0}
    q = deque([init])
    trans = []
    while q:
        s = q.popleft()
        if prog.state_violations(s):
            continue
        for a, guard in zip(prog.actions, prog.guards, strict=True):
            if guard is not None and guard(s) >= 0:
                continue
            status, n, _where = prog.engine.compiled(a).fn(s, -1)
            if status == NOT_ENABLED:
                continue
            trans.append((s, a, status, n))
            if n not in seen:
                seen[n] = len(seen)
                q.append(n)
    return seen, trans


def _kind(changed: bool, status: int) -> str:
    return "change" if changed else ("error" if is_error(status) else "same")


def describe(prog: AnyHost, s: Any) -> str:
    L = prog.engine.layout
    return "; ".join(f"{L.label(c)}={L.show(c, y)}"
                     for c, _x, y in L.diff(prog.initial(), s)) or "initial"


def edge_multiset(G: nx.MultiDiGraph, attr: str) -> dict[tuple[str, str, str, str, str], int]:
    names = {n: d[attr] for n, d in G.nodes(data=True)}
    out: dict[tuple[str, str, str, str, str], int] = {}
    for a, b, d in G.edges(data=True):
        key = (names[a], names[b], d["wrapper"], d["status"], d["kind"])
        assert key not in out, key  # one edge per (from, to, wrapper, status, kind)
        out[key] = d["count"]
    return out


@pytest.fixture(scope="module")
def small_full() -> nx.MultiDiGraph:
    return graphs.full_graph(make_config("tiny", SMALL), symmetry=False)


@pytest.fixture(scope="module")
def small_ref() -> tuple[AnyHost, dict[Any, int], list[tuple[Any, Any, int, Any]]]:
    prog = AnyHost(make_config("tiny", SMALL).universe())
    return (prog, *reference(prog))


def test_full_graph_matches_engine_reference(small_full: nx.MultiDiGraph,
                                             small_ref: Any) -> None:
    prog, seen, trans = small_ref
    want: dict[tuple[str, str, str, str, str], int] = {}
    for s, a, st, n in trans:
        key = (describe(prog, s), describe(prog, n), wrapper_of(a), status_name(st),
               _kind(n != s, st))
        want[key] = want.get(key, 0) + 1
    assert small_full.number_of_nodes() == len(seen) == 273
    assert edge_multiset(small_full, "node") == want
    assert small_full.graph["transitions"] == len(trans)
    # ids are the breadth-first order: node 0 is the initial state
    assert small_full.nodes[0]["node"] == "initial"


@pytest.mark.parametrize("fmt", ["graphml", "json"])
def test_round_trip_through_networkx_readers(small_full: nx.MultiDiGraph, small_ref: Any,
                                             fmt: str, tmp_path: Path) -> None:
    _prog, seen, trans = small_ref
    n_edges = len({(s, n, wrapper_of(a), st) for s, a, st, n in trans})
    path = tmp_path / f"g.{fmt}"
    path.write_bytes(graphs.write(small_full, fmt))
    if fmt == "graphml":
        H = nx.read_graphml(path, node_type=int, force_multigraph=True)
    else:
        H = json_graph.node_link_graph(json.loads(path.read_text()), directed=True,
                                       multigraph=True, edges="edges")
    assert H.is_directed() and H.is_multigraph()
    assert H.number_of_nodes() == len(seen)
    assert H.number_of_edges() == n_edges == small_full.number_of_edges()
    assert sum(d["count"] for _a, _b, d in H.edges(data=True)) == len(trans)
    assert edge_multiset(H, "node") == edge_multiset(small_full, "node")
    assert {d["kind"] for _a, _b, d in H.edges(data=True)} == {"change", "error", "same"}
    assert H.graph["config"] == "tiny+pages=2" and H.graph["symmetry"] is False


def reference_projection(prog: AnyHost, name: str, trans: list[tuple[Any, Any, int, Any]]
                         ) -> dict[tuple[str, str, str, str, str], int]:
    """The projection computed from the reference transitions, with the projection's own
    node and naming rules (the walk is what is under test)."""
    P = graphs.PROJECTION[name]
    S = graphs.Signature(prog.engine.layout)
    L = prog.engine.layout
    out: dict[tuple[str, str, str, str, str], int] = {}
    writes = graphs._WRITES[name]
    for s, a, st, n in trans:
        ks, kn = S(s), S(n)
        relevant = bool(graphs.fields_written(prog.engine.compiled(a).rule) & writes)
        for o in P.subjects(S):
            x, y = P.node(S, ks, o), P.node(S, kn, o)
            if x == y and not (relevant and P.names(a, S, ks, o)):
                continue
            key = (P.label(x, L), P.label(y, L), wrapper_of(a), status_name(st),
                   _kind(x != y, st))
            out[key] = out.get(key, 0) + 1
    return out


@pytest.mark.parametrize("overrides", [
    TWO_TDS,
    pytest.param({}, marks=pytest.mark.slow),  # tiny itself: vCPUs run (18,219 states)
])
def test_projections_match_engine_reference(overrides: dict[str, str]) -> None:
    config = make_config("tiny", overrides)
    gs = graphs.projection_graphs(config, symmetry=False)
    prog = AnyHost(config.universe())
    _seen, trans = reference(prog)
    for name in graphs.PROJECTIONS:
        assert edge_multiset(gs[name], "label") == reference_projection(prog, name, trans), name


def test_projections_readable_and_meaningful_on_tiny() -> None:
    gs = graphs.projection_graphs(make_config("tiny", {}))
    td = edge_multiset(gs["td"], "label")
    assert ("no TD", "HKID_ASSIGNED\nUNINITIALIZED", "tdh_mng_create", "TDX_SUCCESS",
            "change") in td
    assert any(k[0] == k[1] and k[4] == "error" for k in td)  # error self-loops exist
    hk = edge_multiset(gs["hkid"], "label")
    assert any(a.startswith("HKID_FLUSHED") and b.startswith("HKID_FREE")
               and w == "tdh_mng_key_freeid" for a, b, w, _s, _k in hk)
    vc = edge_multiset(gs["vcpu"], "label")
    assert any(w == "tdh_vp_enter" and "in guest\n" in b and k == "change"
               for _a, b, w, _s, k in vc)
    for G in gs.values():
        assert G.number_of_nodes() <= 20  # a projection stays readable
        assert all(isinstance(v, (str, int, bool)) for v in G.graph.values())


def test_symmetry_keeps_every_projected_edge() -> None:
    """Counts differ (orbits, not states); the set of edges must not."""
    config = make_config("tiny", TWO_TDS)
    plain = graphs.projection_graphs(config, symmetry=False)
    sym = graphs.projection_graphs(config, symmetry=True)
    for name in graphs.PROJECTIONS:
        assert set(edge_multiset(plain[name], "label")) == set(edge_multiset(sym[name], "label"))
        assert sym[name].graph["states"] < plain[name].graph["states"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydot's use of pyparsing
def test_dot_is_well_formed_and_styles_error_loops() -> None:
    G = graphs.projection_graphs(make_config("tiny", {}), ["td"])["td"]
    text = graphs.to_dot(G)
    assert text.startswith('digraph "tdxcheck_td" {') and text.rstrip().endswith("}")
    loops = [ln for ln in text.splitlines() if "->" in ln and 'style="dashed"' in ln]
    assert loops and all(ln.split()[0] == ln.split()[2] for ln in loops)  # self-loops only
    # a loop carries no label (its calls are listed inside its node: no text on arrows)
    assert all("label=" not in ln and "tooltip=" in ln for ln in loops)
    nodes = {ln.split()[0]: ln for ln in text.splitlines()
             if ln.startswith("  ") and "[label=" in ln and "->" not in ln}
    for ln in loops:
        assert '<FONT COLOR="firebrick"' in nodes[ln.split()[0]]
        assert "errors x" in nodes[ln.split()[0]]
    # the errors most often returned there come first, with their counts
    node0 = next(n for n in G.nodes if G.nodes[n]["label"] == "HKID_ASSIGNED\nUNINITIALIZED")
    errs = sorted(((d["count"], d["wrapper"], d["status"]) for a, b, d in G.edges(node0, data=True)
                   if b == node0 and d["kind"] == "error"), key=lambda x: (-x[0], x[1], x[2]))
    top = errs[0]
    assert f"{top[1]} {top[2].removeprefix('TDX_')} x{top[0]:,}" in nodes[str(node0)]
    pydot = pytest.importorskip("pydot")
    (parsed,) = pydot.graph_from_dot_data(text)
    assert len(parsed.get_nodes()) >= G.number_of_nodes()


def _need_dot() -> None:
    if not graphs.dot_available():
        if os.environ.get("CI"):
            pytest.fail("Graphviz's dot is missing in CI (apt-get install -y graphviz)")
        pytest.skip("Graphviz's dot is not installed")


def test_svg_and_png_rendering() -> None:
    _need_dot()
    G = graphs.projection_graphs(make_config("tiny", {}), ["hkid"])["hkid"]
    svg = graphs.write(G, "svg").decode()
    assert "<svg" in svg and "HKID_FREE" in svg
    assert graphs.write(G, "png").startswith(b"\x89PNG")
    inline = graphs.inline_svg(G)
    assert inline.startswith("<svg") and "<!DOCTYPE" not in inline


def test_outputs_are_deterministic(small_full: nx.MultiDiGraph) -> None:
    again = graphs.full_graph(make_config("tiny", SMALL), symmetry=False)
    for fmt in ("dot", "graphml", "json"):
        assert graphs.write(again, fmt) == graphs.write(small_full, fmt)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tdxcheck.checker", *args],
                          capture_output=True, text=True, timeout=300, env=env, check=False)


def test_cli_graph_formats_and_hash_seed(tmp_path: Path) -> None:
    outs = []
    for seed in ("1", "2"):
        p = run("graph", "--projection", "page", "--format", "json", "-q",
                env=dict(os.environ, PYTHONHASHSEED=seed))
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout)
    assert outs[0] == outs[1]
    data = json.loads(outs[0])
    assert data["graph"]["name"] == "page" and data["edges"]
    out = tmp_path / "td.graphml"
    p = run("graph", "--projection", "td", "-o", str(out), "-q", "pages=2")
    assert p.returncode == 0, p.stderr
    assert "td graph of tiny+pages=2" in p.stdout
    assert nx.read_graphml(out, node_type=int, force_multigraph=True).number_of_nodes() > 1


@pytest.mark.parametrize("args,needle", [
    (("--projection", "full", "--config", "default"), "too many for a full graph"),
    (("--format", "png"), "give -o FILE"),
    (("--config", "huge"), "unknown configuration"),
    (("pagez=2",), "did you mean pages"),
])
def test_cli_graph_usage_errors(args: tuple[str, ...], needle: str) -> None:
    p = run("graph", "-q", *args)
    assert p.returncode == 2
    assert needle in p.stderr and "Traceback" not in p.stderr


# ------------------------------------------------------------------ explored once
@pytest.mark.parametrize("overrides,ablate", [
    ({}, ()),
    (TWO_TDS, ()),
    ({}, ("mng.key_freeid.wbinvd_done",)),  # a violation: shortest counterexamples agree
    ({}, ("vp.flush.associated_here",)),  # two invariants break, one a state encoding
])
def test_one_walk_gives_what_check_gives(overrides: dict[str, str],
                                         ablate: tuple[str, ...]) -> None:
    """``report`` explores once: the traced coverage walk's result is ``check --all``'s
    (the explorer's), state for state: verdict, counts, depth, every shortest
    counterexample step by step, every witness."""
    from tdxcheck.checker.explore.check import run_check

    config = make_config("tiny", overrides)
    want = run_check(config=config, all_violations=True, ablate=ablate).result
    w, cov, gs = graphs.explore_once(config, faults=False, ablate=ablate)
    got = w.result
    assert got is not None
    for f in ("verdict", "states", "transitions", "depth", "peak_queue",
              "new_states_by_edge"):
        assert getattr(got, f) == getattr(want, f), f
    assert [(c.invariant, c.path, c.states) for c in got.violations] == \
        [(c.invariant, c.path, c.states) for c in want.violations]
    assert {k: v and v.path for k, v in got.witnesses.items()} == \
        {k: v and v.path for k, v in want.witnesses.items()}
    assert (cov.states, cov.verdict) == (want.states, want.verdict)
    assert set(gs) == set(graphs.PROJECTIONS)
    if ablate:
        assert got.violations
    # the same coverage and projections as a walk without traces
    cov2, gs2 = graphs.projections_and_coverage(config, ablate=ablate)
    assert cov.to_json() == cov2.to_json()
    for n in graphs.PROJECTIONS:
        assert edge_multiset(gs[n], "label") == edge_multiset(gs2[n], "label")


# ------------------------------------------------------------------ pictures without dot
def _boxes(svg: str) -> list[tuple[str, float, float, float, float]]:
    """(kind, x, y, w, h) of every node box (rx 6) and arrow label box (rx 3)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg.split("?>", 1)[1] if svg.startswith("<?xml") else svg)
    out = []
    for r in root.iter("{http://www.w3.org/2000/svg}rect"):
        kind = {"6": "node", "3": "label"}.get(r.get("rx", ""))
        if kind:
            out.append((kind, *(float(r.get(k, "0")) for k in ("x", "y", "width", "height"))))
    return out


def test_layered_svg_draws_every_projection_without_overlap() -> None:
    """The networkx drawing: well-formed SVG, every node and every arrow (one path per
    node pair that changed), each label in a box of its own: no two boxes (nodes, labels)
    overlap, and each box is wide enough for its text; deterministic."""
    from tdxcheck.checker.output.draw import EM, SMALL_PX, TITLE_PX, layered_svg

    gs = graphs.projection_graphs(make_config("tiny", {}))
    for name, G in gs.items():
        D = graphs.drawing(G)
        svg = layered_svg(D)
        assert svg == layered_svg(graphs.drawing(G)), name
        boxes = _boxes(svg)
        assert sum(1 for b in boxes if b[0] == "node") == G.number_of_nodes()
        pairs = {(a, b) for a, b in G.edges() if a != b}
        assert svg.count("<path ") == len(pairs) == len(D.edges)
        assert sum(1 for b in boxes if b[0] == "label") == len(pairs)
        for i, (_k, x, y, w, h) in enumerate(boxes):
            for _k2, x2, y2, w2, h2 in boxes[i + 1:]:
                assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y, name
        for n in D.nodes:
            for t in n.title:
                assert f">{t}</text>" in svg
        # every box is as wide as its longest line (monospace: 0.6 em a character)
        node_w = sorted(b[3] for b in boxes if b[0] == "node")
        need = sorted(max(max(len(t) * TITLE_PX * EM for t in n.title),
                          max((len(x) * SMALL_PX * EM for k in n.loops for x in n.loops[k]),
                              default=0.0)) for n in D.nodes)
        assert all(w >= x for w, x in zip(node_w, need, strict=True)), name
    assert "errors x" in layered_svg(graphs.drawing(gs["td"]))


def test_svg_without_dot_and_size_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    G = graphs.projection_graphs(make_config("tiny", {}), ["hkid"])["hkid"]
    monkeypatch.setattr(graphs, "dot_available", lambda: False)
    monkeypatch.setattr(graphs.shutil, "which", lambda _x: None)
    svg = graphs.write(G, "svg").decode()
    assert svg.startswith("<?xml") and "HKID_FREE" in svg and "DejaVu Sans Mono" in svg
    with pytest.raises(graphs.GraphError, match="--format svg draws without it"):
        graphs.write(G, "png")
    inline = graphs.inline_svg(G)
    assert inline.startswith("<svg") and 'width="100%" style="max-width: ' in inline
    big = nx.MultiDiGraph(name="full")
    big.add_nodes_from(range(graphs.MAX_DRAW_NODES + 1))
    with pytest.raises(graphs.GraphError, match="too large to draw"):
        graphs.write(big, "svg")


def test_graphviz_timeout_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphs.shutil, "which", lambda _x: "/usr/bin/dot")

    def slow(*_a: Any, **kw: Any) -> Any:
        raise subprocess.TimeoutExpired("dot", kw.get("timeout", 0))

    monkeypatch.setattr(graphs.subprocess, "run", slow)
    with pytest.raises(graphs.GraphError, match="did not finish drawing in 120 s"):
        graphs.render("digraph {}", "svg")


def test_cli_svg_without_dot_and_full_graph_too_large(tmp_path: Path) -> None:
    """With nothing on the PATH (no dot): ``--format svg`` draws with networkx; the full
    graph of tiny is refused at once with one line (it used to run 305 s and time out)."""
    svgs = []
    for seed in ("1", "2"):  # the drawing does not depend on hash order
        env = dict(os.environ, PATH=str(tmp_path), PYTHONHASHSEED=seed)
        out = tmp_path / f"hkid-{seed}.svg"
        p = run("graph", "--projection", "hkid", "-o", str(out), "-q", env=env)
        assert p.returncode == 0, p.stderr
        assert out.read_text().startswith("<?xml") and "(svg)" in p.stdout
        svgs.append(out.read_text())
    assert svgs[0] == svgs[1]
    p = run("graph", "--projection", "hkid", "--format", "png", "-o", str(tmp_path / "x.png"),
            "-q", env=env)
    assert p.returncode == 2 and "--format png needs Graphviz" in p.stderr
    p = run("graph", "--projection", "full", "--format", "svg", "-o", str(tmp_path / "f.svg"),
            "-q")
    assert p.returncode == 2 and "too large to draw" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
