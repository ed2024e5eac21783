"""Regression tests for the crash, hang and disagreement classes the grammar fuzzer and the
first users found (issue 12): each class as the smallest file that showed it, run through the
CLI as a user would (exit code, one line on stderr, no traceback) and on both engines."""

from __future__ import annotations

import io
import json
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from tdxcheck.checker.cli import main
from tdxcheck.checker.explore.replay import replay
from tdxcheck.checker.scenario import ScenarioError, parse_bytes, parse_text

BUILT = """config packages=1 cpus_per_package=2 hkids=2 tdcs_pages=1 tdcx_pages=0 sept_levels=2
hkid_alloc hkid=1
page_alloc page=tdr0,cs0,vpr0,sept1,m0,m1
tdh_mng_create td=td0 page=tdr0 hkid=1
tdh_mng_key_config td=td0 cpu=0
tdh_mng_addcx td=td0 page=cs0
tdh_mng_init td=td0
tdh_vp_create td=td0 vp=vp0 page=vpr0
tdh_vp_init vp=vp0 cpu=1
tdh_mem_sept_add td=td0 gpa=0 level=1 page=sept1
tdh_mr_finalize td=td0
"""
#: the same TD before MR.FINALIZE (PAGE.ADD and MR.EXTEND need OP_STATE_INITIALIZED)
BUILDING = BUILT.replace("tdh_mr_finalize td=td0\n", "tdh_mem_page_add td=td0 gpa=0 page=m1\n")


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def both(text: str) -> object:
    """Replay on the model and the executor in lockstep: no disagreement, whatever happens."""
    r = replay(parse_text(text, "t.tdx"), run="both")
    assert not r.disagreements, [(d.line, d.model, d.executor) for d in r.disagreements]
    return r


def status_at(r: object, line: int) -> str | None:
    from tdxcheck.model.status import status_name

    st = next(s for s in r.steps if s.line == line)  # type: ignore[attr-defined]
    return None if st.status is None else status_name(st.status)


# --------------------------------------------------------------------------- crash classes


def test_reclaim_in_a_scenario_without_any_gpa(tmp_path: Path) -> None:
    """A TD slot with no S-EPT entries to reset (``reset_slot`` took 0 entries for 'one')."""
    f = tmp_path / "r.tdx"
    f.write_text("tdh_phymem_page_reclaim page=p0\n")
    rc, out, err = cli("replay", str(f), "--json")
    assert rc == 0 and err == "" and json.loads(out)["steps"][0]["status"]


@pytest.mark.parametrize("line", [
    "seamcall TDH.MR.EXTEND rcx=0x8001 rdx=p1",  # a raw GPA that named no S-EPT entry
    "seamcall TDH.MEM.PAGE.REMOVE rdx=p13",  # no rcx: GPA 0, in no universe
    "seamcall TDH.VP.CREATE rcx=0 rdx=p4",  # the NULL page: hidden vp @0
    "seamcall TDH.MNG.CREATE rdx=65535 rcx=0",  # an HKID past the KOT, the NULL page
    "seamcall TDH.MEM.PAGE.ADD",  # every register absent
    "seamcall TDH.PHYMEM.PAGE.WBINVD",  # no rcx: the NULL page, reserved in both engines
])
def test_raw_operands_the_universe_did_not_have(line: str, tmp_path: Path) -> None:
    f = tmp_path / "raw.tdx"
    f.write_text(line + "\n")
    rc, out, err = cli("replay", str(f), "--json")
    assert rc in (0, 1) and err == "", err
    assert not json.loads(out)["disagreements"]


def test_fault_a_leaf_cannot_return_is_bad_input_everywhere(tmp_path: Path) -> None:
    """``fault=`` that the leaf's rule has no point for: one line, exit 2, in replay, check
    and prove --host alike (check used to raise IndexError on ``fault_index(...) or 0``)."""
    f = tmp_path / "f.tdx"
    f.write_text("tdh_mng_create td=td0 page=p9 hkid=1\n"
                 "tdh_mem_sept_add td=td0 gpa=0 level=1 page=p10 "
                 "fault=TDX_OPERAND_BUSY|TD_EPOCH\n")
    for args in (["replay", str(f)], ["check", str(f), "--json"],
                 ["prove", "--host", str(f)]):
        rc, _out, err = cli(*args)
        assert rc == 2, (args, rc, err)
        assert err.startswith(f"{f}:2: ") and err.count("\n") == 1, err
        assert "no fault point for TDX_OPERAND_BUSY|TD_EPOCH" in err


