"""Exact statuses of every leaf's checks, in the module's order (tdx-reference.md §3-§6).

Each test walks one leaf's check table top to bottom: it builds a state where an earlier
check would pass and a later one fail (or both fail, to show which one wins), and asserts the
full 64-bit status with its operand id.  Platform: ``conftest.SMALL`` unless stated.
"""

from __future__ import annotations

from typing import Any

import pytest
from tdxcheck.checker.executor import StepNotEnabled
from tdxcheck.model.status import Status, is_error

Host = Any  # conftest.Host, reached through the ``host``/``make_host`` fixtures

PMI = "TDX_PAGE_METADATA_INCORRECT"


# --------------------------------------------------------------------------- TDH.MNG.CREATE §6.1


def test_mng_create_checks_in_order(host: Host) -> None:
    host.build("created")
    host.ok("page_alloc page=tdr1")
    # 1. HKID range first: tdr is PT_TDR and would fail check 2 too
    host.expect("tdh_mng_create td=td1 page=tdr hkid=0", "TDX_OPERAND_INVALID|RDX")
    host.expect("tdh_mng_create td=td1 page=tdr hkid=4", "TDX_OPERAND_INVALID|RDX")
    # 2. the page must be PT_NDA (checked before the KOT: hkid 1 is not free either)
    host.expect("tdh_mng_create td=td1 page=tdr hkid=1", f"{PMI}|RCX")
    host.expect("tdh_mng_create td=td1 page=tdr hkid=2 fault=TDX_OPERAND_BUSY|KOT", f"{PMI}|RCX")
    # 3. the KOT lock: the leaf's first BUSY fault point
    host.expect("tdh_mng_create td=td1 page=tdr1 hkid=1 fault=TDX_OPERAND_BUSY", "TDX_OPERAND_BUSY|KOT")
    # 4. KOT[hkid] must be FREE; the entropy fault point comes after it
    host.expect("tdh_mng_create td=td1 page=tdr1 hkid=1 fault=TDX_RND_NO_ENTROPY", "TDX_HKID_NOT_FREE")
    # the module's global KeyID (hkids=3) is a private KeyID, HKID_RESERVED in the KOT
    host.expect("tdh_mng_create td=td1 page=tdr1 hkid=3", "TDX_HKID_NOT_FREE")
    # 5. no entropy: nothing changes in PAMT/KOT/TDR
    host.expect("tdh_mng_create td=td1 page=tdr1 hkid=2 fault=TDX_RND_NO_ENTROPY", "TDX_RND_NO_ENTROPY")
    assert host.obs("page.tdr1.pt") == 0 and host.obs("kot.2.state") == 0
    assert host.obs("td.td1.lifecycle") is None
    host.ok("tdh_mng_create td=td1 page=tdr1 hkid=2")
    assert host.obs("page.tdr1.pt") == 4 and host.obs("kot.2.state") == 1
    assert host.obs("td.td1.lifecycle") == 0 and host.obs("td.td1.op_state") == 0


def test_exclusive_lock_on_a_running_vcpus_pages_is_busy(host: Host) -> None:
    host.build("running")  # vp0 in the guest on cpu 0: the host calls from cpu 1
    # EXPLICIT_PAGE check 3 (the PAMT lock) comes before the type check
    host.expect("tdh_mng_create td=td1 page=tdr hkid=2 cpu=1", "TDX_OPERAND_BUSY|RCX")
    host.expect("tdh_mng_create td=td1 page=vpr hkid=2 cpu=1", "TDX_OPERAND_BUSY|RCX")
    host.expect("tdh_mng_create td=td1 page=cs0 hkid=2 cpu=1", f"{PMI}|RCX")
    host.expect("tdh_mng_key_config td=td0 cpu=1", "TDX_OPERAND_BUSY|RCX")
    host.expect("tdh_mng_vpflushdone td=td0 cpu=1", "TDX_OPERAND_BUSY|RCX")
    host.expect("tdh_mng_addcx td=td0 page=mem1 cpu=1", "TDX_OPERAND_BUSY|RDX")
    host.expect("tdh_vp_flush vp=vp0 cpu=1", "TDX_OPERAND_BUSY|RCX")
    host.expect("tdh_phymem_page_reclaim page=tdr cpu=1", "TDX_OPERAND_BUSY|RCX")
    host.expect("tdh_mem_page_aug td=td0 gpa=0x1000 page=vpr cpu=1", "TDX_OPERAND_BUSY|R8")
    # shared requests never fail
    host.ok("tdh_mem_track td=td0 cpu=1", "tdh_mng_rd td=td0 cpu=1")
    # cpu 0 runs the guest: it makes no SEAMCALL at all (typed or raw), host actions go on
    for line in ("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_rd td=td0 cpu=0",
                 "seamcall TDH.PHYMEM.PAGE.RECLAIM rcx=tdr cpu=0"):
        with pytest.raises(StepNotEnabled, match="an LP in the guest makes no SEAMCALL"):
            host(line)
    host.ok("td_exit vp=vp0")
    host.expect("tdh_mng_create td=td1 page=tdr hkid=2", f"{PMI}|RCX")
    host.ok("tdh_vp_flush vp=vp0 cpu=0")


