"""What concretely breaks when the host skips a rule: each violation shows its consequence on
the byte-level machine, and the same scenario done right shows none.

1. stale-line write-back over host data (no PAGE.WBINVD after a run-time PAGE.REMOVE, or no
   WBINVD of the TDR under the global KeyID) -> ``corrupted-host-data`` with address,
   expected and found bytes;
2. HKID reuse with dirty lines (needs the FREEID wbinvd check ablated: the module refuses it
   otherwise) -> ``hkid-reuse-dirty-lines``;
3. a host KeyID-0 partial write to a line whose TD-owner bit is set, on a platform with the
   partial-write erratum -> ``machine-check``;
plus flush-before-alloc (``corrupted-td-data``), leaks, and the encryption itself.
"""

from __future__ import annotations

from typing import Any

from tdxcheck.checker.executor import Executor
from tdxcheck.checker.executor.structures import LINE

Host = Any


def kinds(ex: Executor) -> list[str]:
    return [c.kind for c in ex.consequences]


def _run_and_remove(h: Host, wbinvd: bool) -> None:
    """A running TD whose guest accepted and wrote mem1; the host zaps it at run time."""
    h.build("finalized")
    h.ok("tdh_mem_page_aug td=td0 gpa=0x1000 page=mem1", "tdh_vp_enter vp=vp0 cpu=0",
         "guest_accept vp=vp0 gpa=0x1000", "td_exit vp=vp0")
    h.ok("tdh_mem_range_block td=td0 gpa=0x1000 level=0", "tdh_mem_track td=td0",
         "tdh_mem_page_remove td=td0 gpa=0x1000 level=0")
    if wbinvd:
        h.ok("tdh_phymem_page_wbinvd_hkid hkid=1 page=mem1")
    h.ok("clear_page page=mem1", "page_free page=mem1")


# --------------------------------------------------------------------------- 1. stale lines


def test_no_wbinvd_after_remove_corrupts_host_data(host: Host) -> None:
    _run_and_remove(host, wbinvd=False)
    mem1 = host.ex.page_pa("mem1")
    # the guest's dirty lines under HKID 1 are still cached; the host's zeros are in memory
    assert host.ex.machine.dirty_lines(keyid=1, pa=mem1)
    assert host.ex.machine.peek(mem1, 0) == bytes(LINE)
    assert host.ex.consequences == []
    n_steps = host.ex.steps_done
    host.ex.finish()  # end of run: every line is evicted
    bad = [c for c in host.ex.consequences if c.kind == "corrupted-host-data"]
    assert bad, kinds(host.ex)
    c = bad[0]
    assert c.step_index == n_steps
    assert c.address is not None and c.address & ~0xFFF == mem1
    assert c.expected == bytes(LINE)  # what the host's clear_page wrote
    assert c.found is not None and c.found != c.expected
    assert host.ex.machine.peek(c.address, 0) == c.found  # memory now holds the garbage
    assert "KeyID 1" in c.message


def test_no_wbinvd_after_remove_damage_lands_at_cache_wb(host: Host) -> None:
    """The stale lines need not wait for the end: TDH.PHYMEM.CACHE.WB at teardown writes back
    every line of the flushed HKID, over the page the kernel already reused."""
    _run_and_remove(host, wbinvd=False)
    host.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0")
    before = len(host.ex.consequences)
    wb_step = host.ex.steps_done
    host.ok("tdh_phymem_cache_wb resume=0 cpu=0", "tdh_phymem_cache_wb resume=0 cpu=1")
    new = host.ex.consequences[before:]
    assert [c.kind for c in new] == ["corrupted-host-data"]
    assert new[0].step_index in (wb_step, wb_step + 1)


