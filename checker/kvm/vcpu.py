"""vCPUs: KVM_CREATE_VCPU + KVM_TDX_INIT_VCPU (``tdx_td_vcpu_init``, ``tdx_vcpu_init``) as
steps of the ``vm`` thread; ``tdx_vcpu_load`` (``vcpu_load``); and each vCPU's own thread
(KVM_RUN: load onto a CPU, ``tdx_vcpu_run``, the guest's exits and ACCEPTs, the EPT
violation's AUG from ``memory.py``, closing the fd).  arch/x86/kvm/vmx/tdx.c."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tdxcheck.model.actions import Action
from tdxcheck.model.enums import PageType, SeptState
from tdxcheck.model.status import status_class

from .config import (
    _BUSY,
    _NOT_ASSOC,
    TD_STATE_RUNNABLE,
    V_DONE,
    W_AFTER,
    W_BEFORE,
    W_HEALED_AFTER,
    W_HEALED_BEFORE,
    W_NONE,
)
from .memory import aug_edges, load_mmu_pgd
from .move import OpFn, _Disabled, _Move

if TYPE_CHECKING:
    from .host import KvmHost


def init_vcpus(k: KvmHost, op: OpFn) -> None:
    """KVM_CREATE_VCPU and KVM_TDX_INIT_VCPU of each vCPU, on the ``vm`` thread.

    KVM_TDX_INIT_VCPU runs with the vCPU loaded: ``tdx_vcpu_unlocked_ioctl`` takes the VM
    state guard (kvm->lock, every vcpu->mutex, slots_lock: sleeping mutexes) and calls
    ``vcpu_load()`` (kvm-x86 @09c6f74e; linux-next @564aa69a is the same).  Without the
    preemption mode the rest of the ioctl after TDH.VP.ADDCX is one atomic step; with it
    (``k.preempt``) each SEAMCALL is a step, and the points between them are where the
    thread may be preempted and migrated (``KvmHost._preemption_edges``): before TDH.VP.INIT
    (harmless: TDH.VP.CREATE leaves the vCPU unassociated, tdh_vp_create.c), and the
    window P1-P4 from the end of the mmu_lock guard around tdh_vp_init() to
    ``tdx->state = VCPU_TD_STATE_INITIALIZED``."""
    tdr = k.TDR
    for v in range(k.nvp):
        vpr, cxs = k.VPR[v], k.CX[v]
        vc = k.act("TDH.VP.CREATE", vp=v, tdvpr=vpr, tdr=tdr)
        loaded = v if k.preempt else None

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
           vp_create, vc, abandon=f"KVM_CREATE_VCPU(vcpu{v})" if k.preempt and v else "")
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
               vp_addcx, va, loaded=loaded)

        if not k.preempt:
            def vp_init(mv: _Move, v: int = v, vpr: int = vpr) -> None:
                if not _vp_init(k, mv, v, vpr):
                    return
                # the three VMCS writes as one TDH.VP.WR: without preemption they pass
                # the same checks on the same CPU
                _vmcs_write(k, mv, v, vpr)
                _state_store(k, mv, v)
            op(f"vcpu{v}.init", f"tdx_td_vcpu_init: tdh_vp_init(vcpu{v}) on the vCPU's CPU "
               "under mmu_lock; tdx_vcpu_init: td_vmcs_write (TDH.VP.WR); state := "
               "VCPU_TD_STATE_INITIALIZED", vp_init)
            continue

        op(f"vcpu{v}.init", f"tdx_td_vcpu_init: scoped_guard(write_lock, &kvm->mmu_lock) "
           f"{{ tdh_vp_init(vcpu{v}) }} on vcpu->cpu",
           lambda mv, v=v, vpr=vpr: _vp_init(k, mv, v, vpr), loaded=v)
        for j, (what, point) in enumerate(_VMCS_WRITES):
            op(f"vcpu{v}.wr{j}", f"tdx_vcpu_init: {what} -> tdh_vp_wr(vcpu{v}) on vcpu->cpu",
               lambda mv, v=v, vpr=vpr: _vmcs_write(k, mv, v, vpr), loaded=v, point=point)
        op(f"vcpu{v}.state", f"tdx_vcpu_init: tdx->state = VCPU_TD_STATE_INITIALIZED "
           f"(vcpu{v}); return 0; vcpu_put", lambda mv, v=v: _state_store(k, mv, v),
           loaded=v, point="P4")


#: tdx_vcpu_init's VMCS writes, each one TDH.VP.WR (arch/x86/kvm/vmx/tdx.h td_vmcs_*), and
#: the window point the thread may be preempted at before each
_VMCS_WRITES = (("td_vmcs_write16(POSTED_INTR_NV)", "P1"),
                ("td_vmcs_write64(POSTED_INTR_DESC_ADDR)", "P2"),
                ("td_vmcs_setbit32(PIN_BASED_VM_EXEC_CONTROL)", "P3"))


def _vp_init(k: KvmHost, mv: _Move, v: int, vpr: int) -> bool:
    """tdx_td_vcpu_init's ``scoped_guard(write_lock, &vcpu->kvm->mmu_lock) { err =
    tdh_vp_init(...); if (TDX_BUG_ON(err, TDH_VP_INIT, vcpu->kvm)) return -EIO; }`` on the
    CPU the thread runs on (= vcpu->cpu: the vCPU is loaded).  TDH.VP.INIT associates the
    vCPU with that LP (tdh_vp_init.c: associate_vcpu_initial).  One atomic step: the
    rwlock's write section is not preemptible.  The fix ``state_under_mmu_lock`` sets
    ``tdx->state = VCPU_TD_STATE_INITIALIZED`` here, inside the guard.

    Tree: kvm-x86 @09c6f74e (the guard is 9a89894f30d5, in 6.19).  Before it (torvalds/linux
    @3829d81b, the 6.16-6.18 shape) tdh_vp_init() is unguarded and the reschedule point
    after it is sc_retry()'s preempt_enable() (6.18+) or any interrupt return: the same
    window; the model follows the newer tree."""
    a = k.act("TDH.VP.INIT", cpu=mv[k.VCPU[v]] - 1, tdvpr=vpr)
    if mv.call(a):
        mv.error("tdx_td_vcpu_init: tdh_vp_init")
        mv.goto("destroy.gmem")
        return False
    if k.fixed("state_under_mmu_lock"):
        mv[k.VINIT[v]] = 1
    return True


def _vmcs_write(k: KvmHost, mv: _Move, v: int, vpr: int) -> None:
    """td_vmcs_write16/64, td_vmcs_setbit32 (tdx.h): TDH.VP.WR on the current CPU (the
    module associates the vCPU with it or fails with TDX_VCPU_ASSOCIATED: tdh_vp_rd_wr.c ->
    check_and_associate_vcpu); a failure is tdh_vp_wr_failed's KVM_BUG_ON and pr_err, and
    tdx_vcpu_init goes on regardless (the accessor returns void)."""
    wr = k.act("TDH.VP.WR", cpu=mv[k.VCPU[v]] - 1, tdvpr=vpr)
    if mv.call(wr):
        mv.error("tdx_vcpu_init: tdh_vp_wr (td_vmcs_write)")


def _state_store(k: KvmHost, mv: _Move, v: int) -> None:
    """``tdx->state = VCPU_TD_STATE_INITIALIZED; return 0;`` (also after a failed VMCS
    write); if a VMCS write bugged the VM, every later ioctl fails (-EIO, kvm_vcpu_ioctl's
    vm_dead test) and userspace closes the VM."""
    mv[k.VINIT[v]] = 1  # tdx->state = VCPU_TD_STATE_INITIALIZED
    if mv[k.DEAD]:
        mv.goto("destroy.gmem")


def flush_eligible(k: KvmHost, mv: _Move, v: int) -> bool:
    """tdx_flush_vp's test whether TDH.VP.FLUSH is needed: ``if (to_tdx(vcpu)->state !=
    VCPU_TD_STATE_UNINITIALIZED)`` (kvm-x86 @09c6f74e, the same since d789fa6efac9 in
    v6.16).  The candidate fixes ``flush_if_created`` (TDH.VP.CREATE succeeded) and
    ``flush_if_tdvps_complete`` (and every TDH.VP.ADDCX) test what KVM would keep in a flag
    by the module's PAMT/TDVPS state, which that flag mirrors exactly."""
    vpr = k.VPR[v]
    if k.fixed("flush_if_created"):
        return bool(mv.get("pt", vpr) == PageType.PT_TDVPR)
    if k.fixed("flush_if_tdvps_complete"):
        return bool(mv.get("pt", vpr) == PageType.PT_TDVPR
                    and mv.get("num_pages", v) >= k.u.platform.tdvps_pages)
    return bool(mv[k.VINIT[v]])