# --------------------------------------------------------------------------- KEY.CONFIG §6.2


def test_key_config_per_package(host: Host) -> None:
    host.build("created")
    host.expect("seamcall TDH.MNG.KEY.CONFIG rcx=cs0", f"{PMI}|RCX")
    host.expect("tdh_mng_key_config td=td0 cpu=0 fault=TDX_OPERAND_BUSY", "TDX_OPERAND_BUSY|KET")
    host.expect("tdh_mng_key_config td=td0 cpu=0 fault=TDX_KEY_GENERATION_FAILED",
                "TDX_KEY_GENERATION_FAILED")
    host.ok("tdh_mng_key_config td=td0 cpu=0")
    assert host.obs("td.td0.lifecycle") == 0  # one package of two
    # 4. a repeat on the same package: TDX_KEY_CONFIGURED (not an error), before the faults
    r = host.expect("tdh_mng_key_config td=td0 cpu=0 fault=TDX_OPERAND_BUSY", "TDX_KEY_CONFIGURED")
    assert r.status == 0x0000081500000000 and not is_error(r.status)
    host.ok("tdh_mng_key_config td=td0 cpu=1")
    assert host.obs("td.td0.lifecycle") == 1
    # 3. once KEYS_CONFIGURED, a repeat is a lifecycle error, not TDX_KEY_CONFIGURED
    host.expect("tdh_mng_key_config td=td0 cpu=1", "TDX_LIFECYCLE_STATE_INCORRECT")


def test_fatal_td(host: Host) -> None:
    host.build("running")
    host.ok("td_exit vp=vp0 reason=td_fatal")
    assert host.obs("vp.vp0.state") == 4  # VCPU state unchanged by a TD-fatal exit (td_exit.c)
    # 2. fatal is checked before the lifecycle (KEY.CONFIG, ADDCX) and first in TD_STATE
    host.expect("tdh_mng_key_config td=td0 cpu=0", "TDX_TD_FATAL")
    host.expect("tdh_mng_addcx td=td0 page=mem1", "TDX_TD_FATAL")
    host.expect("tdh_mem_track td=td0", "TDX_TD_FATAL")
    host.expect("tdh_vp_enter vp=vp0 cpu=0", "TDX_TD_FATAL")
    assert Status.TDX_TD_FATAL == 0xE000060400000000
    # VP.FLUSH, VPFLUSHDONE, CACHE.WB, FREEID, RECLAIM still work on a fatal TD (§7.1)
    host.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0",
            "tdh_phymem_cache_wb resume=0 cpu=0", "tdh_phymem_cache_wb resume=0 cpu=1",
            "tdh_mng_key_freeid td=td0", "tdh_phymem_page_reclaim page=vpr")


# --------------------------------------------------------------------------- MNG.ADDCX §6.3


def test_addcx_checks_in_order(make_host: Any, small: dict[str, int]) -> None:
    h = make_host(dict(small, tdcs_pages=2))  # MIN 2, MAX 5
    h.build("created")
    h.ok("page_alloc page=a,b,c,d,e")
    h.expect("tdh_mng_addcx td=td0 page=a", "TDX_TD_KEYS_NOT_CONFIGURED")
    h.ok("tdh_mng_key_config td=td0 cpu=0", "tdh_mng_key_config td=td0 cpu=1")
    h.expect("seamcall TDH.MNG.ADDCX rcx=a rdx=a", f"{PMI}|RDX")  # 1. RDX must be a TDR
    h.expect("tdh_mng_addcx td=td0 page=tdr", f"{PMI}|RCX")  # 5. the new page must be free
    # 6a. the entropy fault point exists only for the page that reaches MIN_NUM_TDCS_PAGES
    h.ok("tdh_mng_addcx td=td0 page=a fault=TDX_RND_NO_ENTROPY")
    h.expect("tdh_mng_addcx td=td0 page=b fault=TDX_RND_NO_ENTROPY", "TDX_RND_NO_ENTROPY")
    assert h.obs("page.b.pt") == 0
    # ... but the module already filled the page with direct writes under the TD's HKID
    assert h.ex.machine.td_bit(h.ex.page_pa("b"))
    h.ok("tdh_mng_addcx td=td0 page=b")
    # 6b. pages beyond MIN only while the TD is UNINITIALIZED
    h.ok("tdh_mng_addcx td=td0 page=c", "tdh_mng_init td=td0")
    h.expect("tdh_mng_addcx td=td0 page=d", "TDX_OP_STATE_INCORRECT")
    assert h.obs("page.d.pt") == 0


