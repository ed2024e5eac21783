"""``tdxcheck report``: one self-contained HTML page per run (no network needed to open it).

The page reads from the top: the **verdicts** banner first (one row per command: ``check
--host any``, ``check --host kvm``, ``prove``, ``mutants``, coverage and ablation, each with
its verdict, what it covered and what it did not and where that is checked), then the
**counterexamples**, then the details, one section each (``SECTIONS``: an id, a title and
the function that writes it; a new section is one more entry):
``apis`` is ``tdxcheck apis`` on tiny: each class of host mistake under each wrapper API.

``check`` (the explorer's verdict per invariant, the witnesses, what ``--host any`` does not
cover), ``kvm``, ``prove``, ``mutants``, ``ablations`` (the removals that break something;
the rest folded by reason class), ``coverage`` (wrappers as rows, each row's statuses grouped
by the module's status class, unreached ones highlighted), ``graphs`` (the TD, page, HKID
and vCPU projections as inline SVG scaled to the page, drawn by Graphviz's ``dot`` when it
is on the PATH and by ``draw.layered_svg`` otherwise; each also as an edge table) and
``configuration``.

The state space is explored once (``graphs.explore_once``): that walk gives ``check --all``'s
result, the coverage and the projections.  The optional engines are found by name, so the
report works in any build; a missing one (or one without the function) gives "not available
in this build": ``tdxcheck.checker.output.report_rows`` (``ROWS``) holds them:
``prove_rows``, ``kvm_rows``, ``mutant_rows``, ``ablation_rows`` and ``consequences``.

The page holds no time stamps and no timings, so the same model gives the same bytes.
Regenerate the repository's copy with ``tdxcheck report --config default -o reports``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import networkx as nx
from tdxcheck.checker.analyses.coverage import Coverage
from tdxcheck.model.status import parse_status, status_class, status_name

from .graphs import PROJECTIONS, GraphError, explore_once, inline_svg, renderer

NOT_AVAILABLE = "not available in this build"
REGENERATE = "tdxcheck report --config default -o reports"
Progress = Callable[[dict[str, Any]], None]


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
    kvm: Optional_ = field(default_factory=Optional_)
    #: per projection: its inline SVG, or why there is none ("" for none at all)
    pictures: dict[str, str] = field(default_factory=dict)
    picture_notes: dict[str, str] = field(default_factory=dict)
    drawn_by: str = ""  # "dot" or "networkx"
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


def _optional_rows(module: str, name: str, *args: Any,
                   say: Callable[[str], None] | None = None,
                   ablate: Sequence[str] = ()) -> Optional_:
    fn = optional_function(module, name)
    if fn is None:
        return Optional_(note=f"{NOT_AVAILABLE} ({module}.{name})")
    if say is not None:
        say(f"{name} ...")
    kw: dict[str, Any] = {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read: call it plainly
        params = {}  # type: ignore[assignment]
    if say is not None and "progress" in params:
        kw["progress"] = say
    if ablate and "ablate" in params:  # the engines that can run the ablated module
        kw["ablate"] = tuple(ablate)
    try:
        rows = fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - the report shows the failure instead of dying
        return Optional_(note=f"{module}.{name} failed: {type(e).__name__}: {e}")
    return Optional_(rows=[dict(r) for r in rows or []],
                     note="" if rows else "no rows")


def collect(config: Any, *, faults: bool = False, ablate: Sequence[str] = (),
            progress: Progress | None = None) -> ReportData:
    """Run everything the page shows: one exploration (``check --all``'s verdicts,
    counterexamples and witnesses, the coverage table and the projections, from the same
    walk), the pictures, and whatever optional engines the build has.  ``progress`` gets
    the exploration's counters (``phase`` "explore") and then one ``message`` per step,
    each with its ``phase``."""
    from tdxcheck.checker.explore.check import any_host_title, check_run_of

    def say(phase: str) -> Callable[[str], None]:
        def show(msg: str) -> None:
            if progress is not None:
                progress({"phase": phase, "message": msg})
        return show

    def explore_progress(d: dict[str, Any]) -> None:
        if progress is not None:
            progress({"phase": "explore (check, coverage, graphs)", **d})

    w, cov, graphs = explore_once(config, PROJECTIONS, faults=faults, ablate=ablate,
                                  progress=explore_progress)
    assert w.result is not None
    run = check_run_of(w.prog, w.result, w.symmetry, any_host_title(config))
    say("explore (check, coverage, graphs)")(
        f"done: {run.result.states:,} states, verdict {run.result.verdict}")
    cons: list[list[str] | None] = []
    fn = optional_function(ROWS, "consequences")
    note = "" if fn else f"{NOT_AVAILABLE} ({ROWS}.consequences)"
    for i, cx in enumerate(run.result.violations):
        say("counterexamples")(f"{i + 1}/{len(run.result.violations)}: {cx.invariant} "
                               "replayed on the executor")
        if fn is None:
            cons.append(None)
            continue
        try:
            cons.append([str(x) for x in fn(run.prog, cx)])
        except Exception as e:  # noqa: BLE001 - the report shows the failure instead
            cons.append(None)
            note = f"executor failed: {type(e).__name__}: {e}"
    drawn_by = renderer()
    pictures: dict[str, str] = {}
    picture_notes: dict[str, str] = {}
    for name in PROJECTIONS:
        if name not in graphs:
            continue
        say("graphs")(f"drawing {name} ({'Graphviz dot' if drawn_by == 'dot' else 'networkx'})")
        try:
            pictures[name] = inline_svg(graphs[name])
        except GraphError as e:
            picture_notes[name] = str(e)
    return ReportData(
        config, faults, list(ablate), run, cov, graphs,
        prove=_optional_rows(ROWS, "prove_rows", config, say=say("prove (Z3 induction)"),
                             ablate=ablate),
        kvm=_optional_rows(ROWS, "kvm_rows", config, say=say("check --host kvm"),
                           ablate=ablate),
        mutants=_optional_rows(ROWS, "mutant_rows", config, say=say("mutants")),
        ablations=_optional_rows(ROWS, "ablation_rows", config,
                                 say=say("ablation (kvm tiny, faults)")),
        apis=_optional_rows(ROWS, "apis_rows", config, say=say("apis (config tiny)")),
        consequences=cons, consequences_note=note, pictures=pictures,
        picture_notes=picture_notes, drawn_by=drawn_by)


# ------------------------------------------------------------------ HTML
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1em 1.5em;
       color: #222; max-width: 1400px; }
h1 { font-size: 1.35em; margin: 0 0 .2em 0; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
h3 { font-size: 1.02em; }
p.sub { margin: 0 0 .3em 0; color: #444; font-size: .9em; }
nav { font-size: .88em; margin: .2em 0 .6em 0; }
table { border-collapse: collapse; margin: .5em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .2em .45em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #176117; font-weight: bold; } .bad { color: #a31515; font-weight: bold; }
.warn { color: #8a5a00; font-weight: bold; }
.na { color: #777; font-style: italic; }
code, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .95em; }
.banner { padding: .45em .8em; border-radius: 4px; font-size: 1.1em; font-weight: bold;
          margin: .3em 0 .4em 0; }
.banner.ok { background: #e3f4e3; border: 1px solid #8cc78c; }
.banner.bad { background: #fbe3e3; border: 1px solid #e09a9a; }
.banner.warn { background: #fff3d6; border: 1px solid #e3c170; }
table.verdicts { width: 100%; font-size: .84em; }
table.verdicts td:first-child { white-space: nowrap; }
table.verdicts td:nth-child(2) { white-space: nowrap; }
table.cov { width: 100%; font-size: .78em; }
table.cov td.w { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: nowrap; }
.grp { display: inline-block; margin: 0 .5em .15em 0; }
.grp b { font-weight: normal; color: #666; font-size: .9em; margin-right: .2em; }
.st { display: inline-block; border: 1px solid #ccc; border-radius: 3px; padding: 0 .25em;
      margin: 0 .15em .1em 0; font-family: ui-monospace, Menlo, Consolas, monospace;
      white-space: nowrap; background: #f7fbf7; }
.st.hole { background: #f4b6b6; color: #7a0000; border-color: #d88; font-weight: bold; }
.st.expected { background: #ececec; color: #777; border-style: dashed; }
.legend span { display: inline-block; padding: 0 .5em; margin-right: .5em; }
.graph { border: 1px solid #ddd; padding: .3em; margin: .5em 0; }
.graph svg { display: block; height: auto; }
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


def _dict_table(rows: list[dict[str, Any]], skip: Sequence[str] = ()) -> str:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols and k not in skip:
                cols.append(k)
    def cell(v: Any) -> str:
        if isinstance(v, int) and not isinstance(v, bool):
            return f'<td class="num">{_num(v)}</td>'
        return _e(v)

    return _table([_e(c) for c in cols], [[cell(r.get(c, "")) for c in cols] for r in rows])


def _span(cls: str, text: str) -> str:
    return f'<span class="{cls}">{_e(text)}</span>'


def _verdict_class(v: str) -> str:
    return {"holds": "ok", "violated": "bad", "proved": "ok"}.get(v, "warn")


# ------------------------------------------------------------------ the verdicts
@dataclass
class Verdict:
    """One row of the banner: a command, its verdict, what it covered and what not."""

    command: str
    link: str  # the section with the details
    verdict: str  # text
    cls: str  # ok | bad | warn | na
    covered: str  # HTML
    missing: str  # HTML
    failed: bool = False  # makes the banner red


def _host_obligations(u: Any) -> tuple[list[str], list[str]]:
    from tdxcheck.checker.explore.programs import not_covered, partly_covered

    return list(not_covered(u)), partly_covered(u)


def _not_covered_html(u: Any) -> str:
    skip, part = _host_obligations(u)
    if not skip and not part:
        return '<span class="na">nothing</span>'
    out = ""
    if skip:
        out += "the host's obligations " + ", ".join(f"<code>{_e(i)}</code>" for i in skip)
    if part:
        out += ("; " if out else "") + "the host clauses of " + ", ".join(
            f"<code>{_e(i)}</code>" for i in part)
    return (out + ': <code>--host any</code> makes SEAMCALLs only; checked on a host: '
            '<a href="#kvm">check --host kvm</a> and scenario files '
            "(<code>check FILE</code>, <code>prove --host FILE</code>)")


def verdicts(d: ReportData) -> list[Verdict]:
    """The banner's rows, from the data only (no timings)."""
    out: list[Verdict] = []
    r = d.run.result
    eng = d.run.prog.engine
    u = eng.u
    skip, _part = _host_obligations(u)
    n_checked = sum(1 for inv in eng.invariants if inv.id not in skip)
    got = [w for w, cx in r.witnesses.items() if cx is not None]
    bad = sorted({cx.invariant for cx in r.violations})
    cfg = d.config.name
    out.append(Verdict(
        f"check --host any --config {cfg}", "check",
        r.verdict + (f": {', '.join(bad)}" if bad else ""), _verdict_class(r.verdict),
        f"{n_checked} invariants (their module clauses) in every reachable state and step: "
        f"{_num(r.states)} states{' (canonical: symmetry on)' if d.run.symmetry else ''}, "
        f"{_num(r.transitions)} transitions, "
        + ("complete" if r.verdict != "incomplete" else "incomplete")
        + f"; witnesses reached {len(got)}/{len(r.witnesses)}"
        + (" (module fault points on)" if d.faults else "")
        + (f"; ablated: {_e(', '.join(d.ablate))}" if d.ablate else ""),
        _not_covered_html(u), failed=r.verdict != "holds" or len(got) < len(r.witnesses)))
    out.append(_kvm_verdict(d))
    out.append(_prove_verdict(d))
    out.append(_mutants_verdict(d))
    cov = d.coverage
    holes = cov.holes()
    expected = [c for _w, c in cov.unreached() if not c.hole]
    cells = sum(len(w.statuses) for w in cov.wrappers)
    out.append(Verdict(
        "coverage", "coverage",
        f"{len(holes)} cell(s) never reached" if holes else "every status reached",
        "warn" if holes else "ok",
        f"{len(cov.wrappers)} wrappers x the statuses their rules return: {cells} cells, "
        f"{cells - len(holes) - len(expected)} reached (same exploration as check)",
        (f"{len(holes)} never reached by any explored state (a check or success path "
         f"this configuration does not exercise: see <a href=\"#coverage\">coverage</a>)"
         if holes else "") + (f"; {len(expected)} unreachable by construction (a fault point "
                              "without --faults, or a check that cannot fail here)"
                              if expected else "")))
    out.append(_ablation_verdict(d))
    return out


