"""TDH.MEM.* and TDH.MR.* leaves: private memory and S-EPT; and the guest's PAGE.ACCEPT.

Sources: intel/tdx-module tdx_1.5 ``src/vmm_dispatcher/api_calls/<file>``; tdx-reference.md
§6.17-§6.26, permission tables §4/§5 (``model/tables.py``).  4 KiB private pages only: KVM
maps 4K pages, and 2M/1G leaves (PROMOTE/DEMOTE) are out of scope.
"""

from __future__ import annotations

from .checks import (
    entry_of,
    explicit_page,
    gpa_valid,
    held_by_running_vcpu,
    keyid_lines,
    level_ok,
    sept_walk,
    td_state,
    tlb_tracked,
    tracking_required,
    walk_reaches,
)
from .enums import SEPT_ANY_BLOCKED, OpState, PageType, SeptState
from .expr import All, And, Expr, If, Min, Not, Or
from .rule import Ctx, Effect, OperandError, Rule, RuleBuilder, for_each, leaf, set_, st, when
from .state import S
from .status import OperandId, Status
from .tables import SEPT_STATE_ALLOWED

RCX, RDX, R8 = OperandId.RCX, OperandId.RDX, OperandId.R8
_SS = SeptState


def _entry_state(b: RuleBuilder, prefix: str, leaf_spec: str, t: Expr, e: int) -> None:
    """The entry's state is allowed by ``seamcall_sept_state_lookup`` (sept_state_lookup.c)."""
    b.check(f"{prefix}.entry_state", S.sept_state[t, e].isin(SEPT_STATE_ALLOWED[leaf_spec]),
            st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, RCX))


def _give(t: Expr, page: int, pt: PageType, packages: int) -> tuple[Effect, ...]:
    """The page joins the TD: PAMT type and owner, chldcnt + 1; the module and guest use it
    under the TD's HKID from now on (scenario-format.md §3)."""
    return (
        set_(S.pt[page], pt),
        set_(S.owner[page], t),
        set_(S.chldcnt[t], S.chldcnt[t] + 1),
        set_(S.dirty[page], S.dirty[page] | keyid_lines(packages, S.hkid[t])),
    )


def released(t: Expr, page: Expr) -> tuple[Effect, ...]:
    """A page leaves the TD (PT_NDA): chldcnt - 1, and the page has not been cleared yet.

    PAMT's owner and bepoch are left stale by the module; the model zeroes them since no
    rule reads them on a PT_NDA page.
    """
    return (
        set_(S.pt[page], PageType.PT_NDA),
        set_(S.owner[page], 0),
        set_(S.bepoch_age[page], 0),
        set_(S.chldcnt[t], S.chldcnt[t] - 1),
        set_(S.uncleared[page], 1),
    )


@leaf("TDH.MEM.SEPT.ADD", 3, "mem", ("tdr", "gpa", "level", "page"),
      regs=(("rcx", "gpa"), ("rdx", "tdr"), ("r8", "page")), hands=("page",),
      source="tdh_mem_sept_add.c")