def test_addcx_max_pages(make_host: Any) -> None:
    h = make_host()  # tdcs_pages=1: MAX_NUM_TDCS_PAGES = 4
    h.build("keys")
    h.ok("page_alloc page=a,b,c,d,e")
    h.ok(*(f"tdh_mng_addcx td=td0 page={p}" for p in "abcd"))
    # 4. TDCX count before the new page's check (tdr is not free either)
    h.expect("tdh_mng_addcx td=td0 page=tdr", "TDX_TDCX_NUM_INCORRECT")


# --------------------------------------------------------------------------- MNG.INIT §6.4


def test_mng_init(host: Host) -> None:
    host.build("created")
    host.expect("tdh_mng_init td=td0", "TDX_TD_KEYS_NOT_CONFIGURED")
    host.ok("tdh_mng_key_config td=td0 cpu=0", "tdh_mng_key_config td=td0 cpu=1")
    host.expect("seamcall TDH.MNG.INIT rcx=cs0", f"{PMI}|RCX")
    host.expect("tdh_mng_init td=td0", "TDX_TDCS_NOT_ALLOCATED")
    host.ok("tdh_mng_addcx td=td0 page=cs0", "tdh_mng_init td=td0")
    assert host.obs("td.td0.op_state") == 1
    host.expect("tdh_mng_init td=td0", "TDX_OP_STATE_INCORRECT")


# --------------------------------------------------------------------------- vCPU leaves §6.5-6.9


def test_vp_create_and_addcx(host: Host) -> None:
    host.build("tdcs")
    host.expect("tdh_vp_create td=td0 vp=vp0 page=vpr", "TDX_OP_STATE_INCORRECT")  # op U
    host.ok("tdh_mng_init td=td0")
    host.expect("seamcall TDH.VP.CREATE rcx=vpr rdx=cs0", f"{PMI}|RDX")
    host.expect("tdh_vp_create td=td0 vp=vpx page=cs0", f"{PMI}|RCX")
    host.ok("tdh_vp_create td=td0 vp=vp0 page=vpr")
    assert host.obs("vp.vp0.state") == 0 and host.obs("vp.vp0.assoc_cpu") is None
    host.expect("seamcall TDH.VP.ADDCX rcx=cx0 rdx=cs0", f"{PMI}|RDX")
    host.expect("tdh_vp_addcx vp=vp0 page=tdr", f"{PMI}|RCX")
    host.expect("tdh_vp_init vp=vp0 cpu=1", "TDX_TDCX_NUM_INCORRECT")  # needs 1 + tdcx_pages
    host.ok("tdh_vp_addcx vp=vp0 page=cx0", "tdh_vp_init vp=vp0 cpu=1")
    assert host.obs("vp.vp0.state") == 2 and host.obs("vp.vp0.assoc_cpu") == 1
    host.ok("page_alloc page=x")
    host.expect("tdh_vp_addcx vp=vp0 page=x", "TDX_VCPU_STATE_INCORRECT")  # READY now
    host.expect("tdh_vp_init vp=vp0 cpu=1", "TDX_VCPU_STATE_INCORRECT")
    host.ok("tdh_mr_finalize td=td0")
    host.expect("tdh_vp_create td=td0 vp=vp1 page=x", "TDX_OP_STATE_INCORRECT")


def test_vp_addcx_max_pages(host: Host) -> None:
    host.build("init")
    pages = [f"x{i}" for i in range(11)]
    host.ok(f"page_alloc page={','.join(pages)}", "tdh_vp_create td=td0 vp=vp0 page=vpr")
    host.ok(*(f"tdh_vp_addcx vp=vp0 page={p}" for p in pages[:10]))  # 11 TDVPS pages = MAX
    host.expect("tdh_vp_addcx vp=vp0 page=tdr", "TDX_TDCX_NUM_INCORRECT")  # 5 before 6


def test_vp_init_max_vcpus(make_host: Any, small: dict[str, int]) -> None:
    h = make_host(dict(small, max_vcpus=1))
    h.build("vcpu")
    h.ok("page_alloc page=v1,c1", "tdh_vp_create td=td0 vp=vp1 page=v1",
         "tdh_vp_addcx vp=vp1 page=c1")
    h.expect("tdh_vp_init vp=vp1 cpu=1", "TDX_MAX_VCPUS_EXCEEDED")
    assert h.obs("vp.vp1.state") == 0 and h.obs("vp.vp1.assoc_cpu") is None
    h.expect("tdh_vp_init vp=vp0 cpu=1", "TDX_VCPU_STATE_INCORRECT")  # 5 before 6