def tdx_flush_vp(k: KvmHost, mv: _Move, v: int, cpu: int) -> None:
    """tdx_flush_vp_on_cpu -> (IPI to ``cpu``) tdx_flush_vp: TDH.VP.FLUSH if
    ``flush_eligible``; TDX_VCPU_NOT_ASSOCIATED counts as success, any other error is
    TDX_BUG_ON(TDH_VP_FLUSH); then tdx_disassociate_vp (vcpu->cpu = -1) in every case."""
    if flush_eligible(k, mv, v):
        st = mv.call(k.act("TDH.VP.FLUSH", cpu=cpu, tdvpr=k.VPR[v]))
        if st and status_class(st) != _NOT_ASSOC:
            mv.error("tdx_flush_vp: tdh_vp_flush")
    mv[k.VCPU[v]] = 0  # tdx_disassociate_vp: vcpu->cpu = -1


def vcpu_load(k: KvmHost, mv: _Move, v: int, c: int, where: int = W_NONE) -> None:
    """kvm_arch_vcpu_load(vcpu, c) -> tdx_vcpu_load: ``if (vcpu->cpu == cpu ||
    !is_hkid_assigned) return;`` else tdx_flush_vp_on_cpu (an IPI to the old CPU runs
    tdx_flush_vp there), list_add on cpu c; kvm_arch_vcpu_load sets vcpu->cpu = cpu after
    it (arch/x86/kvm/x86.c).  Reached from vcpu_load() and from kvm_sched_in() (the preempt
    notifier), so on every CPU change of a thread that has the vCPU loaded.

    In the preemption mode it also keeps the books of ``vcpuN.window``: a move that leaves
    the module's association (assoc_lpid) on a CPU other than vcpu->cpu starts a desync
    (``where``: which window point); one that makes them agree again heals it."""
    if mv[k.VCPU[v]] == c + 1:
        raise _Disabled
    old = mv[k.VCPU[v]] - 1
    if mv[k.HK] and old >= 0 and not k.mut("migrate_without_flush"):
        tdx_flush_vp(k, mv, v, old)
    mv[k.VCPU[v]] = c + 1  # list_add on cpu c; vcpu->cpu = cpu
    if k.WIN:
        assoc = mv.get("assoc", v)  # the module's associated LP + 1 (0: none)
        desync = assoc != 0 and assoc != c + 1
        w = mv[k.WIN[v]]
        if desync and w == W_NONE and where != W_NONE:
            mv[k.WIN[v]] = where
        elif not desync and w in (W_BEFORE, W_AFTER) and not mv[k.DEAD]:
            mv[k.WIN[v]] = W_HEALED_BEFORE if w == W_BEFORE else W_HEALED_AFTER


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

    if k.preempt:
        def reload(mv: _Move) -> None:
            if (mv.get("in_guest", v) or mv[k.ROOT[v]] or not mv[k.VINIT[v]]
                    or mv[k.TDS] != TD_STATE_RUNNABLE or mv[k.DEAD]):
                raise _Disabled
            if not load_mmu_pgd(k, mv, v):
                mv[k.VT[v]] = V_DONE  # KVM_REQ_VM_DEAD: KVM_RUN returns -EIO
        add(f"vcpu_enter_guest(vcpu{v}): kvm_mmu_reload -> tdx_load_mmu_pgd: "
            "tdh_vp_wr(SHARED_EPT_POINTER) on vcpu->cpu (the first KVM_RUN)", reload, None)

    enter_sample = k.act("TDH.VP.ENTER", cpu=0, tdvpr=vpr)

    def enter(mv: _Move) -> None:
        if (mv.get("in_guest", v) or mv[k.WAIT] or not mv[k.VINIT[v]]
                or mv[k.TDS] != TD_STATE_RUNNABLE or mv[k.DEAD]
                or (k.ROOT and not mv[k.ROOT[v]])):
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