def tdh_mem_sept_add(ctx: Ctx, tdr: int, gpa: int, level: int, page: int) -> Rule:
    """TDH.MEM.SEPT.ADD: add an S-EPT page under the entry at ``level`` for ``gpa``.

    Source: tdh_mem_sept_add.c (leaf 3); tdx-reference.md §6.17.  Version 0 with
    allow_existing = 0, as Linux calls it: an NL_MAPPED entry fails.  The version and RDX
    reserved-bit checks are not modelled: the operand carries no flags here.
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mem.sept_add.tdr", tdr, PageType.PT_TDR, RDX, exclusive=False)
    td_state(b, "mem.sept_add", "TDH.MEM.SEPT.ADD", t)
    level_ok(b, "mem.sept_add", gpa, level, 1, ctx.p.sept_levels - 1)
    e = sept_walk(b, "mem.sept_add", t, gpa, level)
    _entry_state(b, "mem.sept_add", "TDH.MEM.SEPT.ADD", t, e)
    is_free = S.sept_state[t, e] == _SS.SEPT_FREE
    # 9a: EXPLICIT_PAGE(R8, PT_NDA, exclusive) on a FREE entry: its lock, then its type;
    # 9b: an NL_MAPPED entry needs allow_existing
    b.check("mem.sept_add.page.lock", Or(Not(is_free), Not(held_by_running_vcpu(page))),
            st(Status.TDX_OPERAND_BUSY, R8))
    b.check("mem.sept_add.page.pt", Or(Not(is_free), S.pt[page] == PageType.PT_NDA),
            st(Status.TDX_PAGE_METADATA_INCORRECT, R8))
    b.check("mem.sept_add.allow_existing", is_free,
            st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, RCX))
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.sept_state[t, e], _SS.SEPT_NL_MAPPED),
        set_(S.sept_page[t, e], page),
        *_give(t, page, PageType.PT_EPT, ctx.p.packages),
    )


@leaf("TDH.MEM.PAGE.ADD", 2, "mem", ("tdr", "gpa", "page"),
      regs=(("rcx", "gpa"), ("rdx", "tdr"), ("r8", "page")), hands=("page",),
      source="tdh_mem_page_add.c")
def tdh_mem_page_add(ctx: Ctx, tdr: int, gpa: int, page: int, level: int = 0) -> Rule:
    """TDH.MEM.PAGE.ADD: add an initial (measured) private page before MR.FINALIZE.

    Source: tdh_mem_page_add.c (leaf 2); tdx-reference.md §6.18.  The TDR is held
    exclusively, which serialises the S-EPT: no tree or entry lock.  The source page check
    (R9: aligned, shared HKID, outside SEAMRR) is not modelled: the host always passes a
    valid source page.  ``level``: the raw form's RCX level bits (the wrapper passes 4K).
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mem.page_add.tdr", tdr, PageType.PT_TDR, RDX, exclusive=True)
    td_state(b, "mem.page_add", "TDH.MEM.PAGE.ADD", t)
    level_ok(b, "mem.page_add", gpa, level, 0, 0)
    e = sept_walk(b, "mem.page_add", t, gpa, 0, tree_lock=False)
    _entry_state(b, "mem.page_add", "TDH.MEM.PAGE.ADD", t, e)
    explicit_page(b, "mem.page_add.page", page, PageType.PT_NDA, R8, exclusive=True)
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.sept_state[t, e], _SS.SEPT_MAPPED),
        set_(S.sept_page[t, e], page),
        *_give(t, page, PageType.PT_REG, ctx.p.packages),
    )


@leaf("TDH.MEM.PAGE.AUG", 6, "mem", ("tdr", "gpa", "page"),
      regs=(("rcx", "gpa"), ("rdx", "tdr"), ("r8", "page")), hands=("page",),
      source="tdh_mem_page_aug.c")
def tdh_mem_page_aug(ctx: Ctx, tdr: int, gpa: int, page: int, level: int = 0) -> Rule:
    """TDH.MEM.PAGE.AUG: add a PENDING private page at run time (the guest accepts it).

    Source: tdh_mem_page_aug.c (leaf 6); tdx-reference.md §6.19.  4 KiB (level 0) only:
    the module takes level 0 or 1 (``verify_page_info_input``), and a 2M AUG (level 1,
    the raw form's RCX level bits) is beyond the model (``OperandError``).
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mem.page_aug.tdr", tdr, PageType.PT_TDR, RDX, exclusive=False)
    td_state(b, "mem.page_aug", "TDH.MEM.PAGE.AUG", t)
    level_ok(b, "mem.page_aug", gpa, level, 0, 1)
    if level and not b.stopped:
        raise OperandError("a 2M private page (TDH.MEM.PAGE.AUG level 1) is not modelled: "
                           "the model keeps 4 KiB private pages only")
    e = sept_walk(b, "mem.page_aug", t, gpa, 0)
    _entry_state(b, "mem.page_aug", "TDH.MEM.PAGE.AUG", t, e)
    explicit_page(b, "mem.page_aug.page", page, PageType.PT_NDA, R8, exclusive=True)
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.sept_state[t, e], _SS.SEPT_PENDING),
        set_(S.sept_page[t, e], page),
        *_give(t, page, PageType.PT_REG, ctx.p.packages),
    )


@leaf("TDH.MEM.RANGE.BLOCK", 7, "mem", ("tdr", "gpa", "level"),
      regs=(("rcx", "gpa"), ("rdx", "tdr")), source="tdh_mem_range_block.c")
def tdh_mem_range_block(ctx: Ctx, tdr: int, gpa: int, level: int) -> Rule:
    """TDH.MEM.RANGE.BLOCK: block an entry (no new translations); record the block epoch.

    Source: tdh_mem_range_block.c (leaf 7); tdx-reference.md §6.20.  The target page (the
    mapped page, or the child S-EPT page of a non-leaf entry) gets bepoch := td_epoch.
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mem.range_block.tdr", tdr, PageType.PT_TDR, RDX, exclusive=False)
    td_state(b, "mem.range_block", "TDH.MEM.RANGE.BLOCK", t)
    level_ok(b, "mem.range_block", gpa, level, 0, ctx.p.sept_levels - 1)
    if not 0 <= level < ctx.p.sept_levels or gpa % (4096 << 9 * level):
        return b.done()
    e = sept_walk(b, "mem.range_block", t, gpa, level)
    state = S.sept_state[t, e]
    b.check("mem.range_block.not_blocked", Not(state.isin(SEPT_ANY_BLOCKED)),
            st(Status.TDX_GPA_RANGE_ALREADY_BLOCKED, RCX))
    _entry_state(b, "mem.range_block", "TDH.MEM.RANGE.BLOCK", t, e)
    # ALL_CHECKS_PASSED
    blocked = If(state == _SS.SEPT_NL_MAPPED, _SS.SEPT_NL_BLOCKED,
                 If(state == _SS.SEPT_MAPPED, _SS.SEPT_BLOCKED, _SS.SEPT_PENDING_BLOCKED))
    return b.done(
        set_(S.sept_state[t, e], blocked),
        set_(S.bepoch_age[S.sept_page[t, e]], 0),
    )


