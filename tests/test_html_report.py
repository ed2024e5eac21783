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

import pytest
from tdxcheck.checker.explore.programs import make_config
from tdxcheck.checker.output import html_report

ROOT = Path(__file__).parent.parent
SECTIONS = ("configuration", "verdicts", "prove", "counterexamples", "mutants", "ablations",
            "apis", "coverage", "graphs")
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


@pytest.fixture(scope="module")
def tiny_report() -> html_report.ReportData:
    return html_report.collect(make_config("tiny", {}))


def test_report_is_valid_html_with_every_section(tiny_report: html_report.ReportData,
                                                 tmp_path: Path) -> None:
    path = html_report.write_report(tiny_report, tmp_path)
    assert path.name == "tiny.html"
    text = path.read_text(encoding="utf-8")
    check_html(text)
    assert '<td class="hole"' in text  # unreached cells highlighted
    assert "TDX_HKID_NOT_FREE" in text and "canonical state" in text
    assert "none: the verdict holds" in text
    for name in ("td", "page", "hkid", "vcpu"):
        assert f'id="graph-{name}"' in text
    if html_report.dot_available():
        assert text.count("<svg") == 4
    assert html_report.render(tiny_report) == text  # deterministic


def test_counterexample_section_has_steps_statuses_and_changes(tmp_path: Path) -> None:
    d = html_report.collect(make_config("tiny", {}), ablate=[REMOVED])
    text = html_report.render(d)
    check_html(text)
    assert 'id="cx-keyid-after-vpflushdone"' in text
    cx = text[text.index('id="counterexamples"'):text.index('id="mutants"')]
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
    verdicts = text[text.index('id="verdicts"'):text.index('id="counterexamples"')]
    assert "pamt-owner-live" in verdicts and "k-induction &lt;b&gt;" in verdicts
    mutants = text[text.index('id="mutants"'):text.index('id="ablations"')]
    assert "failed: ZeroDivisionError" in mutants
    ablations = text[text.index('id="ablations"'):text.index('id="apis"')]
    assert "not available in this build" in ablations


def test_engines_fill_every_section(tiny_report: html_report.ReportData) -> None:
    """The real engines: Z3 proofs, the kvm mutants, the kvm ablation table."""
    text = html_report.render(tiny_report)
    verdicts = text[text.index('id="verdicts"'):text.index('id="counterexamples"')]
    assert "Z3 induction" in verdicts and "not-inductive" not in verdicts
    assert verdicts.count(">proved<") >= 8
    mutants = text[text.index('id="mutants"'):text.index('id="ablations"')]
    assert "skip_wbinvd_after_remove" in mutants and ">NO<" not in mutants
    ablations = text[text.index('id="ablations"'):text.index('id="apis"')]
    assert "keyid-after-vpflushdone" in ablations
    apis = text[text.index('id="apis"'):text.index('id="coverage"')]
    assert "linux-6.19" in apis and "SILENT flush-before-alloc" in apis


def test_graphs_fall_back_to_tables_without_dot(tiny_report: html_report.ReportData,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html_report, "dot_available", lambda: False)
    text = html_report.render(tiny_report)
    check_html(text)
    assert "<svg" not in text and "graphs as tables only" in text
    assert text.count("edges as a table") == 4


def test_cli_report(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "tdxcheck.checker", "report", "--config", "tiny",
                        "-o", str(tmp_path), "-q"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "tiny.html").exists() and "verdict holds" in p.stdout
    p = subprocess.run([sys.executable, "-m", "tdxcheck.checker", "report", "--config", "nope",
                        "-q"], capture_output=True, text=True, timeout=60)
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