def test_vp_enter_association_and_exit(host: Host) -> None:
    host.build("vcpu")  # vp0 READY, associated with cpu 0 by VP.INIT
    host.expect("tdh_vp_enter vp=vp0 cpu=0", "TDX_OP_STATE_INCORRECT")
    host.ok("tdh_mr_finalize td=td0")
    host.expect("tdh_vp_enter vp=vp0 cpu=1", "TDX_VCPU_ASSOCIATED")
    host.ok("tdh_vp_enter vp=vp0 cpu=0")
    assert host.obs("vp.vp0.state") == 4
    host.expect("tdh_vp_enter vp=vp0 cpu=1", "TDX_VCPU_STATE_INCORRECT")  # already running
    host.expect("tdh_vp_rd vp=vp0 cpu=1", "TDX_VCPU_STATE_INCORRECT")
    with pytest.raises(StepNotEnabled):  # cpu 0 is in the guest: no second vCPU, no SEAMCALL
        host("tdh_vp_enter vp=vp0 cpu=0")
    host.ok("td_exit vp=vp0 reason=normal")
    assert host.obs("vp.vp0.state") == 2 and host.obs("vp.vp0.assoc_cpu") == 0
    with pytest.raises(StepNotEnabled):
        host("td_exit vp=vp0")
    host.expect("tdh_vp_flush vp=vp0 cpu=1", "TDX_VCPU_NOT_ASSOCIATED")
    host.ok("tdh_vp_flush vp=vp0 cpu=0")
    assert host.obs("vp.vp0.assoc_cpu") is None
    host.expect("tdh_vp_flush vp=vp0 cpu=0", "TDX_VCPU_NOT_ASSOCIATED")
    # the TD_EPOCH fault point comes after check_and_associate_vcpu, whose association stays
    # (M15 tdh_vp_enter.c EXIT_FAILURE does not undo it)
    host.expect("tdh_vp_enter vp=vp0 cpu=1 fault=TDX_OPERAND_BUSY", "TDX_OPERAND_BUSY|TD_EPOCH")
    assert host.obs("vp.vp0.assoc_cpu") == 1 and host.obs("vp.vp0.state") == 2
    host.ok("tdh_vp_enter vp=vp0 cpu=1", "td_exit vp=vp0 reason=vcpu_fatal")
    assert host.obs("vp.vp0.state") == 8
    host.expect("tdh_vp_enter vp=vp0 cpu=1", "TDX_VCPU_STATE_INCORRECT")
    host.ok("tdh_vp_rd vp=vp0 cpu=1")  # VP.RD allows DISABLED
    host.expect("tdh_vp_wr vp=vp0 cpu=1", "TDX_VCPU_STATE_INCORRECT")


def test_vp_rd_associates(host: Host) -> None:
    host.build("finalized")
    host.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_vp_rd vp=vp0 cpu=1")
    assert host.obs("vp.vp0.assoc_cpu") == 1
    host.expect("tdh_mng_vpflushdone td=td0", "TDX_FLUSHVP_NOT_DONE")
    host.expect("tdh_vp_wr vp=vp0 cpu=0", "TDX_VCPU_ASSOCIATED")
    host.ok("tdh_vp_flush vp=vp0 cpu=1", "tdh_mng_vpflushdone td=td0")
    host.expect("tdh_vp_flush vp=vp0 cpu=1", "TDX_TD_KEYS_NOT_CONFIGURED")
    host.expect("tdh_vp_rd vp=vp0 cpu=1", "TDX_TD_KEYS_NOT_CONFIGURED")


def test_rd_wr_op_states(host: Host) -> None:
    host.build("tdcs")
    host.expect("tdh_mng_rd td=td0", "TDX_OP_STATE_INCORRECT")
    host.expect("tdh_mng_wr td=td0", "TDX_OP_STATE_INCORRECT")
    host.expect("seamcall TDH.MNG.RD rcx=cs0", f"{PMI}|RCX")
    host.ok("tdh_mng_init td=td0", "tdh_mng_rd td=td0", "tdh_mng_wr td=td0")
    host.expect("seamcall TDH.VP.RD rcx=tdr", f"{PMI}|RCX")


# --------------------------------------------------------------------------- teardown §6.10-6.15


def test_vpflushdone(host: Host) -> None:
    host.build("vcpu")
    host.expect("tdh_mng_vpflushdone td=td0 fault=TDX_OPERAND_BUSY", "TDX_OPERAND_BUSY|KOT")
    host.expect("tdh_mng_vpflushdone td=td0", "TDX_FLUSHVP_NOT_DONE")
    host.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0")
    assert host.obs("td.td0.lifecycle") == 2 and host.obs("kot.1.state") == 2
    assert host.ex.machine.kot[1].wbinvd_bitmap == 0b11
    host.expect("tdh_mng_vpflushdone td=td0", "TDX_LIFECYCLE_STATE_INCORRECT")
    # 2 before 3: the KOT lock is taken before the lifecycle check
    host.expect("tdh_mng_vpflushdone td=td0 fault=TDX_OPERAND_BUSY|KOT", "TDX_OPERAND_BUSY|KOT")


def test_vpflushdone_partially_built_td(host: Host) -> None:
    """KVM's error-path teardown relies on VPFLUSHDONE accepting HKID_ASSIGNED and skipping the
    association check when the TDCS is absent or uninitialized (kvm-sequences.md §1.1 step 9)."""
    host.build("created")
    host.ok("tdh_mng_vpflushdone td=td0")
    assert host.obs("td.td0.lifecycle") == 2


