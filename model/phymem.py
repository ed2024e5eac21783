"""TDH.PHYMEM.* leaves: cache write-back per package, page reclaim, page write-back.

Sources: intel/tdx-module tdx_1.5 ``src/vmm_dispatcher/api_calls/<file>``;
tdx-reference.md §6.11, §6.14, §6.15, §8, §9.
"""

from __future__ import annotations

from .checks import explicit_page, held_by_running_vcpu, keyid_lines
from .enums import KotState, PageType, TdLifecycle
from .expr import AndNot, Domain, Expr, If, Not, Or, UnionOf
from .rule import Ctx, Effect, Rule, RuleBuilder, for_each, leaf, set_, st, when
from .state import FIELDS, TD_ENTRY_FIELDS, TD_FIELDS, VP_FIELDS, S
from .status import OperandId, Status

RCX = OperandId.RCX


def _flushed_hkids(ctx: Ctx) -> Expr:
    """Bitmap of the HKIDs whose KOT state is HKID_FLUSHED (the START snapshot)."""
    return UnionOf(ctx.u.domain("hkid"),
                   lambda h: If(S.kot_state[h] == KotState.KOT_STATE_HKID_FLUSHED, 1 << h, 0))


def _write_back(ctx: Ctx, snapshot: Expr) -> list[Effect]:
    """A completed CACHE.WB on this package: clear the package's bit in the wbinvd_bitmap of
    every snapshotted HKID, and those HKIDs' lines of every page on this package are gone."""
    p, pkg = ctx.p, ctx.pkg
    hkids = ctx.u.domain("hkid")

    def in_snap(h: Expr) -> Expr:
        return ((snapshot >> h) & 1) == 1

    out: list[Effect] = list(for_each(hkids, lambda h: when(
        in_snap(h), set_(S.kot_wbinvd[h], AndNot(S.kot_wbinvd[h], 1 << pkg)))))
    mask = UnionOf(hkids, lambda h: If(in_snap(h), keyid_lines(p.packages, h, pkg), 0))
    out += for_each(ctx.u.domain("page"),
                    lambda page: set_(S.dirty[page], AndNot(S.dirty[page], mask)))
    out += [set_(S.wbt_intr[pkg], 0), set_(S.wbt_snap[pkg], 0)]
    return out


@leaf("TDH.PHYMEM.CACHE.WB", 40, "phymem", ("resume",), regs=(("rcx", "resume"),),
      source="tdh_phymem_cache_wb.c")
def tdh_phymem_cache_wb(ctx: Ctx, resume: int) -> Rule:
    """TDH.PHYMEM.CACHE.WB: write back and invalidate the package's cache lines of every
    HKID that was FLUSHED when the run started; resumable after an interrupt.

    Source: tdh_phymem_cache_wb.c (leaf 40); tdx-reference.md §6.11.  The snapshot is per
    package and taken at START; a new START discards an interrupted run's progress.
    """
    b = RuleBuilder(ctx)
    pkg = ctx.pkg
    b.check("phymem.cache_wb.cmd", int(resume in (0, 1)), st(Status.TDX_OPERAND_INVALID, RCX))
    b.fault("phymem.cache_wb.wbt_lock", st(Status.TDX_OPERAND_BUSY, OperandId.WBCACHE))
    b.fault("phymem.cache_wb.kot_lock", st(Status.TDX_OPERAND_BUSY, OperandId.KOT))
    if resume == 0:
        snap = _flushed_hkids(ctx)
        b.check("phymem.cache_wb.hkid_ready", snap != 0, st(Status.TDX_NO_HKID_READY_TO_WBCACHE),
                fail_effects=(set_(S.wbt_intr[pkg], 0), set_(S.wbt_snap[pkg], 0)))
        b.fault("phymem.cache_wb.interrupted", st(Status.TDX_INTERRUPTED_RESUMABLE),
                effects=(set_(S.wbt_snap[pkg], snap), set_(S.wbt_intr[pkg], 1)))
    elif resume == 1:
        snap = S.wbt_snap[pkg]
        b.check("phymem.cache_wb.resume_point", S.wbt_intr[pkg] == 1,
                st(Status.TDX_WBCACHE_RESUME_ERROR))
        b.fault("phymem.cache_wb.interrupted", st(Status.TDX_INTERRUPTED_RESUMABLE))
    else:
        return b.done()
    # ALL_CHECKS_PASSED
    return b.done(*_write_back(ctx, snap))