def _unablated(d: ReportData) -> str:
    return " (on the module as it is: this report's --ablate is not applied here)" \
        if d.ablate else ""


def _ablated(rows: list[dict[str, Any]]) -> str:
    return f"; ablated: {_e(rows[0]['ablated'])}" if rows and rows[0].get("ablated") else ""


def _unavailable(cmd: str, link: str, opt: Optional_) -> Verdict:
    return Verdict(cmd, link, "not run", "na", f'<span class="na">{_e(opt.note)}</span>', "")


def _kvm_verdict(d: ReportData) -> Verdict:
    rows = d.kvm.rows
    if not rows or "verdict" not in rows[0]:
        return _unavailable("check --host kvm", "kvm", d.kvm)
    vs = [str(r["verdict"]) for r in rows]
    v = "violated" if "violated" in vs else "incomplete" if "incomplete" in vs else \
        "holds" if all(x == "holds" for x in vs) else vs[0]
    missing = [r for r in rows if r.get("missing witnesses")]
    parts = []
    for r in rows:
        extra = ""
        if r.get("violations", "none") != "none":
            extra += f", violated: {r['violations']}"
        leaks = str(r.get("leaks on error paths (KVM's choice)", "none"))
        if leaks != "none":
            extra += f", {leaks.count('after ')} leak path(s) KVM chose on its error paths"
        faults = " --faults" in str(r["command"])
        parts.append(f"{'with module faults' if faults else 'without faults'}: "
                     f"{_num(int(r.get('states', 0)))} states{_e(extra)}")
    return Verdict(
        str(rows[0]["command"]) + " [--faults]", "kvm", v, _verdict_class(v),
        "every invariant, the host's obligations included, over every interleaving of "
        "upstream KVM's TDX paths: " + "; ".join(parts) + _ablated(rows),
        "hosts other than KVM (write a scenario file)"
        + (f"; witnesses NOT reached: {_e(', '.join(str(r['missing witnesses']) for r in missing))}"
           if missing else ""),
        failed=v != "holds" or bool(missing))


