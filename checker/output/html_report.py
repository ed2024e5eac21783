"""``tdxcheck report``: one self-contained HTML page per run (no network needed to open it).

Sections, each an ``<section id=...>``: ``configuration``; ``verdicts`` (the explorer's
verdict per invariant, witnesses, and the Z3 proofs when that engine is in the build);
``counterexamples`` (steps, statuses, changed fields, and what the byte-level executor did,
when it is in the build); ``mutants`` and ``ablations`` (when the mutation module is in the
build); ``apis`` (``tdxcheck apis`` on tiny: each class of host mistake under each wrapper
API); ``coverage`` (the wrappers x statuses table, unreached cells highlighted); ``graphs``
(the TD, page, HKID and vCPU projections as inline SVG when Graphviz's ``dot`` is on the
PATH, and as edge tables always).

The optional engines are found by name, so the report works in any build; a missing one
(or one without the function) gives "not available in this build":

``tdxcheck.checker.output.report_rows`` (``ROWS``) holds them: ``prove_rows(config)`` (one row per
proof), ``mutant_rows(config)``, ``ablation_rows(config)`` and ``consequences(prog, cx)``
(what the concrete executor saw replaying a counterexample, one line each).

The page holds no time stamps and no timings, so the same model gives the same bytes.
Regenerate the repository's copy with ``tdxcheck report --config default -o reports``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import networkx as nx
from tdxcheck.checker.analyses.coverage import Coverage
from tdxcheck.model.status import status_name

from .graphs import PROJECTIONS, dot_available, inline_svg, projections_and_coverage

NOT_AVAILABLE = "not available in this build"
REGENERATE = "tdxcheck report --config default -o reports"


@dataclass
class Optional_:
    """An optional engine's section: rows, or why there are none."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


@dataclass
class ReportData:
    config: Any
    faults: bool
    ablate: list[str]
    run: Any  # CheckRun
    coverage: Coverage
    graphs: dict[str, nx.MultiDiGraph]
    prove: Optional_
    mutants: Optional_
    ablations: Optional_
    consequences: list[list[str] | None]  # per counterexample, per step (or None)
    consequences_note: str = ""
    apis: Optional_ = field(default_factory=lambda: Optional_(note="not collected"))


#: the module the optional sections come from
ROWS = "tdxcheck.checker.output.report_rows"


def optional_function(module: str, name: str) -> Callable[..., Any] | None:
    """``module.name`` if the module imports and has it, else None (never raises)."""
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a missing or broken optional engine is "not available"
        return None
    fn = getattr(mod, name, None)
    return fn if callable(fn) else None


def _optional_rows(module: str, name: str, *args: Any) -> Optional_:
    fn = optional_function(module, name)
    if fn is None:
        return Optional_(note=f"{NOT_AVAILABLE} ({module}.{name})")
    try:
        rows = fn(*args)
    except Exception as e:  # noqa: BLE001 - the report shows the failure instead of dying
        return Optional_(note=f"{module}.{name} failed: {type(e).__name__}: {e}")
    return Optional_(rows=[dict(r) for r in rows or []],
                     note="" if rows else "no rows")


def collect(config: Any, *, faults: bool = False, ablate: Sequence[str] = (),
            progress: Callable[[dict[str, float]], None] | None = None) -> ReportData:
    """Run everything the page shows: ``check --all`` (verdicts, counterexamples,
    witnesses), one coverage walk (the table and the projections), and whatever optional
    engines the build has."""
    from tdxcheck.checker.explore.check import run_check

    run = run_check(config=config, faults=faults, ablate=ablate, all_violations=True,
                    progress=progress)
    cov, graphs = projections_and_coverage(config, PROJECTIONS, faults=faults, ablate=ablate,
                                           progress=progress)
    cons: list[list[str] | None] = []
    fn = optional_function(ROWS, "consequences")
    note = "" if fn else f"{NOT_AVAILABLE} ({ROWS}.consequences)"
    for cx in run.result.violations:
        if fn is None:
            cons.append(None)
            continue
        try:
            cons.append([str(x) for x in fn(run.prog, cx)])
        except Exception as e:  # noqa: BLE001 - the report shows the failure instead
            cons.append(None)
            note = f"executor failed: {type(e).__name__}: {e}"
    return ReportData(
        config, faults, list(ablate), run, cov, graphs,
        prove=_optional_rows(ROWS, "prove_rows", config),
        mutants=_optional_rows(ROWS, "mutant_rows", config),
        ablations=_optional_rows(ROWS, "ablation_rows", config),
        consequences=cons, consequences_note=note,
        apis=_optional_rows(ROWS, "apis_rows", config))


