"""KVM's full TD lifecycle on the executor, in KVM's order (kvm-sequences.md §1, tdx-reference.md
§10.3-10.6), on the default platform: every status is TDX_SUCCESS (or the documented non-error
status), the abstract state moves as §7 says, the machine's invariants hold after every step,
and the run ends with zero consequences (no corruption, no #MC, no leak at check_no_leak).
"""

from __future__ import annotations

from typing import Any

from tdxcheck.checker.executor import Executor
from tdxcheck.model.status import status_name

DEFAULT: dict[str, int] = {}  # scenario-format.md §1 defaults: 2 packages x 2 CPUs, 6 TDCS...


def kvm_lifecycle(cfg: dict[str, int]) -> list[tuple[str, dict[str, Any], int]]:
    """The KVM sequence: create, key config on one CPU of each package, ADDCX x tdcs_pages,
    MNG.INIT, vCPU create/addcx/init, S-EPT + PAGE.ADD + MR.EXTEND, finalize, run, AUG +
    accept, runtime removal (BLOCK, TRACK, REMOVE, WBINVD(hkid), clear), teardown (VP.FLUSH,
    VPFLUSHDONE, CACHE.WB per package, FREEID, hkid_free, reclaim + clear + free, TDR last
    with WBINVD under the global KeyID), check_no_leak."""
    e = Executor(cfg)  # only for the filled-in config
    c = e.config
    per, npk = c["cpus_per_package"], c["packages"]
    cs = [f"cs{i}" for i in range(c["tdcs_pages"])]
    cx = [f"cx{i}" for i in range(c["tdcx_pages"])]
    levels = list(range(c["sept_levels"] - 1, 0, -1))
    sept = [f"sept{lvl}" for lvl in levels]
    s: list[tuple[str, dict[str, Any], int]] = []

    def add(name: str, cpu: int = 0, **ops: Any) -> None:
        s.append((name, ops, cpu))

    add("hkid_alloc", hkid=1)
    add("page_alloc", page=["tdr", *cs])
    add("tdh_mng_create", td="td0", page="tdr", hkid=1)
    for p in range(npk):
        add("tdh_mng_key_config", p * per, td="td0")
    for x in cs:
        add("tdh_mng_addcx", td="td0", page=x)
    add("tdh_mng_init", td="td0")
    add("tdh_mng_rd", td="td0")
    add("page_alloc", page=["vpr", *cx])
    add("tdh_vp_create", td="td0", vp="vp0", page="vpr")
    for x in cx:
        add("tdh_vp_addcx", vp="vp0", page=x)
    add("tdh_vp_init", 0, vp="vp0")
    add("page_alloc", page=[*sept, "mem0", "mem1"])
    for lvl in levels:
        add("tdh_mem_sept_add", td="td0", gpa=0, level=lvl, page=f"sept{lvl}")
    add("tdh_mem_page_add", td="td0", gpa=0, page="mem0")
    for g in range(0, 4096, 256):
        add("tdh_mr_extend", td="td0", gpa=g)
    add("tdh_mr_finalize", td="td0")
    add("tdh_vp_enter", 0, vp="vp0")
    add("tdh_mem_page_aug", 1, td="td0", gpa=0x1000, page="mem1")  # cpu0 runs the guest
    add("guest_accept", vp="vp0", gpa=0x1000)
    add("td_exit", vp="vp0", reason="normal")
    add("tdh_vp_enter", 0, vp="vp0")
    add("td_exit", vp="vp0", reason="normal")
    # runtime removal of a private page (kvm-sequences.md §1.5)
    add("tdh_mem_range_block", td="td0", gpa=0x1000, level=0)
    add("tdh_mem_track", td="td0")
    add("tdh_mem_page_remove", td="td0", gpa=0x1000, level=0)
    add("tdh_phymem_page_wbinvd_hkid", hkid=1, page="mem1")
    add("clear_page", page="mem1")
    add("page_free", page=["mem1"])
    # teardown (kvm-sequences.md §1.7)
    add("tdh_vp_flush", 0, vp="vp0")
    add("tdh_mng_vpflushdone", td="td0")
    for p in range(npk):
        add("tdh_phymem_cache_wb", p * per, resume=0)
    add("tdh_mng_key_freeid", td="td0")
    add("hkid_free", hkid=1)
    for pg in [*cx, "vpr", *sept, "mem0", *cs]:
        add("tdh_phymem_page_reclaim", page=pg)
        add("clear_page", page=pg)
        add("page_free", page=[pg])
    add("tdh_phymem_page_reclaim", page="tdr")
    add("tdh_phymem_page_wbinvd_tdr", td="td0")
    add("clear_page", page="tdr")
    add("page_free", page=["tdr"])
    add("check_no_leak")
    return s