def test_cache_wb(host: Host) -> None:
    host.expect("tdh_phymem_cache_wb resume=2 fault=TDX_OPERAND_BUSY", "TDX_OPERAND_INVALID|RCX")
    host.expect("tdh_phymem_cache_wb resume=1", "TDX_WBCACHE_RESUME_ERROR")
    r = host.expect("tdh_phymem_cache_wb resume=0", "TDX_NO_HKID_READY_TO_WBCACHE")
    assert not is_error(r.status or 0)
    host.expect("tdh_phymem_cache_wb resume=0 fault=TDX_OPERAND_BUSY", "TDX_OPERAND_BUSY|WBCACHE")
    host.expect("tdh_phymem_cache_wb resume=0 fault=TDX_OPERAND_BUSY|KOT", "TDX_OPERAND_BUSY|KOT")
    host.expect("tdh_phymem_cache_wb resume=0 fault=TDX_INTERRUPTED_RESUMABLE",
                "TDX_NO_HKID_READY_TO_WBCACHE")
    host.build("vcpu")
    host.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0")
    host.expect("tdh_mng_key_freeid td=td0", "TDX_WBCACHE_NOT_COMPLETE")
    host.expect("tdh_phymem_cache_wb resume=0 cpu=0 fault=TDX_INTERRUPTED_RESUMABLE",
                "TDX_INTERRUPTED_RESUMABLE")
    host.expect("tdh_phymem_cache_wb resume=1 cpu=0 fault=TDX_INTERRUPTED_RESUMABLE",
                "TDX_INTERRUPTED_RESUMABLE")
    assert host.ex.machine.kot[1].wbinvd_bitmap == 0b11
    host.ok("tdh_phymem_cache_wb resume=1 cpu=0")
    assert host.ex.machine.kot[1].wbinvd_bitmap == 0b10
    host.expect("tdh_phymem_cache_wb resume=1 cpu=0", "TDX_WBCACHE_RESUME_ERROR")
    host.expect("tdh_mng_key_freeid td=td0", "TDX_WBCACHE_NOT_COMPLETE")
    # a new START discards an interrupted run's progress
    host.expect("tdh_phymem_cache_wb resume=0 cpu=1 fault=TDX_INTERRUPTED_RESUMABLE",
                "TDX_INTERRUPTED_RESUMABLE")
    host.ok("tdh_phymem_cache_wb resume=0 cpu=1", "tdh_mng_key_freeid td=td0")
    host.expect("tdh_phymem_cache_wb resume=1 cpu=1", "TDX_WBCACHE_RESUME_ERROR")
    host.expect("tdh_phymem_cache_wb resume=0 cpu=1", "TDX_NO_HKID_READY_TO_WBCACHE")


def test_cache_wb_snapshot_is_taken_at_start(host: Host) -> None:
    host.build("vcpu")
    host.build("vcpu", td="td1", hkid=2, p="b_")
    host.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0")
    host.expect("tdh_phymem_cache_wb resume=0 cpu=0 fault=TDX_INTERRUPTED_RESUMABLE",
                "TDX_INTERRUPTED_RESUMABLE")
    host.ok("tdh_vp_flush vp=b_vp0 cpu=0", "tdh_mng_vpflushdone td=td1")
    host.ok("tdh_phymem_cache_wb resume=1 cpu=0")  # completes the run started before td1
    assert host.ex.machine.kot[1].wbinvd_bitmap == 0b10
    assert host.ex.machine.kot[2].wbinvd_bitmap == 0b11
    host.ok("tdh_phymem_cache_wb resume=0 cpu=0", "tdh_phymem_cache_wb resume=0 cpu=1",
            "tdh_mng_key_freeid td=td0", "tdh_mng_key_freeid td=td1")


def test_key_freeid(host: Host) -> None:
    host.build("vcpu")
    # 2 before 3: lifecycle, then the KOT lock
    host.expect("tdh_mng_key_freeid td=td0 fault=TDX_OPERAND_BUSY|KOT",
                "TDX_LIFECYCLE_STATE_INCORRECT")
    host.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0")
    host.expect("tdh_mng_key_freeid td=td0 fault=TDX_OPERAND_BUSY", "TDX_OPERAND_BUSY|KOT")
    host.expect("tdh_mng_key_freeid td=td0", "TDX_WBCACHE_NOT_COMPLETE")
    host.ok("tdh_phymem_cache_wb resume=0 cpu=0", "tdh_phymem_cache_wb resume=0 cpu=1",
            "tdh_mng_key_freeid td=td0")
    assert host.obs("td.td0.lifecycle") == 3 and host.obs("kot.1.state") == 0
    host.expect("tdh_mng_key_freeid td=td0", "TDX_LIFECYCLE_STATE_INCORRECT")


def test_freeid_ablation_hook(make_host: Any, small: dict[str, int]) -> None:
    h = make_host(small, ablate={"freeid-wbinvd-check"})
    h.build("vcpu")
    h.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0", "tdh_mng_key_freeid td=td0")
    assert h.obs("kot.1.state") == 0