def test_fault_of_a_step_that_fails_before_its_fault_points_is_accepted() -> None:
    """A level the S-EPT does not have fails before the tree lock: no fault can fire, and
    ``fault=`` on it is no error (the module answers the operand first)."""
    r = both(BUILT + "tdh_mem_sept_add td=td0 gpa=0 level=3 page=m0 "
                     "fault=TDX_OPERAND_BUSY|SEPT_TREE\n")
    assert status_at(r, 12) == "TDX_OPERAND_INVALID|RCX"


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("cfg, key", [
    ("hkids=1000000", "hkids"), ("packages=100000000", "packages"),
    ("cpus_per_package=100000", "cpus_per_package"), ("max_vcpus=99999999", "max_vcpus"),
    ("tdcs_pages=4096", "tdcs_pages"), ("hkids=10000", "hkids"),
])
def test_sizes_beyond_the_layout_are_refused_at_once(cfg: str, key: str,
                                                     tmp_path: Path) -> None:
    f = tmp_path / "big.tdx"
    f.write_text(f"config {cfg}\nhkid_alloc hkid=1\n")
    t0 = time.monotonic()
    rc, _out, err = cli("replay", str(f))
    assert time.monotonic() - t0 < 2.0
    assert rc == 2 and err.startswith(f"{f}:1: config {key}=") and "must be in" in err


def test_the_largest_sizes_allowed_still_replay_quickly() -> None:
    text = ("config packages=8 cpus_per_package=64 hkids=256 tdcs_pages=16 tdcx_pages=16 "
            "max_vcpus=1024 sept_levels=5\nhkid_alloc hkid=255\npage_alloc page=a\n"
            "tdh_mng_create td=t page=a hkid=255\ntdh_mng_key_config td=t cpu=511\n")
    t0 = time.monotonic()
    both(text)
    assert time.monotonic() - t0 < 20.0  # generous: the machine is shared


# --------------------------------------------------------------------------- disagreements


def test_two_names_on_one_tdr_page_act_on_one_module_object() -> None:
    """A handle is a page: td1 on td0's TDR page sees (and acts on) td0's TD in both
    engines; its own create fails (the page is a TDR already)."""
    r = both("hkid_alloc hkid=1\npage_alloc page=p7,c0\n"
             "tdh_mng_create td=td0 page=p7 hkid=1\ntdh_mng_create td=td1 page=p7 hkid=1\n"
             "tdh_mng_key_config td=td1\n")
    assert status_at(r, 4) != "TDX_SUCCESS"
    assert status_at(r, 5) == "TDX_SUCCESS"  # td1's KEY.CONFIG configures td0's TD


def test_two_vp_names_on_one_tdvpr_page() -> None:
    both(BUILT + "tdh_vp_create td=td0 vp=vp1 page=vpr0\ntdh_vp_rd vp=vp1 cpu=1\n")


@pytest.mark.parametrize("line", [
    "seamcall TDH.MNG.CREATE rcx=p3 rdx=3",
    "seamcall TDH.VP.CREATE rcx=p3 rdx=tdr0",
    "seamcall TDH.MNG.CREATE rcx=0 rdx=1",
])
def test_hidden_objects_of_raw_creates_exist_in_both_engines(line: str) -> None:
    r = both(BUILT + "page_alloc page=p3\n" + line + "\n")
    assert r.steps[-1].status is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize("line, status", [
    ("seamcall TDH.MEM.PAGE.AUG rcx=0x800000001000 rdx=tdr0 r8=m0",
     "TDX_OPERAND_INVALID|RCX"),  # the shared bit
    ("seamcall TDH.MEM.SEPT.ADD rcx=0x1000000000001 rdx=tdr0 r8=m0",
     "TDX_OPERAND_INVALID|RCX"),  # past GPAW
    ("seamcall TDH.MEM.PAGE.AUG rcx=0xF000000000001000 rdx=tdr0 r8=m0",
     "TDX_OPERAND_INVALID|RCX"),  # reserved bits 63:52
    # GPA validity comes before the tree lock: the fault point is never reached
    (("seamcall TDH.MEM.PAGE.AUG rcx=0x800000001000 rdx=tdr0 r8=m0 "
      "fault=TDX_OPERAND_BUSY|SEPT_TREE"), "TDX_OPERAND_INVALID|RCX"),
    ("tdh_mem_page_aug td=td0 gpa=0x800000001000 page=m0", "TDX_OPERAND_INVALID|RCX"),
    ("BUILDING tdh_mr_extend td=td0 gpa=0x800000000000", "TDX_OPERAND_INVALID|RCX"),
    ("BUILDING tdh_mr_extend td=td0 gpa=0x100", "TDX_SUCCESS"),  # a chunk of a mapped page
    ("BUILDING tdh_mr_extend td=td0 gpa=0x1100", "TDX_EPT_ENTRY_NOT_PRESENT|RCX"),
    ("BUILDING tdh_mem_page_add td=td0 gpa=0x1800 page=m0", "TDX_OPERAND_INVALID|RCX"),
    ("BUILDING seamcall TDH.MR.EXTEND rcx=0x80 rdx=tdr0", "TDX_OPERAND_INVALID|RCX"),
])
def test_gpa_validity_before_the_tree_lock_in_both_engines(line: str, status: str) -> None:
    base = BUILDING if line.startswith("BUILDING ") else BUILT
    line = line.removeprefix("BUILDING ")
    assert status_at(both(base + line + "\n"), 12) == status