def _prove_verdict(d: ReportData) -> Verdict:
    rows = d.prove.rows
    if not rows or "verdict" not in rows[0]:
        return _unavailable("prove", "prove", d.prove)
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["verdict"])] = counts.get(str(r["verdict"]), 0) + 1
    n_ok = counts.get("proved", 0)
    ok = n_ok == len(rows)
    v = f"proved {n_ok}/{len(rows)}" if ok else "not proved: " + ", ".join(
        f"{k} {n}" for k, n in sorted(counts.items()) if k != "proved")
    return Verdict(
        f"prove --config {d.config.name}", "prove", v, "ok" if ok else "bad",
        "the module invariants and their lemmas for runs of any length (Z3 induction, "
        "host any)" + _ablated(rows),
        "as for <code>check --host any</code>: the host's obligations", failed=not ok)


def _mutants_verdict(d: ReportData) -> Verdict:
    rows = d.mutants.rows
    if not rows or "killed" not in rows[0]:
        return _unavailable("mutants", "mutants", d.mutants)
    alive = [str(r.get("mutant")) for r in rows if r["killed"] != "yes"]
    cfg = rows[0].get("kvm config", "")
    return Verdict(
        f"mutants --config {cfg}", "mutants",
        f"killed {len(rows) - len(alive)}/{len(rows)}", "bad" if alive else "ok",
        f"{len(rows)} seeded KVM bugs (one-line patches), each explored on the kvm host: "
        "a bug is killed when an invariant breaks" + _unablated(d),
        (f"survived: {_e(', '.join(alive))}" if alive else
         "bugs unlike the seeded ones: the kvm host's other paths are checked by "
         '<a href="#kvm">check --host kvm</a>'), failed=bool(alive))