def test_reclaim(host: Host) -> None:
    host.build("premem")
    tdr_pa = host.ex.page_pa("tdr")
    host.expect("tdh_phymem_page_reclaim page=mem1", f"{PMI}|RCX")  # 4. PT_NDA
    host.expect("tdh_phymem_page_reclaim page=cs0", "TDX_LIFECYCLE_STATE_INCORRECT")  # 6a
    host.expect("tdh_phymem_page_reclaim page=tdr", "TDX_LIFECYCLE_STATE_INCORRECT")  # 6b
    host.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0",
            "tdh_phymem_cache_wb resume=0 cpu=0", "tdh_phymem_cache_wb resume=0 cpu=1",
            "tdh_mng_key_freeid td=td0")
    host.expect("tdh_phymem_page_reclaim page=tdr", "TDX_TD_ASSOCIATED_PAGES_EXIST")
    r = host.expect("tdh_phymem_page_reclaim page=mem0", "TDX_SUCCESS")
    assert r.outputs == {"tdx_pt": 3, "tdx_owner": tdr_pa, "tdx_size": 0}
    for page, pt in (("cx0", 5), ("vpr", 6), ("sept1", 8), ("cs0", 5)):
        assert host("tdh_phymem_page_reclaim page=" + page).outputs["tdx_pt"] == pt
    r = host.expect("tdh_phymem_page_reclaim page=tdr", "TDX_SUCCESS")
    assert r.outputs == {"tdx_pt": 4, "tdx_owner": 0, "tdx_size": 0}
    assert host.obs("td.td0.lifecycle") is None
    host.expect("tdh_phymem_page_reclaim page=tdr", f"{PMI}|RCX")


def test_page_wbinvd_needs_a_free_page(host: Host) -> None:
    host.build("created")
    host.expect("tdh_phymem_page_wbinvd_hkid hkid=1 page=tdr", f"{PMI}|RCX")
    host.expect("tdh_phymem_page_wbinvd_tdr td=td0", f"{PMI}|RCX")
    host.ok("tdh_phymem_page_wbinvd_hkid hkid=1 page=cs0")


# --------------------------------------------------------------------------- S-EPT §6.17-6.26


def test_sept_add(make_host: Any, small: dict[str, int]) -> None:
    h = make_host(dict(small, sept_levels=4))  # root holds level-3 entries
    h.build("init")
    h.ok("page_alloc page=s3,s2,s1")
    h.expect("tdh_mem_sept_add td=td0 gpa=0 level=0 page=s1", "TDX_OPERAND_INVALID|RCX")
    h.expect("tdh_mem_sept_add td=td0 gpa=0 level=4 page=s1", "TDX_OPERAND_INVALID|RCX")
    h.expect("tdh_mem_sept_add td=td0 gpa=0x1000 level=1 page=s1", "TDX_OPERAND_INVALID|RCX")
    # the tree lock (a fault point) comes before the walk, the entry lock after it
    h.expect("tdh_mem_sept_add td=td0 gpa=0 level=1 page=s1 fault=TDX_OPERAND_BUSY",
             "TDX_OPERAND_BUSY|SEPT_TREE")
    h.expect("tdh_mem_sept_add td=td0 gpa=0 level=1 page=tdr fault=TDX_OPERAND_BUSY|RCX",
             "TDX_EPT_WALK_FAILED|RCX")
    h.expect("tdh_mem_sept_add td=td0 gpa=0 level=3 page=tdr", f"{PMI}|R8")
    h.expect("tdh_mem_sept_add td=td0 gpa=0 level=3 page=s3 fault=TDX_OPERAND_BUSY|RCX",
             "TDX_OPERAND_BUSY|RCX")
    h.ok("tdh_mem_sept_add td=td0 gpa=0 level=3 page=s3")
    assert h.obs("page.s3.pt") == 8
    # an existing NL_MAPPED entry fails (allow_existing = 0), before the page check
    h.expect("tdh_mem_sept_add td=td0 gpa=0 level=3 page=tdr", "TDX_EPT_ENTRY_STATE_INCORRECT|RCX")
    h.ok("tdh_mem_sept_add td=td0 gpa=0 level=2 page=s2", "tdh_mem_sept_add td=td0 gpa=0 level=1 page=s1")
    h.ok("tdh_mem_page_add td=td0 gpa=0x3000 page=mem0")


