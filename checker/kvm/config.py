"""The kvm host's configurations, KVM's error sites, the mutation switches, and the
constants the kernel paths share (status classes, thread states, ``kvm_tdx->state``)."""

from __future__ import annotations

from dataclasses import dataclass

from tdxcheck.checker.scenario import InputError
from tdxcheck.model.state import Platform, Universe
from tdxcheck.model.status import Status

# --------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class KvmConfig:
    """A named configuration of the kvm host: one TD, its vCPUs, a guest_memfd pool."""

    name: str
    platform: Platform
    vps: int
    guest_pages: int  # guest_memfd folios the guest's private memory can use
    gpas: tuple[int, ...]  # private GPAs; the first is populated at build time
    zaps: int  # runtime zaps (PUNCH_HOLE) the zap thread may do

    def universe(self) -> Universe:
        p = self.platform
        pages = ["tdr", *(f"cs{i}" for i in range(p.tdcs_pages))]
        for v in range(self.vps):
            pages.append(f"vpr{v}")
            pages += [f"cx{v}_{i}" for i in range(p.tdcx_pages)]
        pages += [f"sept{lv}" for lv in range(p.sept_levels - 1, 0, -1)]
        pages += [f"m{i}" for i in range(self.guest_pages)]
        return Universe(p, ("td0",), tuple(f"vp{v}" for v in range(self.vps)), tuple(pages),
                        self.gpas)

    def describe(self) -> str:
        p = self.platform
        return (f"{self.name}: 1 TD, {self.vps} vCPU(s), {p.packages} package(s) x "
                f"{p.cpus_per_package} CPU(s), {p.hkids - 1} private HKID(s), TDCS "
                f"{p.tdcs_pages}, TDCX {p.tdcx_pages}, S-EPT depth {p.sept_levels}, GPAs "
                f"{[hex(g) for g in self.gpas]}, {self.guest_pages} guest_memfd page(s), "
                f"{self.zaps} runtime zap(s)")


def _plat(**kw: int) -> Platform:
    base = {"hkids": 2, "tdcs_pages": 1, "tdcx_pages": 0, "max_vcpus": 1, "sept_levels": 2}
    base.update(kw)
    return Platform(**base)


KVM_CONFIGS: dict[str, KvmConfig] = {
    # two CPUs on one package: migration, one CACHE.WB
    "tiny": KvmConfig("tiny", _plat(packages=1, cpus_per_package=2), vps=1, guest_pages=1,
                      gpas=(0x0,), zaps=1),
    # two packages of one CPU (migration crosses packages), a TDCX page, a second GPA
    # faulted in at run time (PAGE.AUG), two guest_memfd pages, two runtime zaps
    "default": KvmConfig("default", _plat(packages=2, cpus_per_package=1, tdcx_pages=1),
                         vps=1, guest_pages=2, gpas=(0x0, 0x1000), zaps=2),
    # two vCPUs: one can be in the guest while the other runs KVM code (the kick,
    # wait_for_sept_zap and the guest-held S-EPT locks matter)
    "large": KvmConfig("large", _plat(packages=2, cpus_per_package=1, tdcx_pages=1,
                                      max_vcpus=2), vps=2, guest_pages=2,
                       gpas=(0x0, 0x1000), zaps=2),
}


def kvm_config(name: str) -> KvmConfig:
    if name not in KVM_CONFIGS:
        raise InputError(f"unknown kvm configuration {name!r} (have: {', '.join(KVM_CONFIGS)})")
    return KVM_CONFIGS[name]


# --------------------------------------------------------------------------- KVM's error sites

