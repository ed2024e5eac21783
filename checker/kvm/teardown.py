"""``kvm_destroy_vm`` as steps of the ``vm`` thread: ``kvm_gmem_release`` (zap every private
leaf with the HKID still assigned), ``tdx_mmu_release_hkid`` (VP.FLUSH of each vCPU,
VPFLUSHDONE, CACHE.WB on each package, KEY.FREEID, ``tdx_hkid_free``), ``tdx_vcpu_free``,
``tdx_sept_free_private_spt``, ``tdx_vm_destroy`` (``tdx_reclaim_td_control_pages``), with
the pages and HKID KVM leaks on each error path.  arch/x86/kvm/vmx/tdx.c."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING

from tdxcheck.model.status import status_class

from .config import (
    _FLUSHVP_NOT_DONE,
    _INTERRUPTED,
    _NO_HKID_READY,
    TD_STATE_UNINITIALIZED,
)
from .move import OpFn, _Disabled, _Move
from .vcpu import tdx_flush_vp
from .zap import zap_start

if TYPE_CHECKING:
    from .host import KvmHost


def destroy_vm(k: KvmHost, op: OpFn) -> None:
    """``kvm_destroy_vm`` (the mutation switches here reorder its steps)."""
    p = k.u.platform
    tdr = k.TDR
    def gmem_release() -> None:
        def fn(mv: _Move) -> None:
            if mv[k.ZPC]:
                raise _Disabled
            g = int(mv.tag[3:]) if mv.tag.startswith("gpa") else -1
            mapped = [i for i in range(k.ngpa) if mv[k.MIRROR[i]]]
            if g >= 0:
                if g not in mapped or g != mapped[0]:
                    raise _Disabled
                zap_start(k, mv, g)  # the mmu thread runs the zap; this thread waits
                mv.stay()
                return
            if mapped:
                raise _Disabled
            for i in range(k.ngpa):  # folios never mapped (a failed PAGE.ADD/AUG)
                if mv[k.GMEM[i]]:
                    mv.host(k.act("page_free", page=mv[k.GMEM[i]]))
                    mv[k.GMEM[i]] = 0
        op("destroy.gmem", "kvm_gmem_release: zap each private leaf while the HKID is "
           "assigned (tdx_sept_remove_private_spte: tdh_mem_range_block), then free the "
           "folios", fn,
           tags=(*(f"gpa{i}" for i in range(k.ngpa)), ""))

    release_first = k.mut("release_hkid_before_gmem_zap")
    if not release_first:
        gmem_release()

    # tdx_mmu_release_hkid (kvm_arch_pre_destroy_vm -> vt_vm_pre_destroy)
    def release_start(mv: _Move) -> str | None:
        return "vcpu_free" if not mv[k.HK] else None

    for v in range(k.nvp):
        def flush_vp(mv: _Move, v: int = v) -> None:
            cpu = mv[k.VCPU[v]] - 1
            if k.mut("flush_vp_wrong_cpu"):
                cpu = (cpu + 1) % k.cpus
            tdx_flush_vp(k, mv, v, cpu)

        def flush_skip(mv: _Move, v: int = v) -> str | None:
            if v == 0 and not mv[k.HK]:
                return "vcpu_free"
            if mv[k.VCPU[v]] == 0 or k.mut("skip_vp_flush_on_release"):
                return ""  # vcpu->cpu == -1: nothing to flush
            return None
        op("release.start" if v == 0 else f"release.flush{v}",
           f"tdx_mmu_release_hkid: tdx_flush_vp_on_cpu(vcpu{v}) (TDH.VP.FLUSH on "
           "vcpu->cpu)", flush_vp, skip=flush_skip)
    if not k.nvp:
        op("release.start", "tdx_mmu_release_hkid", lambda mv: None, skip=release_start)

    vfd = k.act("TDH.MNG.VPFLUSHDONE", tdr=tdr)
    # the mutation moves tdx_hkid_free() from after FREEID to after VPFLUSHDONE
    free_early = k.mut("hkid_free_before_freeid")

    def vpflushdone(mv: _Move) -> None:
        st = mv.call(vfd, faultable=True)
        if status_class(st) == _FLUSHVP_NOT_DONE and not k.mut("ignore_flushvp_not_done"):
            mv.error("tdx_mmu_release_hkid: tdh_mng_vpflushdone (TDX_FLUSHVP_NOT_DONE)",
                     bug=False)
            mv.goto("vcpu_free")  # goto out: the HKID stays assigned
            return
        if st and status_class(st) != _FLUSHVP_NOT_DONE:
            mv.error("tdx_mmu_release_hkid: tdh_mng_vpflushdone")  # "HKID is leaked"
            mv.goto("vcpu_free")
            return
        if free_early:
            mv.host(k.act("hkid_free", hkid=mv[k.HK]))

    def vfd_skip(mv: _Move) -> str | None:
        return "" if k.mut("skip_vpflushdone") else None
    op("release.vpflushdone", "tdx_mmu_release_hkid: mutex_lock(tdx_lock); "
       "tdh_mng_vpflushdone()", vpflushdone, vfd, skip=vfd_skip)

    for pkg in range(p.packages):
        cpu = pkg * p.cpus_per_package
        sample = k.act("TDH.PHYMEM.CACHE.WB", cpu=cpu, resume=0)

        def cache_wb(mv: _Move, cpu: int = cpu) -> None:
            r = mv[k.CWB]
            st = mv.call(k.act("TDH.PHYMEM.CACHE.WB", cpu=cpu, resume=r), faultable=True)
            cls = status_class(st)
            if cls == _INTERRUPTED:
                if mv.tag == "":
                    mv[k.CWB] = 1  # resume = !!err: call again on this package
                    mv.stay()
                    return
                mv.env()  # TDX_SEAMCALL_RETRIES interrupts in a row: the loop ends
                mv.error("smp_func_do_phymem_cache_wb: tdh_phymem_cache_wb", bug=False)
            elif mv.tag:
                raise _Disabled
            elif cls not in (0, _NO_HKID_READY):  # NO_HKID_READY: "already done"
                mv.error("smp_func_do_phymem_cache_wb: tdh_phymem_cache_wb", bug=False)
            mv[k.CWB] = 0

        def cwb_skip(mv: _Move, pkg: int = pkg) -> str | None:
            if k.mut("skip_cache_wb_one_package") and pkg == p.packages - 1:
                return ""
            return None
        tags = ("", "retries exhausted") if k.faults else ("",)
        op(f"release.cache_wb{pkg}", f"tdx_mmu_release_hkid: smp_func_do_phymem_cache_wb "
           f"on cpu{cpu} (package {pkg}): tdh_phymem_cache_wb(resume) until done",
           cache_wb, sample, skip=cwb_skip, tags=tags)

    fid = k.act("TDH.MNG.KEY.FREEID", tdr=tdr)

    def freeid(mv: _Move) -> None:
        st = mv.call(fid, faultable=True)
        if st:
            mv.error("tdx_mmu_release_hkid: tdh_mng_key_freeid")  # "HKID is leaked"
            if k.mut("free_hkid_on_freeid_failure"):
                mv.host(k.act("hkid_free", hkid=mv[k.HK]))
                mv[k.HK] = 0
        else:
            if not free_early:
                mv.host(k.act("hkid_free", hkid=mv[k.HK]))  # tdx_hkid_free
            mv[k.HK] = 0
    op("release.freeid", "tdx_mmu_release_hkid: tdh_mng_key_freeid(); tdx_hkid_free() "
       "only on success; mutex_unlock(tdx_lock)", freeid, fid)

    if release_first:
        gmem_release()

    def reclaim_control_page(mv: _Move, page: int) -> None:
        """tdx_reclaim_control_page: RECLAIM, tdx_clear_page, __free_page; a page
        whose RECLAIM fails is leaked ("the kernel cannot use it safely anymore")."""
        if k.mut("vcpu_free_without_reclaim") and page in k.VPR + functools.reduce(operator.iadd, k.CX, []):
            mv.host(k.act("page_free", page=page))
            return
        if reclaim_page(k, mv, page):
            mv.error("tdx_reclaim_control_page: tdh_phymem_page_reclaim", bug=False)
            if k.mut("free_page_after_failed_reclaim"):
                mv.host(k.act("page_free", page=page))
            return
        mv.host(k.act("page_free", page=page))

    def page_op(name: str, label: str, page: int, body: Callable[[_Move, int], None],
                gate: Callable[[_Move], str | None]) -> None:
        def fn(mv: _Move) -> None:
            body(mv, page)

        def skip(mv: _Move) -> str | None:
            j = gate(mv)
            if j is not None:
                return j
            return "" if not k.held(mv, page) else None
        op(name, label, fn, skip=skip)

    # kvm_destroy_vcpus -> tdx_vcpu_free
    def vcpu_free_gate(mv: _Move) -> str | None:
        return "sept_free" if mv[k.HK] else None  # HKID assigned: leak them
    first = True
    for v in range(k.nvp):
        for i, cx in enumerate(k.CX[v]):
            page_op("vcpu_free" if first else f"vcpu_free{v}.cx{i}",
                    f"tdx_vcpu_free(vcpu{v}): tdx_reclaim_control_page(TDCX {i})", cx,
                    reclaim_control_page, vcpu_free_gate)
            first = False
        page_op("vcpu_free" if first else f"vcpu_free{v}.vpr",
                f"tdx_vcpu_free(vcpu{v}): tdx_reclaim_control_page(TDVPR)", k.VPR[v],
                reclaim_control_page, vcpu_free_gate)
        first = False

    def sept_free_ops() -> None:
        firsts = True
        for lv in sorted(k.SEPT):
            sp = k.SEPT[lv]

            def sept_free(mv: _Move, page: int) -> None:
                # "If the S-EPT PTE can't be removed for any reason, intentionally
                # leak the page": goto out skips free_page(sp->external_spt)
                ok = False
                if mv[k.HK]:
                    mv.error("tdx_sept_free_private_spt: HKID still assigned")
                elif reclaim_page(k, mv, page):
                    mv.error("tdx_sept_free_private_spt: tdh_phymem_page_reclaim",
                             bug=False)
                else:
                    ok = True
                # the mutation moves the "out:" label above free_page()
                if ok or k.mut("free_sept_page_after_failed_reclaim"):
                    mv.host(k.act("page_free", page=page))
            page_op("sept_free" if firsts else f"sept_free{lv}",
                    f"kvm_mmu_uninit_vm -> tdx_sept_free_private_spt(level {lv}): "
                    "RECLAIM, tdx_clear_page, free", sp, sept_free, lambda mv: None)
            firsts = False
        if firsts:
            op("sept_free", "kvm_mmu_uninit_vm", lambda mv: None, skip=lambda mv: "")

    def vm_destroy_ops() -> None:
        def tdcs_gate(mv: _Move) -> str | None:
            return "vm_destroy.end" if mv[k.HK] else None  # leak everything
        tdcs_ops = []
        for i, c in enumerate(k.CS):
            tdcs_ops.append((f"vm_destroy.tdcs{i}",
                             (f"tdx_vm_destroy -> tdx_reclaim_td_control_pages: "
                             f"tdx_reclaim_control_page(TDCS {i})"), c))

        def tdr_body(mv: _Move, page: int) -> None:
            if mv.call(k.act("TDH.PHYMEM.PAGE.RECLAIM", page=page)):
                mv.error("tdx_reclaim_td_control_pages: tdh_phymem_page_reclaim (TDR)",
                         bug=False)
                mv.goto("vm_destroy.end")  # return: the TDR (and the rest) leak
                return
            if not k.mut("skip_tdr_global_wbinvd"):
                a = k.act("TDH.PHYMEM.PAGE.WBINVD", page=page,
                          keyid=k.u.platform.global_keyid)
                if mv.call(a):
                    mv.error("tdx_reclaim_td_control_pages: tdh_phymem_page_wbinvd_tdr")
                    mv.goto("vm_destroy.end")
                    return
            mv.host(k.act("clear_page", page=page))
            mv.host(k.act("page_free", page=page))
            mv[k.TDS] = TD_STATE_UNINITIALIZED

        tdr_op = ("vm_destroy.tdr", ("tdx_vm_destroy -> tdx_reclaim_td_control_pages: "
                  "RECLAIM(TDR), tdh_phymem_page_wbinvd_tdr (global KeyID), "
                  "tdx_clear_page, free"), tdr)
        order = [tdr_op, *tdcs_ops] if k.mut("reclaim_tdr_before_tdcs") else \
            [*tdcs_ops, tdr_op]
        for j, (name, label, page) in enumerate(order):
            body = tdr_body if page == tdr else reclaim_control_page
            page_op("vm_destroy" if j == 0 else name, label, page, body,
                    tdcs_gate if j == 0 else (lambda mv: None))
        op("vm_destroy.end", "kvm_destroy_vm done", lambda mv: None,
           skip=lambda mv: "end")

    if k.mut("vm_destroy_before_sept_free"):
        vm_destroy_ops()
        sept_free_ops()
    else:
        sept_free_ops()
        vm_destroy_ops()

    def end(mv: _Move) -> None:
        raise _Disabled
    op("end", "kvm_destroy_vm: the VM is gone", end)


def reclaim_page(k: KvmHost, mv: _Move, page: int) -> int:
    """tdx_reclaim_page: TDH.PHYMEM.PAGE.RECLAIM, then tdx_clear_page on success (no
    per-page WBINVD: CACHE.WB on every package already flushed the freed HKID)."""
    st = mv.call(k.act("TDH.PHYMEM.PAGE.RECLAIM", page=page))
    if not st and not k.mut("skip_clear_after_reclaim"):
        mv.host(k.act("clear_page", page=page))
    return st