def test_page_add_and_mr_extend(host: Host) -> None:
    host.build("vcpu")
    host.expect("tdh_mem_page_add td=td0 gpa=0 page=mem0", "TDX_EPT_WALK_FAILED|RCX")
    host.expect("tdh_mr_extend td=td0 gpa=0", "TDX_EPT_ENTRY_NOT_PRESENT|RCX")
    host.ok("tdh_mem_sept_add td=td0 gpa=0 level=1 page=sept1")
    host.expect("seamcall TDH.MEM.PAGE.ADD rcx=1 rdx=tdr r8=mem0", "TDX_OPERAND_INVALID|RCX")
    host.expect("tdh_mem_page_add td=td0 gpa=0 page=tdr", f"{PMI}|R8")
    host.ok("tdh_mem_page_add td=td0 gpa=0 page=mem0")
    assert host.obs("page.mem0.pt") == 3
    host.expect("tdh_mem_page_add td=td0 gpa=0 page=mem1", "TDX_EPT_ENTRY_STATE_INCORRECT|RCX")
    host.ok(*(f"tdh_mr_extend td=td0 gpa={g}" for g in range(0, 4096, 256)))
    host.expect("seamcall TDH.MR.EXTEND rcx=0x80 rdx=tdr", "TDX_OPERAND_INVALID|RCX")
    host.expect("tdh_mr_extend td=td0 gpa=0x1000", "TDX_EPT_ENTRY_NOT_PRESENT|RCX")
    host.ok("tdh_mr_finalize td=td0")
    host.expect("tdh_mem_page_add td=td0 gpa=0x1000 page=mem1", "TDX_OP_STATE_INCORRECT")
    host.expect("tdh_mr_extend td=td0 gpa=0", "TDX_OP_STATE_INCORRECT")
    host.expect("tdh_mr_finalize td=td0", "TDX_OP_STATE_INCORRECT")


def test_mr_finalize_needs_a_vcpu(host: Host) -> None:
    host.build("init")
    host.expect("tdh_mr_finalize td=td0", "TDX_NO_VCPUS")


def test_page_aug(host: Host) -> None:
    host.build("finalized")
    host.expect("seamcall TDH.MEM.PAGE.AUG rcx=0x1001 rdx=tdr r8=mem1", "TDX_OPERAND_INVALID|RCX")
    host.expect("tdh_mem_page_aug td=td0 gpa=0x200000 page=mem1", "TDX_EPT_WALK_FAILED|RCX")
    host.expect("tdh_mem_page_aug td=td0 gpa=0 page=mem1", "TDX_EPT_ENTRY_STATE_INCORRECT|RCX")
    host.expect("tdh_mem_page_aug td=td0 gpa=0x1000 page=cs0", f"{PMI}|R8")
    host.expect("tdh_mem_page_aug td=td0 gpa=0x1000 page=mem1 fault=TDX_OPERAND_BUSY",
                "TDX_OPERAND_BUSY|SEPT_TREE")
    host.expect("tdh_mem_page_aug td=td0 gpa=0x1000 page=mem1 fault=TDX_OPERAND_BUSY|RCX",
                "TDX_OPERAND_BUSY|RCX")
    host.ok("tdh_mem_page_aug td=td0 gpa=0x1000 page=mem1")
    assert host.obs("page.mem1.pt") == 3


def test_block_track_remove_unblock(host: Host) -> None:
    host.build("finalized")
    mem1 = host.ex.page_pa("mem1")
    host.ok("tdh_mem_page_aug td=td0 gpa=0x1000 page=mem1")
    host.expect("tdh_mem_page_remove td=td0 gpa=0x1000 level=0", "TDX_GPA_RANGE_NOT_BLOCKED|RCX")
    host.expect("tdh_mem_range_block td=td0 gpa=0x2000 level=0", "TDX_EPT_ENTRY_STATE_INCORRECT|RCX")
    host.expect("tdh_mem_range_block td=td0 gpa=0x1000 level=2", "TDX_OPERAND_INVALID|RCX")
    host.expect("tdh_mem_range_unblock td=td0 gpa=0x1000 level=0", "TDX_EPT_ENTRY_STATE_INCORRECT|RCX")
    host.ok("tdh_mem_range_block td=td0 gpa=0x1000 level=0")
    r = host.expect("tdh_mem_range_block td=td0 gpa=0x1000 level=0",
                    "TDX_GPA_RANGE_ALREADY_BLOCKED|RCX")
    assert not is_error(r.status or 0)
    host.expect("tdh_mem_page_remove td=td0 gpa=0x1000 level=0", "TDX_TLB_TRACKING_NOT_DONE|RCX")
    host.expect("tdh_mem_range_unblock td=td0 gpa=0x1000 level=0",
                "TDX_TLB_TRACKING_NOT_DONE|SEPT_TREE")
    host.ok("tdh_mem_track td=td0", "tdh_mem_range_unblock td=td0 gpa=0x1000 level=0")
    host.ok("tdh_mem_range_block td=td0 gpa=0x1000 level=0", "tdh_mem_track td=td0")
    host.expect("tdh_mem_page_remove td=td0 gpa=0x1000 level=1", "TDX_OPERAND_INVALID|RCX")  # 2M
    host.expect("tdh_mem_page_remove td=td0 gpa=0 level=1", "TDX_EPT_ENTRY_STATE_INCORRECT|RCX")
    host.expect("tdh_mem_page_remove td=td0 gpa=0x1000 level=0 fault=TDX_OPERAND_BUSY",
                "TDX_OPERAND_BUSY|SEPT_TREE")
    r = host.expect("tdh_mem_page_remove td=td0 gpa=0x1000 level=0", "TDX_SUCCESS")
    assert r.outputs["ext_err1"] == mem1
    assert host.obs("page.mem1.pt") == 0