#: every place where KVM's code reports an error (KVM_BUG_ON / TDX_BUG_ON / WARN / -errno);
#: a path's ``errors`` cell is a bitmap over this tuple
ERROR_SITES: tuple[str, ...] = (
    "__tdx_td_init: tdh_mng_create",
    "__tdx_td_init: tdh_mng_key_config",
    "__tdx_td_init: tdh_mng_addcx",
    "__tdx_td_init: tdh_mng_init",
    "tdx_td_init: td_tdcs_exec_read64 (tdh_mng_rd)",
    "tdx_td_vcpu_init: tdh_vp_create",
    "tdx_td_vcpu_init: tdh_vp_addcx",
    "tdx_td_vcpu_init: tdh_vp_init",
    "tdx_vcpu_init: tdh_vp_wr (td_vmcs_write)",
    "tdx_sept_link_private_spt: tdh_mem_sept_add",
    "tdx_gmem_post_populate: tdh_mem_page_add",
    "tdx_gmem_post_populate: tdh_mr_extend",
    "tdx_td_finalize: tdh_mr_finalize",
    "tdx_vcpu_run: tdh_vp_enter",
    "tdx_flush_vp: tdh_vp_flush",
    "tdx_mem_page_aug: tdh_mem_page_aug",
    "tdx_sept_remove_private_spte: HKID not assigned",
    "tdx_sept_zap_private_spte: tdh_mem_range_block",
    "tdx_track: tdh_mem_track",
    "tdx_sept_drop_private_spte: tdh_mem_page_remove",
    "tdx_sept_drop_private_spte: tdh_phymem_page_wbinvd_hkid",
    "tdx_mmu_release_hkid: tdh_mng_vpflushdone (TDX_FLUSHVP_NOT_DONE)",
    "tdx_mmu_release_hkid: tdh_mng_vpflushdone",
    "smp_func_do_phymem_cache_wb: tdh_phymem_cache_wb",
    "tdx_mmu_release_hkid: tdh_mng_key_freeid",
    "tdx_reclaim_control_page: tdh_phymem_page_reclaim",
    "tdx_sept_free_private_spt: HKID still assigned",
    "tdx_sept_free_private_spt: tdh_phymem_page_reclaim",
    "tdx_reclaim_td_control_pages: tdh_phymem_page_reclaim (TDR)",
    "tdx_reclaim_td_control_pages: tdh_phymem_page_wbinvd_tdr",
    # the preemption mode only (``KvmHost(preempt=...)``): kvm_mmu_reload's first root load
    "tdx_load_mmu_pgd: tdh_vp_wr (td_vmcs_write64 SHARED_EPT_POINTER)",
)
_SITE = {s: i for i, s in enumerate(ERROR_SITES)}

#: the error sites where KVM decides to leak (it stops giving pages or the HKID back);
#: a leak is named after the first of them on its path
LEAK_SITES: frozenset[str] = frozenset({
    "tdx_sept_remove_private_spte: HKID not assigned",
    "tdx_sept_zap_private_spte: tdh_mem_range_block",
    "tdx_sept_drop_private_spte: tdh_mem_page_remove",
    "tdx_sept_drop_private_spte: tdh_phymem_page_wbinvd_hkid",
    "tdx_mmu_release_hkid: tdh_mng_vpflushdone (TDX_FLUSHVP_NOT_DONE)",
    "tdx_mmu_release_hkid: tdh_mng_vpflushdone",
    "tdx_mmu_release_hkid: tdh_mng_key_freeid",
    "tdx_reclaim_control_page: tdh_phymem_page_reclaim",
    "tdx_sept_free_private_spt: HKID still assigned",
    "tdx_sept_free_private_spt: tdh_phymem_page_reclaim",
    "tdx_reclaim_td_control_pages: tdh_phymem_page_reclaim (TDR)",
    "tdx_reclaim_td_control_pages: tdh_phymem_page_wbinvd_tdr",
})

#: every mutation switch this package reads (each in one place); ``analyses/mutants.py``
#: names them
SWITCHES: tuple[str, ...] = (
    "skip_cache_wb_one_package", "free_hkid_on_freeid_failure", "flush_vp_wrong_cpu",
    "skip_wbinvd_after_remove", "clear_before_wbinvd", "skip_tdr_global_wbinvd",
    "reclaim_tdr_before_tdcs", "skip_track_before_remove", "skip_kick_after_track",
    "skip_clflush_page_aug", "skip_clear_after_reclaim", "migrate_without_flush",
    "hkid_free_before_freeid", "skip_vpflushdone", "vm_destroy_before_sept_free",
    "vcpu_free_without_reclaim", "release_hkid_before_gmem_zap", "skip_vp_flush_on_release",
    "ignore_flushvp_not_done", "free_page_after_failed_reclaim",
    "free_sept_page_after_failed_reclaim",
)

#: the error sites that print nothing and return nothing to userspace: what KVM does there
#: is silent (tdx_mmu_release_hkid's ``if (err == TDX_FLUSHVP_NOT_DONE) goto out;``); every
#: other site is a KVM_BUG_ON/TDX_BUG_ON (a WARN, the VM bugged), a pr_err/WARN, or an error
#: code returned to userspace
SILENT_SITES: frozenset[str] = frozenset({
    "tdx_mmu_release_hkid: tdh_mng_vpflushdone (TDX_FLUSHVP_NOT_DONE)",
})