def _ablation_verdict(d: ReportData) -> Verdict:
    rows = d.ablations.rows
    if not rows or "class" not in rows[0]:
        return _unavailable("ablate", "ablations", d.ablations)
    breaks = [r for r in rows if r["class"] == "breaks"]
    return Verdict(
        "ablate --host kvm --config tiny --faults", "ablations",
        f"{len(breaks)}/{len(rows)} checks needed", "ok",
        f"each of the module's {len(rows)} checks removed in turn: {len(breaks)} removal(s) "
        "let KVM's runs break an invariant" + _unablated(d),
        f"{len(rows) - len(breaks)} break nothing on KVM (folded by reason in "
        '<a href="#ablations">ablations</a>); the any-host ablation: <code>tdxcheck ablate'
        "</code>")


def _verdicts_section(d: ReportData) -> str:
    vs = verdicts(d)
    failed = [v for v in vs if v.failed]
    na = [v for v in vs if v.cls == "na"]
    if failed:
        head = ("bad", "Something failed: " + "; ".join(
            f"{v.command.split(' --config')[0]}: {v.verdict}" for v in failed))
    else:
        head = ("ok", "Every verdict holds: no invariant broken, every proof closed, every "
                "seeded bug caught" + (f" ({len(na)} engine(s) not in this build)" if na
                                       else ""))
    rows = [[f'<a href="#{v.link}"><code>{_e(v.command)}</code></a>',
             _span(v.cls, v.verdict), v.covered, v.missing] for v in vs]
    c = d.config
    from tdxcheck.checker.explore.programs import CONFIG_COVERS

    covers = CONFIG_COVERS.get(c.name)
    return (f'<div class="banner {head[0]}">{_e(head[1])}</div>\n'
            f'<p class="sub">configuration {_e(c.describe())}'
            + (f": {_e(covers)}" if covers else "") + "</p>\n"
            + _table(["command", "verdict", "what it covered",
                      "not covered, and where it is checked"], rows, "verdicts"))