def test_vp_enter_zero_step_fault_point_in_both_engines() -> None:
    r = both(BUILT + "tdh_vp_enter vp=vp0 cpu=1 fault=TDX_OPERAND_BUSY|SEPT_TREE\n")
    assert status_at(r, 12) == "TDX_OPERAND_BUSY|SEPT_TREE"


@pytest.mark.parametrize("line", [
    "tdh_mem_sept_add td=td0 gpa=0 level=2 page=m0",
    "tdh_mem_range_block td=td0 gpa=0 level=5",
    "tdh_mem_page_remove td=td0 gpa=0 level=7",
    "BUILDING seamcall TDH.MEM.PAGE.ADD rcx=0x1002 rdx=tdr0 r8=m0",  # ADD at level 2
])
def test_a_level_beyond_the_s_ept_is_the_modules_to_refuse(line: str) -> None:
    """It used to be refused as bad input; the module answers it (OPERAND_INVALID|RCX)."""
    base = BUILDING if line.startswith("BUILDING ") else BUILT
    line = line.removeprefix("BUILDING ")
    assert status_at(both(base + line + "\n"), 12) == "TDX_OPERAND_INVALID|RCX"


def test_a_level_past_rcx_bits_and_a_2m_aug_are_bad_input() -> None:
    with pytest.raises(ScenarioError, match=r"t.tdx:12: level=8 out of range"):
        parse_text(BUILT + "tdh_mem_range_block td=td0 gpa=0 level=8\n", "t.tdx")
    with pytest.raises(ScenarioError, match=r"t.tdx:12: .*2M private page.*not modelled"):
        replay(parse_text(BUILT + "seamcall TDH.MEM.PAGE.AUG rcx=0x201 rdx=tdr0 r8=m0\n",
                          "t.tdx"))


def test_raw_registers_are_typed_by_the_leaf() -> None:
    with pytest.raises(ScenarioError, match=r"t.tdx:1: rcx=0x5000: TDH.VP.FLUSH reads a page"):
        parse_text("seamcall TDH.VP.FLUSH rcx=0x5000\n", "t.tdx")
    with pytest.raises(ScenarioError, match=r"t.tdx:1: rdx=p1: TDH.MNG.CREATE reads an integer"):
        parse_text("seamcall TDH.MNG.CREATE rcx=p0 rdx=p1\n", "t.tdx")


def test_invalid_utf8_is_reported_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as ei:
        parse_bytes(b"hkid_alloc hkid=1\npage_alloc page=a\xff\n", "u.tdx")
    assert ei.value.line == 2 and "not UTF-8" in ei.value.reason
    f = tmp_path / "u.tdx"
    f.write_bytes(b"hkid_alloc hkid=1\n\n\xc3(\n")
    rc, _out, err = cli("replay", str(f))
    assert rc == 2 and err.startswith(f"{f}:3: not UTF-8")


# --------------------------------------------------------------------------- an LP in the guest


