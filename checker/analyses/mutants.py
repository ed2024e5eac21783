"""``tdxcheck mutants``: seeded bugs in the kvm host, each one a one-line change.

A mutant is ``KvmHost`` with one switch of ``kvm.SWITCHES`` flipped; the switch is read in
exactly one place in ``checker/kvm/``, where a real or plausible patch would change one
line.  Each mutant names the invariant that must catch it.  A mutant that survives is a
hole in the model or in the properties, to be fixed, not dropped.

Where KVM's bug makes a module check refuse the call, the module keeps its own invariants and
the bug shows as KVM's error path leaking on a run with no injected fault: ``no-leak``.
(Removing that module check instead shows the invariant it protects: ``tdxcheck ablate``.)

``EQUIVALENT`` lists mutations the issue suggests that cannot change what any run of KVM's
protocol breaks: the line they change is only reached on an error path KVM never takes, or
(``ignore_flushvp_not_done`` with the INIT_VCPU preemption window) a module check refuses
the call the mutant goes on to make (``equivalence_evidence`` checks both, with every fault
injected, and that ablating that module check kills the mutant).

Mutants run without the preemption mode (``KvmHost(preempt=None)``), where the reference
KVM breaks no invariant; with it the reference itself leaks and bugs the VM (the
KVM_TDX_INIT_VCPU window, see ``checker/kvm/``) and a ``no-leak`` kill would say nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tdxcheck.checker.explore.bfs import Limits, explore
from tdxcheck.checker.kvm import SWITCHES, KvmHost, kvm_config
from tdxcheck.checker.scenario import InputError


@dataclass(frozen=True)
class Mutant:
    name: str  # the switch in kvm.SWITCHES
    description: str  # the patch, in words, and the invariant that catches it
    invariant: str
    faults: bool = False  # the bug needs a module fault (an error path) to show


MUTANTS: tuple[Mutant, ...] = (
    Mutant("skip_cache_wb_one_package",
           "tdx_mmu_release_hkid skips TDH.PHYMEM.CACHE.WB on the last package: KEY.FREEID "
           "fails (TDX_WBCACHE_NOT_COMPLETE) and KVM leaks the HKID and every page: no-leak",
           "no-leak"),
    Mutant("free_hkid_on_freeid_failure",
           "tdx_hkid_free() also when TDH.MNG.KEY.FREEID fails (after CACHE.WB gave up): the "
           "HKID goes back to the pool while the KOT still holds it: keyid-after-vpflushdone",
           "keyid-after-vpflushdone", faults=True),
    Mutant("flush_vp_wrong_cpu",
           "tdx_mmu_release_hkid flushes a vCPU on the wrong CPU: TDH.VP.FLUSH says "
           "NOT_ASSOCIATED (ignored), VPFLUSHDONE says FLUSHVP_NOT_DONE, the HKID and every "
           "page leak: no-leak", "no-leak"),
    Mutant("skip_wbinvd_after_remove",
           "tdx_sept_drop_private_spte skips TDH.PHYMEM.PAGE.WBINVD after PAGE.REMOVE: the "
           "page is cleared and freed with dirty lines under the HKID: flush-before-reclaim",
           "flush-before-reclaim"),
    Mutant("clear_before_wbinvd",
           "tdx_sept_drop_private_spte clears the removed page before PAGE.WBINVD: MOVDIR64B "
           "writes it while HKID lines remain: flush-before-reclaim", "flush-before-reclaim"),
    Mutant("skip_tdr_global_wbinvd",
           "tdx_reclaim_td_control_pages skips tdh_phymem_page_wbinvd_tdr: the TDR is cleared "
           "and freed with dirty lines under the module's global KeyID: flush-before-reclaim",
           "flush-before-reclaim"),
    Mutant("reclaim_tdr_before_tdcs",
           "tdx_reclaim_td_control_pages reclaims the TDR before the TDCS pages: RECLAIM says "
           "TD_ASSOCIATED_PAGES_EXIST, KVM returns and the TDR and TDCS pages leak: no-leak",
           "no-leak"),
    Mutant("skip_track_before_remove",
           "tdx_sept_remove_private_spte drops tdx_track()'s TDH.MEM.TRACK: PAGE.REMOVE says "
           "TLB_TRACKING_NOT_DONE, KVM_BUG_ON, the pinned page and then the TDR leak: no-leak",
           "no-leak"),
    Mutant("skip_kick_after_track",
           "tdx_track drops the kick (KVM_REQ_OUTSIDE_GUEST_MODE) after TDH.MEM.TRACK: a vCPU "
           "still in the guest keeps the old epoch busy, PAGE.REMOVE fails, the page and the "
           "TDR leak: no-leak", "no-leak"),
    Mutant("skip_clflush_page_aug",
           "tdh_mem_page_aug hands the guest_memfd folio over without tdx_clflush_page(): the "
           "module takes a page with dirty KeyID-0 lines: flush-before-alloc",
           "flush-before-alloc"),
    Mutant("skip_clear_after_reclaim",
           "tdx_reclaim_page drops tdx_clear_page(): a reclaimed control page goes back to the "
           "allocator without MOVDIR64B: clear-before-reuse", "clear-before-reuse"),
    Mutant("migrate_without_flush",
           "tdx_vcpu_load moves a vCPU to a new CPU without tdx_flush_vp_on_cpu(): VP.ENTER "
           "says VCPU_ASSOCIATED, teardown flushes the wrong CPU, VPFLUSHDONE fails and "
           "everything leaks: no-leak", "no-leak"),
    Mutant("hkid_free_before_freeid",
           "tdx_hkid_free() moved before tdh_mng_key_freeid() (right after VPFLUSHDONE): the "
           "HKID is back in the pool before CACHE.WB and FREEID: keyid-after-vpflushdone",
           "keyid-after-vpflushdone"),
    Mutant("skip_vpflushdone",
           "tdx_mmu_release_hkid skips TDH.MNG.VPFLUSHDONE: KEY.FREEID says "
           "LIFECYCLE_STATE_INCORRECT and KVM leaks the HKID and every page: no-leak",
           "no-leak"),
    Mutant("vm_destroy_before_sept_free",
           "kvm_arch_destroy_vm calls vm_destroy before kvm_mmu_uninit_vm (the order before "
           "\"KVM: x86: Free vCPUs before freeing VM state\"): the TDR still has S-EPT "
           "children, its RECLAIM fails and the TDR leaks: no-leak", "no-leak"),
    Mutant("vcpu_free_without_reclaim",
           "tdx_vcpu_free frees the TDVPR/TDCX pages with __free_page() without "
           "TDH.PHYMEM.PAGE.RECLAIM: the allocator gets pages the module owns: "
           "no-double-assignment", "no-double-assignment"),
    Mutant("release_hkid_before_gmem_zap",
           "vm_pre_destroy (tdx_mmu_release_hkid) runs before kvm_gmem_release zaps the "
           "private pages: the zap hits KVM_BUG_ON(!is_hkid_assigned), the page and the TDR "
           "leak: no-leak", "no-leak"),
    Mutant("skip_vp_flush_on_release",
           "tdx_mmu_release_hkid drops the tdx_flush_vp_on_cpu() loop: VPFLUSHDONE says "
           "FLUSHVP_NOT_DONE and the HKID and every page leak: no-leak", "no-leak"),
    Mutant("free_sept_page_after_failed_reclaim",
           "tdx_sept_free_private_spt frees the S-EPT page also when it could not reclaim it "
           "(the out: label moved above free_page()): after KEY.FREEID failed the HKID is "
           "still assigned, KVM_BUG_ON, and the allocator gets a page the module still owns "
           "as PT_EPT: no-double-assignment", "no-double-assignment", faults=True),
)

#: suggested mutations that no run of KVM's protocol can tell apart from KVM: (switch,
#: description, the KVM error site the changed line sits behind)
EQUIVALENT: tuple[tuple[str, str, str], ...] = (
    ("ignore_flushvp_not_done",
     ("tdx_mmu_release_hkid goes on to CACHE.WB and FREEID after TDX_FLUSHVP_NOT_DONE. "
      "Without the INIT_VCPU preemption window the line is unreachable: every vCPU KVM "
      "associated is flushed on its CPU just before, and TDH.VP.FLUSH cannot fail under "
      "KVM's locking (TDVPR exclusive, TDR shared: no other thread uses them, as "
      "tdx_flush_vp says). With the window (the preemption mode) the line is reached, but "
      "TDH.MNG.KEY.FREEID refuses a TD VPFLUSHDONE did not block (mng.key_freeid.blocked: "
      "TDX_LIFECYCLE_STATE_INCORRECT), so KVM leaks exactly what it leaks after goto out; "
      "with that module check ablated the mutant breaks keyid-after-vpflushdone"),
     "tdx_mmu_release_hkid: tdh_mng_vpflushdone (TDX_FLUSHVP_NOT_DONE)"),
    ("free_page_after_failed_reclaim",
     ("tdx_reclaim_control_page frees a TDCS/TDVPR/TDCX page whose RECLAIM failed: KVM "
      "reclaims control pages only when the HKID is no longer assigned, i.e. after a "
      "successful KEY.FREEID (TD_TEARDOWN), from the one thread running kvm_destroy_vm, so "
      "RECLAIM of such a page cannot fail (no BUSY: 'no possibility of contention', "
      "__tdx_reclaim_page). The same mutation at the S-EPT page, where the free is "
      "reachable after a failed FREEID, is free_sept_page_after_failed_reclaim"),
     "tdx_reclaim_control_page: tdh_phymem_page_reclaim"),
)

#: the module check whose removal turns an EQUIVALENT mutation into a kill (if any)
EQUIVALENT_GUARD: dict[str, str] = {"ignore_flushvp_not_done": "mng.key_freeid.blocked"}

assert {m.name for m in MUTANTS} | {e[0] for e in EQUIVALENT} == set(SWITCHES)


def run_mutant(m: Mutant, config_name: str = "tiny", limits: Limits | None = None,
               pinning: bool = True) -> dict[str, Any]:
    """Explore one mutant; the row of the mutants table."""
    t0 = time.monotonic()
    prog = KvmHost(kvm_config(config_name), faults=m.faults, mutant=m.name, pinning=pinning)
    r = explore(prog, limits or Limits(), stop_at_first=False)
    found = {cx.invariant: cx for cx in r.violations}
    shortest = min(r.violations, key=lambda c: (c.length, c.invariant), default=None)
    hit = found.get(m.invariant) or shortest
    from tdxcheck.checker.kvm import trace_of

    return {
        "name": m.name,
        "description": m.description,
        "killed": bool(r.violations),
        "invariant": hit.invariant if hit else None,
        "length": hit.length if hit else None,
        "expected": m.invariant,
        "also": {inv: cx.length for inv, cx in found.items() if hit and inv != hit.invariant},
        "faults": m.faults,
        "verdict": r.verdict,
        "states": r.states,
        "seconds": round(time.monotonic() - t0, 3),
        "trace": trace_of(prog, hit) if hit else [],
        "message": hit.message if hit else "",
    }


def run_mutants(config_name: str = "tiny", names: Sequence[str] | None = None,
                limits: Limits | None = None, pinning: bool = True,
                progress: Callable[[int, int, str], None] | None = None
                ) -> list[dict[str, Any]]:
    """Every mutant (or those named), one row each (see ``run_mutant``)."""
    chosen = [m for m in MUTANTS if names is None or m.name in names]
    if names is not None:
        unknown = set(names) - {m.name for m in MUTANTS}
        if unknown:
            raise InputError(f"unknown mutant(s): {', '.join(sorted(unknown))}")
    rows = []
    for i, m in enumerate(chosen):
        if progress is not None:
            progress(i, len(chosen), m.name)
        rows.append(run_mutant(m, config_name, limits, pinning))
    return rows


def equivalence_evidence(config_name: str = "tiny") -> list[dict[str, Any]]:
    """For each ``EQUIVALENT`` mutation, with every fault injected: whether KVM reaches the
    error site its changed line sits behind and whether the mutant is killed, once as
    modelled by default and once in the preemption mode (``preempt``, which opens the
    KVM_TDX_INIT_VCPU window: there "killed" means the mutant breaks an invariant the
    reference does not); and, where a module check makes the mutation harmless, whether
    ablating it kills the mutant."""
    from tdxcheck.checker.kvm import run_kvm

    def broken(mutant: str | None, preempt: bool, ablate: Sequence[str] = ()) -> set[str]:
        prog = KvmHost(kvm_config(config_name), faults=True, mutant=mutant,
                       preempt="all" if preempt else None, ablate=ablate)
        return {cx.invariant for cx in explore(prog, stop_at_first=False).violations}

    out = []
    for preempt in (False, True):
        ref = run_kvm(config_name, faults=True, preempt="all" if preempt else None)
        ref_broken = {v["invariant"] for v in ref.violations}
        for name, desc, site in EQUIVALENT:
            row: dict[str, Any] = {
                "name": name, "description": desc, "site": site, "preempt": preempt,
                "site_reached": ref.errors_reached.get(site) is not None,
                "killed": bool(broken(name, preempt) - ref_broken)}
            guard = EQUIVALENT_GUARD.get(name)
            if guard and preempt:
                row["guard"] = guard
                row["killed_without_guard"] = bool(
                    broken(name, preempt, [guard]) - broken(None, preempt, [guard]))
            out.append(row)
    return out


def mutants_table(rows: Sequence[dict[str, Any]]) -> str:
    w = max([len(r["name"]) for r in rows] + [6])
    iw = max([len(r["invariant"] or "-") for r in rows] + [9])
    out = [f"{'mutant':<{w}}  {'killed':<6}  {'invariant':<{iw}}  {'length':>6}  {'seconds':>7}"]
    for r in rows:
        killed = "yes" if r["killed"] else "NO"
        ln = r["length"] if r["length"] is not None else "-"
        out.append(f"{r['name']:<{w}}  {killed:<6}  {r['invariant'] or '-':<{iw}}  {ln:>6}  "
                   f"{r['seconds']:7.2f}")
    n = sum(r["killed"] for r in rows)
    out.append(f"{n}/{len(rows)} mutants killed")
    wrong = [r["name"] for r in rows if r["killed"] and r["invariant"] != r["expected"]]
    if wrong:
        out.append("killed by another invariant than described: " + ", ".join(wrong))
    return "\n".join(out)


def mutants_json(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"mutants": [{k: r[k] for k in ("name", "description", "killed", "invariant",
                                           "length")} for r in rows]}
