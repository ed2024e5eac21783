"""Model and concrete executor in lockstep: the same statuses and effects on every example
and every counterexample the explorer writes; the executor shows the concrete damage."""

from __future__ import annotations

from pathlib import Path

import pytest
from tdxcheck.checker.explore.check import run_check
from tdxcheck.checker.explore.engine import Engine
from tdxcheck.checker.explore.programs import make_config
from tdxcheck.checker.explore.replay import replay, universe_of
from tdxcheck.checker.scenario import parse_file, parse_text

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.tdx"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_agree(path: Path) -> None:
    r = replay(parse_file(path), run="both")
    assert not r.disagreements, r.disagreements[:3]


def test_lifecycle_has_no_consequences() -> None:
    r = replay(parse_file(ROOT / "examples" / "kvm-lifecycle.tdx"), run="both")
    assert r.ok and r.consequences == []


def test_stale_line_written_back_over_host_data() -> None:
    r = replay(parse_file(ROOT / "examples" / "bug-tdr-no-global-wbinvd.tdx"), run="both")
    kinds = {c.kind for c in r.consequences}  # type: ignore[attr-defined]
    assert "corrupted-host-data" in kinds
    assert "flush-before-reclaim" in {v.invariant for _, v in r.violations}


def test_host_write_to_module_page_machine_checks() -> None:
    text = (ROOT / "examples" / "small-lifecycle.tdx").read_text().split("page_alloc page=mem1")[0]
    r = replay(parse_text(text + "host_write page=cs0\n", "w.tdx"), run="both")
    assert not r.disagreements
    assert "machine-check" in {c.kind for c in r.consequences}  # type: ignore[attr-defined]
    assert "no-double-assignment" in {v.invariant for _, v in r.violations}


@pytest.mark.parametrize("check", ["mng.key_freeid.wbinvd_done",
                                   "mng.vpflushdone.no_assoc_vcpus"])
def test_explorer_counterexamples_replay_with_agreement(tmp_path: Path, check: str) -> None:
    run = run_check(config=make_config("tiny", {}), ablate=[check], trace_out=tmp_path,
                    all_violations=True)
    assert run.files
    for tdx, _itf in run.files:
        sc = parse_file(tdx)
        r = replay(sc, Engine(universe_of(sc), ablate=[check]), run="both")
        assert not r.disagreements, r.disagreements[:3]
        assert not r.mismatches


def test_hkid_reuse_with_dirty_lines_shows_on_the_executor() -> None:
    check = "mng.key_freeid.wbinvd_done"
    text = ((ROOT / "examples" / "bug-freeid-without-cache-wb.tdx").read_text()
            + "hkid_free hkid=1\nhkid_alloc hkid=1\npage_alloc page=tdr1\n"
            "tdh_mng_create td=td1 page=tdr1 hkid=1\n"
            "tdh_mng_key_config td=td1 cpu=0\ntdh_mng_key_config td=td1 cpu=1\n")
    sc = parse_text(text, "reuse.tdx")
    r = replay(sc, Engine(universe_of(sc), ablate=[check]), run="both")
    assert not r.disagreements, r.disagreements[:3]
    assert "keyid-after-vpflushdone" in {v.invariant for _, v in r.violations}
    assert "hkid-reuse-dirty-lines" in {c.kind for c in r.consequences}  # type: ignore[attr-defined]


def test_seeded_random_walks_agree() -> None:
    from tdxcheck.checker.analyses.conform import conform

    for seed in (1, 2):
        r = conform(10_000, seed)
        assert r.ok, (r.disagreement, r.reproducer[-5:])


def test_conform_finds_and_shrinks_a_planted_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong executor (TRACK always BUSY) is caught and shrunk to a short reproducer."""
    from tdxcheck.checker.analyses import conform as C
    from tdxcheck.checker.executor import runner

    real = runner.Executor.step

    def wrong(self, name, operands=None, cpu=0, fault=None):  # type: ignore[no-untyped-def]
        r = real(self, name, operands, cpu, fault)
        if name == "tdh_mem_track":
            r.status = 0x8000020000000000 + 169
        return r

    monkeypatch.setattr(runner.Executor, "step", wrong)
    r = C.conform(2_000, 3)
    assert not r.ok and r.disagreement is not None
    assert "TDX_OPERAND_BUSY|TD_EPOCH" in r.disagreement.executor
    body = r.reproducer[len(C.prefix_lines()):]
    assert body[-1].startswith("tdh_mem_track") and len(body) <= 3
