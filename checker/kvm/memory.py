"""Private memory: KVM_TDX_INIT_MEM_REGION (``tdx_sept_link_private_spt``: SEPT.ADD for the
missing levels, ``tdx_gmem_post_populate``: PAGE.ADD and MR.EXTEND) as steps of the ``vm``
thread, and the private EPT violation at run time (guest_memfd allocates a folio,
``tdx_mem_page_aug``) as edges of a vCPU thread.  arch/x86/kvm/vmx/tdx.c."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tdxcheck.model.actions import Action
from tdxcheck.model.enums import HostPage
from tdxcheck.model.status import status_class

from .config import _BUSY, TD_STATE_RUNNABLE
from .move import OpFn, _Disabled, _Move

if TYPE_CHECKING:
    from .host import KvmHost


def init_mem_region(k: KvmHost, op: OpFn) -> None:
    """KVM_TDX_INIT_MEM_REGION for the first GPA, measured (``vm`` thread)."""
    tdr = k.TDR
    g0 = k.u.gpas[0]
    # the preemption mode: the ioctl runs on vcpu0 with it loaded (tdx_vcpu_unlocked_ioctl:
    # vcpu_load; QEMU issues it on its first vCPU), and its first step loads vcpu0's root
    loaded = 0 if k.preempt else None
    if k.preempt:
        def load_pgd(mv: _Move) -> None:
            if not load_mmu_pgd(k, mv, 0):
                # kvm_tdp_mmu_map_private_pfn: kvm_test_request(KVM_REQ_VM_DEAD) -> -EIO
                mv.goto("destroy.gmem")
        op("mem.load_pgd", "KVM_TDX_INIT_MEM_REGION(vcpu0): kvm_gmem_populate -> "
           "tdx_gmem_post_populate -> kvm_tdp_mmu_map_private_pfn -> kvm_mmu_reload -> "
           "tdx_load_mmu_pgd: tdh_vp_wr(SHARED_EPT_POINTER) on vcpu->cpu", load_pgd,
           loaded=0, abandon="KVM_TDX_INIT_MEM_REGION")
    for lv, sp in k.SEPT.items():
        sa = k.act("TDH.MEM.SEPT.ADD", tdr=tdr, gpa=g0, level=lv, page=sp)

        def sept_add(mv: _Move, sp: int = sp, sa: Action = sa) -> None:
            mv.host(k.act("page_alloc", page=sp))  # the MMU's page cache
            st = mv.call(sa, faultable=True)
            if st:
                mv.error("tdx_sept_link_private_spt: tdh_mem_sept_add",
                         bug=status_class(st) != _BUSY)
                mv.host(k.act("page_free", page=sp))  # tdp_mmu_free_sp: never linked
                mv.goto("destroy.gmem")
        op(f"mem.sept_add{lv}", f"kvm_tdp_map_page -> tdx_sept_link_private_spt: "
           f"tdh_mem_sept_add(level {lv})", sept_add, sa, loaded=loaded)

    m0 = k.POOL[0]
    pa = k.act("TDH.MEM.PAGE.ADD", tdr=tdr, gpa=g0, page=m0)

    def page_add(mv: _Move) -> None:
        mv.host(k.act("page_alloc", page=m0))  # kvm_gmem_populate: the folio
        mv[k.GMEM[0]] = m0
        st = mv.call(pa, faultable=True)
        if st:
            mv.error("tdx_gmem_post_populate: tdh_mem_page_add",
                     bug=status_class(st) != _BUSY)
            mv.goto("destroy.gmem")
            return
        mv[k.MIRROR[0]] = m0
    op("mem.page_add", "tdx_gmem_post_populate: tdh_mem_page_add() while the mirror leaf "
       "is installed", page_add, pa, loaded=loaded)

    def mr_extend(mv: _Move) -> None:
        if mv.call(k.act("TDH.MR.EXTEND", tdr=tdr, gpa=g0)):
            mv.error("tdx_gmem_post_populate: tdh_mr_extend")
            mv.goto("destroy.gmem")
    op("mem.mr_extend", "tdx_gmem_post_populate: tdh_mr_extend() "
       "(KVM_TDX_MEASURE_MEMORY_REGION)", mr_extend, loaded=loaded)


def load_mmu_pgd(k: KvmHost, mv: _Move, v: int) -> bool:
    """kvm_mmu_reload -> kvm_mmu_load -> kvm_mmu_load_pgd -> vt_load_mmu_pgd ->
    tdx_load_mmu_pgd: ``td_vmcs_write64(to_tdx(vcpu), SHARED_EPT_POINTER, root_hpa)``, a
    TDH.VP.WR on the current CPU, the first time the vCPU's root is loaded (the first
    KVM_TDX_INIT_MEM_REGION on it: kvm_tdp_mmu_map_private_pfn, or its first KVM_RUN:
    vcpu_enter_guest, before preempt_disable()).  A failure is tdh_vp_wr_failed's
    KVM_BUG_ON.  Tree: kvm-x86 @09c6f74e (tdx_gmem_post_populate ->
    kvm_tdp_mmu_map_private_pfn, whose kvm_mmu_reload is in "[PATCH v3 04/25] KVM: x86/mmu:
    Add dedicated API to map guest_memfd pfn into TDP MMU"); the 6.16-6.18 shape
    (torvalds/linux @3829d81b) calls kvm_mmu_reload() in tdx_vcpu_init_mem_region itself,
    before the same SEPT.ADD.  Modelled in the preemption mode only: without it the vCPU is always
    associated with vcpu->cpu or with no LP here, and the VP.WR changes nothing VP.ENTER
    would not."""
    mv[k.ROOT[v]] = 1
    wr = k.act("TDH.VP.WR", cpu=mv[k.VCPU[v]] - 1, tdvpr=k.VPR[v])
    if mv.call(wr):
        mv.error("tdx_load_mmu_pgd: tdh_vp_wr (td_vmcs_write64 SHARED_EPT_POINTER)")
        return False
    return True


def aug_edges(k: KvmHost, v: int, g: int, gpa: int, add: Callable[..., None]) -> None:
    """``tdx_handle_ept_violation`` on vCPU ``v`` for GPA ``gpa``: one edge per guest_memfd
    folio the fault may get (``kvm_gmem_get_pfn``), then ``tdx_mem_page_aug``."""
    for page in k.POOL:
        aug_sample = k.act("TDH.MEM.PAGE.AUG", tdr=k.TDR, gpa=gpa, page=page,
                           clflush=not k.mut("skip_clflush_page_aug"))

        def fault_in(mv: _Move, g: int = g, gpa: int = gpa, page: int = page,
                     aug: Action = aug_sample) -> None:
            if (mv.get("in_guest", v) or mv[k.TDS] != TD_STATE_RUNNABLE
                    or mv[k.DEAD] or mv[k.MIRROR[g]] or mv[k.ZPC] or not mv[k.HK]):
                raise _Disabled  # mmu_lock: no fault while a zap holds it
            have = mv[k.GMEM[g]]
            if have and have != page:
                raise _Disabled
            if not have:
                if mv.get("host", page) != HostPage.KERNEL or any(
                        mv[k.GMEM[i]] == page for i in range(k.ngpa)):
                    raise _Disabled
                mv.host(k.act("page_alloc", page=page))  # kvm_gmem_get_pfn: a folio
                mv[k.GMEM[g]] = page
            st = mv.call(aug, faultable=True)
            if st and status_class(st) == _BUSY:
                return  # -EBUSY -> RET_PF_RETRY: the local retry loop tries again
            if st:
                mv.error("tdx_mem_page_aug: tdh_mem_page_aug")
                return
            mv[k.MIRROR[g]] = page
        add(f"tdx_handle_ept_violation(vcpu{v}, gpa 0x{gpa:x}): guest_memfd folio "
            f"{k.u.page_name(page)}, tdx_mem_page_aug()", fault_in, aug_sample)
