"""The physical memory leaves (TDH.PHYMEM.*).

Each runs its checks in the module's order; M15 file per leaf.
"""

from __future__ import annotations

from tdxcheck.model.status import OperandId, Status, status_class

from .structures import (
    KOT_FLUSHED,
    PT_NDA,
    PT_RSVD,
    PT_TDR,
    TD_TEARDOWN,
    WBCACHE_BLOCKS,
    SeamcallFailed,
    st,
)


class PhymemLeaves:
    """The physical memory leaves (TDH.PHYMEM.*).  Mixed into ``Machine`` (``machine.py``), whose plumbing they use."""

    def _phymem_cache_wb(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.PHYMEM.CACHE.WB (leaf 40), §6.11, M15 ``tdh_phymem_cache_wb.c``: per package,
        resumable; the snapshot of FLUSHED HKIDs is taken at START."""
        pkg = self.pkg_of(cpu)
        self._check("phymem.cache_wb.cmd", rcx <= 1, st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.WBCACHE))
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.KOT))
        wbt = self.wbt[pkg]
        if rcx == 0:  # START: a new snapshot discards an interrupted run's progress
            wbt.snapshot = frozenset(h for h in range(1, self.global_keyid)
                                     if self.kot[h].state == KOT_FLUSHED)
            wbt.intr_point = 0
            if not wbt.snapshot:
                raise SeamcallFailed(st(Status.TDX_NO_HKID_READY_TO_WBCACHE))
        else:
            self._check("phymem.cache_wb.resume_point", wbt.intr_point != 0,
                        st(Status.TDX_WBCACHE_RESUME_ERROR))
        block = wbt.intr_point
        cache = self.caches[pkg]
        while True:
            if block < WBCACHE_BLOCKS:
                for tag in [t for t in cache
                            if t[1] in wbt.snapshot and (t[0] >> 6) % WBCACHE_BLOCKS == block]:
                    self._evict(pkg, tag)  # WBINVD of the sub-block: write back + invalidate
                block += 1
            f = self._fault
            if f is not None and status_class(f[0]) == Status.TDX_INTERRUPTED_RESUMABLE:
                wbt.intr_point = block  # >= 1: at least one sub-block was done
                self._fault_point(st(Status.TDX_INTERRUPTED_RESUMABLE))
            if block >= WBCACHE_BLOCKS:
                break
        wbt.intr_point = 0
        for h in wbt.snapshot:
            self.kot[h].wbinvd_bitmap &= ~(1 << pkg)

    def _phymem_page_reclaim(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.PHYMEM.PAGE.RECLAIM (leaf 28), §6.14, M15 ``tdh_phymem_page_reclaim.c``.
        Outputs: RCX page type, RDX owner TDR PA, R8 page size level (always 4K here)."""
        pa = self._pa(rcx)
        e = self.pamt_entry(pa)
        if e.holders:  # PAMT walk with an exclusive lock
            raise SeamcallFailed(st(Status.TDX_OPERAND_BUSY, OperandId.RCX))
        self._check("phymem.page_reclaim.page_type", e.pt not in (PT_NDA, PT_RSVD),
                    st(Status.TDX_PAGE_METADATA_INCORRECT, OperandId.RCX))
        if e.pt != PT_TDR:
            tdr = self._implicit_tdr(e.owner)
            self._check("phymem.page_reclaim.teardown", tdr.lifecycle == TD_TEARDOWN,
                        st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
            # ALL_CHECKS_PASSED
            tdr.chldcnt -= 1
            self._mirror_tdr(cpu, e.owner)
            owner = e.owner
        else:
            tdr = self.tdrs[pa]
            self._check("phymem.page_reclaim.tdr_teardown", tdr.lifecycle == TD_TEARDOWN,
                        st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
            self._check("phymem.page_reclaim.no_children", tdr.chldcnt == 0,
                        st(Status.TDX_TD_ASSOCIATED_PAGES_EXIST))
            owner = 0
        out.update(rcx=e.pt, rdx=owner, r8=0)
        e.pt = PT_NDA  # owner left stale; the module neither clears nor flushes the page

    def _phymem_page_wbinvd(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.PHYMEM.PAGE.WBINVD (leaf 41), §6.15: the page must be PT_NDA (shared lock);
        CLFLUSHOPT of every line through the KeyID given in RCX's KeyID bits."""
        pa, keyid = self._pa(rcx), rcx >> self.keyid_shift
        self._explicit_page("phymem.page_wbinvd.page_nda", pa, OperandId.RCX, PT_NDA, False)
        self.flush_page(pa, keyid)