# ------------------------------------------------------------------ details
def _check_section(d: ReportData) -> str:
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
        rows.append([f"<code>{_e(inv.id)}</code>", _e(getattr(inv, "summary", "")),
                     _span(_verdict_class(v), v), _e(detail)])
    for inv, cx in found.items():
        if inv not in {i.id for i in checked}:
            rows.append([f"<code>{_e(inv)}</code>", "", _span("bad", "violated"),
                         _e(cx.message)])
    summary = _table(["what", "result"], [
        ["engine", ("explicit-state breadth-first search (tdxcheck check --all; the same "
                    "walk counts coverage and the graphs)")],
        ["verdict", _span(_verdict_class(r.verdict), r.verdict)
         + (f" ({_e(r.reason)})" if r.reason else "")],
        ["states", _num(r.states) + (" canonical" if d.run.symmetry else "")],
        ["transitions", _num(r.transitions)], ["depth", _num(r.depth)],
        ["completeness", "complete: every reachable state explored"
         if r.verdict != "incomplete" else "incomplete"],
    ])
    from tdxcheck.properties.witnesses import WITNESSES

    what = {w.id: w.summary for w in WITNESSES}
    wrows = []
    for wid, reached in d.coverage.witnesses.items():
        if reached is None:
            s = '<span class="na">not applicable in this configuration</span>'
            length = ""
        else:
            cx = r.witnesses.get(wid)
            s = _span("ok", "reached") if reached else _span("bad", "NOT reached")
            length = f"{cx.length} step(s)" if cx is not None else ""
        wrows.append([f"<code>{_e(wid)}</code>", _e(what.get(wid, "")), s, _e(length)])
    return (summary + "\n"
            + _table(["invariant (module-guaranteed clauses)", "what it says", "verdict",
                      "detail"], rows)
            + "\n<h3>witnesses</h3>\n<p>States a run must reach, so that \"holds\" is not "
            "vacuous.</p>\n"
            + _table(["witness", "what it is", "", "shortest run"], wrows)
            + f"\n<p>Not checked here: {_not_covered_html(u)}.</p>")


