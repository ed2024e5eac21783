"""Shared check building blocks, named after ``src/common/helpers/helpers.c`` (tdx_1.5).

Each block appends its checks, in the helper's order, to a ``RuleBuilder``; the leaves call
them exactly where their C handlers call the helper (tdx-reference.md §3).

Checks of the helpers that can never fail in this model are left out, and said so here once:
PA alignment, KeyID bits and MAX_PA (``hpa_check_with_pwr_2_alignment``), the TDMR range
(``pamt_get_block``) and the PAMT leaf size (4 KiB pages only): scenario pages are always
valid 4 KiB pages inside an initialized TDMR.  IMPLICIT_TDR (``lock_and_map_implicit_tdr``)
takes the TDR shared and no step holds it exclusively across steps, and the TDCS
``op_state_lock`` is only taken exclusively by the export/import leaves (out of scope), so
neither can return BUSY here.
"""

from __future__ import annotations

from .enums import OP_TLB_TRACKING, PageType, SeptState, TdLifecycle
from .expr import All, And, Domain, Expr, If, Not, Or, Sym, lift
from .rule import OperandError, RuleBuilder, st
from .state import S
from .status import OperandId, Status
from .tables import OP_STATE_ALLOWED


def held_by_running_vcpu(page: int) -> Expr:
    """The page's PAMT entry is held shared by a vCPU in the guest.

    TDH.VP.ENTER keeps the TDR and TDVPR PAMT entries shared-locked until the TD exits
    (``tdh_vp_enter.c``, ``td_exit.c``; tdx-reference.md §3.8): a TDR is held while any of
    its vCPUs runs (refcount[0] + refcount[1] counts them), a TDVPR while its vCPU runs.
    """
    t, v = S.owner[page], S.vpslot[page]
    return Or(
        And(S.pt[page] == PageType.PT_TDR, (S.refcount0[t] + S.refcount1[t]) > 0),
        And(S.pt[page] == PageType.PT_TDVPR, S.in_guest[v] == 1),
    )


def lp_in_seam_root(cpu: Expr | int, vps: Domain) -> Expr:
    """Logical CPU ``cpu`` is not running a guest, so it can execute SEAMCALL at all.

    TDH.VP.ENTER puts the LP in SEAM non-root mode with the vCPU associated to it
    (``tdh_vp_enter.c``: ``associate_vcpu``, then VMLAUNCH/VMRESUME); the LP runs guest code
    until the TD exits (``td_exit.c``), and only then is it back in the VMM.  An LP in the
    guest issues no SEAMCALL, so it runs one vCPU at a time: every SEAMCALL on ``cpu`` is
    *enabled* (a hardware precondition, not a module check) only while no vCPU that is in
    the guest is associated with it.
    """
    return All(vps, lambda v: Not(And(S.in_guest[v] == 1, S.assoc[v] == cpu + 1)))


def explicit_page(
    b: RuleBuilder, name: str, page: int, pt: PageType, opid: OperandId, exclusive: bool
) -> None:
    """EXPLICIT_PAGE(opid, expected_pt, lock): ``check_and_lock_explicit_private_hpa``.

    Lock the page's PAMT entry (exclusive fails while a running vCPU holds it shared), then
    ``pamt.pt == expected_pt`` (helpers.c; tdx-reference.md §3.1 rows 3 and 5).
    """
    if exclusive:
        b.check(f"{name}.lock", Not(held_by_running_vcpu(page)), st(Status.TDX_OPERAND_BUSY, opid))
    b.check(f"{name}.pt", S.pt[page] == pt, st(Status.TDX_PAGE_METADATA_INCORRECT, opid))


def td_state(b: RuleBuilder, prefix: str, leaf: str, t: Expr) -> None:
    """TD_STATE(leaf): ``check_state_map_tdcs_and_lock`` (helpers.c; tdx-reference.md §3.4).

    Not fatal, lifecycle TD_KEYS_CONFIGURED, at least MIN_NUM_TDCS_PAGES TDCS pages, then the
    op state allowed by ``seamcall_state_lookup`` (``op_state_lookup.c``).
    """
    p = b.ctx.p
    b.check(f"{prefix}.not_fatal", S.fatal[t] == 0, st(Status.TDX_TD_FATAL))
    b.check(
        f"{prefix}.keys_configured",
        S.lifecycle[t] == TdLifecycle.TD_KEYS_CONFIGURED,
        st(Status.TDX_TD_KEYS_NOT_CONFIGURED),
    )
    b.check(
        f"{prefix}.tdcs_allocated",
        S.num_tdcx[t] >= p.tdcs_pages,
        st(Status.TDX_TDCS_NOT_ALLOCATED),
    )
    b.check(
        f"{prefix}.op_state",
        S.op_state[t].isin(OP_STATE_ALLOWED[leaf]),
        st(Status.TDX_OP_STATE_INCORRECT),
    )