def test_no_wbinvd_after_remove_then_host_writes(make_host: Any, small: dict[str, int]) -> None:
    """On a platform without the partial-write erratum the host may write the page directly;
    once its own lines reach memory (a CLFLUSH here), the stale HKID line lands on top."""
    h = make_host(dict(small, clear_before_reuse=0))
    h.build("finalized")
    h.ok("tdh_mem_page_aug td=td0 gpa=0x1000 page=mem1", "tdh_vp_enter vp=vp0 cpu=0",
         "guest_accept vp=vp0 gpa=0x1000", "td_exit vp=vp0",
         "tdh_mem_range_block td=td0 gpa=0x1000 level=0", "tdh_mem_track td=td0",
         "tdh_mem_page_remove td=td0 gpa=0x1000 level=0", "page_free page=mem1",
         "page_alloc page=mem1", "host_write page=mem1 cpu=1", "clflush page=mem1")
    assert h.ex.consequences == []
    h.ex.finish()
    bad = [c for c in h.ex.consequences if c.kind == "corrupted-host-data"]
    assert bad and bad[0].expected is not None and bad[0].expected.startswith(b"host")


def test_wbinvd_after_remove_is_clean(host: Host) -> None:
    _run_and_remove(host, wbinvd=True)
    host.ok("page_alloc page=mem1", "host_write page=mem1 cpu=1")
    host.ex.finish()
    assert host.ex.consequences == []


def test_tdr_without_global_wbinvd_corrupts_host_data(host: Host) -> None:
    host.build("vcpu")
    host.ok("tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0",
            "tdh_phymem_cache_wb resume=0 cpu=0", "tdh_phymem_cache_wb resume=0 cpu=1",
            "tdh_mng_key_freeid td=td0")
    for p in ("cx0", "vpr", "cs0"):
        host.ok(f"tdh_phymem_page_reclaim page={p}", f"clear_page page={p}", f"page_free page={p}")
    host.ok("tdh_phymem_page_reclaim page=tdr", "clear_page page=tdr", "page_free page=tdr")
    host.ex.finish()
    bad = [c for c in host.ex.consequences if c.kind == "corrupted-host-data"]
    assert bad and bad[0].address is not None
    assert bad[0].address & ~0xFFF == host.ex.page_pa("tdr")
    assert "KeyID 3" in bad[0].message  # the module's global KeyID


# --------------------------------------------------------------------------- 2. HKID reuse


def _reuse_hkid(h: Host) -> None:
    """Tear td0 down without CACHE.WB, give HKID 1 back, build td1 on it."""
    h.build("running")
    h.ok("tdh_mem_page_aug td=td0 gpa=0x1000 page=mem1 cpu=1", "guest_accept vp=vp0 gpa=0x1000",
         "td_exit vp=vp0", "tdh_vp_flush vp=vp0 cpu=0", "tdh_mng_vpflushdone td=td0")
    h("tdh_mng_key_freeid td=td0")
    h.ok("hkid_free hkid=1")
    h.build("alloc", td="td1", hkid=1, p="n_")
    h("tdh_mng_create td=td1 page=n_tdr hkid=1")
    h("tdh_mng_key_config td=td1 cpu=0")
    h("tdh_mng_key_config td=td1 cpu=1")


def test_hkid_reuse_with_dirty_lines_needs_the_freeid_check_ablated(make_host: Any,
                                                                      small: dict[str, int]) -> None:
    h = make_host(small, ablate={"freeid-wbinvd-check"})
    _reuse_hkid(h)
    assert h.obs("td.td1.lifecycle") == 1  # the new TD got the old TD's HKID
    reuse = [c for c in h.ex.consequences if c.kind == "hkid-reuse-dirty-lines"]
    assert reuse and "HKID 1" in reuse[0].message
    # ... and those lines, written back later with the new key, are lost
    h.ex.finish()
    assert any("old data is lost" in c.message for c in h.ex.consequences
               if c.kind == "hkid-reuse-dirty-lines")


def test_module_refuses_hkid_reuse_without_cache_wb(host: Host) -> None:
    _reuse_hkid(host)
    assert host.ex.machine.kot[1].state == 2  # still FLUSHED: FREEID said WBCACHE_NOT_COMPLETE
    assert host.obs("td.td1.lifecycle") is None  # MNG.CREATE said HKID_NOT_FREE
    assert "hkid-reuse-dirty-lines" not in kinds(host.ex)


# --------------------------------------------------------------------------- 3. #MC