def test_tlb_epochs_with_a_running_vcpu(host: Host) -> None:
    """§3.6/§7.6: BLOCK at epoch E, TRACK to E+1, and every vCPU that entered in E must exit."""
    host.build("running")  # vp0 entered at td_epoch 1 on cpu 0: refcount[1] = 1
    host.ok("tdh_mem_page_aug td=td0 gpa=0x1000 page=mem1 cpu=1",
            "tdh_mem_range_block td=td0 gpa=0x1000 level=0 cpu=1", "tdh_mem_track td=td0 cpu=1")
    host.expect("tdh_mem_page_remove td=td0 gpa=0x1000 level=0 cpu=1",
                "TDX_TLB_TRACKING_NOT_DONE|RCX")
    host.expect("tdh_mem_track td=td0 cpu=1", "TDX_PREVIOUS_TLB_EPOCH_BUSY")
    host.expect("tdh_mem_track td=td0 cpu=1 fault=TDX_OPERAND_BUSY", "TDX_OPERAND_BUSY|TD_EPOCH")
    host.ok("td_exit vp=vp0", "tdh_mem_page_remove td=td0 gpa=0x1000 level=0")
    # re-entering counts the vCPU in the current epoch (2) : one TRACK passes, a second waits
    host.ok("tdh_vp_enter vp=vp0 cpu=0", "tdh_mem_track td=td0 cpu=1")
    host.expect("tdh_mem_track td=td0 cpu=1", "TDX_PREVIOUS_TLB_EPOCH_BUSY")
    assert host.ex.machine.tdcss[host.ex.page_pa("cs0")].refcount == [1, 0]


def test_removal_before_finalize_needs_no_block(host: Host) -> None:
    host.build("premem")
    host.expect("tdh_mem_sept_remove td=td0 gpa=0 level=1", "TDX_EPT_PAGE_NOT_FREE|RCX")
    host.expect("tdh_mem_sept_remove td=td0 gpa=0 level=0", "TDX_OPERAND_INVALID|RCX")
    host.ok("tdh_mem_page_remove td=td0 gpa=0 level=0")
    r = host.expect("tdh_mem_sept_remove td=td0 gpa=0 level=1", "TDX_SUCCESS")
    assert r.outputs["ext_err1"] == host.ex.page_pa("sept1")
    assert host.obs("page.sept1.pt") == 0 and host.obs("page.mem0.pt") == 0


def test_sept_remove_when_runnable(host: Host) -> None:
    host.build("finalized")
    host.ok("tdh_mem_range_block td=td0 gpa=0 level=0", "tdh_mem_track td=td0",
            "tdh_mem_page_remove td=td0 gpa=0 level=0")
    host.expect("tdh_mem_sept_remove td=td0 gpa=0 level=1", "TDX_GPA_RANGE_NOT_BLOCKED|RCX")
    host.ok("tdh_mem_range_block td=td0 gpa=0 level=1")
    host.expect("tdh_mem_sept_remove td=td0 gpa=0 level=1", "TDX_TLB_TRACKING_NOT_DONE|RCX")
    host.ok("tdh_mem_track td=td0", "tdh_mem_sept_remove td=td0 gpa=0 level=1")


# --------------------------------------------------------------------------- guest side


def test_guest_accept(host: Host) -> None:
    host.build("finalized")
    host.ok("tdh_mem_page_aug td=td0 gpa=0x1000 page=mem1")
    before = host.ex.observe()
    with pytest.raises(StepNotEnabled):
        host("guest_accept vp=vp0 gpa=0x1000")
    assert host.ex.observe() == before
    host.ok("tdh_vp_enter vp=vp0 cpu=0")
    host.expect("guest_accept vp=vp0 gpa=0x200000", "TDX_EPT_WALK_FAILED|RCX")
    host.expect("guest_accept vp=vp0 gpa=0", "TDX_EPT_ENTRY_STATE_INCORRECT|RCX")
    host.ok("guest_accept vp=vp0 gpa=0x1000")
    host.expect("guest_accept vp=vp0 gpa=0x1000", "TDX_EPT_ENTRY_STATE_INCORRECT|RCX")
    host.ok("td_exit vp=vp0")
    with pytest.raises(StepNotEnabled):
        host("guest_accept vp=vp0 gpa=0x1000")


def test_typed_step_without_its_page_is_not_enabled(host: Host) -> None:
    before = host.ex.observe()
    for line in ("tdh_mng_key_config td=td0", "tdh_vp_init vp=vp0 cpu=0",
                 "tdh_vp_create td=td9 vp=vp9 page=x", "td_exit vp=vp0"):
        with pytest.raises(StepNotEnabled):
            host(line)
    assert host.ex.observe() == before