def test_a_seamcall_from_an_lp_in_the_guest_is_a_mismatch_in_both_engines() -> None:
    r = both(BUILT + "tdh_vp_enter vp=vp0 cpu=1\ntdh_mng_rd td=td0 cpu=1\n"
                     "tdh_mng_rd td=td0 cpu=0\n")
    bad = {m.line: m for m in r.mismatches}  # type: ignore[attr-defined]
    assert list(bad) == [13]
    assert "cannot happen on hardware" in bad[13].message
    assert bad[13].actual == "not enabled"
    assert status_at(r, 14) == "TDX_SUCCESS"


# --------------------------------------------------------------------------- internal errors


def test_an_internal_error_is_exit_4_never_bad_input(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    from tdxcheck.checker.explore import replay as rp

    def boom(*_a: object, **_k: object) -> None:
        raise ValueError("zip() argument 2 is longer than argument 1")

    monkeypatch.setattr(rp, "replay", boom)
    f = tmp_path / "ok.tdx"
    f.write_text("hkid_alloc hkid=1\n")
    rc, _out, err = cli("replay", str(f))
    assert rc == 4 and err.count("\n") == 1
    assert err.startswith("tdxcheck: internal error: ValueError: zip() argument 2")
    assert "--debug" in err and "Traceback" not in err
    rc, _out, err = cli("--debug", "replay", str(f))
    assert rc == 4 and "Traceback" in err
    rc, _out, err = cli("replay", str(f), "--debug")
    assert rc == 4 and "Traceback" in err
    monkeypatch.setenv("TDXCHECK_DEBUG", "1")
    rc, _out, err = cli("replay", str(f))
    assert rc == 4 and "Traceback" in err


def test_help_states_the_exit_codes() -> None:
    rc, out, _err = cli("--help")
    assert rc == 0 and "4 internal error" in " ".join(out.split())


# --------------------------------------------------------------------------- latent damage


def test_latent_damage_at_the_end_of_a_replay() -> None:
    """The counterexample ends at the broken step; the executor says what its caches hold
    that will hurt, with page, KeyID, package and line count."""
    ex = Path(__file__).resolve().parent.parent / "examples"
    r = replay(parse_text((ex / "bug-raw-seamcall-no-clflush.tdx").read_text(), "x.tdx"),
               run="both")
    latent = [c for c in r.consequences if c.kind == "latent-corrupted-td-data"]  # type: ignore
    assert latent and latent[0].page == "cs0" and latent[0].keyid == 0
    assert {c.package for c in latent} == {0, 1} and all(c.count == 4 for c in latent)
    from tdxcheck.checker.output.report import replay_json, replay_text

    js = replay_json(r)["consequences"]
    assert {"kind": "latent-corrupted-td-data", "page": "cs0", "keyid": 0, "package": 0,
            "lines": 4}.items() <= js[0].items()
    assert "at the end of the run: latent-corrupted-td-data" in replay_text(r)


def test_latent_module_page_in_the_allocator_and_no_damage_said_so() -> None:
    ex = Path(__file__).resolve().parent.parent / "examples"
    r = replay(parse_text((ex / "bug-free-page-module-owns.tdx").read_text(), "x.tdx"),
               run="both")
    assert any(c.kind == "latent-module-page-in-allocator" and c.page == "cs0"
               for c in r.consequences)  # type: ignore[attr-defined]
    from tdxcheck.checker.output.report import replay_text

    r2 = replay(parse_text((ex / "bug-hkid-free-before-freeid.tdx").read_text(), "y.tdx"),
                run="both")
    assert not r2.consequences and "no byte-level damage" in replay_text(r2)


def test_latent_hkid_reuse_needs_the_kot_to_have_the_hkid_free() -> None:
    """The KOT frees an HKID only after CACHE.WB; with the FREEID check ablated it frees it
    with dirty lines left, and the executor reports the latent reuse."""
    text = BUILT + ("tdh_vp_enter vp=vp0 cpu=1\ntd_exit vp=vp0\n"
                    "tdh_vp_flush vp=vp0 cpu=1\ntdh_mng_vpflushdone td=td0\n"
                    "tdh_mng_key_freeid td=td0\n")
    from tdxcheck.checker.explore.engine import Engine
    from tdxcheck.checker.explore.replay import universe_of

    sc = parse_text(text, "k.tdx")
    r = replay(sc, Engine(universe_of(sc), ablate=["mng.key_freeid.wbinvd_done"]), run="both")
    assert any(c.kind == "latent-hkid-reuse" and c.keyid == 1
               for c in r.consequences), r.consequences  # type: ignore[attr-defined]