def _cx_section(d: ReportData) -> str:
    r = d.run.result
    kvm_bad = [f"<code>{_e(x['command'])}</code>: {_e(x['violations'])}" for x in d.kvm.rows
               if x.get("violations", "none") != "none"]
    kvm = ""
    if kvm_bad:
        kvm = ('<p class="bad">check --host kvm: ' + "; ".join(kvm_bad) + ' (see <a href='
               '"#kvm">kvm</a>; the traces: the same command with <code>--trace-out DIR'
               "</code>)</p>")
    elif d.kvm.rows:
        kvm = '<p class="na">none from <code>check --host kvm</code>.</p>'
    if not r.violations:
        what = "the verdict holds" if r.verdict == "holds" else f"verdict {r.verdict}"
        return (f'<p class="na">none from <code>check --host any</code>: {_e(what)}.</p>'
                + kvm)
    prog = d.run.prog
    lay = prog.engine.layout
    n = lay.size
    out = []
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
    return "\n".join(out) + kvm


def _rows_or_note(opt: Optional_, skip: Sequence[str] = ()) -> str:
    return _dict_table(opt.rows, skip) if opt.rows else f'<p class="na">{_e(opt.note)}</p>'


def _kvm_section(d: ReportData) -> str:
    return ("<p>Upstream KVM's TDX protocol (<code>checker/kvm/</code>) as threads that "
            "interleave, every invariant checked, the host's obligations included. Leaks on "
            "KVM's error paths are its choice (it leaks a page rather than risk reusing it), "
            "listed apart.</p>\n" + _rows_or_note(d.kvm))


def _prove_section(d: ReportData) -> str:
    return _rows_or_note(d.prove)


def _mutants_section(d: ReportData) -> str:
    return _rows_or_note(d.mutants)


def _apis_section(d: ReportData) -> str:
    return _rows_or_note(d.apis)


def _ablations_section(d: ReportData) -> str:
    rows = d.ablations.rows
    if not rows or "class" not in rows[0]:
        return _rows_or_note(d.ablations)
    breaks = [r for r in rows if r["class"] == "breaks"]
    rest: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["class"] != "breaks":
            rest.setdefault(str(r["class"]), []).append(r)
    host = rows[0].get("host", "")
    out = [(f"<p>Each module check removed in turn ({_e(host)}): {len(breaks)} of "
            f"{len(rows)} removals let a run break an invariant (the number is the shortest "
            "trace's length). The others break nothing, folded below by why.</p>")]
    if breaks:
        out.append(_table(["check removed", "invariants broken (shortest trace)"], [
            [f"<code>{_e(r['check removed'])}</code>",
             _e(r["invariants broken (shortest trace)"])] for r in breaks]))
    else:
        out.append('<p class="warn">no removal breaks anything</p>')
    for cls in sorted(rest, key=lambda c: (-len(rest[c]), c)):
        group = rest[cls]
        reasons: dict[str, list[str]] = {}
        for r in group:
            reasons.setdefault(str(r.get("why nothing breaks", "")), []).append(
                str(r["check removed"]))
        body = _table(["checks", "why nothing breaks"], [
            [", ".join(f"<code>{_e(c)}</code>" for c in checks), _e(why)]
            for why, checks in sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0]))])
        out.append(f"<details><summary>break nothing: {_e(cls)} ({len(group)})</summary>\n"
                   f"{body}\n</details>")
    return "\n".join(out)


