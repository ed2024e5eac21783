"""Ablation: which module checks each invariant depends on, against any host and KVM."""

from __future__ import annotations

import json

import pytest
from tdxcheck.checker.analyses.ablation import (
    ablation_json,
    ablation_table,
    check_names,
    kvm_refusals,
    run_ablation,
    why_nothing_breaks,
)
from tdxcheck.checker.explore.programs import make_config
from tdxcheck.properties import INVARIANTS

FREEID = "mng.key_freeid.wbinvd_done"
VPFD = "mng.vpflushdone.no_assoc_vcpus"


def test_check_names_come_from_the_rules() -> None:
    names = check_names(make_config("tiny", {}).universe())
    assert len(names) == len(set(names)) > 150
    assert {FREEID, VPFD, "phymem.page_reclaim.no_children"} <= set(names)
    # every check an invariant depends on is a real check name
    for inv in INVARIANTS:
        assert set(inv.depends_on) <= set(names), inv.id


def test_freeid_cache_and_vpflushdone_assoc_checks_protect_the_keyid() -> None:
    rows = run_ablation("any", "tiny", checks=[FREEID, VPFD])
    for r in rows:
        assert "keyid-after-vpflushdone" in r["broken"], r
    assert rows[0]["broken"]["keyid-after-vpflushdone"] == 5


def test_kvm_leans_on_the_freeid_check_but_never_on_vpflushdone_assoc() -> None:
    """KVM flushes every vCPU before VPFLUSHDONE, so that check never refuses KVM; but when
    CACHE.WB gives up, only FREEID's check stops KVM from freeing a dirty HKID."""
    rows = {r["check"]: r for r in run_ablation("kvm", "tiny", checks=[FREEID, VPFD])}
    assert "keyid-after-vpflushdone" in rows[FREEID]["broken"]
    assert rows[VPFD]["broken"] == {} and rows[VPFD]["verdict"] == "holds"
    assert run_ablation("kvm", "tiny", checks=[FREEID], faults=False)[0]["broken"] == {}


def test_counter_out_of_range_has_a_trace() -> None:
    """An ablated rule can drive a counter out of range: reported with a rebuilt trace.
    VP.FLUSH without ``associated_here`` flushes a vCPU associated with no LP, and
    ``num_assoc_vcpus`` drops below 0.  (VP.ENTER without ``vcpu_state`` no longer does:
    re-entering a running vCPU needs its own LP, which runs the guest and makes no
    SEAMCALL, or another LP, which ``not_associated_elsewhere`` refuses.)"""
    r = run_ablation("any", "tiny", checks=["vp.flush.associated_here"])[0]
    assert r["broken"] == {"assoc-count-matches": 6, "state-encoding": 6}
    assert run_ablation("any", "tiny", checks=["vp.enter.vcpu_state"])[0]["broken"] == {}


def test_a_write_to_the_null_page_breaks_the_encoding() -> None:
    """Without RANGE.BLOCK's entry-state check a never-mapped entry is blocked, and
    PAGE.REMOVE then removes page 0 (the NULL page: ``pt`` leaves PT_RSVD).  The explorer
    reports ``state-encoding`` as the prover does (``Layout.encoding_violation``), not just
    the chldcnt mismatch of the same state."""
    r = run_ablation("any", "tiny", checks=["mem.range_block.entry_state"])[0]
    assert r["broken"] == {"chldcnt-matches-pages": 7, "state-encoding": 7}


def test_table_and_json_say_why_nothing_breaks() -> None:
    rows = run_ablation("any", "tiny", checks=[FREEID, "mng.rd.op_state"])
    text = ablation_table(rows)
    assert "1/2 checks break an invariant" in text
    assert "mng.rd.op_state: model gap" in text
    d = json.loads(json.dumps(ablation_json(rows)))
    assert d["checks"][0]["why_nothing_breaks"] is None
    assert d["checks"][1]["why_nothing_breaks"]["kind"] == "model gap"
    assert why_nothing_breaks("mng.create.tdr.lock")[0] == "redundant"
    assert why_nothing_breaks(VPFD, "kvm")[0] == "not relied on by KVM"
    assert ablation_json(rows, "kvm")["host"] == "kvm"
    with pytest.raises(ValueError, match="unknown host"):
        run_ablation("xen", "tiny")


