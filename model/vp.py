"""TDH.VP.* leaves: vCPU creation, TDCX pages, init, entry, flush, field access; and TD exit.

Sources: intel/tdx-module tdx_1.5 ``src/vmm_dispatcher/api_calls/<file>`` and
``src/td_transitions/{tdh_vp_enter.c,td_exit.c}``; tdx-reference.md §6.5-§6.9, §6.16, §3.7.
The vCPU of a TDVPR page is ``S.vpslot[page]``; its TD is the page's PAMT owner (the
handlers reach the TDR the same way, through IMPLICIT_TDR).
"""

from __future__ import annotations

from .checks import explicit_page, keyid_lines, td_state
from .enums import PageType, TdLifecycle, VcpuState
from .expr import Expr, If, Or
from .rule import Ctx, Effect, Rule, RuleBuilder, leaf, set_, st, when
from .state import S
from .status import OperandId, Status

RCX, RDX = OperandId.RCX, OperandId.RDX


@leaf("TDH.VP.CREATE", 10, "vp", ("vp", "tdvpr", "tdr"), regs=(("rcx", "tdvpr"), ("rdx", "tdr")),
      hands=("tdvpr",), source="tdh_vp_create.c")
def tdh_vp_create(ctx: Ctx, vp: int, tdvpr: int, tdr: int) -> Rule:
    """TDH.VP.CREATE: make a free page the TDVPR of a new, uninitialised vCPU.

    Source: tdh_vp_create.c (leaf 10); tdx-reference.md §6.5.  ``vp`` is the model slot of
    the vCPU's data.  No max_vcpus check here (VP.INIT enforces it).
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "vp.create.tdr", tdr, PageType.PT_TDR, RDX, exclusive=False)
    td_state(b, "vp.create", "TDH.VP.CREATE", t)
    explicit_page(b, "vp.create.tdvpr", tdvpr, PageType.PT_NDA, RCX, exclusive=True)
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.tdvpr[vp], tdvpr),
        set_(S.state[vp], VcpuState.VCPU_UNINITIALIZED),
        set_(S.in_guest[vp], 0),
        set_(S.assoc[vp], 0),
        set_(S.vepoch[vp], 0),
        set_(S.num_pages[vp], 1),
        set_(S.chldcnt[t], S.chldcnt[t] + 1),
        set_(S.pt[tdvpr], PageType.PT_TDVPR),
        set_(S.owner[tdvpr], t),
        set_(S.vpslot[tdvpr], vp),
        set_(S.dirty[tdvpr], S.dirty[tdvpr] | keyid_lines(ctx.p.packages, S.hkid[t])),
    )


@leaf("TDH.VP.ADDCX", 4, "vp", ("page", "tdvpr"), regs=(("rcx", "page"), ("rdx", "tdvpr")),
      hands=("page",), source="tdh_vp_addcx.c")
def tdh_vp_addcx(ctx: Ctx, page: int, tdvpr: int) -> Rule:
    """TDH.VP.ADDCX: add a TDVPS extension page to an uninitialised vCPU.

    Source: tdh_vp_addcx.c (leaf 4); tdx-reference.md §6.6.
    """
    b = RuleBuilder(ctx)
    t, v = S.owner[tdvpr], S.vpslot[tdvpr]
    explicit_page(b, "vp.addcx.tdvpr", tdvpr, PageType.PT_TDVPR, RDX, exclusive=True)
    td_state(b, "vp.addcx", "TDH.VP.ADDCX", t)
    b.check("vp.addcx.uninitialized", S.state[v] == VcpuState.VCPU_UNINITIALIZED,
            st(Status.TDX_VCPU_STATE_INCORRECT))
    b.check("vp.addcx.tdcx_num", S.num_pages[v] < ctx.p.tdvps_pages + 9,
            st(Status.TDX_TDCX_NUM_INCORRECT))
    explicit_page(b, "vp.addcx.page", page, PageType.PT_NDA, RCX, exclusive=True)
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.num_pages[v], S.num_pages[v] + 1),
        set_(S.chldcnt[t], S.chldcnt[t] + 1),
        set_(S.pt[page], PageType.PT_TDCX),
        set_(S.owner[page], t),
        set_(S.dirty[page], S.dirty[page] | keyid_lines(ctx.p.packages, S.hkid[t])),
    )


@leaf("TDH.VP.INIT", 22, "vp", ("tdvpr",), regs=(("rcx", "tdvpr"),), source="tdh_vp_init.c")
def tdh_vp_init(ctx: Ctx, tdvpr: int) -> Rule:
    """TDH.VP.INIT: initialise the vCPU and associate it with the calling LP.

    Source: tdh_vp_init.c (leaf 22); tdx-reference.md §6.7.  The TSC_ADJUST and x2APIC
    checks are not modelled.
    """
    b = RuleBuilder(ctx)
    t, v = S.owner[tdvpr], S.vpslot[tdvpr]
    explicit_page(b, "vp.init.tdvpr", tdvpr, PageType.PT_TDVPR, RCX, exclusive=True)
    td_state(b, "vp.init", "TDH.VP.INIT", t)
    b.check("vp.init.tdvps_pages", S.num_pages[v] >= ctx.p.tdvps_pages,
            st(Status.TDX_TDCX_NUM_INCORRECT))
    b.check("vp.init.uninitialized", S.state[v] == VcpuState.VCPU_UNINITIALIZED,
            st(Status.TDX_VCPU_STATE_INCORRECT))
    b.check("vp.init.max_vcpus", S.num_vcpus[t] < ctx.p.max_vcpus,
            st(Status.TDX_MAX_VCPUS_EXCEEDED))
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.num_vcpus[t], S.num_vcpus[t] + 1),
        set_(S.state[v], VcpuState.VCPU_READY),
        # associate_vcpu_initial: unconditionally this LP, one more association
        set_(S.assoc[v], ctx.cpu + 1),
        set_(S.num_assoc[t], S.num_assoc[t] + 1),
    )


def _associate(ctx: Ctx, b: RuleBuilder, prefix: str, t: Expr, v: Expr,
               allow_disabled: bool) -> tuple[Effect, ...]:
    """``check_and_associate_vcpu`` (helpers.c; tdx-reference.md §3.7): the vCPU must be
    READY (or DISABLED where allowed) and not associated with another LP; a new association
    counts in num_assoc_vcpus."""
    ok_states = (VcpuState.VCPU_READY, VcpuState.VCPU_DISABLED) if allow_disabled else (
        VcpuState.VCPU_READY,)
    b.check(f"{prefix}.vcpu_state", S.state[v].isin(ok_states),
            st(Status.TDX_VCPU_STATE_INCORRECT))
    here = ctx.cpu + 1
    b.check(f"{prefix}.not_associated_elsewhere", S.assoc[v].isin((0, here)),
            st(Status.TDX_VCPU_ASSOCIATED))
    return (
        set_(S.assoc[v], here),
        set_(S.num_assoc[t], S.num_assoc[t] + If(S.assoc[v] == 0, 1, 0)),
    )


@leaf("TDH.VP.ENTER", 0, "vp", ("tdvpr",), regs=(("rcx", "tdvpr"),), source="tdh_vp_enter.c")
def tdh_vp_enter(ctx: Ctx, tdvpr: int) -> Rule:
    """TDH.VP.ENTER: run the vCPU in the guest on this LP until ``td_exit``.

    Source: src/td_transitions/tdh_vp_enter.c (leaf 0); tdx-reference.md §6.8.  While it
    runs, its TDR and TDVPR PAMT entries stay shared-locked and it counts in the current
    epoch's refcount.  BOOT_NT4, RCX flags, TSC and MONITOR_FSM checks are not modelled.
    """
    b = RuleBuilder(ctx)
    t, v = S.owner[tdvpr], S.vpslot[tdvpr]
    explicit_page(b, "vp.enter.tdvpr", tdvpr, PageType.PT_TDVPR, RCX, exclusive=False)
    td_state(b, "vp.enter", "TDH.VP.ENTER", t)
    b.check("vp.enter.tdvps_pages", S.num_pages[v] >= ctx.p.tdvps_pages,
            st(Status.TDX_TDCX_NUM_INCORRECT))
    assoc = _associate(ctx, b, "vp.enter", t, v, allow_disabled=False)
    # a failure after check_and_associate_vcpu keeps the association: tdh_vp_enter.c's
    # EXIT_FAILURE path releases locks but does not undo it
    b.fault("vp.enter.epoch_lock", st(Status.TDX_OPERAND_BUSY, OperandId.TD_EPOCH), assoc)
    # the 0-step mitigation may take the S-EPT tree lock and find it busy (§6.8, §10.7)
    b.fault("vp.enter.zero_step", st(Status.TDX_OPERAND_BUSY, OperandId.SEPT_TREE), assoc)
    # ALL_CHECKS_PASSED
    return b.done(
        *assoc,
        when(S.epoch[t] == 0, set_(S.refcount0[t], S.refcount0[t] + 1)),
        when(S.epoch[t] == 1, set_(S.refcount1[t], S.refcount1[t] + 1)),
        set_(S.vepoch[v], S.epoch[t]),
        set_(S.state[v], VcpuState.VCPU_ACTIVE),
        set_(S.in_guest[v], 1),
    )


@leaf("TDH.VP.FLUSH", 18, "vp", ("tdvpr",), regs=(("rcx", "tdvpr"),), source="tdh_vp_flush.c")
def tdh_vp_flush(ctx: Ctx, tdvpr: int) -> Rule:
    """TDH.VP.FLUSH: flush the vCPU's cached state on the LP it is associated with.

    Source: tdh_vp_flush.c (leaf 18); tdx-reference.md §6.9.  No fatal or op-state check:
    it works on a fatal TD, but only while the keys are configured.
    """
    b = RuleBuilder(ctx)
    t, v = S.owner[tdvpr], S.vpslot[tdvpr]
    explicit_page(b, "vp.flush.tdvpr", tdvpr, PageType.PT_TDVPR, RCX, exclusive=True)
    b.check("vp.flush.keys_configured", S.lifecycle[t] == TdLifecycle.TD_KEYS_CONFIGURED,
            st(Status.TDX_TD_KEYS_NOT_CONFIGURED))
    b.check("vp.flush.tdvps_pages", S.num_pages[v] >= ctx.p.tdvps_pages,
            st(Status.TDX_TDCX_NUM_INCORRECT))
    b.check("vp.flush.associated_here", S.assoc[v] == ctx.cpu + 1,
            st(Status.TDX_VCPU_NOT_ASSOCIATED))
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.assoc[v], 0),
        set_(S.num_assoc[t], S.num_assoc[t] - 1),
    )


def _vp_rdwr(ctx: Ctx, tdvpr: int, leaf_spec: str, short: str, allow_disabled: bool) -> Rule:
    """TDH.VP.RD/WR (``tdh_vp_rd_wr.c``): TDVPR shared, TD_STATE, enough TDVPS pages, and
    the vCPU is associated with this LP (tdx-reference.md §6.16).  The field access rules
    (field ID checks, TDX_METADATA_FIELD_NOT_READABLE) are not modelled: no field operand."""
    b = RuleBuilder(ctx)
    t, v = S.owner[tdvpr], S.vpslot[tdvpr]
    explicit_page(b, f"vp.{short}.tdvpr", tdvpr, PageType.PT_TDVPR, RCX, exclusive=False)
    td_state(b, f"vp.{short}", leaf_spec, t)
    b.check(f"vp.{short}.tdvps_pages", S.num_pages[v] >= ctx.p.tdvps_pages,
            st(Status.TDX_TDCX_NUM_INCORRECT))
    assoc = _associate(ctx, b, f"vp.{short}", t, v, allow_disabled)
    return b.done(*assoc)


@leaf("TDH.VP.RD", 26, "vp", ("tdvpr",), regs=(("rcx", "tdvpr"),), source="tdh_vp_rd_wr.c")
def tdh_vp_rd(ctx: Ctx, tdvpr: int) -> Rule:
    """TDH.VP.RD: read vCPU metadata; associates the vCPU (READY or DISABLED)."""
    return _vp_rdwr(ctx, tdvpr, "TDH.VP.RD", "rd", allow_disabled=True)


@leaf("TDH.VP.WR", 43, "vp", ("tdvpr",), regs=(("rcx", "tdvpr"),), source="tdh_vp_rd_wr.c")
def tdh_vp_wr(ctx: Ctx, tdvpr: int) -> Rule:
    """TDH.VP.WR: write vCPU metadata; associates the vCPU (READY only)."""
    return _vp_rdwr(ctx, tdvpr, "TDH.VP.WR", "wr", allow_disabled=False)


def td_exit(ctx: Ctx, vp: int, reason: str) -> Rule:
    """A TD exit of a running vCPU (``td_exit.c``; tdx-reference.md §6.8, §7.3).

    normal: VCPU_READY; vcpu_fatal (TDX_NON_RECOVERABLE_VCPU): VCPU_DISABLED; td_fatal
    (TDX_NON_RECOVERABLE_TD): TDR.fatal := 1, vCPU state unchanged.  Always: the epoch
    refcount drops, the locks are released, the vCPU stays associated.
    """
    b = RuleBuilder(ctx)
    v = vp
    t = S.owner[S.tdvpr[v]]
    effects: list[Effect] = [
        set_(S.in_guest[v], 0),
        when(S.vepoch[v] == 0, set_(S.refcount0[t], S.refcount0[t] - 1)),
        when(S.vepoch[v] == 1, set_(S.refcount1[t], S.refcount1[t] - 1)),
    ]
    if reason == "normal":
        effects.append(set_(S.state[v], VcpuState.VCPU_READY))
    elif reason == "vcpu_fatal":
        effects.append(set_(S.state[v], VcpuState.VCPU_DISABLED))
    else:
        effects.append(set_(S.fatal[t], 1))
    return b.done(*effects, enabled=Or(S.in_guest[v] == 1))