#: the module's status classes (bits 47:40 of the status, ``tdx_error_codes_defs.h``), as
#: the coverage groups them; a class not listed goes to "other"
STATUS_CLASSES = (
    (0x01, "operand"), (0x02, "busy"), (0x03, "page (PAMT)"), (0x04, "page (PAMT)"),
    (0x06, "TD"), (0x07, "vCPU"), (0x08, "keys, cache"), (0x0B, "S-EPT"),
)
_CLASS_NAMES = ["success", *dict.fromkeys(n for _c, n in STATUS_CLASSES), "other"]


def status_group(status: str) -> str:
    """The coverage column of a status name: ``success``, its module class, or ``other``."""
    try:
        code, _ = parse_status(status)
    except ValueError:
        return "other"
    if code == 0:
        return "success"
    cls = (status_class(code) >> 40) & 0xFF
    return next((n for c, n in STATUS_CLASSES if c == cls), "other")


def _coverage_section(d: ReportData) -> str:
    cov = d.coverage
    rows = []
    for w in cov.wrappers:
        groups: dict[str, list[str]] = {}
        for c in sorted(w.statuses, key=lambda c: _status_key(c.status)):
            tip = (f"{w.wrapper} -> {c.status}: {c.count:,}; from: "
                   f"{', '.join(c.checks) or 'success'}")
            short = c.status.removeprefix("TDX_")
            if c.count:
                chip = f'<span class="st" title="{_e(tip)}">{_e(short)} {_num(c.count)}</span>'
            elif c.note:
                chip = (f'<span class="st expected" title="{_e(tip + "; " + c.note)}">'
                        f"{_e(short)} -</span>")
            else:
                chip = f'<span class="st hole" title="{_e(tip)}">{_e(short)} 0</span>'
            groups.setdefault(status_group(c.status), []).append(chip)
        cells = " ".join(f'<span class="grp"><b>{_e(g)}</b>{"".join(groups[g])}</span>'
                         for g in _CLASS_NAMES if g in groups)
        rows.append([f'<td class="w">{_e(w.wrapper)}</td>',
                     f'<td class="num">{_num(w.actions)}</td>',
                     f'<td class="num">{_num(w.enabled)}</td>',
                     f'<td class="num">{_num(w.fired)}</td>',
                     f'<td class="num">{_num(w.new_states)}</td>', cells])
    matrix = _table(["wrapper", "actions", "enabled", "fired", "new states",
                     "statuses returned, by the module's status class"], rows, "cov")
    holes = cov.holes()
    hole_rows = [[f"<code>{_e(w)}</code>", f"<code>{_e(c.status)}</code>",
                  _e(", ".join(c.checks) or "success path")] for w, c in holes]
    expected = [(w, c) for w, c in cov.unreached() if not c.hole]
    return (f"<p>{_num(cov.states)} states, {_num(cov.transitions)} transitions; "
            f"{_e(cov.counting)}. Each wrapper's statuses are those its rules can return, "
            "grouped by the module's status class; the number is how often the wrapper "
            "returned it (over every operand).</p>\n"
            '<p class="legend"><span class="st">NAME 12</span>reached '
            '<span class="st hole">NAME 0</span>never reached (a check or success path no '
            'explored state exercised) <span class="st expected">NAME -</span>not reachable '
            "by construction (a fault point without --faults, or a check that cannot fail "
            "here)</p>\n" + matrix
            + f"\n<details><summary>never reached ({len(holes)}), with the checks that "
            "return them</summary>\n"
            + (_table(["wrapper", "status", "check(s)"], hole_rows) if holes
               else '<p class="ok">every status the rules list was produced</p>')
            + "\n</details>\n"
            + f"<p>{len(expected)} further cell(s) unreached by construction.</p>")


def _status_key(s: str) -> tuple[int, int, str]:
    try:
        code, _ = parse_status(s)
    except ValueError:
        return (2, 0, s)
    return (0 if s == "TDX_SUCCESS" else 1, code, s)