def run(ex: Executor, steps: list[tuple[str, dict[str, Any], int]]) -> list[str | None]:
    out = []
    for name, ops, cpu in steps:
        r = ex.step(name, ops, cpu)
        out.append(None if r.status is None else status_name(r.status))
        bad = ex.check_invariants()
        assert not bad, f"{name} {ops}: {bad}"
    return out


def test_kvm_lifecycle_default_config_has_no_consequence() -> None:
    steps = kvm_lifecycle(DEFAULT)
    ex = Executor(DEFAULT)
    statuses = run(ex, steps)
    for (name, ops, _), st in zip(steps, statuses):
        assert st in (None, "TDX_SUCCESS"), f"{name} {ops}: {st}"
    assert sum(1 for st in statuses if st == "TDX_SUCCESS") == sum(
        1 for name, _, _ in steps if name.startswith("tdh_") or name == "guest_accept")
    ex.finish()
    assert ex.consequences == []
    assert ex.no_leak_checked
    obs = ex.observe()
    assert all(v == 0 for k, v in obs.items() if k.startswith("page."))
    assert obs["td.td0.lifecycle"] is None and obs["vp.vp0.state"] is None
    assert all(obs[f"kot.{h}.state"] == 0 and obs[f"hkid.{h}.allocated"] == 0 for h in (1, 2, 3))
    # the machine really did things: the caches were busy and memory holds the cleared pages
    assert ex.machine.seq > 1000
    assert not ex.machine.dirty_lines()


def test_kvm_lifecycle_abstract_states_along_the_way() -> None:
    steps = kvm_lifecycle(DEFAULT)
    ex = Executor(DEFAULT)
    seen: dict[str, list[Any]] = {"lc": [], "op": [], "vp": [], "kot": []}
    for name, ops, cpu in steps:
        ex.step(name, ops, cpu)
        o = ex.observe()
        for key, obs_key in (("lc", "td.td0.lifecycle"), ("op", "td.td0.op_state"),
                             ("vp", "vp.vp0.state"), ("kot", "kot.1.state")):
            v = o.get(obs_key)
            if not seen[key] or seen[key][-1] != v:
                seen[key].append(v)
    # §7.1 TDR lifecycle x KOT, §7.2 op state, §7.3 vCPU
    assert seen["lc"] == [None, 0, 1, 2, 3, None]
    assert seen["kot"] == [0, 1, 2, 0]
    assert seen["op"] == [None, 0, 1, 2, None]
    assert seen["vp"] == [None, 0, 2, 4, 2, 4, 2, None]