@leaf("TDH.MEM.TRACK", 38, "mem", ("tdr",), regs=(("rcx", "tdr"),), source="tdh_mem_track.c")
def tdh_mem_track(ctx: Ctx, tdr: int) -> Rule:
    """TDH.MEM.TRACK: start a new TLB epoch once no vCPU runs in the previous one.

    Source: tdh_mem_track.c (leaf 38); tdx-reference.md §6.21, §7.6.  Every page blocked in
    this TD ages by one epoch (``bepoch_age``, saturating at 2).
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mem.track.tdr", tdr, PageType.PT_TDR, RCX, exclusive=False)
    td_state(b, "mem.track", "TDH.MEM.TRACK", t)
    b.fault("mem.track.epoch_lock", st(Status.TDX_OPERAND_BUSY, OperandId.TD_EPOCH))
    b.check("mem.track.previous_epoch_drained",
            If(S.epoch[t] == 0, S.refcount1[t], S.refcount0[t]) == 0,
            st(Status.TDX_PREVIOUS_TLB_EPOCH_BUSY))
    # ALL_CHECKS_PASSED
    aging = for_each(ctx.u.domain("entry"), lambda e: when(
        S.sept_state[t, e].isin(SEPT_ANY_BLOCKED),
        set_(S.bepoch_age[S.sept_page[t, e]], Min(S.bepoch_age[S.sept_page[t, e]] + 1, 2))))
    return b.done(set_(S.epoch[t], 1 - S.epoch[t]), *aging)


@leaf("TDH.MEM.PAGE.REMOVE", 29, "mem", ("tdr", "gpa", "level"),
      regs=(("rcx", "gpa"), ("rdx", "tdr")), source="tdh_mem_page_remove.c")
def tdh_mem_page_remove(ctx: Ctx, tdr: int, gpa: int, level: int) -> Rule:
    """TDH.MEM.PAGE.REMOVE: unmap a private page; it becomes PT_NDA (maybe still dirty).

    Source: tdh_mem_page_remove.c (leaf 29); tdx-reference.md §6.22.  Once the TD is
    RUNNABLE the entry must be blocked and TLB-tracked.  The exclusive PAMT lock of the
    mapped page (row 7) cannot fail here: a PT_REG page is never held across steps.
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mem.page_remove.tdr", tdr, PageType.PT_TDR, RDX, exclusive=False)
    td_state(b, "mem.page_remove", "TDH.MEM.PAGE.REMOVE", t)
    level_ok(b, "mem.page_remove", gpa, level, 0, min(2, ctx.p.sept_levels - 1))
    if not 0 <= level <= min(2, ctx.p.sept_levels - 1) or gpa % (4096 << 9 * level):
        return b.done()
    e = sept_walk(b, "mem.page_remove", t, gpa, level)
    _entry_state(b, "mem.page_remove", "TDH.MEM.PAGE.REMOVE", t, e)
    page = S.sept_page[t, e]
    b.check("mem.page_remove.blocked",
            Or(Not(tracking_required(t)), S.sept_state[t, e].isin(SEPT_ANY_BLOCKED)),
            st(Status.TDX_GPA_RANGE_NOT_BLOCKED, RCX))
    b.check("mem.page_remove.tlb_tracked",
            Or(Not(tracking_required(t)), tlb_tracked(t, page)),
            st(Status.TDX_TLB_TRACKING_NOT_DONE, RCX))
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.sept_state[t, e], _SS.SEPT_FREE),
        set_(S.sept_page[t, e], 0),
        *released(t, page),
    )