def _graph_section(d: ReportData) -> str:
    who = {"dot": "Drawn by Graphviz's <code>dot</code>.",
           "networkx": "Drawn by tdxcheck's own layered layout (networkx): Graphviz's "
                       "<code>dot</code> is not installed."}.get(d.drawn_by, "")
    out = [("<p>One object's machine each, with the counts summed over all objects of its "
           "kind. Arrows: calls that changed the node (wrappers and statuses, counts). Inside "
           "each node, in red: the calls that failed there and left it as it was (error "
           "self-loops), largest first; in gray: successes that left it as it was. Self-loops "
           "count only calls that name the object and can change what the graph shows. "
           f"{who} Hover for every call.</p>")]
    for name in PROJECTIONS:
        G = d.graphs.get(name)
        if G is None:
            continue
        out.append(f'<h3 id="graph-{name}">{_e(G.graph.get("title", name))}</h3>')
        out.append(f"<p>{G.number_of_nodes()} node(s), {G.number_of_edges()} edge(s) "
                   f"(one per wrapper and status).</p>")
        if name in d.pictures:
            out.append(f'<div class="graph">{d.pictures[name]}</div>')
        elif name in d.picture_notes:
            out.append(f'<p class="na">no picture: {_e(d.picture_notes[name])}</p>')
        labels = {n: str(a.get("label", n)).replace("\n", " / ")
                  for n, a in G.nodes(data=True)}
        rows = [[_e(labels[a]), _e(labels[b]), f"<code>{_e(e['wrapper'])}</code>",
                 f"<code>{_e(e['status'])}</code>", _e(e["kind"]),
                 f'<td class="num">{_num(e["count"])}</td>']
                for a, b, e in G.edges(data=True)]
        out.append("<details><summary>edges as a table</summary>\n"
                   + _table(["from", "to", "wrapper", "status", "kind", "count"], rows)
                   + "\n</details>")
    return "\n".join(out)


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
    half = (len(rows) + 1) // 2
    left, right = rows[:half], rows[half:]
    right += [["", ""]] * (len(left) - len(right))
    return (f"<p>{_e(c.describe())}</p>\n"
            + _table(["key", "value", "key", "value"],
                     [[*a, *b] for a, b in zip(left, right, strict=True)]))


@dataclass(frozen=True)
class Section:
    """One ``<section id=...>`` of the page: its id (the anchor), its title (the heading
    and the nav entry) and the function that writes its body from the data."""

    id: str
    title: str
    body: Callable[[ReportData], str]


#: the page, in order: the verdicts and counterexamples first, then the details
SECTIONS: list[Section] = [
    Section("verdicts", "Verdicts", _verdicts_section),
    Section("counterexamples", "Counterexamples", _cx_section),
    Section("check", "check --host any: invariants and witnesses", _check_section),
    Section("kvm", "check --host kvm", _kvm_section),
    Section("prove", "prove (Z3 induction)", _prove_section),
    Section("mutants", "Mutants", _mutants_section),
    Section("ablations", "Ablations", _ablations_section),
    Section("apis", "Which wrapper API? (tdxcheck apis, config tiny: what each API lets a "
            "host get wrong)", _apis_section),
    Section("coverage", "Coverage", _coverage_section),
    Section("graphs", "Projection graphs", _graph_section),
    Section("configuration", "Configuration", _config_section),
]


def _section(s: Section, d: ReportData) -> str:
    head = "" if s.id == "verdicts" else f"<h2>{_e(s.title)}</h2>\n"
    return f'<section id="{s.id}">\n{head}{s.body(d)}\n</section>'


def render(d: ReportData, sections: Sequence[Section] | None = None) -> str:
    """The page, as a string."""
    secs = list(SECTIONS if sections is None else sections)
    title = f"tdxcheck report: config {d.config.name}"
    if d.ablate:
        title += f", ablated {', '.join(d.ablate)}"
    nav = " | ".join(f'<a href="#{s.id}">{_e(s.id)}</a>' for s in secs)
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
        (f'<p class="sub">Generated by <code>{_e(_command(d))}</code>. Self-contained: no '
         "scripts, no network.</p>"),
        f"<nav>{nav}</nav>",
        *(_section(s, d) for s in secs),
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