def test_host_write_to_module_owned_page_machine_checks(host: Host) -> None:
    host.build("created")
    assert host.ex.consequences == []
    step = host.ex.steps_done
    host.ok("host_write page=tdr cpu=1")
    mc = [c for c in host.ex.consequences if c.kind == "machine-check"]
    assert mc and mc[0].step_index == step
    assert mc[0].address is not None and mc[0].address & ~0xFFF == host.ex.page_pa("tdr")


def test_no_machine_check_without_the_erratum(make_host: Any, small: dict[str, int]) -> None:
    h = make_host(dict(small, clear_before_reuse=0))
    h.build("created")
    h.ok("host_write page=tdr cpu=1")
    assert "machine-check" not in kinds(h.ex)


def test_free_without_clear_machine_checks_on_reuse(host: Host) -> None:
    host.build("created")
    host.ok("tdh_mng_vpflushdone td=td0", "tdh_phymem_cache_wb resume=0 cpu=0",
            "tdh_phymem_cache_wb resume=0 cpu=1", "tdh_mng_key_freeid td=td0",
            "tdh_phymem_page_reclaim page=tdr", "tdh_phymem_page_wbinvd_tdr td=td0",
            "page_free page=tdr")
    assert host.ex.consequences == []
    host.ok("page_alloc page=tdr")  # the kernel reuses it: partial KeyID-0 writes
    assert "machine-check" in kinds(host.ex)


def test_clear_before_reuse_is_clean(host: Host) -> None:
    host.build("created")
    host.ok("tdh_mng_vpflushdone td=td0", "tdh_phymem_cache_wb resume=0 cpu=0",
            "tdh_phymem_cache_wb resume=0 cpu=1", "tdh_mng_key_freeid td=td0",
            "tdh_phymem_page_reclaim page=tdr", "tdh_phymem_page_wbinvd_tdr td=td0",
            "clear_page page=tdr", "page_free page=tdr", "page_alloc page=tdr")
    host.ex.finish()
    assert host.ex.consequences == []


def test_failed_create_leaves_td_owner_bits(host: Host) -> None:
    """M15 tdh_mng_create.c zeroes the TDR with direct writes under the global KeyID *before*
    drawing the TD_UUID; on TDX_RND_NO_ENTROPY the page stays PT_NDA but its lines carry the
    TD-owner bit.  KVM frees it straight to the allocator (kvm-sequences.md §1.1 step 4), so
    the next kernel partial write machine-checks on an erratum platform."""
    host.ok("hkid_alloc hkid=1", "page_alloc page=tdr")
    host.expect("tdh_mng_create td=td0 page=tdr hkid=1 fault=TDX_RND_NO_ENTROPY",
                "TDX_RND_NO_ENTROPY")
    assert host.obs("page.tdr.pt") == 0
    assert host.ex.machine.td_bit(host.ex.page_pa("tdr"))
    host.ok("page_free page=tdr", "hkid_free hkid=1", "page_alloc page=tdr")
    assert "machine-check" in kinds(host.ex)


# --------------------------------------------------------------------------- flush-before-alloc


def _raw_addcx(h: Host) -> None:
    h.build("keys")
    h.ok("seamcall TDH.MNG.ADDCX rcx=cs0 rdx=tdr")  # no CLFLUSH: the kernel's lines stay


def test_raw_seamcall_without_clflush_corrupts_the_module_page(host: Host) -> None:
    _raw_addcx(host)
    cs0 = host.ex.page_pa("cs0")
    assert host.ex.machine.dirty_lines(keyid=0, pa=cs0)
    host.ex.finish()
    bad = [c for c in host.ex.consequences if c.kind == "corrupted-td-data"]
    assert bad and bad[0].address is not None and bad[0].address & ~0xFFF == cs0
    assert "KeyID 0" in bad[0].message


def test_typed_wrapper_clflushes(host: Host) -> None:
    host.build("tdcs")
    assert not host.ex.machine.dirty_lines(keyid=0, pa=host.ex.page_pa("cs0"))
    host.ex.finish()
    assert host.ex.consequences == []


