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
    assert all('label="errors x' in ln for ln in loops)
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
                          capture_output=True, text=True, timeout=300, env=env)


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
