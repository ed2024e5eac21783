"""The zap of a private leaf (``tdx_sept_remove_private_spte``, ``mmu_lock`` held for write):
RANGE.BLOCK, ``tdx_track`` (TRACK and the kick), PAGE.REMOVE, each retried once after a BUSY
with ``wait_for_sept_zap`` set and every vCPU kicked out (``tdh_do_no_vcpus``), then
PAGE.WBINVD with the HKID, ``tdx_clear_page`` and the folio's free.  The ``mmu`` thread runs
it for both the ``zap`` thread (PUNCH_HOLE) and ``kvm_gmem_release``.  arch/x86/kvm/vmx/tdx.c."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tdxcheck.model.status import status_class

from .config import (
    _BUSY,
    TD_STATE_RUNNABLE,
    Z_BLOCK_RETRY,
    Z_DROP,
    Z_IDLE,
    Z_REMOVE,
    Z_REMOVE_RETRY,
    Z_TRACK,
    Z_TRACK_RETRY,
)
from .move import _Disabled, _Move

if TYPE_CHECKING:
    from .host import KvmHost


def zap_start(k: KvmHost, mv: _Move, g: int) -> None:
    """tdx_sept_remove_private_spte(gpa g), mmu_lock held for write: the first step."""
    mv[k.ZG] = g
    mv[k.ZPAGE] = mv[k.MIRROR[g]]
    if not mv[k.HK]:
        mv.error("tdx_sept_remove_private_spte: HKID not assigned")
        zap_abort(k, mv)
        return
    block(k, mv, retry=False)


def block(k: KvmHost, mv: _Move, retry: bool) -> None:
    gpa = k.u.gpas[mv[k.ZG]]
    st = mv.call(k.act("TDH.MEM.RANGE.BLOCK", tdr=k.TDR, gpa=gpa, level=0),
                 faultable=True)
    if retry:
        mv[k.WAIT] = 0  # tdx_no_vcpus_enter_stop
    if not retry and st and status_class(st) == _BUSY:
        mv[k.WAIT] = 1  # tdx_no_vcpus_enter_start: block entry, kick everyone out
        k.kick(mv)
        mv[k.ZPC] = Z_BLOCK_RETRY
        return
    if st:
        mv.error("tdx_sept_zap_private_spte: tdh_mem_range_block")
        zap_abort(k, mv)
        return
    mv[k.ZPC] = Z_TRACK


def zap_abort(k: KvmHost, mv: _Move) -> None:
    """The zap failed (KVM_BUG_ON): the mirror entry is gone; the pinned folio stays
    out of the allocator (leaked); without pinning guest_memfd frees it anyway."""
    g = mv[k.ZG]
    page = mv[k.ZPAGE]
    mv[k.MIRROR[g]] = 0
    mv[k.GMEM[g]] = 0
    if not k.pinning and page:
        mv.host(k.act("page_free", page=page))
    zap_done(k, mv)


def zap_done(k: KvmHost, mv: _Move) -> None:
    mv[k.ZPC] = Z_IDLE
    mv[k.ZPAGE] = 0
    mv[k.ZG] = 0
    if not mv[k.ZDONE]:  # a runtime zap (not kvm_gmem_release)
        mv[k.ZAPS] += 1
        if mv[k.ZAPS] >= k.config.zaps:
            mv[k.ZDONE] = 1


def mmu_thread(k: KvmHost, add: Callable[..., None]) -> None:
    """The ``mmu`` thread: the zap sequence after its first RANGE.BLOCK, shared by the runtime
    zap and ``kvm_gmem_release``."""
    tdr = k.TDR
    blk = k.act("TDH.MEM.RANGE.BLOCK", tdr=tdr, gpa=k.u.gpas[0], level=0)
    add(Z_BLOCK_RETRY, "tdx_sept_zap_private_spte: retry tdh_mem_range_block with no "
        "vCPU in the guest", lambda mv: block(k, mv, retry=True), blk)

    trk = k.act("TDH.MEM.TRACK", tdr=tdr)

    def track(mv: _Move, retry: bool) -> None:
        if mv[k.TDS] == TD_STATE_RUNNABLE:  # "If TD isn't finalized, ..." return
            if not k.mut("skip_track_before_remove"):
                st = mv.call(trk, faultable=True)
                if retry:
                    mv[k.WAIT] = 0
                if not retry and st and status_class(st) == _BUSY:
                    mv[k.WAIT] = 1
                    k.kick(mv)
                    mv[k.ZPC] = Z_TRACK_RETRY
                    return
                if st:
                    mv.error("tdx_track: tdh_mem_track")  # KVM_BUG_ON, then go on
            if not k.mut("skip_kick_after_track"):
                k.kick(mv)  # the previous epoch drains
        mv[k.ZPC] = Z_REMOVE
    add(Z_TRACK, "tdx_track: tdh_mem_track(), then kick every vCPU out of the guest",
        lambda mv: track(mv, False), trk)
    add(Z_TRACK_RETRY, "tdx_track: retry tdh_mem_track() with no vCPU entering, then kick",
        lambda mv: track(mv, True), trk)

    rem = k.act("TDH.MEM.PAGE.REMOVE", tdr=tdr, gpa=k.u.gpas[0], level=0)

    def remove(mv: _Move, retry: bool) -> None:
        gpa = k.u.gpas[mv[k.ZG]]
        st = mv.call(k.act("TDH.MEM.PAGE.REMOVE", tdr=tdr, gpa=gpa, level=0),
                     faultable=True)
        if retry:
            mv[k.WAIT] = 0
        if not retry and st and status_class(st) == _BUSY:
            mv[k.WAIT] = 1
            k.kick(mv)
            mv[k.ZPC] = Z_REMOVE_RETRY
            return
        if st:
            mv.error("tdx_sept_drop_private_spte: tdh_mem_page_remove")
            zap_abort(k, mv)
            return
        mv[k.ZPC] = Z_DROP
    add(Z_REMOVE, "tdx_sept_drop_private_spte: tdh_mem_page_remove()",
        lambda mv: remove(mv, False), rem)
    add(Z_REMOVE_RETRY, "tdx_sept_drop_private_spte: retry tdh_mem_page_remove() with no "
        "vCPU in the guest", lambda mv: remove(mv, True), rem)

    clear_first = k.mut("clear_before_wbinvd")  # moves tdx_clear_page() up a line

    def drop(mv: _Move) -> None:
        page, g = mv[k.ZPAGE], mv[k.ZG]
        clear = k.act("clear_page", page=page)
        if clear_first:
            mv.host(clear)
        if not k.mut("skip_wbinvd_after_remove"):
            a = k.act("TDH.PHYMEM.PAGE.WBINVD", page=page, keyid=mv[k.HK])
            if mv.call(a):
                mv.error("tdx_sept_drop_private_spte: tdh_phymem_page_wbinvd_hkid")
                zap_abort(k, mv)  # return without clearing: the page leaks
                return
        if not clear_first:
            mv.host(clear)  # tdx_clear_page (tdx_quirk_reset_paddr)
        mv.host(k.act("page_free", page=page))  # unpin; guest_memfd frees the folio
        mv[k.MIRROR[g]] = 0
        mv[k.GMEM[g]] = 0
        zap_done(k, mv)
    add(Z_DROP, "tdx_sept_drop_private_spte: tdh_phymem_page_wbinvd_hkid(), "
        "tdx_clear_page(), the folio is freed", drop, None)


def zap_thread(k: KvmHost, add: Callable[..., None]) -> None:
    """The ``zap`` thread: runtime PUNCH_HOLEs on the guest_memfd."""
    for g, gpa in enumerate(k.u.gpas):
        def punch(mv: _Move, g: int = g) -> None:
            if not mv[k.MIRROR[g]]:
                raise _Disabled
            zap_start(k, mv, g)
        blk = k.act("TDH.MEM.RANGE.BLOCK", tdr=k.TDR, gpa=gpa, level=0)
        add(f"fallocate(PUNCH_HOLE, gpa 0x{gpa:x}) -> tdx_sept_remove_private_spte: "
            "tdh_mem_range_block()", punch, blk)

    def stop(mv: _Move) -> None:
        mv[k.ZDONE] = 1
    add("no more private-memory conversions", stop, None)