def test_wrapper_without_clflush_corrupts(make_host: Any, small: dict[str, int]) -> None:
    h = make_host(dict(small, wrapper_clflush=0))
    h.build("tdcs")
    h.ex.finish()
    assert "corrupted-td-data" in kinds(h.ex)


def test_no_clflush_needed_when_the_platform_says_so(make_host: Any, small: dict[str, int]) -> None:
    h = make_host(dict(small, clflush_before_alloc=0))
    _raw_addcx(h)
    h.ex.finish()
    assert h.ex.consequences == []


def test_stale_kernel_lines_hit_the_running_td(host: Host) -> None:
    """The guest's working set displaces the package's other lines at its exit: a page handed
    over without CLFLUSH is damaged while the TD is alive, not only at the end."""
    host.build("vcpu")
    host.ok("page_alloc page=raw")
    host.ok("tdh_mem_sept_add td=td0 gpa=0 level=1 page=sept1")
    host.ok("seamcall TDH.MEM.PAGE.ADD rcx=0 rdx=tdr r8=raw")
    host.ok("tdh_mr_finalize td=td0", "tdh_vp_enter vp=vp0 cpu=0")
    step = host.ex.steps_done
    host.ok("td_exit vp=vp0")
    bad = [c for c in host.ex.consequences if c.kind == "corrupted-td-data"]
    assert bad and bad[0].step_index == step


# --------------------------------------------------------------------------- leaks


def test_leaks_reported_only_after_check_no_leak(host: Host) -> None:
    host.build("created")
    host.ex.finish()
    assert host.ex.consequences == []
    h2 = type(host)()
    h2.build("created")
    step = h2.ex.steps_done
    h2.ok("check_no_leak")
    leaks = {(c.kind, c.step_index) for c in h2.ex.consequences}
    assert ("leaked-page", step) in leaks and ("leaked-hkid", step) in leaks
    msgs = " ".join(c.message for c in h2.ex.consequences)
    assert "page tdr" in msgs and "owned by the TDX module" in msgs
    assert "page cs0" in msgs and "allocated to the TDX code" in msgs
    assert "HKID 1" in msgs
    n = len(h2.ex.consequences)
    h2.ok("page_alloc page=late")
    h2.ex.finish()  # reported once each; the late page at finish()
    late = h2.ex.consequences[n:]
    assert [c.kind for c in late] == ["leaked-page"] and "late" in late[0].message


def test_module_held_hkid_is_a_leak(host: Host) -> None:
    host.build("created")
    host.ok("hkid_free hkid=1", "check_no_leak")
    assert any(c.kind == "leaked-hkid" and "KOT" in c.message for c in host.ex.consequences)


# --------------------------------------------------------------------------- the bytes themselves


def test_encryption_and_td_owner_bits(host: Host) -> None:
    host.build("premem")
    m = host.ex.machine
    mem0 = host.ex.page_pa("mem0")
    host.ex.finish()  # everything to memory
    plain = m.peek(mem0, 1)  # PAGE.ADD copied the source under HKID 1
    assert plain.startswith(b"SRC")
    assert m.peek(mem0, 0) != plain  # through KeyID 0: ciphertext
    assert m.peek(mem0, 2) != plain  # through another HKID: garbage
    assert m.td_bit(mem0)
    # TDR fields live in the TDR page, under the global KeyID
    tdr = m.peek(host.ex.page_pa("tdr"), m.global_keyid)
    assert tdr[0] == 1 and int.from_bytes(tdr[2:4], "little") == 1  # KEYS_CONFIGURED, HKID 1
    assert int.from_bytes(tdr[8:12], "little") == m.tdrs[host.ex.page_pa("tdr")].chldcnt
    assert m.peek(host.ex.page_pa("tdr"), 0)[:16] != tdr[:16]
    # KeyID-0 reads of a TD-owned line return zeros
    assert m.load(0, mem0, 0) == bytes(LINE)


def test_consequence_fields() -> None:
    ex = Executor({})
    c = ex.machine
    assert c.consequences is ex.consequences
    from tdxcheck.checker.executor import Consequence

    x = Consequence("machine-check", 3, "m")
    assert (x.kind, x.step_index, x.message, x.address, x.count) == ("machine-check", 3, "m", None, 1)
