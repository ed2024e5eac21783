"""Typed SEAMCALL wrappers, shaped as the RFC (``../shared/seed-rfc.txt``) and upstream Linux
define them, over the byte-level :class:`~tdxcheck.checker.executor.machine.Machine`.

Linux (LH ``arch/x86/include/asm/tdx.h``) passes ``struct tdx_td`` / ``struct tdx_vp`` holding
the TD's and vCPU's pages instead of raw physical addresses, computes PAs with
``page_to_phys``, returns output registers through named out-arguments
(``tdh_phymem_page_reclaim(page, &tdx_pt, &tdx_owner, &tdx_size)``), and CLFLUSHes every page it
hands to the module first (``tdx_clflush_page``, "CLFLUSH_BEFORE_ALLOC", LH ``tdx.c``).  Python
has no out-arguments, so those wrappers return a tuple ``(status, <out args in C order>)``.

A wrapper runs on ``TdxHost.cpu`` (``smp_processor_id()``); set it before calling, as
``smp_call_on_cpu`` would.  ``wrapper_clflush=False`` models wrappers that skip the CLFLUSH
(scenario config ``wrapper_clflush=0``).  The untyped :func:`seamcall` (and
``TdxHost.seamcall``) is the bare instruction: no struct, no CLFLUSH.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .machine import Machine
from .structures import LEAF, LINE, LINES_PER_PAGE

__all__ = [
    "Page",
    "TdxHost",
    "TdxTd",
    "TdxVp",
    "mk_keyed_paddr",
    "page_to_phys",
    "seamcall",
    "tdx_td",
    "tdx_vp",
]


@dataclass(frozen=True)
class Page:
    """A ``struct page``: a named physical 4 KiB page."""

    name: str
    pa: int


def page_to_phys(page: Page) -> int:
    return page.pa


def mk_keyed_paddr(machine: Machine, hkid: int, page: Page) -> int:
    """``mk_keyed_paddr(hkid, page)``: the KeyID ORed in above the physical address bits (LH)."""
    return page.pa | (hkid << machine.keyid_shift)


@dataclass
class TdxTd:
    """``struct tdx_td { struct page *tdr_page; int tdcs_nr_pages; struct page **tdcs_pages;
    int tdcx_nr_pages; }`` (LH ``asm/tdx.h``); ``tdcx_nr_pages`` is the per-vCPU TDCX count."""

    tdr_page: Page | None = None
    tdcs_pages: list[Page] = field(default_factory=list)
    tdcs_nr_pages: int = 6
    tdcx_nr_pages: int = 5


@dataclass
class TdxVp:
    """``struct tdx_vp { struct page *tdvpr_page; struct page **tdcx_pages; }``."""

    tdvpr_page: Page | None = None
    tdcx_pages: list[Page] = field(default_factory=list)


tdx_td = TdxTd
tdx_vp = TdxVp

# leaf numbers with the kernel's names (LH arch/x86/virt/vmx/tdx/tdx.h)
TDH_VP_ENTER = LEAF["TDH.VP.ENTER"]
TDH_MNG_ADDCX = LEAF["TDH.MNG.ADDCX"]
TDH_MEM_PAGE_ADD = LEAF["TDH.MEM.PAGE.ADD"]
TDH_MEM_SEPT_ADD = LEAF["TDH.MEM.SEPT.ADD"]
TDH_VP_ADDCX = LEAF["TDH.VP.ADDCX"]
TDH_MEM_PAGE_AUG = LEAF["TDH.MEM.PAGE.AUG"]
TDH_MEM_RANGE_BLOCK = LEAF["TDH.MEM.RANGE.BLOCK"]
TDH_MNG_KEY_CONFIG = LEAF["TDH.MNG.KEY.CONFIG"]
TDH_MNG_CREATE = LEAF["TDH.MNG.CREATE"]
TDH_VP_CREATE = LEAF["TDH.VP.CREATE"]
TDH_MNG_RD = LEAF["TDH.MNG.RD"]
TDH_MNG_WR = LEAF["TDH.MNG.WR"]
TDH_MR_EXTEND = LEAF["TDH.MR.EXTEND"]
TDH_MR_FINALIZE = LEAF["TDH.MR.FINALIZE"]
TDH_VP_FLUSH = LEAF["TDH.VP.FLUSH"]
TDH_MNG_VPFLUSHDONE = LEAF["TDH.MNG.VPFLUSHDONE"]
TDH_MNG_KEY_FREEID = LEAF["TDH.MNG.KEY.FREEID"]
TDH_MNG_INIT = LEAF["TDH.MNG.INIT"]
TDH_VP_INIT = LEAF["TDH.VP.INIT"]
TDH_VP_RD = LEAF["TDH.VP.RD"]
TDH_VP_WR = LEAF["TDH.VP.WR"]
TDH_PHYMEM_PAGE_RECLAIM = LEAF["TDH.PHYMEM.PAGE.RECLAIM"]
TDH_MEM_PAGE_REMOVE = LEAF["TDH.MEM.PAGE.REMOVE"]
TDH_MEM_SEPT_REMOVE = LEAF["TDH.MEM.SEPT.REMOVE"]
TDH_MEM_TRACK = LEAF["TDH.MEM.TRACK"]
TDH_MEM_RANGE_UNBLOCK = LEAF["TDH.MEM.RANGE.UNBLOCK"]
TDH_PHYMEM_CACHE_WB = LEAF["TDH.PHYMEM.CACHE.WB"]
TDH_PHYMEM_PAGE_WBINVD = LEAF["TDH.PHYMEM.PAGE.WBINVD"]
TDX_VERSION_SHIFT = 16


def seamcall(machine: Machine, rax: int, rcx: int = 0, rdx: int = 0, r8: int = 0, cpu: int = 0,
             *, fault: tuple[int, bool] | None = None) -> tuple[int, dict[str, int]]:
    """The untyped SEAMCALL: registers in, ``(status, output registers)`` out; nothing else."""
    return machine.seamcall(rax, rcx, rdx, r8, cpu, fault=fault)


def _require(page: Page | None, what: str) -> Page:
    if page is None:
        raise ValueError(f"{what} is NULL")
    return page


class TdxHost:
    """The kernel's TDX core as seen by KVM: one method per exported wrapper (LH ``tdx.c``),
    plus ``tdh_mng_wr``, ``tdh_mem_range_unblock`` and ``tdh_mem_sept_remove``, which upstream
    does not wrap but the scenario format names (same shape)."""

    def __init__(self, machine: Machine, *, wrapper_clflush: bool = True, cpu: int = 0) -> None:
        self.machine = machine
        self.wrapper_clflush = wrapper_clflush
        self.cpu = cpu
        #: the fault to inject into the next SEAMCALL (``(code, has_operand_id)``), consumed
        self.fault: tuple[int, bool] | None = None

    # ---------------------------------------------------------------- plumbing

    def seamcall(self, fn: int, rcx: int = 0, rdx: int = 0, r8: int = 0,
                 version: int = 0) -> tuple[int, dict[str, int]]:
        """``seamcall(fn, &args)`` on ``self.cpu``: RAX = leaf | version << 16."""
        fault, self.fault = self.fault, None
        return self.machine.seamcall(fn | (version << TDX_VERSION_SHIFT), rcx, rdx, r8,
                                     self.cpu, fault=fault)

    def tdx_clflush_page(self, page: Page) -> None:
        """``tdx_clflush_page``: ``clflush_cache_range(page_to_virt(page), PAGE_SIZE)`` through
        the kernel's KeyID-0 direct map: write back and invalidate in every package."""
        for i in range(LINES_PER_PAGE):
            self.machine.flush_line(page.pa + i * LINE, 0)

    def tdx_clear_page(self, page: Page) -> None:
        """``tdx_clear_page`` (``tdx_quirk_reset_page``): MOVDIR64B zeroes under KeyID 0."""
        self.machine.host_clear_page(page.pa)

    def _hand(self, page: Page) -> None:
        if self.wrapper_clflush:
            self.tdx_clflush_page(page)

    @staticmethod
    def _tdr(td: TdxTd) -> int:
        return _require(td.tdr_page, "td->tdr_page").pa

    @staticmethod
    def _tdvpr(vp: TdxVp) -> int:
        return _require(vp.tdvpr_page, "vp->tdvpr_page").pa

    # ---------------------------------------------------------------- TD management

    def tdh_mng_create(self, td: TdxTd, hkid: int) -> int:
        """``u64 tdh_mng_create(struct tdx_td *td, u16 hkid)``."""
        self._hand(_require(td.tdr_page, "td->tdr_page"))
        return self.seamcall(TDH_MNG_CREATE, self._tdr(td), hkid)[0]

    def tdh_mng_key_config(self, td: TdxTd) -> int:
        """``u64 tdh_mng_key_config(struct tdx_td *td)``: on this CPU's package."""
        return self.seamcall(TDH_MNG_KEY_CONFIG, self._tdr(td))[0]

    def tdh_mng_addcx(self, td: TdxTd, tdcs_page: Page) -> int:
        """``u64 tdh_mng_addcx(struct tdx_td *td, struct page *tdcs_page)``."""
        self._hand(tdcs_page)
        return self.seamcall(TDH_MNG_ADDCX, tdcs_page.pa, self._tdr(td))[0]

    def tdh_mng_init(self, td: TdxTd, td_params: int = 0) -> tuple[int, int]:
        """``u64 tdh_mng_init(struct tdx_td *td, u64 td_params, u64 *extended_err)``."""
        status, out = self.seamcall(TDH_MNG_INIT, self._tdr(td), td_params)
        return status, out.get("rcx", 0)

    def tdh_mng_rd(self, td: TdxTd, field: int = 0) -> tuple[int, int]:
        """``u64 tdh_mng_rd(struct tdx_td *td, u64 field, u64 *data)``."""
        status, out = self.seamcall(TDH_MNG_RD, self._tdr(td), field)
        return status, out.get("r8", 0)

    def tdh_mng_wr(self, td: TdxTd, field: int = 0, data: int = 0) -> int:
        """TDH.MNG.WR (not wrapped upstream)."""
        return self.seamcall(TDH_MNG_WR, self._tdr(td), field, data)[0]

    def tdh_mng_vpflushdone(self, td: TdxTd) -> int:
        """``u64 tdh_mng_vpflushdone(struct tdx_td *td)``."""
        return self.seamcall(TDH_MNG_VPFLUSHDONE, self._tdr(td))[0]

    def tdh_mng_key_freeid(self, td: TdxTd) -> int:
        """``u64 tdh_mng_key_freeid(struct tdx_td *td)``."""
        return self.seamcall(TDH_MNG_KEY_FREEID, self._tdr(td))[0]

    # ---------------------------------------------------------------- vCPU

    def tdh_vp_create(self, td: TdxTd, vp: TdxVp) -> int:
        """``u64 tdh_vp_create(struct tdx_td *td, struct tdx_vp *vp)``."""
        self._hand(_require(vp.tdvpr_page, "vp->tdvpr_page"))
        return self.seamcall(TDH_VP_CREATE, self._tdvpr(vp), self._tdr(td))[0]

    def tdh_vp_addcx(self, vp: TdxVp, tdcx_page: Page) -> int:
        """``u64 tdh_vp_addcx(struct tdx_vp *vp, struct page *tdcx_page)``."""
        self._hand(tdcx_page)
        return self.seamcall(TDH_VP_ADDCX, tdcx_page.pa, self._tdvpr(vp))[0]

    def tdh_vp_init(self, vp: TdxVp, initial_rcx: int = 0, x2apicid: int = 0) -> int:
        """``u64 tdh_vp_init(struct tdx_vp *vp, u64 initial_rcx, u32 x2apicid)`` (version 1;
        versions are not modelled)."""
        return self.seamcall(TDH_VP_INIT, self._tdvpr(vp), initial_rcx, x2apicid, version=1)[0]

    def tdh_vp_enter(self, vp: TdxVp) -> int:
        """``noinstr u64 tdh_vp_enter(struct tdx_vp *td, struct tdx_module_args *args)``: the
        vCPU runs in the guest until its TD exit (``Machine.td_exit``)."""
        return self.seamcall(TDH_VP_ENTER, self._tdvpr(vp))[0]

    def tdh_vp_flush(self, vp: TdxVp) -> int:
        """``u64 tdh_vp_flush(struct tdx_vp *vp)``."""
        return self.seamcall(TDH_VP_FLUSH, self._tdvpr(vp))[0]

    def tdh_vp_rd(self, vp: TdxVp, field: int = 0) -> tuple[int, int]:
        """``u64 tdh_vp_rd(struct tdx_vp *vp, u64 field, u64 *data)``."""
        status, out = self.seamcall(TDH_VP_RD, self._tdvpr(vp), field)
        return status, out.get("r8", 0)

    def tdh_vp_wr(self, vp: TdxVp, field: int = 0, data: int = 0, mask: int = 0) -> int:
        """``u64 tdh_vp_wr(struct tdx_vp *vp, u64 field, u64 data, u64 mask)``."""
        return self.seamcall(TDH_VP_WR, self._tdvpr(vp), field, data)[0]

    # ---------------------------------------------------------------- private memory

    def tdh_mem_sept_add(self, td: TdxTd, gpa: int, level: int, page: Page) -> tuple[int, int, int]:
        """``u64 tdh_mem_sept_add(struct tdx_td *td, u64 gpa, int level, struct page *page,
        u64 *ext_err1, u64 *ext_err2)``."""
        self._hand(page)
        status, out = self.seamcall(TDH_MEM_SEPT_ADD, gpa | level, self._tdr(td), page.pa)
        return status, out.get("rcx", 0), out.get("rdx", 0)

    def tdh_mem_page_add(self, td: TdxTd, gpa: int, page: Page, source: Page | None = None
                         ) -> tuple[int, int, int]:
        """``u64 tdh_mem_page_add(struct tdx_td *td, u64 gpa, struct page *page,
        struct page *source, u64 *ext_err1, u64 *ext_err2)`` (the source is not modelled)."""
        self._hand(page)
        status, out = self.seamcall(TDH_MEM_PAGE_ADD, gpa, self._tdr(td), page.pa)
        return status, out.get("rcx", 0), out.get("rdx", 0)

    def tdh_mem_page_aug(self, td: TdxTd, gpa: int, level: int, page: Page
                         ) -> tuple[int, int, int]:
        """``u64 tdh_mem_page_aug(struct tdx_td *td, u64 gpa, int level, struct page *page,
        u64 *ext_err1, u64 *ext_err2)``."""
        self._hand(page)
        status, out = self.seamcall(TDH_MEM_PAGE_AUG, gpa | level, self._tdr(td), page.pa)
        return status, out.get("rcx", 0), out.get("rdx", 0)

    def tdh_mem_range_block(self, td: TdxTd, gpa: int, level: int) -> tuple[int, int, int]:
        """``u64 tdh_mem_range_block(struct tdx_td *td, u64 gpa, int level, u64 *ext_err1,
        u64 *ext_err2)``."""
        status, out = self.seamcall(TDH_MEM_RANGE_BLOCK, gpa | level, self._tdr(td))
        return status, out.get("rcx", 0), out.get("rdx", 0)

    def tdh_mem_range_unblock(self, td: TdxTd, gpa: int, level: int) -> tuple[int, int, int]:
        """TDH.MEM.RANGE.UNBLOCK (not wrapped upstream)."""
        status, out = self.seamcall(TDH_MEM_RANGE_UNBLOCK, gpa | level, self._tdr(td))
        return status, out.get("rcx", 0), out.get("rdx", 0)

    def tdh_mem_track(self, td: TdxTd) -> int:
        """``u64 tdh_mem_track(struct tdx_td *td)``."""
        return self.seamcall(TDH_MEM_TRACK, self._tdr(td))[0]

    def tdh_mem_page_remove(self, td: TdxTd, gpa: int, level: int) -> tuple[int, int, int]:
        """``u64 tdh_mem_page_remove(struct tdx_td *td, u64 gpa, u64 level, u64 *ext_err1,
        u64 *ext_err2)``; on success ext_err1 (RCX) is the removed page's HPA."""
        status, out = self.seamcall(TDH_MEM_PAGE_REMOVE, gpa | level, self._tdr(td))
        return status, out.get("rcx", 0), out.get("rdx", 0)

    def tdh_mem_sept_remove(self, td: TdxTd, gpa: int, level: int) -> tuple[int, int, int]:
        """TDH.MEM.SEPT.REMOVE (not wrapped upstream); RCX = the removed S-EPT page's HPA."""
        status, out = self.seamcall(TDH_MEM_SEPT_REMOVE, gpa | level, self._tdr(td))
        return status, out.get("rcx", 0), out.get("rdx", 0)

    def tdh_mr_extend(self, td: TdxTd, gpa: int) -> tuple[int, int, int]:
        """``u64 tdh_mr_extend(struct tdx_td *td, u64 gpa, u64 *ext_err1, u64 *ext_err2)``."""
        status, out = self.seamcall(TDH_MR_EXTEND, gpa, self._tdr(td))
        return status, out.get("rcx", 0), out.get("rdx", 0)

    def tdh_mr_finalize(self, td: TdxTd) -> int:
        """``u64 tdh_mr_finalize(struct tdx_td *td)``."""
        return self.seamcall(TDH_MR_FINALIZE, self._tdr(td))[0]

    # ---------------------------------------------------------------- physical memory

    def tdh_phymem_cache_wb(self, resume: bool | int) -> int:
        """``u64 tdh_phymem_cache_wb(bool resume)`` on this CPU's package."""
        return self.seamcall(TDH_PHYMEM_CACHE_WB, int(resume))[0]

    def tdh_phymem_page_reclaim(self, page: Page) -> tuple[int, int, int, int]:
        """``u64 tdh_phymem_page_reclaim(struct page *page, u64 *tdx_pt, u64 *tdx_owner,
        u64 *tdx_size)`` → ``(status, tdx_pt, tdx_owner, tdx_size)``."""
        status, out = self.seamcall(TDH_PHYMEM_PAGE_RECLAIM, page.pa)
        return status, out.get("rcx", 0), out.get("rdx", 0), out.get("r8", 0)

    def tdh_phymem_page_wbinvd_tdr(self, td: TdxTd) -> int:
        """``u64 tdh_phymem_page_wbinvd_tdr(struct tdx_td *td)``: the TDR through the module's
        global KeyID (``tdx_global_keyid``)."""
        tdr = _require(td.tdr_page, "td->tdr_page")
        return self.seamcall(TDH_PHYMEM_PAGE_WBINVD,
                             mk_keyed_paddr(self.machine, self.machine.global_keyid, tdr))[0]

    def tdh_phymem_page_wbinvd_hkid(self, hkid: int, page: Page) -> int:
        """``u64 tdh_phymem_page_wbinvd_hkid(u64 hkid, struct page *page)``."""
        return self.seamcall(TDH_PHYMEM_PAGE_WBINVD, mk_keyed_paddr(self.machine, hkid, page))[0]