def test_two_tds_two_vcpus_migration_and_partial_build_teardown() -> None:
    """Two TDs sharing the platform; a vCPU moves between packages (VP.FLUSH on the old CPU,
    KVM ``tdx_vcpu_load``); a third TD is torn down half built (KVM's error path, §1.1 step 9),
    its unused pages freed straight to the allocator.  No consequence."""
    cfg = {"packages": 2, "cpus_per_package": 2, "hkids": 4, "tdcs_pages": 2, "tdcx_pages": 1,
           "sept_levels": 3}
    ex = Executor(cfg)
    L: list[tuple[str, dict[str, Any], int]] = []

    def add(name: str, cpu: int = 0, **ops: Any) -> None:
        L.append((name, ops, cpu))

    for t, h in (("a", 1), ("b", 2)):
        td = f"td_{t}"
        add("hkid_alloc", hkid=h)
        add("page_alloc", page=[f"{t}tdr", f"{t}cs0", f"{t}cs1", f"{t}v0", f"{t}x0", f"{t}v1",
                                f"{t}x1", f"{t}s2", f"{t}s1", f"{t}m0", f"{t}m1"])
        add("tdh_mng_create", td=td, page=f"{t}tdr", hkid=h)
        add("tdh_mng_key_config", 1, td=td)
        add("tdh_mng_key_config", 3, td=td)
        add("tdh_mng_addcx", td=td, page=f"{t}cs0")
        add("tdh_mng_addcx", td=td, page=f"{t}cs1")
        add("tdh_mng_init", td=td)
        for i, cpu in ((0, 0), (1, 2)):
            add("tdh_vp_create", td=td, vp=f"{t}vp{i}", page=f"{t}v{i}")
            add("tdh_vp_addcx", vp=f"{t}vp{i}", page=f"{t}x{i}")
            add("tdh_vp_init", cpu, vp=f"{t}vp{i}")
        add("tdh_mem_sept_add", td=td, gpa=0, level=2, page=f"{t}s2")
        add("tdh_mem_sept_add", td=td, gpa=0, level=1, page=f"{t}s1")
        add("tdh_mem_page_add", td=td, gpa=0, page=f"{t}m0")
        add("tdh_mr_finalize", td=td)
    for t in ("a", "b"):
        add("tdh_vp_enter", 0, vp=f"{t}vp0")
        add("tdh_vp_enter", 2, vp=f"{t}vp1")
        add("tdh_mem_page_aug", 1, td=f"td_{t}", gpa=0x1000, page=f"{t}m1")  # cpu 0, 2 busy
        add("guest_accept", vp=f"{t}vp1", gpa=0x1000)
        add("td_exit", vp=f"{t}vp0")
        add("td_exit", vp=f"{t}vp1")
        # vp1 migrates from package 1 (cpu 2) to package 0 (cpu 1)
        add("tdh_vp_flush", 2, vp=f"{t}vp1")
        add("tdh_vp_enter", 1, vp=f"{t}vp1")
        add("td_exit", vp=f"{t}vp1")
    # td_a drops its accepted page at run time
    add("tdh_mem_range_block", td="td_a", gpa=0x1000, level=0)
    add("tdh_mem_track", td="td_a")
    add("tdh_mem_page_remove", td="td_a", gpa=0x1000, level=0)
    add("tdh_phymem_page_wbinvd_hkid", hkid=1, page="am1")
    add("clear_page", page="am1")
    add("page_free", page=["am1"])
    add("page_alloc", page=["am1"])  # the kernel reuses it
    add("host_write", 2, page="am1")
    # a third TD fails half way (two of two TDCS pages never added: only one)
    add("hkid_alloc", hkid=3)
    add("page_alloc", page=["ctdr", "ccs0", "ccs1"])
    add("tdh_mng_create", td="td_c", page="ctdr", hkid=3)
    add("tdh_mng_key_config", 0, td="td_c")
    add("tdh_mng_key_config", 2, td="td_c")
    add("tdh_mng_addcx", td="td_c", page="ccs0")
    add("page_free", page=["ccs1"])  # never handed to the module
    # teardown of all three: flush every vCPU where it is associated, then one CACHE.WB per
    # package serves every FLUSHED HKID at once
    for t in ("a", "b"):
        add("tdh_vp_flush", 0, vp=f"{t}vp0")
        add("tdh_vp_flush", 1, vp=f"{t}vp1")
        add("tdh_mng_vpflushdone", td=f"td_{t}")
    add("tdh_mng_vpflushdone", td="td_c")
    add("tdh_phymem_cache_wb", 0, resume=0)
    add("tdh_phymem_cache_wb", 3, resume=0)
    for t, h in (("a", 1), ("b", 2), ("c", 3)):
        add("tdh_mng_key_freeid", td=f"td_{t}")
        add("hkid_free", hkid=h)
    for pg in ["ax0", "av0", "ax1", "av1", "as1", "as2", "am0", "acs0", "acs1",
               "bx0", "bv0", "bx1", "bv1", "bs1", "bs2", "bm0", "bm1", "bcs0", "bcs1", "ccs0"]:
        add("tdh_phymem_page_reclaim", page=pg)
        add("clear_page", page=pg)
        add("page_free", page=[pg])
    for t in ("a", "b", "c"):
        add("tdh_phymem_page_reclaim", page=f"{t}tdr")
        add("tdh_phymem_page_wbinvd_tdr", td=f"td_{t}")
        add("clear_page", page=f"{t}tdr")
        add("page_free", page=[f"{t}tdr"])
    add("page_free", page=["am1"])
    add("check_no_leak")
    statuses = run(ex, L)
    for (name, ops, cpu), st in zip(L, statuses):
        assert st in (None, "TDX_SUCCESS"), f"{name} {ops} cpu={cpu}: {st}"
    ex.finish()
    assert ex.consequences == []
    assert ex.host_events == []