@pytest.mark.slow
def test_full_ablation_classifies_every_silent_check() -> None:
    from tdxcheck.checker.explore.bfs import Limits

    for host in ("any", "kvm"):
        # RECLAIM without its TD_TEARDOWN check explodes: bounded, and it breaks things early
        rows = run_ablation(host, "tiny", limits=Limits(time_limit=60))
        assert not [r["check"] for r in rows if r["limit"] and not r["broken"]]
        silent = [r["check"] for r in rows if not r["broken"]]
        assert all(why_nothing_breaks(c, host)[0] != "?" for c in silent), [
            c for c in silent if why_nothing_breaks(c, host)[0] == "?"]


def test_kvm_silent_checks_say_whether_kvm_ever_meets_them() -> None:
    """The reason for a silent check against KVM is measured, not assumed: a guest's
    TD-fatal exit makes KVM's VP.ENTER and zap calls meet the not_fatal checks, yet removing
    them breaks nothing; VPFLUSHDONE's association check never refuses KVM."""
    ref = kvm_refusals("tiny")
    assert {FREEID, "vp.flush.associated_here", "vp.enter.not_fatal",
            "mem.range_block.not_fatal", "phymem.page_reclaim.no_children"} <= set(ref)
    assert VPFD not in ref
    rows = run_ablation("kvm", "tiny", checks=["vp.enter.not_fatal", VPFD])
    assert all(r["broken"] == {} for r in rows)
    assert rows[0]["kvm_refuses"] == "tdh_vp_enter" and rows[1]["kvm_refuses"] is None
    text = ablation_table(rows, "kvm")
    assert "vp.enter.not_fatal: not relied on by KVM: it refuses KVM's tdh_vp_enter" in text
    assert f"{VPFD}: not relied on by KVM: KVM never makes a call this check refuses" in text
    why = ablation_json(rows, "kvm")["checks"][0]["why_nothing_breaks"]
    assert "refuses KVM's tdh_vp_enter" in why["reason"]



def test_a_limit_never_reads_as_nothing_breaks() -> None:
    """A run cut short by a limit is not "breaks nothing": it is unknown (or partial)."""
    from tdxcheck.checker.analyses.ablation import ablation_json, ablation_table
    from tdxcheck.checker.explore.bfs import Limits

    rows = run_ablation("any", "tiny", checks=["mng.create.hkid_free"],
                        limits=Limits(max_states=50))
    assert rows[0]["limit"] and rows[0]["broken"] == {}
    text = ablation_table(rows)
    assert "unknown (a limit hit before anything broke): mng.create.hkid_free" in text
    assert "0 break nothing" in text
    assert ablation_json(rows)["checks"][0]["why_nothing_breaks"] is None


def test_a_violated_row_cut_by_a_limit_is_marked_partial() -> None:
    from tdxcheck.checker.analyses.ablation import ablation_table
    from tdxcheck.checker.explore.bfs import Limits

    rows = run_ablation("any", "tiny", checks=["phymem.page_reclaim.teardown"],
                        limits=Limits(max_states=500))
    assert rows[0]["broken"] and rows[0]["limit"] == "state limit 500 reached"
    assert "*: a limit cut the run short (state limit 500 reached)" in ablation_table(rows)


def test_type_confusion_checks_break_operand_type_respected() -> None:
    """The checks that refuse a TDR/TDVPR of the wrong PAMT type (``*.tdr.pt``,
    ``*.tdvpr.pt``) were "no invariant on type confusion"; without one, the module acts on
    the TD (vCPU) the page's PAMT entry names: ``operand-type-respected`` breaks, and the
    prover does not prove it.  Those that cannot be reached on tiny say why (config)."""
    from tdxcheck.checker.analyses.ablation import NOTHING_BREAKS_WHY

    rows = run_ablation("any", "tiny", checks=["mng.key_config.tdr.pt", "vp.flush.tdvpr.pt",
                                               "mem.page_add.tdr.pt"])
    assert rows[0]["broken"] == {"operand-type-respected": 1}
    assert rows[1]["broken"] == {"operand-type-respected": 7}
    assert rows[2]["broken"] == {} and why_nothing_breaks("mem.page_add.tdr.pt")[0] == "config"
    assert not any(p in (".tdr.pt", ".tdvpr.pt") for p, _k, _r in NOTHING_BREAKS_WHY)
    # the rd/wr/extend leaves change nothing the model keeps: still their family's reason
    assert why_nothing_breaks("mng.rd.tdr.pt")[0] == "model gap"
