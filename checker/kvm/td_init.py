"""KVM_TDX_INIT_VM (``__tdx_td_init``: the HKID, the TDR and TDCS pages, MNG.CREATE, KEY.CONFIG
on each package, ADDCX, MNG.INIT, MNG.RD, with its "teardown" error label) and
KVM_TDX_FINALIZE_VM (``tdx_td_finalize``): steps of the ``vm`` thread (arch/x86/kvm/vmx/tdx.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tdxcheck.model.actions import Action
from tdxcheck.model.enums import PageType
from tdxcheck.model.status import status_class

from .config import _BUSY, _RND, TD_STATE_INITIALIZED, TD_STATE_RUNNABLE, V_RUN
from .move import OpFn, _Disabled, _Move

if TYPE_CHECKING:
    from .host import KvmHost


def init_vm(k: KvmHost, op: OpFn) -> None:
    """``__tdx_td_init`` and ``tdx_td_init`` (KVM_TDX_INIT_VM)."""
    p = k.u.platform
    td, tdr, h = 0, k.TDR, k.HKID
    def alloc(mv: _Move) -> None:
        mv.host(k.act("hkid_alloc", hkid=h))
        mv[k.HK] = h
        for pgx in [tdr, *k.CS]:
            mv.host(k.act("page_alloc", page=pgx))
    op("init.alloc", "__tdx_td_init: tdx_guest_keyid_alloc() and alloc_page() for the TDR "
       "and the TDCS pages", alloc)

    def teardown_init(mv: _Move) -> None:
        """The "teardown" label: TDCS pages not added go straight back to the allocator,
        then tdx_mmu_release_hkid() and tdx_reclaim_td_control_pages()."""
        for c in k.CS:
            if k.held(mv, c) and mv.get("pt", c) == PageType.PT_NDA:
                mv.host(k.act("page_free", page=c))
        mv.goto("release.start")

    create = k.act("TDH.MNG.CREATE", td=td, tdr=tdr, hkid=h)

    def mng_create(mv: _Move) -> None:
        st = mv.call(create, faultable=True)
        if st:
            # RND_NO_ENTROPY -> -EAGAIN, else TDX_BUG_ON; both go to free_packages: the
            # module took nothing, so every page and the HKID go straight back
            mv.error("__tdx_td_init: tdh_mng_create", bug=status_class(st) != _RND)
            for pgx in [tdr, *k.CS]:
                mv.host(k.act("page_free", page=pgx))
            mv.host(k.act("hkid_free", hkid=h))
            mv[k.HK] = 0
            mv.goto("end")
    op("init.create", "__tdx_td_init: tdh_mng_create() under tdx_lock", mng_create, create)

    for pkg in range(p.packages):
        kc = k.act("TDH.MNG.KEY.CONFIG", cpu=pkg * p.cpus_per_package, tdr=tdr)

        def key_config(mv: _Move, kc: Action = kc) -> None:
            if mv.call(kc, faultable=True):
                mv.error("__tdx_td_init: tdh_mng_key_config")
                teardown_init(mv)
        op(f"init.key_config.pkg{pkg}", f"__tdx_td_init: smp_call_on_cpu(cpu"
           f"{pkg * p.cpus_per_package}, tdh_mng_key_config) for package {pkg}",
           key_config, kc)

    for i, c in enumerate(k.CS):
        ax = k.act("TDH.MNG.ADDCX", page=c, tdr=tdr)

        def addcx(mv: _Move, ax: Action = ax) -> None:
            st = mv.call(ax, faultable=True)
            if st:
                mv.error("__tdx_td_init: tdh_mng_addcx", bug=status_class(st) != _RND)
                teardown_init(mv)
        op(f"init.addcx{i}", f"__tdx_td_init: tdh_mng_addcx(TDCS page {i})", addcx, ax)

    def mng_init(mv: _Move) -> None:
        if mv.call(k.act("TDH.MNG.INIT", tdr=tdr)):
            mv.error("__tdx_td_init: tdh_mng_init")
            teardown_init(mv)
    op("init.mng_init", "__tdx_td_init: tdh_mng_init()", mng_init)

    def mng_rd(mv: _Move) -> None:
        if mv.call(k.act("TDH.MNG.RD", tdr=tdr)):
            # td_tdcs_exec_read64: pr_err and return 0; tdx_td_init goes on
            mv.error("tdx_td_init: td_tdcs_exec_read64 (tdh_mng_rd)", bug=False)
        mv[k.TDS] = TD_STATE_INITIALIZED
    op("init.mng_rd", "tdx_td_init: td_tdcs_exec_read64() -> tdh_mng_rd() (TSC offset, "
       "multiplier); state := TD_STATE_INITIALIZED", mng_rd)


def finalize(k: KvmHost, op: OpFn) -> None:
    """``tdx_td_finalize`` (KVM_TDX_FINALIZE_VM), then the VM runs until userspace closes it."""
    tdr = k.TDR

    def finalize(mv: _Move) -> None:
        st = mv.call(k.act("TDH.MR.FINALIZE", tdr=tdr))
        if st:
            mv.error("tdx_td_finalize: tdh_mr_finalize", bug=status_class(st) != _BUSY)
            mv.goto("destroy.gmem")
            return
        mv[k.TDS] = TD_STATE_RUNNABLE
        for v in range(k.nvp):
            if mv[k.VINIT[v]]:
                mv[k.VT[v]] = V_RUN
        mv[k.ZDONE] = 0 if k.config.zaps else 1
    op("finalize", "tdx_td_finalize: tdh_mr_finalize(); state := TD_STATE_RUNNABLE; "
       "the vCPU threads run", finalize)

    def run(mv: _Move) -> None:
        if any(mv[t] == V_RUN for t in k.VT) or not mv[k.ZDONE] or mv[k.ZPC]:
            raise _Disabled
    op("run", "userspace closes the vCPU fds and the VM: kvm_destroy_vm", run)