def level_ok(b: RuleBuilder, prefix: str, gpa: int, level: int, lo: int, hi: int) -> None:
    """``verify_page_info_input``: level in range and GPA aligned to it (OPERAND_INVALID|RCX).

    A level beyond the configured S-EPT depth is refused here like any other out-of-range
    level (the builder stops); only with this check ablated is it beyond the model."""
    ok = lo <= level <= hi and gpa % (4096 << (9 * level)) == 0
    b.check(f"{prefix}.gpa_level", int(ok), st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
    if not b.stopped and not 0 <= level < b.ctx.p.sept_levels:
        raise OperandError(f"level {level} is beyond this S-EPT (sept_levels="
                           f"{b.ctx.p.sept_levels}) and {prefix}.gpa_level, the check that "
                           "refuses it, is ablated: the model cannot follow the module past it")


def entry_of(b: RuleBuilder, gpa: int, level: int) -> int:
    """The S-EPT entry (gpa, level), or 0 once the builder has stopped (a check before it
    always fails with these operands: the entry is never read)."""
    return 0 if b.stopped else b.ctx.u.entry(gpa, level)


def walk_reaches(b: RuleBuilder, t: Expr, gpa: int, level: int) -> Expr:
    """``secure_ept_walk`` reaches ``level``: every entry above it is NL_MAPPED.

    The walk starts at the root (level ``sept_levels - 1``, held in the TDCS) and stops at
    the first entry with RWX = 0 or that is a leaf (helpers.c; tdx-reference.md §3.5).
    """
    u = b.ctx.u
    return And(
        *(
            S.sept_state[t, entry_of(b, gpa, lv)] == SeptState.SEPT_NL_MAPPED
            for lv in range(level + 1, u.platform.sept_levels)
        )
    )


def gpa_valid(b: RuleBuilder, prefix: str, gpa: int) -> None:
    """``check_gpa_validity`` (helpers.c; tdx-reference.md §3.5 row 1): the GPA is private
    (shared bit clear) and below GPAW.  GPAW is 48 with a 4-level S-EPT and 52 with 5 (the
    shared bit is bit GPAW-1); shallower model S-EPTs use 48."""
    gpaw = 52 if b.ctx.p.sept_levels >= 5 else 48
    b.check(f"{prefix}.gpa_valid", int(0 <= gpa < (1 << (gpaw - 1))),
            st(Status.TDX_OPERAND_INVALID, OperandId.RCX))


def sept_walk(
    b: RuleBuilder, prefix: str, t: Expr, gpa: int, level: int, tree_lock: bool = True
) -> int:
    """SEPT_WALK(RCX, level, tree lock, TO_LEVEL) + the entry lock; returns the entry index.

    ``lock_sept_check_and_walk_internal`` takes the S-EPT tree lock (BUSY|SEPT_TREE when the
    guest's 0-step filter or another LP holds it), walks, and fails EPT_WALK_FAILED|RCX if
    the walk stops above ``level``; ``sept_lock_acquire_host`` then locks the entry
    (BUSY|RCX while a guest TDG.MEM.PAGE.ACCEPT holds it).  Both locks are fault points.
    The GPA validity check (shared bit, GPAW) comes first.
    """
    gpa_valid(b, prefix, gpa)
    if tree_lock:
        b.fault(f"{prefix}.sept_tree_lock", st(Status.TDX_OPERAND_BUSY, OperandId.SEPT_TREE))
    b.check(
        f"{prefix}.walk",
        walk_reaches(b, t, gpa, level),
        st(Status.TDX_EPT_WALK_FAILED, OperandId.RCX),
    )
    if tree_lock:
        b.fault(f"{prefix}.sept_entry_lock", st(Status.TDX_OPERAND_BUSY, OperandId.RCX))
    return entry_of(b, gpa, level)


def tlb_tracked(t: Expr, page: Expr) -> Expr:
    """``is_tlb_tracked(bepoch)`` (helpers.h): blocked at least two epochs ago, or one epoch
    ago with no vCPU still running in that epoch (refcount of its parity is 0).

    With ``bepoch_age = min(E - bepoch, 2)`` and ``E``'s parity kept in ``epoch``.
    """
    age = S.bepoch_age[page]
    prev_refcount = If(S.epoch[t] == 0, S.refcount1[t], S.refcount0[t])
    return Or(age >= 2, And(age == 1, prev_refcount == 0))


def tracking_required(t: Expr) -> Expr:
    """The op state's ``tlb_tracking_required`` flag (``op_state_lookup.c``)."""
    return S.op_state[t].isin(OP_TLB_TRACKING)


def keyid_lines(packages: int, keyid: Expr | int, pkg: Expr | int | None = None) -> Expr:
    """Dirty-map bits of ``keyid`` on every package (or on ``pkg`` only).  With a symbolic
    package count (the parametric reading) the set itself: ``Sym("lines", ...)``."""
    if not isinstance(packages, int):
        return Sym("lines", (lift(keyid),) if pkg is None else (lift(keyid), lift(pkg)))
    mask = ((1 << packages) - 1) if pkg is None else (1 << pkg)
    return lift(mask) << (lift(keyid) * packages)