#: candidate fixes of the KVM_TDX_INIT_VCPU preemption window (``KvmHost(fix=...)``); not
#: mutants: each is a patch one would send, read once in this package (``k.fixed(...)``)
FIXES: dict[str, str] = {
    "init_vcpu_preempt_off": (
        "keep preemption disabled from TDH.VP.INIT through tdx->state = "
        "VCPU_TD_STATE_INITIALIZED (preempt_disable() before the mmu_lock guard in "
        "tdx_td_vcpu_init, preempt_enable() after the state store in tdx_vcpu_init)"),
    "state_under_mmu_lock": (
        "set tdx->state = VCPU_TD_STATE_INITIALIZED inside tdx_td_vcpu_init's "
        "scoped_guard(write_lock, &kvm->mmu_lock), right after tdh_vp_init() succeeds, so "
        "the vCPU is flush-eligible before preemption is possible again"),
    "flush_if_created": (
        "tdx_flush_vp() tests whether TDH.VP.CREATE succeeded (a 'created' flag) instead of "
        "tdx->state != VCPU_TD_STATE_UNINITIALIZED"),
    "flush_if_tdvps_complete": (
        "tdx_flush_vp() tests whether the TDVPS is complete (TDH.VP.CREATE and every "
        "TDH.VP.ADDCX succeeded) instead of tdx->state != VCPU_TD_STATE_UNINITIALIZED"),
}

#: the preemption modes of ``KvmHost(preempt=...)``: ``all`` (every reschedule point of a
#: thread that has a vCPU loaded) and ``init_vcpu`` (only those inside the KVM_TDX_INIT_VCPU
#: window, from TDH.VP.INIT to the state store: a subset)
PREEMPT_MODES: tuple[str, ...] = ("all", "init_vcpu")

# ``vcpuN.window``: what a migration inside the KVM_TDX_INIT_VCPU window did to vCPU N
# (preemption mode only): KVM's books (vcpu->cpu) and the module's association disagree
# since a migration before or between the VMCS writes (P1-P3) / after them (P4); or they
# agree again since this step (a transient mark, cleared by the next step)
W_NONE, W_BEFORE, W_AFTER, W_HEALED_BEFORE, W_HEALED_AFTER = range(5)

_BUSY = int(Status.TDX_OPERAND_BUSY)
_NOT_ASSOC = int(Status.TDX_VCPU_NOT_ASSOCIATED)
_FLUSHVP_NOT_DONE = int(Status.TDX_FLUSHVP_NOT_DONE)
_INTERRUPTED = int(Status.TDX_INTERRUPTED_RESUMABLE)
_NO_HKID_READY = int(Status.TDX_NO_HKID_READY_TO_WBCACHE)
_RND = int(Status.TDX_RND_NO_ENTROPY)

# zap machine program counter (``mmu`` thread)
Z_IDLE, Z_BLOCK_RETRY, Z_TRACK, Z_TRACK_RETRY, Z_REMOVE, Z_REMOVE_RETRY, Z_DROP = range(7)
# vCPU thread state
V_NOT_STARTED, V_RUN, V_DONE = range(3)
# KVM's kvm_tdx->state
TD_STATE_UNINITIALIZED, TD_STATE_INITIALIZED, TD_STATE_RUNNABLE = range(3)


#: the Linux wrapper of each leaf (the name a trace file uses)
_WRAPPER = {
    "TDH.MNG.CREATE": "tdh_mng_create", "TDH.MNG.KEY.CONFIG": "tdh_mng_key_config",
    "TDH.MNG.ADDCX": "tdh_mng_addcx", "TDH.MNG.INIT": "tdh_mng_init",
    "TDH.MNG.RD": "tdh_mng_rd", "TDH.VP.CREATE": "tdh_vp_create",
    "TDH.VP.ADDCX": "tdh_vp_addcx", "TDH.VP.INIT": "tdh_vp_init", "TDH.VP.WR": "tdh_vp_wr",
    "TDH.VP.ENTER": "tdh_vp_enter", "TDH.VP.FLUSH": "tdh_vp_flush",
    "TDH.MNG.VPFLUSHDONE": "tdh_mng_vpflushdone", "TDH.PHYMEM.CACHE.WB": "tdh_phymem_cache_wb",
    "TDH.MNG.KEY.FREEID": "tdh_mng_key_freeid",
    "TDH.PHYMEM.PAGE.RECLAIM": "tdh_phymem_page_reclaim",
    "TDH.MEM.SEPT.ADD": "tdh_mem_sept_add", "TDH.MEM.PAGE.ADD": "tdh_mem_page_add",
    "TDH.MEM.PAGE.AUG": "tdh_mem_page_aug", "TDH.MEM.RANGE.BLOCK": "tdh_mem_range_block",
    "TDH.MEM.TRACK": "tdh_mem_track", "TDH.MEM.PAGE.REMOVE": "tdh_mem_page_remove",
    "TDH.MR.EXTEND": "tdh_mr_extend", "TDH.MR.FINALIZE": "tdh_mr_finalize",
    "TDG.MEM.PAGE.ACCEPT": "guest_accept",
}
