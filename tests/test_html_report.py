"""The HTML report: well-formed, self-contained, one section each, optional engines found
by name (or "not available"), deterministic; the repository's copy for ``default``."""

from __future__ import annotations

import html
import re
import subprocess
import sys
import types
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from tdxcheck.checker.explore.programs import make_config
from tdxcheck.checker.output import html_report
from tdxcheck.checker.output.report_rows import ablation_rows as REAL_ABLATION_ROWS

ROOT = Path(__file__).parent.parent
SECTIONS = ("verdicts", "counterexamples", "check", "kvm", "prove", "mutants", "ablations",
            "apis", "coverage", "graphs", "configuration")
REMOVED = "mng.key_freeid.wbinvd_done"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Checker(HTMLParser):
    """Strict nesting: every non-void element closed, in order; ids collected."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.errors: list[str] = []
        self.tags: set[str] = set()
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for k, v in attrs:
            if k == "id" and v:
                self.ids.append(v)
            if k in ("src", "href") and v and not v.startswith("#"):
                self.errors.append(f"external reference {k}={v}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href") and v and not v.startswith("#"):
                self.errors.append(f"external reference {k}={v}")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else ''}>")
            return
        self.stack.pop()


def check_html(text: str) -> Checker:
    c = Checker()
    c.feed(text)
    c.close()
    assert c.doctype.lower() == "doctype html"
    assert not c.errors, c.errors[:5]
    assert not c.stack, c.stack
    assert len(c.ids) == len(set(c.ids)), "duplicate ids"
    for sid in SECTIONS:
        assert sid in c.ids, sid
    assert not c.tags & {"script", "link", "iframe", "img", "object"}
    return c


# The ablation behind the page removes every module check in turn (about 200 kvm runs, most
# of a tiny report's time).  The default suite removes these few: the three that break
# something on kvm tiny with faults and some from each class of those that do not; the slow
# tests (the CLI, the repository's page) run the full ablation.
FEW_ABLATIONS = ("mng.key_freeid.wbinvd_done", "vp.flush.associated_here",
                 "phymem.page_reclaim.no_children",  # these three break an invariant
                 "mng.create.hkid_private", "mng.create.tdr.pt", "mng.create.hkid_free",
                 "mng.key_config.not_fatal", "mng.addcx.tdcx_num", "mem.track.not_fatal",
                 "vp.enter.vcpu_state")


def _few_ablations(mp: pytest.MonkeyPatch) -> None:
    from tdxcheck.checker.output import report_rows

    def few(config: Any, progress: Any = None) -> list[dict[str, Any]]:
        return REAL_ABLATION_ROWS(config, progress, checks=FEW_ABLATIONS)

    mp.setattr(report_rows, "ablation_rows", few)


@pytest.fixture(autouse=True)
def few_ablations(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("slow") is None:
        _few_ablations(monkeypatch)


@pytest.fixture(scope="module")
def tiny_report() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        _few_ablations(mp)
        yield html_report.collect(make_config("tiny", {}))


def test_report_is_valid_html_with_every_section(tiny_report: html_report.ReportData,
                                                 tmp_path: Path) -> None:
    path = html_report.write_report(tiny_report, tmp_path)
    assert path.name == "tiny.html"
    text = path.read_text(encoding="utf-8")
    check_html(text)
    assert '<span class="st hole"' in text  # unreached cells highlighted
    assert "HKID_NOT_FREE" in text and "canonical state" in text
    assert "the verdict holds" in text
    for name in ("td", "page", "hkid", "vcpu"):
        assert f'id="graph-{name}"' in text
    assert text.count("<svg") == 4  # with Graphviz or without it
    assert html_report.render(tiny_report) == text  # deterministic


def _section(text: str, sid: str) -> str:
    start = text.index(f'<section id="{sid}">')
    return text[start:text.index("</section>", start)]


def test_page_opens_on_the_verdicts(tiny_report: html_report.ReportData) -> None:
    """The banner first (every command's verdict, what it covered, what not and where),
    then the counterexamples; the configuration table last."""
    text = html_report.render(tiny_report)
    order = [text.index(f'<section id="{s}">') for s in SECTIONS]
    assert order == sorted(order)
    body = text[text.index("<body>"):]
    assert body.index('<section id="verdicts">') < body.index("<table")  # nothing before it
    v = _section(text, "verdicts")
    assert '<div class="banner ok">Every verdict holds' in v
    for cmd in ("check --host any --config tiny", "check --host kvm --config tiny",
                "prove --config tiny", "mutants --config tiny", "coverage",
                "ablate --host kvm"):
        assert cmd in v, cmd
    # what --host any does not cover, and where it is checked
    for inv in ("flush-before-reclaim", "no-leak"):
        assert f"<code>{inv}</code>" in v
    assert 'href="#kvm"' in v and "scenario files" in v
    assert ">holds<" in v and ">killed 19/19<" in v and re.search(r">proved (\d+)/\1<", v)
    assert "56 cell(s) never reached" in v  # tiny never maps guest memory


def test_verdicts_follow_the_data(tiny_report: html_report.ReportData) -> None:
    """A red banner names what failed: a survived mutant, a proof not closed."""
    import dataclasses

    bad = dataclasses.replace(
        tiny_report,
        mutants=html_report.Optional_(rows=[*tiny_report.mutants.rows[:1], {
            **tiny_report.mutants.rows[0], "mutant": "x", "killed": "NO"}]),
        prove=html_report.Optional_(rows=[{**tiny_report.prove.rows[0],
                                           "verdict": "not-inductive"}]))
    v = _section(html_report.render(bad), "verdicts")
    assert '<div class="banner bad">Something failed' in v
    assert "mutants: killed 1/2" in v and "survived: x" in v
    assert "not proved: not-inductive 1" in v


def test_ablations_show_what_breaks_and_fold_the_rest(
        tiny_report: html_report.ReportData) -> None:
    rows = tiny_report.ablations.rows
    breaks = [r for r in rows if r["class"] == "breaks"]
    assert [r["check removed"] for r in rows] == list(FEW_ABLATIONS)
    assert [r["check removed"] for r in breaks] == list(FEW_ABLATIONS[:3])
    a = _section(html_report.render(tiny_report), "ablations")
    shown = a[:a.index("<details>")]  # before the folds: the removals that break something
    for r in breaks:
        assert f"<code>{html.escape(r['check removed'])}</code>" in shown
    assert "keyid-after-vpflushdone" in shown
    nothing = [r for r in rows if r["class"] != "breaks"]
    assert nothing[0]["check removed"] not in shown
    folds = re.findall(r"<summary>break nothing: ([^<]*) \((\d+)\)</summary>", a)
    assert sum(int(n) for _c, n in folds) == len(nothing)
    assert len(folds) == len({r["class"] for r in nothing}) > 1


def test_coverage_groups_statuses_by_class(tiny_report: html_report.ReportData) -> None:
    c = _section(html_report.render(tiny_report), "coverage")
    table = c[c.index('<table class="cov">'):c.index("</table>")]
    assert table.count("<th>") == 6  # wrappers as rows: no column per status
    assert table.count("<tr>") == len(tiny_report.coverage.wrappers) + 1
    row = next(r for r in table.split("<tr>") if ">tdh_mng_key_config<" in r)
    assert "<b>keys, cache</b>" in row and "KEY_CONFIGURED 0" in row  # a hole
    assert "<b>TD</b>" in row and "LIFECYCLE_STATE_INCORRECT" in row
    assert html_report.status_group("TDX_OPERAND_BUSY|RCX") == "busy"
    assert html_report.status_group("TDX_EPT_WALK_FAILED|RCX") == "S-EPT"
    assert html_report.status_group("TDX_SUCCESS") == "success"


def test_a_new_section_slots_in(tiny_report: html_report.ReportData) -> None:
    """Another section (a "lab" table, say) is one more entry of ``SECTIONS``."""
    extra = html_report.Section("lab", "A lab", lambda d: "<p>lab here</p>")
    secs = [*html_report.SECTIONS[:3], extra, *html_report.SECTIONS[3:]]
    text = html_report.render(tiny_report, secs)
    check_html(text)
    assert '<a href="#lab">lab</a>' in text
    assert '<section id="lab">\n<h2>A lab</h2>\n<p>lab here</p>' in text
    assert text.index('id="lab"') < text.index('<section id="kvm">')


def test_counterexample_section_has_steps_statuses_and_changes(tmp_path: Path) -> None:
    d = html_report.collect(make_config("tiny", {}), ablate=[REMOVED])
    text = html_report.render(d)
    check_html(text)
    assert 'id="cx-keyid-after-vpflushdone"' in text
    v = _section(text, "verdicts")
    assert ('<div class="banner bad">Something failed: check --host any: violated: '
            "keyid-after-vpflushdone") in v
    # the engines that can run the ablated module do (kvm with faults breaks it too)
    assert f"check --host kvm --config tiny --ablate {REMOVED} [--faults]" in v
    assert "prove: not proved: violated 1" in v
    assert "this report's --ablate is not applied here" in v  # mutants, ablation
    assert text.index('id="cx-keyid-after-vpflushdone"') < text.index('<section id="check">')
    cx = _section(text, "counterexamples")
    assert "tdh_mng_key_freeid(" in cx and "TDX_SUCCESS" in cx
    assert "&rarr;" in cx and "KOT_STATE_HKID_FREE" in cx  # a changed field, old -> new
    assert f"--ablate {REMOVED}" in cx
    assert html_report.file_name(d) == f"tiny-ablate-{REMOVED}.html"
    # what the executor saw replaying it in lockstep with the model
    from tdxcheck.checker.output.report_rows import consequences

    assert d.consequences and d.consequences[0] is not None
    cons = consequences(d.run.prog, d.run.result.violations[0])
    assert cons == ["the executor saw nothing go wrong up to the violation"]  # ends at FREEID
    assert html.escape(cons[0]) in text


def test_optional_engines_found_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = html_report.ROWS
    monkeypatch.setitem(sys.modules, rows, None)  # import fails: "not available"
    assert html_report.optional_function(rows, "prove_rows") is None
    none = html_report._optional_rows(rows, "mutant_rows", None)
    assert none.rows == [] and html_report.NOT_AVAILABLE in none.note
    fake = types.ModuleType(rows)
    fake.prove_rows = lambda config: [  # type: ignore[attr-defined]
        {"property": "pamt-owner-live", "verdict": "proved", "engine": "k-induction <b>"}]
    fake.mutant_rows = lambda config: 1 / 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, rows, fake)
    d = html_report.collect(make_config("tiny", {}))
    text = html_report.render(d)
    check_html(text)
    prove = _section(text, "prove")
    assert "pamt-owner-live" in prove and "k-induction &lt;b&gt;" in prove
    assert "failed: ZeroDivisionError" in _section(text, "mutants")
    assert "not available in this build" in _section(text, "ablations")
    assert "not available in this build" in _section(text, "kvm")
    v = _section(text, "verdicts")
    assert "not run" in v and "engine(s) not in this build" in v


def test_engines_fill_every_section(tiny_report: html_report.ReportData) -> None:
    """The real engines: Z3 proofs, the kvm mutants, the kvm ablation table."""
    text = html_report.render(tiny_report)
    prove = _section(text, "prove")
    assert "Z3 induction" in prove and "not-inductive" not in prove
    assert prove.count(">proved<") >= 8
    mutants = _section(text, "mutants")
    assert "skip_wbinvd_after_remove" in mutants and ">NO<" not in mutants
    assert "keyid-after-vpflushdone" in _section(text, "ablations")
    kvm = _section(text, "kvm")
    assert "check --host kvm --config tiny --faults" in kvm and ">holds<" in kvm
    assert "after tdx_mmu_release_hkid" in kvm  # a leak KVM chose on an error path
    apis = _section(text, "apis")
    assert "linux-6.19" in apis and "SILENT flush-before-alloc" in apis


def _pictures_without_dot(d: html_report.ReportData,
                          monkeypatch: pytest.MonkeyPatch) -> html_report.ReportData:
    """The same report drawn as if Graphviz were not installed."""
    import dataclasses

    from tdxcheck.checker.output import graphs

    with monkeypatch.context() as m:
        m.setattr(graphs, "dot_available", lambda: False)
        assert graphs.renderer() == "networkx"
        pics = {n: graphs.inline_svg(G) for n, G in d.graphs.items()}
    return dataclasses.replace(d, pictures=pics, drawn_by="networkx")


def test_graphs_drawn_without_dot(tiny_report: html_report.ReportData,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No Graphviz: the pictures come from the networkx layout, still inline SVG that fits
    the page (``width="100%"`` up to its own width)."""
    d = _pictures_without_dot(tiny_report, monkeypatch)
    text = html_report.render(d)
    check_html(text)
    g = _section(text, "graphs")
    assert g.count("<svg") == 4 and "layered layout (networkx)" in g
    assert g.count('width="100%" style="max-width: ') == 4
    assert "HKID_ASSIGNED" in g and "errors x" in g
    assert text.count("edges as a table") == 4
    assert html_report.render(d) == text  # deterministic


def test_cli_report_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """``tdxcheck report`` end to end in this process, with stand-in engines (the real ones
    take a minute: ``test_cli_report``): one exploration first, every phase named, the
    page written where ``-o`` says, one summary line; a bad configuration is one line."""
    from tdxcheck.checker import cli

    fake = types.ModuleType(html_report.ROWS)

    def rows(what: str) -> Any:
        def fn(config: Any, progress: Any = None) -> list[dict[str, Any]]:
            if progress is not None:
                progress(f"{what} 1/1")
            return [{"what": what}]
        return fn

    for name in ("prove_rows", "kvm_rows", "mutant_rows", "ablation_rows", "apis_rows"):
        setattr(fake, name, rows(name))
    monkeypatch.setitem(sys.modules, html_report.ROWS, fake)
    assert cli.main(["report", "--config", "tiny", "-o", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{tmp_path / 'tiny.html'}: verdict holds, 56 status cell(s) never reached\n"
    check_html((tmp_path / "tiny.html").read_text(encoding="utf-8"))
    phases = [ln.split(":")[1].strip() for ln in err.splitlines() if ln.startswith("report: ")]
    assert phases[0] == "explore (check, coverage, graphs)"
    assert phases[-1] == "write"
    for ph in ("graphs", "prove (Z3 induction)", "check --host kvm", "mutants",
               "ablation (kvm tiny, faults)", "apis (config tiny)"):
        assert ph in phases, ph
    # not a terminal: one plain line when a phase starts, then at most one every 5 s
    assert "report: mutants: mutant_rows ...\n" in err
    assert cli.main(["report", "--config", "nope", "-q", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdxcheck: error: unknown configuration") and err.count("\n") == 1


@pytest.mark.slow
def test_cli_report(tmp_path: Path) -> None:
    """The real thing: ``python -m tdxcheck.checker report --config tiny`` (a minute or
    more, most of it the full ablation)."""
    p = subprocess.run([sys.executable, "-m", "tdxcheck.checker", "report", "--config", "tiny",
                        "-o", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "tiny.html").exists() and "verdict holds" in p.stdout
    # progress names its phase, one exploration first (not a terminal: plain lines)
    phases = [ln.split(":")[1].strip() for ln in p.stderr.splitlines()
              if ln.startswith("report: ")]
    assert phases[0] == "explore (check, coverage, graphs)"
    for ph in ("graphs", "prove (Z3 induction)", "check --host kvm", "mutants",
               "ablation (kvm tiny, faults)", "write"):
        assert ph in phases, ph
    p = subprocess.run([sys.executable, "-m", "tdxcheck.checker", "report", "--config", "nope",
                        "-q"], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2 and "unknown configuration" in p.stderr


def _strip_svg(text: str) -> str:
    return re.sub(r"<svg.*?</svg>", "<svg/>", text, flags=re.DOTALL)


def test_repository_report_for_default() -> None:
    """``reports/default.html`` is there, valid, and made by the documented command."""
    text = (ROOT / "reports" / "default.html").read_text(encoding="utf-8")
    check_html(text)
    assert html_report.REGENERATE.replace(" -o reports", "") in text
    assert "config default" in text and ">holds<" in text


@pytest.mark.slow
def test_repository_report_is_current() -> None:
    """Regenerating gives the same page (SVG bodies aside: they depend on the Graphviz
    version); about 4 minutes."""
    d = html_report.collect(make_config("default", {}))
    want = (ROOT / "reports" / "default.html").read_text(encoding="utf-8")
    assert _strip_svg(html_report.render(d)) == _strip_svg(want)


# ------------------------------------------------------------------ in a real browser
_MEASURE = """<script>
window.addEventListener("load", function () {
  var v = document.getElementById("verdicts").getBoundingClientRect();
  var svgs = Array.from(document.querySelectorAll(".graph svg"),
                        function (e) { return e.getBoundingClientRect().right; });
  var m = {scrollWidth: document.documentElement.scrollWidth,
           clientWidth: document.documentElement.clientWidth,
           verdictsBottom: v.bottom, innerHeight: window.innerHeight, svgRight: svgs};
  var pre = document.createElement("pre");
  pre.id = "measure";
  pre.textContent = JSON.stringify(m);
  document.body.appendChild(pre);
});
</script>"""


def _shots() -> Any:
    """``benchmarks/report_screenshots.py`` (not a package: loaded by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "report_screenshots", ROOT / "benchmarks" / "report_screenshots.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _browser_measure(text: str, tmp: Path) -> dict[str, Any]:
    """Open the page in headless Chromium at 1280x900 and measure it (a copy of the page
    with a measuring script: the report itself has none)."""
    import json

    shots = _shots()
    exe = shots.browser()
    assert exe is not None
    page = tmp / "measure.html"
    page.write_text(text.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    prof = tmp / "profile"
    p = subprocess.run(shots.chromium_args(exe, str(prof), "--window-size=1280,900",
                                           "--dump-dom", page.as_uri()),
                       capture_output=True, text=True, timeout=120, check=True)
    m = re.search(r'<pre id="measure">([^<]*)</pre>', p.stdout)
    assert m, p.stdout[-500:]
    return dict(json.loads(html.unescape(m.group(1))))


@pytest.mark.slow
@pytest.mark.parametrize("drawn_by", ["dot", "networkx"])
def test_page_in_a_real_browser(tiny_report: html_report.ReportData, drawn_by: str,
                                monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Headless Chromium (Debian's ``chromium``): at 1280x900 the verdicts banner is on the
    first screen, nothing scrolls sideways, every graph fits the page; and a screenshot of
    the first screen is a 1280x900 PNG.  ``benchmarks/report_screenshots.py`` takes the
    screenshots to look at."""
    import struct

    shots = _shots()
    if shots.browser() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    d = tiny_report
    if drawn_by == "networkx":
        d = _pictures_without_dot(d, monkeypatch)
    elif d.drawn_by != "dot":
        pytest.skip("Graphviz's dot is not installed")
    text = html_report.render(d)
    m = _browser_measure(text, tmp_path)
    assert m["scrollWidth"] <= m["clientWidth"], m  # no sideways scrolling
    assert m["verdictsBottom"] <= m["innerHeight"], m  # the whole banner on the first screen
    assert len(m["svgRight"]) == 4 and max(m["svgRight"]) <= m["clientWidth"], m
    page = tmp_path / "tiny.html"
    page.write_text(text, encoding="utf-8")
    png = tmp_path / "first-screen.png"
    shots.screenshot(page, png)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (1280, 900)
    assert png.stat().st_size > 20_000  # a page, not a blank screen