def reset_slot(fields: tuple[str, ...], slot: Expr, entries: Domain | None = None
               ) -> list[Effect]:
    """Zero a dead TD or vCPU slot (a reclaimed control page is never read again); with
    ``entries``, the fields have a second index, a TD's S-EPT entries (maybe none), and
    every entry is zeroed."""
    out: list[Effect] = []
    for f in fields:
        view = getattr(S, f)
        if entries is None:
            out.append(set_(view[slot], 0))
        else:
            out += for_each(entries, lambda e, view=view: set_(view[slot, e], 0))
    return out


@leaf("TDH.PHYMEM.PAGE.RECLAIM", 28, "phymem", ("page",), regs=(("rcx", "page"),),
      source="tdh_phymem_page_reclaim.c")
def tdh_phymem_page_reclaim(ctx: Ctx, page: int) -> Rule:
    """TDH.PHYMEM.PAGE.RECLAIM: take a page of a torn-down TD back (PT_NDA); the TDR last.

    Source: tdh_phymem_page_reclaim.c (leaf 28); tdx-reference.md §6.14.  The module
    neither clears nor flushes the page.
    """
    b = RuleBuilder(ctx)
    t = S.owner[page]
    is_tdr = S.pt[page] == PageType.PT_TDR
    b.check("phymem.page_reclaim.lock", Not(held_by_running_vcpu(page)),
            st(Status.TDX_OPERAND_BUSY, RCX))
    b.check("phymem.page_reclaim.pt",
            Not(S.pt[page].isin((PageType.PT_NDA, PageType.PT_RSVD))),
            st(Status.TDX_PAGE_METADATA_INCORRECT, RCX))
    b.check("phymem.page_reclaim.teardown", S.lifecycle[t] == TdLifecycle.TD_TEARDOWN,
            st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
    b.check("phymem.page_reclaim.no_children", Or(Not(is_tdr), S.chldcnt[t] == 0),
            st(Status.TDX_TD_ASSOCIATED_PAGES_EXIST))
    # ALL_CHECKS_PASSED
    n_entries = ctx.u.domain("entry")
    v = S.vpslot[page]
    return b.done(
        when(Not(is_tdr), set_(S.chldcnt[t], S.chldcnt[t] - 1)),
        when(S.pt[page] == PageType.PT_TDVPR, *reset_slot(VP_FIELDS, v)),
        when(is_tdr, *reset_slot(TD_FIELDS, t), *reset_slot(TD_ENTRY_FIELDS, t, n_entries)),
        set_(S.pt[page], PageType.PT_NDA),
        set_(S.owner[page], 0),
        set_(S.vpslot[page], 0),
        set_(S.bepoch_age[page], 0),
        set_(S.uncleared[page], 1),
    )


@leaf("TDH.PHYMEM.PAGE.WBINVD", 41, "phymem", ("page", "keyid"), regs=(("rcx", "page"),),
      source="tdh_phymem_page_wbinvd.c")
def tdh_phymem_page_wbinvd(ctx: Ctx, page: int, keyid: int) -> Rule:
    """TDH.PHYMEM.PAGE.WBINVD: write back and invalidate a free page's lines under a KeyID.

    Source: tdh_phymem_page_wbinvd.c (leaf 41); tdx-reference.md §6.15.  The page must be
    PT_NDA already (reclaimed or removed).  The KeyID rides in RCX's KeyID bits; the raw
    ``seamcall`` form passes a page without KeyID bits, i.e. KeyID 0.
    """
    b = RuleBuilder(ctx)
    explicit_page(b, "phymem.page_wbinvd.page", page, PageType.PT_NDA, RCX, exclusive=False)
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.dirty[page], AndNot(S.dirty[page], keyid_lines(ctx.p.packages, keyid)))
    )


assert {f.name for f in FIELDS} >= set(TD_FIELDS) | set(VP_FIELDS)