@leaf("TDH.MEM.RANGE.UNBLOCK", 39, "mem", ("tdr", "gpa", "level"),
      regs=(("rcx", "gpa"), ("rdx", "tdr")), source="tdh_mem_range_unblock.c")
def tdh_mem_range_unblock(ctx: Ctx, tdr: int, gpa: int, level: int) -> Rule:
    """TDH.MEM.RANGE.UNBLOCK: undo a block once it is TLB-tracked (KVM never calls it).

    Source: tdh_mem_range_unblock.c (leaf 39); tdx-reference.md §6.24.  Note the operand
    id of the tracking failure: SEPT_TREE, not RCX.
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mem.range_unblock.tdr", tdr, PageType.PT_TDR, RDX, exclusive=False)
    td_state(b, "mem.range_unblock", "TDH.MEM.RANGE.UNBLOCK", t)
    level_ok(b, "mem.range_unblock", gpa, level, 0, ctx.p.sept_levels - 1)
    if not 0 <= level < ctx.p.sept_levels or gpa % (4096 << 9 * level):
        return b.done()
    e = sept_walk(b, "mem.range_unblock", t, gpa, level)
    _entry_state(b, "mem.range_unblock", "TDH.MEM.RANGE.UNBLOCK", t, e)
    page = S.sept_page[t, e]
    b.check("mem.range_unblock.tlb_tracked",
            Or(Not(tracking_required(t)), tlb_tracked(t, page)),
            st(Status.TDX_TLB_TRACKING_NOT_DONE, OperandId.SEPT_TREE))
    # ALL_CHECKS_PASSED
    state = S.sept_state[t, e]
    unblocked = If(state == _SS.SEPT_NL_BLOCKED, _SS.SEPT_NL_MAPPED,
                   If(state == _SS.SEPT_BLOCKED, _SS.SEPT_MAPPED, _SS.SEPT_PENDING))
    return b.done(set_(S.sept_state[t, e], unblocked), set_(S.bepoch_age[page], 0))


@leaf("TDH.MEM.SEPT.REMOVE", 30, "mem", ("tdr", "gpa", "level"),
      regs=(("rcx", "gpa"), ("rdx", "tdr")), source="tdh_mem_sept_remove.c")
def tdh_mem_sept_remove(ctx: Ctx, tdr: int, gpa: int, level: int) -> Rule:
    """TDH.MEM.SEPT.REMOVE: remove an empty S-EPT page (KVM never calls it).

    Source: tdh_mem_sept_remove.c (leaf 30); tdx-reference.md §6.23.  Version 0 (the
    version check is not modelled); the exclusive PAMT lock of the child S-EPT page (row 7)
    cannot fail: a PT_EPT page is never held across steps.
    """
    b = RuleBuilder(ctx)
    u = ctx.u
    t = S.owner[tdr]
    explicit_page(b, "mem.sept_remove.tdr", tdr, PageType.PT_TDR, RDX, exclusive=False)
    td_state(b, "mem.sept_remove", "TDH.MEM.SEPT.REMOVE", t)
    level_ok(b, "mem.sept_remove", gpa, level, 1, ctx.p.sept_levels - 1)
    if not 1 <= level < ctx.p.sept_levels or gpa % (4096 << 9 * level):
        return b.done()
    e = sept_walk(b, "mem.sept_remove", t, gpa, level)
    _entry_state(b, "mem.sept_remove", "TDH.MEM.SEPT.REMOVE", t, e)
    child = S.sept_page[t, e]
    b.check("mem.sept_remove.blocked",
            Or(Not(tracking_required(t)), S.sept_state[t, e] == _SS.SEPT_NL_BLOCKED),
            st(Status.TDX_GPA_RANGE_NOT_BLOCKED, RCX))
    b.check("mem.sept_remove.tlb_tracked",
            Or(Not(tracking_required(t)), tlb_tracked(t, child)),
            st(Status.TDX_TLB_TRACKING_NOT_DONE, RCX))
    b.check("mem.sept_remove.children_free",
            All(u.children(gpa, level), lambda c: S.sept_state[t, c] == _SS.SEPT_FREE),
            st(Status.TDX_EPT_PAGE_NOT_FREE, RCX))
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.sept_state[t, e], _SS.SEPT_FREE),
        set_(S.sept_page[t, e], 0),
        *released(t, child),
    )


@leaf("TDH.MR.EXTEND", 16, "mem", ("tdr", "gpa"), regs=(("rcx", "gpa"), ("rdx", "tdr")),
      source="tdh_mr_extend.c")
def tdh_mr_extend(ctx: Ctx, tdr: int, gpa: int) -> Rule:
    """TDH.MR.EXTEND: measure a 256-byte chunk of a MAPPED page into MRTD (build time).

    Source: tdh_mr_extend.c (leaf 16); tdx-reference.md §6.25.  The GPA must be 256-byte
    aligned and valid; the walk must end at a present (MAPPED) 4K leaf, else
    EPT_ENTRY_NOT_PRESENT|RCX (the handler turns the walk's EPT_WALK_FAILED into it).  Its
    last check (state MAPPED, no operand id) only fails for migration states, which a
    walk to a present leaf can reach; here it never fails.  Only the measurement changes.
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mr.extend.tdr", tdr, PageType.PT_TDR, RDX, exclusive=True)
    td_state(b, "mr.extend", "TDH.MR.EXTEND", t)
    b.check("mr.extend.gpa_aligned", int(gpa % 256 == 0),
            st(Status.TDX_OPERAND_INVALID, RCX))
    gpa_valid(b, "mr.extend", gpa)
    e = entry_of(b, gpa, 0)
    b.check("mr.extend.leaf_present",
            And(walk_reaches(b, t, gpa, 0), S.sept_state[t, e] == _SS.SEPT_MAPPED),
            st(Status.TDX_EPT_ENTRY_NOT_PRESENT, RCX))
    # ALL_CHECKS_PASSED
    return b.done()


@leaf("TDH.MR.FINALIZE", 17, "mem", ("tdr",), regs=(("rcx", "tdr"),),
      source="tdh_mr_finalize.c")
def tdh_mr_finalize(ctx: Ctx, tdr: int) -> Rule:
    """TDH.MR.FINALIZE: finish the measurement; the TD becomes RUNNABLE.

    Source: tdh_mr_finalize.c (leaf 17); tdx-reference.md §6.26.
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mr.finalize.tdr", tdr, PageType.PT_TDR, RCX, exclusive=True)
    td_state(b, "mr.finalize", "TDH.MR.FINALIZE", t)
    b.check("mr.finalize.vcpus", S.num_vcpus[t] >= 1, st(Status.TDX_NO_VCPUS))
    # ALL_CHECKS_PASSED
    return b.done(set_(S.op_state[t], OpState.OP_STATE_RUNNABLE))


@leaf("TDG.MEM.PAGE.ACCEPT", 6, "guest", ("vp", "gpa"), source="tdg_mem_page_accept.c")
def tdg_mem_page_accept(ctx: Ctx, vp: int, gpa: int) -> Rule:
    """TDG.MEM.PAGE.ACCEPT (a guest TDCALL): the running guest accepts a PENDING 4K page.

    tdx-reference.md §5 (PENDING -> MAPPED).  Only the walk and the entry state are
    modelled; the guest-side error details are simplified to the host leaves' statuses.
    """
    b = RuleBuilder(ctx)
    t = S.owner[S.tdvpr[vp]]
    e = entry_of(b, gpa, 0)
    b.check("guest.accept.walk", walk_reaches(b, t, gpa, 0),
            st(Status.TDX_EPT_WALK_FAILED, RCX))
    _entry_state(b, "guest.accept", "TDG.MEM.PAGE.ACCEPT", t, e)
    # ALL_CHECKS_PASSED
    return b.done(set_(S.sept_state[t, e], _SS.SEPT_MAPPED), enabled=S.in_guest[vp] == 1)