# ------------------------------------------------------------------ HTML
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em;
       color: #222; max-width: 1600px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc;
     padding-bottom: .2em; margin-top: 1.8em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .2em .45em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #176117; font-weight: bold; } .bad { color: #a31515; font-weight: bold; }
.warn { color: #8a5a00; font-weight: bold; }
.na { color: #777; font-style: italic; }
code, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .95em; }
table.cov { font-size: .72em; }
table.cov th.st { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap;
                  font-weight: normal; padding: .4em .1em; }
table.cov td { text-align: right; white-space: nowrap; }
table.cov td.hole { background: #f4b6b6; color: #7a0000; font-weight: bold; text-align: center; }
table.cov td.expected { background: #ececec; color: #666; text-align: center; }
table.cov td.none { background: #fff; }
table.cov td.w { text-align: left; font-family: ui-monospace, Menlo, Consolas, monospace; }
.legend span { display: inline-block; padding: 0 .5em; margin-right: .5em; border: 1px solid #ccc; }
.wide { overflow-x: auto; }
.graph { overflow-x: auto; border: 1px solid #ddd; padding: .5em; margin: .5em 0; }
.graph svg { height: auto; }
details { margin: .4em 0; } summary { cursor: pointer; }
ul.changes { margin: 0; padding-left: 1.1em; }
"""


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _num(n: int) -> str:
    return f"{n:,}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A table from already-escaped cell HTML."""
    c = f' class="{cls}"' if cls else ""
    out = [f"<table{c}>", "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header)
           + "</tr></thead>", "<tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(
            (x if x.startswith("<td") else f"<td>{x}</td>") for x in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _dict_table(rows: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return _table([_e(c) for c in cols], [[_e(r.get(c, "")) for c in cols] for r in rows])


def _optional_section(sid: str, title: str, opt: Optional_) -> str:
    body = _dict_table(opt.rows) if opt.rows else f'<p class="na">{_e(opt.note)}</p>'
    return f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _config_section(d: ReportData) -> str:
    c = d.config
    rows = [["configuration", _e(c.name)], ["TDs", _e(c.tds)], ["vCPUs", _e(c.vps)],
            ["pages", _e(c.pages)], ["GPAs", _e(", ".join(hex(g) for g in c.gpas))]]
    for k, v in c.platform.__dict__.items():
        rows.append([_e(k), _e(v)])
    prog = d.run.prog
    rows += [["host program", "--host any: every wrapper, every operand, any order"],
             ["actions", _e(len(prog.actions))],
             ["state cells", _e(prog.engine.layout.size)],
             ["symmetry reduction", "on" if d.run.symmetry else "off"],
             ["fault points", "on (--faults)" if d.faults else "off"],
             ["ablated checks", _e(", ".join(d.ablate) or "none")]]
    return ('<section id="configuration">\n<h2>Configuration</h2>\n'
            f"<p>{_e(c.describe())}</p>\n" + _table(["key", "value"], rows) + "\n</section>")


def _verdict_class(v: str) -> str:
    return {"holds": "ok", "violated": "bad"}.get(v, "warn")


def _verdict_section(d: ReportData) -> str:
    r = d.run.result
    found = {cx.invariant: cx for cx in r.violations}
    eng = d.run.prog.engine
    u = eng.u
    checked = [inv for inv in eng.invariants
               if inv.state_clauses(u, eng.only)
               or any(inv.step_clauses(u, a, eng.only) for a in d.run.prog.actions)]
    rows = []
    for inv in checked:
        if inv.id in found:
            v = "violated"
            detail = f"shortest counterexample: {found[inv.id].length} step(s)"
        elif r.verdict == "incomplete":
            v, detail = "incomplete", r.reason or "exploration did not finish"
        elif found:
            v, detail = "holds", ("every reachable state and step (states that break "
                                  "another invariant are not expanded)")
        else:
            v, detail = "holds", "every reachable state and step"
        rows.append([f"<code>{_e(inv.id)}</code>",
                     f'<span class="{_verdict_class(v)}">{_e(v)}</span>', _e(detail)])
    for inv in found:
        if inv not in {i.id for i in checked}:
            rows.append([f"<code>{_e(inv)}</code>", '<span class="bad">violated</span>',
                         _e(found[inv].message)])
    summary = _table(["what", "result"], [
        ["engine", "explicit-state breadth-first search (tdxcheck check)"],
        ["verdict", f'<span class="{_verdict_class(r.verdict)}">{_e(r.verdict)}</span>'
         + (f" ({_e(r.reason)})" if r.reason else "")],
        ["states", _num(r.states) + (" canonical" if d.run.symmetry else "")],
        ["transitions", _num(r.transitions)], ["depth", _num(r.depth)],
        ["completeness", "complete: every reachable state explored"
         if r.verdict != "incomplete" else "incomplete"],
    ])
    wrows = []
    for wid, reached in d.coverage.witnesses.items():
        if reached is None:
            s = '<span class="na">not applicable in this configuration</span>'
            length = ""
        else:
            cx = r.witnesses.get(wid)
            s = '<span class="ok">reached</span>' if reached else \
                '<span class="bad">NOT reached</span>'
            length = f"{cx.length} step(s)" if cx is not None else ""
        wrows.append([f"<code>{_e(wid)}</code>", s, _e(length)])
    prove = (_dict_table(d.prove.rows) if d.prove.rows
             else f'<p class="na">{_e(d.prove.note)}</p>')
    return ('<section id="verdicts">\n<h2>Verdicts</h2>\n<h3>check</h3>\n' + summary
            + "\n" + _table(["invariant (module-guaranteed clauses)", "verdict", "detail"], rows)
            + "\n<h3>witnesses</h3>\n" + _table(["witness", "", "shortest run"], wrows)
            + '\n<h3 id="prove">prove</h3>\n' + prove + "\n</section>")


def _cx_section(d: ReportData) -> str:
    r = d.run.result
    head = '<section id="counterexamples">\n<h2>Counterexamples</h2>\n'
    if not r.violations:
        what = "the verdict holds" if r.verdict == "holds" else f"verdict {r.verdict}"
        return head + f'<p class="na">none: {_e(what)}.</p>\n</section>'
    prog = d.run.prog
    lay = prog.engine.layout
    n = lay.size
    out = [head]
    if d.consequences_note:
        out.append(f'<p class="na">executor consequences: {_e(d.consequences_note)}</p>')
    abl = "".join(f" --ablate {a}" for a in d.ablate)
    for i, (cx, labels) in enumerate(zip(r.violations, d.run.labels, strict=True)):
        cons = d.consequences[i] if i < len(d.consequences) else None
        out.append(f'<h3 id="cx-{_e(cx.invariant)}"><code>{_e(cx.invariant)}</code> violated '
                   f"after {cx.length} step(s)</h3>")
        out.append(f"<p>{_e(cx.message)}</p>")
        rows = []
        for k, ((eid, status), label) in enumerate(zip(cx.path, labels, strict=True), 1):
            fault = prog.edges[eid].fault
            a, b = cx.states[k - 1], cx.states[k]
            ch = [f"<li><code>{_e(lay.label(c))}</code>: {_e(lay.show(c, x))} &rarr; "
                  f"{_e(lay.show(c, y))}</li>"
                  for c, (x, y) in enumerate(zip(a[:n], b[:n], strict=True)) if x != y]
            row = [_e(k), f"<code>{_e(label)}</code>" + (f" [fault {_e(fault)}]" if fault
                                                           else ""),
                   f"<code>{_e(status_name(status))}</code>" if status is not None else "-",
                   '<ul class="changes">' + "".join(ch) + "</ul>" if ch else
                   '<span class="na">no change</span>']
            if cons is not None:
                row.append(_e(cons[k - 1]) if k - 1 < len(cons) else "")
            rows.append(row)
        header = ["#", "call", "status", "changed fields"]
        if cons is not None:
            header.append("executor")
        out.append(_table(header, rows))
        out.append(f"<p>reproduce: <code>tdxcheck check --config {_e(d.config.name)} --all"
                   f"{_e(abl)} --trace-out DIR</code>, then <code>tdxcheck replay "
                   f"DIR/{_e(cx.invariant)}.tdx{_e(abl)}</code></p>")
    out.append("</section>")
    return "\n".join(out)


def _status_order(names: set[str]) -> list[str]:
    from tdxcheck.model.status import parse_status

    def key(s: str) -> tuple[int, int, str]:
        try:
            code, _ = parse_status(s)
        except ValueError:
            return (2, 0, s)
        return (0 if s == "TDX_SUCCESS" else 1, code, s)

    return sorted(names, key=key)


def _coverage_section(d: ReportData) -> str:
    cov = d.coverage
    cols = _status_order({c.status for w in cov.wrappers for c in w.statuses})
    header = ["wrapper", "actions", "enabled", "fired", "new states"] + [
        f'<span title="{_e(s)}">{_e(s.removeprefix("TDX_"))}</span>' for s in cols]
    rows = []
    for w in cov.wrappers:
        row = [f'<td class="w">{_e(w.wrapper)}</td>', f'<td class="num">{_num(w.actions)}</td>',
               f'<td class="num">{_num(w.enabled)}</td>',
               f'<td class="num">{_num(w.fired)}</td>',
               f'<td class="num">{_num(w.new_states)}</td>']
        for s in cols:
            c = w.cell(s)
            if c is None:
                row.append('<td class="none"></td>')
                continue
            tip = f"{w.wrapper} -> {s}: {c.count:,}; from: {', '.join(c.checks) or 'success'}"
            if c.count:
                row.append(f'<td title="{_e(tip)}">{_num(c.count)}</td>')
            elif c.note:
                row.append(f'<td class="expected" title="{_e(tip + "; " + c.note)}">-</td>')
            else:
                row.append(f'<td class="hole" title="{_e(tip)}">0</td>')
        rows.append(row)
    thead = ("<thead><tr>" + "".join(
        f'<th class="st">{h}</th>' if i >= 5 else f"<th>{h}</th>"
        for i, h in enumerate(header)) + "</tr></thead>")
    body = "\n".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    matrix = (f'<div class="wide"><table class="cov">\n{thead}\n<tbody>\n{body}\n'
              f"</tbody></table></div>")
    holes = cov.holes()
    hole_rows = [[f"<code>{_e(w)}</code>", f"<code>{_e(c.status)}</code>",
                  _e(", ".join(c.checks) or "success path")] for w, c in holes]
    expected = [(w, c) for w, c in cov.unreached() if not c.hole]
    return ('<section id="coverage">\n<h2>Coverage</h2>\n'
            f"<p>{_num(cov.states)} states, {_num(cov.transitions)} transitions; "
            f"{_e(cov.counting)}. A cell counts how often the wrapper returned that status "
            "(over every operand); an empty cell is a status none of its rules return.</p>\n"
            '<p class="legend"><span style="background:#f4b6b6">0</span>never reached '
            '(a check or success path no explored state exercised) '
            '<span style="background:#ececec">-</span>not reachable by construction '
            "(a fault point without --faults, or a check that cannot fail here)</p>\n"
            + matrix
            + f"\n<h3>never reached ({len(holes)})</h3>\n"
            + (_table(["wrapper", "status", "check(s)"], hole_rows) if holes
               else '<p class="ok">every status the rules list was produced</p>')
            + f"\n<p>{len(expected)} further cell(s) unreached by construction.</p>\n"
            + "</section>")


def _graph_section(d: ReportData) -> str:
    out = ['<section id="graphs">\n<h2>Projection graphs</h2>',
           "<p>One object's machine each, with the counts summed over all objects of its kind. "
           "Solid: the node changed; dashed red: error self-loops (the wrappers and statuses "
           "that failed there, largest first); dotted gray: successes that left the node as "
           "it was. Self-loops are drawn only for calls that name the object and can change "
           "what the graph shows.</p>"]
    svg_ok = dot_available()
    if not svg_ok:
        out.append('<p class="na">Graphviz\'s dot is not installed: graphs as tables only.</p>')
    for name in PROJECTIONS:
        G = d.graphs.get(name)
        if G is None:
            continue
        out.append(f'<h3 id="graph-{name}">{_e(G.graph.get("title", name))}</h3>')
        out.append(f"<p>{G.number_of_nodes()} node(s), {G.number_of_edges()} edge(s) "
                   f"(one per wrapper and status).</p>")
        if svg_ok:
            out.append(f'<div class="graph">{inline_svg(G)}</div>')
        labels = {n: str(a.get("label", n)).replace("\n", " / ")
                  for n, a in G.nodes(data=True)}
        rows = [[_e(labels[a]), _e(labels[b]), f"<code>{_e(e['wrapper'])}</code>",
                 f"<code>{_e(e['status'])}</code>", _e(e["kind"]),
                 f'<td class="num">{_num(e["count"])}</td>']
                for a, b, e in G.edges(data=True)]
        out.append("<details><summary>edges as a table</summary>\n"
                   + _table(["from", "to", "wrapper", "status", "kind", "count"], rows)
                   + "\n</details>")
    out.append("</section>")
    return "\n".join(out)


def render(d: ReportData) -> str:
    """The page, as a string."""
    title = f"tdxcheck report: config {d.config.name}"
    if d.ablate:
        title += f", ablated {', '.join(d.ablate)}"
    nav = " | ".join(f'<a href="#{sid}">{t}</a>' for sid, t in (
        ("configuration", "configuration"), ("verdicts", "verdicts"),
        ("counterexamples", "counterexamples"), ("mutants", "mutants"),
        ("ablations", "ablations"), ("apis", "wrapper APIs"), ("coverage", "coverage"),
        ("graphs", "graphs")))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>Generated by <code>{_e(_command(d))}</code>. Self-contained: no scripts, no "
        f"network. {_e(d.run.title)}.</p>",
        f"<nav>{nav}</nav>",
        _config_section(d),
        _verdict_section(d),
        _cx_section(d),
        _optional_section("mutants", "Mutants", d.mutants),
        _optional_section("ablations", "Ablations", d.ablations),
        _optional_section("apis", "Which wrapper API? (tdxcheck apis, config tiny: what each "
                          "API lets a host get wrong)", d.apis),
        _coverage_section(d),
        _graph_section(d),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _command(d: ReportData) -> str:
    cmd = f"tdxcheck report --config {d.config.name.split('+')[0]}"
    if "+" in d.config.name:
        cmd += " " + " ".join(d.config.name.split("+", 1)[1].split(","))
    if d.faults:
        cmd += " --faults"
    cmd += "".join(f" --ablate {a}" for a in d.ablate)
    return cmd


def file_name(d: ReportData) -> str:
    base = d.config.name + ("-faults" if d.faults else "") + "".join(
        f"-ablate-{a}" for a in d.ablate)
    return re.sub(r"[^A-Za-z0-9._+=,-]", "_", base) + ".html"


def write_report(d: ReportData, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / file_name(d)
    path.write_text(render(d), encoding="utf-8")
    return path
