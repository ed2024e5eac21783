"""vCPUs: KVM_CREATE_VCPU + KVM_TDX_INIT_VCPU (``tdx_td_vcpu_init``, ``tdx_vcpu_init``) as
steps of the ``vm`` thread; ``tdx_vcpu_load`` (``vcpu_load``); and each vCPU's own thread
(KVM_RUN: load onto a CPU, ``tdx_vcpu_run``, the guest's exits and ACCEPTs, the EPT
violation's AUG from ``memory.py``, closing the fd).  arch/x86/kvm/vmx/tdx.c."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tdxcheck.model.actions import Action
from tdxcheck.model.enums import SeptState
from tdxcheck.model.status import status_class

from .config import _BUSY, _NOT_ASSOC, TD_STATE_RUNNABLE, V_DONE
from .memory import aug_edges
from .move import OpFn, _Disabled, _Move

if TYPE_CHECKING:
    from .host import KvmHost


def init_vcpus(k: KvmHost, op: OpFn) -> None:
    """KVM_CREATE_VCPU and KVM_TDX_INIT_VCPU of each vCPU, on the ``vm`` thread."""
    tdr = k.TDR
    for v in range(k.nvp):
        vpr, cxs = k.VPR[v], k.CX[v]
        vc = k.act("TDH.VP.CREATE", vp=v, tdvpr=vpr, tdr=tdr)

        def vp_create(mv: _Move, v: int = v, vpr: int = vpr, cxs: list[int] = cxs,
                      vc: Action = vc) -> None:
            # kvm_arch_vcpu_create: vcpu_load on cpu0 puts the vCPU on cpu0's
            # associated_tdvcpus list (no SEAMCALL: vcpu->cpu was -1)
            mv[k.VCPU[v]] = 1
            for pgx in [vpr, *cxs]:
                mv.host(k.act("page_alloc", page=pgx))
            if mv.call(vc, faultable=True):
                mv.error("tdx_td_vcpu_init: tdh_vp_create")
                for pgx in [vpr, *cxs]:  # the module took none of them
                    mv.host(k.act("page_free", page=pgx))
                mv.goto("destroy.gmem")
        op(f"vcpu{v}.create", f"kvm_vm_ioctl_create_vcpu(vcpu{v}) on cpu0; "
           f"tdx_td_vcpu_init: alloc_page() for the TDVPR and TDCX pages, tdh_vp_create()",
           vp_create, vc)
        for i, cx in enumerate(cxs):
            va = k.act("TDH.VP.ADDCX", page=cx, tdvpr=vpr)

            def vp_addcx(mv: _Move, i: int = i, cxs: list[int] = cxs,
                         va: Action = va) -> None:
                if mv.call(va, faultable=True):
                    mv.error("tdx_td_vcpu_init: tdh_vp_addcx")
                    for pgx in cxs[i:]:  # pages >= i were not added
                        mv.host(k.act("page_free", page=pgx))
                    mv.goto("destroy.gmem")
            op(f"vcpu{v}.addcx{i}", f"tdx_td_vcpu_init: tdh_vp_addcx(vcpu{v}, TDCX {i})",
               vp_addcx, va)

        def vp_init(mv: _Move, v: int = v, vpr: int = vpr) -> None:
            # the ioctl thread may be preempted (preemption is enabled once the
            # mmu_lock guard around VP.INIT ends) and resume on another CPU before
            # or after the VMCS writes: kvm_sched_in -> tdx_vcpu_load while KVM's
            # vCPU state is still UNINITIALIZED, so tdx_flush_vp skips TDH.VP.FLUSH
            where, _, to = mv.tag.partition(":cpu")
            a = k.act("TDH.VP.INIT", cpu=mv[k.VCPU[v]] - 1, tdvpr=vpr)
            if mv.call(a):
                mv.error("tdx_td_vcpu_init: tdh_vp_init")
                mv.goto("destroy.gmem")
                return
            if where == "before VP.WR":
                vcpu_load(k, mv, v, int(to))
            # tdx_vcpu_init: td_vmcs_write16/64 and td_vmcs_setbit32 (three TDH.VP.WR on
            # vcpu->cpu, one here: they pass the same checks); a failure is
            # tdh_vp_wr_failed's KVM_BUG_ON, and tdx_vcpu_init goes on regardless
            wr = k.act("TDH.VP.WR", cpu=mv[k.VCPU[v]] - 1, tdvpr=vpr)
            wr_failed = bool(mv.call(wr))
            if wr_failed:
                mv.error("tdx_vcpu_init: tdh_vp_wr (td_vmcs_write)")
            if where == "after VP.WR":
                vcpu_load(k, mv, v, int(to))
            mv[k.VINIT[v]] = 1  # tdx->state = VCPU_TD_STATE_INITIALIZED
            if wr_failed:
                mv.goto("destroy.gmem")  # the VM is dead: every later ioctl fails
        tags = ("",) + tuple(f"{w}:cpu{c}" for w in ("before VP.WR", "after VP.WR")
                             for c in range(k.cpus)) if k.preempt_init else ("",)
        op(f"vcpu{v}.init", f"tdx_td_vcpu_init: tdh_vp_init(vcpu{v}) on the vCPU's CPU "
           "under mmu_lock; tdx_vcpu_init: td_vmcs_write (TDH.VP.WR); state := "
           "VCPU_TD_STATE_INITIALIZED", vp_init, tags=tags)


def vcpu_load(k: KvmHost, mv: _Move, v: int, c: int) -> None:
    """kvm_arch_vcpu_load(vcpu, c) -> tdx_vcpu_load: ``if (vcpu->cpu == cpu ||
    !is_hkid_assigned) return;`` else tdx_flush_vp_on_cpu (an IPI to the old CPU runs
    tdx_flush_vp there: TDH.VP.FLUSH only once KVM's vCPU state is INITIALIZED,
    TDX_VCPU_NOT_ASSOCIATED counts as success, then tdx_disassociate_vp), list_add on
    cpu c; kvm_arch_vcpu_load sets vcpu->cpu = cpu.  Reached from vcpu_load() and from
    kvm_sched_in() (the preempt notifier), so on every CPU change of a thread that has
    the vCPU loaded."""
    if mv[k.VCPU[v]] == c + 1:
        raise _Disabled
    old = mv[k.VCPU[v]] - 1
    if mv[k.HK] and old >= 0 and not k.mut("migrate_without_flush"):
        if mv[k.VINIT[v]]:
            st = mv.call(k.act("TDH.VP.FLUSH", cpu=old, tdvpr=k.VPR[v]))
            if st and status_class(st) != _NOT_ASSOC:
                mv.error("tdx_flush_vp: tdh_vp_flush")
        mv[k.VCPU[v]] = 0  # tdx_disassociate_vp: vcpu->cpu = -1
    mv[k.VCPU[v]] = c + 1  # list_add on cpu c; vcpu->cpu = cpu


def vcpu_thread(k: KvmHost, v: int, add: Callable[..., None]) -> None:
    """The ``vcpuN`` thread (KVM_RUN): its edges, in a fixed order."""
    vpr = k.VPR[v]
    for c in range(k.cpus):
        def load(mv: _Move, c: int = c) -> None:
            if mv.get("in_guest", v):
                raise _Disabled
            vcpu_load(k, mv, v, c)
        add(f"vcpu_load(vcpu{v}, cpu{c}) -> tdx_vcpu_load: tdx_flush_vp_on_cpu(old CPU)",
            load, None)

    enter_sample = k.act("TDH.VP.ENTER", cpu=0, tdvpr=vpr)

    def enter(mv: _Move) -> None:
        if (mv.get("in_guest", v) or mv[k.WAIT] or not mv[k.VINIT[v]]
                or mv[k.TDS] != TD_STATE_RUNNABLE or mv[k.DEAD]):
            raise _Disabled  # wait_for_sept_zap; tdx_vcpu_pre_run; KVM_RUN on a dead VM
        st = mv.call(k.act("TDH.VP.ENTER", cpu=mv[k.VCPU[v]] - 1, tdvpr=vpr),
                     faultable=True)
        if st and status_class(st) == _BUSY:
            return  # EXIT_FASTPATH_EXIT_HANDLED: KVM re-enters later
        if st:
            mv.error("tdx_vcpu_run: tdh_vp_enter", bug=False)  # KVM_EXIT_INTERNAL_ERROR
            mv[k.VT[v]] = V_DONE  # userspace stops the vCPU
    add(f"tdx_vcpu_run(vcpu{v}): tdh_vp_enter() on vcpu->cpu", enter, enter_sample)

    reasons = ("normal", "td_fatal", "vcpu_fatal") if k.faults else ("normal",)
    for reason in reasons:
        def exit_(mv: _Move, reason: str = reason) -> None:
            if not mv.get("in_guest", v):
                raise _Disabled
            mv.host(k.act("td_exit", vp=v, reason=reason))
            if reason != "normal":
                mv.env()
        add(f"the guest exits (vcpu{v}, {reason})", exit_, None)

    for g, gpa in enumerate(k.u.gpas):
        def accept(mv: _Move, gpa: int = gpa) -> None:
            e = k.u.entry(gpa, 0)
            if not mv.get("in_guest", v) or \
                    mv.get("sept_state", 0, e) != SeptState.SEPT_PENDING:
                raise _Disabled
            mv.host(k.act("TDG.MEM.PAGE.ACCEPT", vp=v, gpa=gpa))
        add(f"the guest (vcpu{v}) accepts gpa 0x{gpa:x} (TDG.MEM.PAGE.ACCEPT)", accept,
            None)

        aug_edges(k, v, g, gpa, add)

    def close(mv: _Move) -> None:
        if mv.get("in_guest", v):
            raise _Disabled
        mv[k.VT[v]] = V_DONE
    add(f"userspace closes the vcpu{v} fd", close, None)
