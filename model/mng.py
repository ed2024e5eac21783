"""TDH.MNG.* leaves: TD creation, key configuration, TDCS pages, init, field access, flush, free.

Each function is one leaf: its checks in the C handler's order, then (after the
``# ALL_CHECKS_PASSED`` line) its success effects.  Sources are intel/tdx-module tdx_1.5
``src/vmm_dispatcher/api_calls/<file>``, summarised in tdx-reference.md §6.
"""

from __future__ import annotations

from .checks import explicit_page, keyid_lines, td_state
from .enums import KotState, OpState, PageType, TdLifecycle
from .expr import If, Or
from .rule import Ctx, Rule, RuleBuilder, leaf, set_, st
from .state import TD_FIELDS, S
from .status import OperandId, Status

RCX, RDX = OperandId.RCX, OperandId.RDX


@leaf("TDH.MNG.CREATE", 9, "mng", ("td", "tdr", "hkid"), regs=(("rcx", "tdr"), ("rdx", "hkid")),
      hands=("tdr",), source="tdh_mng_create.c")
def tdh_mng_create(ctx: Ctx, td: int, tdr: int, hkid: int) -> Rule:
    """TDH.MNG.CREATE: make a free page the TDR of a new TD holding a free private HKID.

    Source: tdh_mng_create.c (leaf 9); tdx-reference.md §6.1.  ``td`` is the model slot the
    new TD's data lives in (the module keeps it in the TDR page itself).  The module's
    global KeyID is inside the TDX KeyID range, so it passes ``is_private_hkid`` and is
    refused as not free: its KOT entry is HKID_RESERVED (tdh_sys_config.c).
    """
    b = RuleBuilder(ctx)
    p = ctx.p
    b.check("mng.create.hkid_private", int(1 <= hkid <= p.global_keyid),
            st(Status.TDX_OPERAND_INVALID, RDX))
    explicit_page(b, "mng.create.tdr", tdr, PageType.PT_NDA, RCX, exclusive=True)
    b.fault("mng.create.kot_lock", st(Status.TDX_OPERAND_BUSY, OperandId.KOT))
    free = S.kot_state[hkid] == KotState.KOT_STATE_HKID_FREE if hkid < p.hkids else 0
    b.check("mng.create.hkid_free", free, st(Status.TDX_HKID_NOT_FREE))
    if hkid >= p.hkids:
        return b.done()  # the check above always fails: no effects to build
    b.fault("mng.create.rnd_entropy", st(Status.TDX_RND_NO_ENTROPY))
    # ALL_CHECKS_PASSED
    fresh = [set_(getattr(S, f)[td], 0) for f in TD_FIELDS]
    return b.done(
        *fresh,
        set_(S.kot_state[hkid], KotState.KOT_STATE_HKID_ASSIGNED),
        set_(S.tdr[td], tdr),
        set_(S.lifecycle[td], TdLifecycle.TD_HKID_ASSIGNED),
        set_(S.hkid[td], hkid),
        set_(S.pt[tdr], PageType.PT_TDR),
        set_(S.owner[tdr], td),
        # the module writes the TDR under its global KeyID and keeps using it
        set_(S.dirty[tdr], S.dirty[tdr] | keyid_lines(p.packages, p.global_keyid)),
    )


@leaf("TDH.MNG.KEY.CONFIG", 8, "mng", ("tdr",), regs=(("rcx", "tdr"),),
      source="tdh_mng_key_config.c")
def tdh_mng_key_config(ctx: Ctx, tdr: int) -> Rule:
    """TDH.MNG.KEY.CONFIG: program the TD's key on the calling LP's package.

    Source: tdh_mng_key_config.c (leaf 8); tdx-reference.md §6.2.  The TD becomes
    TD_KEYS_CONFIGURED when every package is configured.
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    bit = 1 << ctx.pkg
    explicit_page(b, "mng.key_config.tdr", tdr, PageType.PT_TDR, RCX, exclusive=True)
    b.check("mng.key_config.not_fatal", S.fatal[t] == 0, st(Status.TDX_TD_FATAL))
    b.check("mng.key_config.hkid_assigned", S.lifecycle[t] == TdLifecycle.TD_HKID_ASSIGNED,
            st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
    b.check("mng.key_config.pkg_not_configured", (S.pkg_config[t] & bit) == 0,
            st(Status.TDX_KEY_CONFIGURED))
    b.fault("mng.key_config.ket_busy", st(Status.TDX_OPERAND_BUSY, OperandId.KET))
    b.fault("mng.key_config.key_generation", st(Status.TDX_KEY_GENERATION_FAILED))
    # ALL_CHECKS_PASSED
    new = S.pkg_config[t] | bit
    return b.done(
        set_(S.pkg_config[t], new),
        set_(S.lifecycle[t], If(new == ctx.p.all_packages, TdLifecycle.TD_KEYS_CONFIGURED,
                                TdLifecycle.TD_HKID_ASSIGNED)),
    )


@leaf("TDH.MNG.ADDCX", 1, "mng", ("page", "tdr"), regs=(("rcx", "page"), ("rdx", "tdr")),
      hands=("page",), source="tdh_mng_add_cx.c")
def tdh_mng_addcx(ctx: Ctx, page: int, tdr: int) -> Rule:
    """TDH.MNG.ADDCX: add a TDCS page to a TD whose keys are configured.

    Source: tdh_mng_add_cx.c (leaf 1); tdx-reference.md §6.3.  The page that completes the
    minimum TDCS generates the migration key (RND_NO_ENTROPY fault point); pages beyond the
    minimum (L2 VMs) need op state UNINITIALIZED.
    """
    b = RuleBuilder(ctx)
    p = ctx.p
    t = S.owner[tdr]
    explicit_page(b, "mng.addcx.tdr", tdr, PageType.PT_TDR, RDX, exclusive=True)
    b.check("mng.addcx.not_fatal", S.fatal[t] == 0, st(Status.TDX_TD_FATAL))
    b.check("mng.addcx.keys_configured", S.lifecycle[t] == TdLifecycle.TD_KEYS_CONFIGURED,
            st(Status.TDX_TD_KEYS_NOT_CONFIGURED))
    b.check("mng.addcx.tdcx_num", S.num_tdcx[t] < p.tdcs_pages + 3,
            st(Status.TDX_TDCX_NUM_INCORRECT))
    explicit_page(b, "mng.addcx.page", page, PageType.PT_NDA, RCX, exclusive=True)
    b.fault("mng.addcx.rnd_entropy", st(Status.TDX_RND_NO_ENTROPY),
            cond=S.num_tdcx[t] == p.tdcs_pages - 1)
    b.check("mng.addcx.op_state",
            Or(S.num_tdcx[t] < p.tdcs_pages,
               S.op_state[t] == OpState.OP_STATE_UNINITIALIZED),
            st(Status.TDX_OP_STATE_INCORRECT))
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.num_tdcx[t], S.num_tdcx[t] + 1),
        set_(S.chldcnt[t], S.chldcnt[t] + 1),
        set_(S.pt[page], PageType.PT_TDCX),
        set_(S.owner[page], t),
        set_(S.dirty[page], S.dirty[page] | keyid_lines(p.packages, S.hkid[t])),
    )


@leaf("TDH.MNG.INIT", 21, "mng", ("tdr",), regs=(("rcx", "tdr"),), source="tdh_mng_init.c")
def tdh_mng_init(ctx: Ctx, tdr: int) -> Rule:
    """TDH.MNG.INIT: initialise the TDCS from TD_PARAMS; op state becomes INITIALIZED.

    Source: tdh_mng_init.c (leaf 21); tdx-reference.md §6.4.  BOOT_NT4 and the TD_PARAMS
    checks are not modelled: the host always passes valid parameters.
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, "mng.init.tdr", tdr, PageType.PT_TDR, RCX, exclusive=True)
    td_state(b, "mng.init", "TDH.MNG.INIT", t)
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.num_vcpus[t], 0),
        set_(S.num_assoc[t], 0),
        set_(S.epoch[t], 1),  # td_epoch := 1, kept as its parity
        set_(S.refcount0[t], 0),
        set_(S.refcount1[t], 0),
        set_(S.op_state[t], OpState.OP_STATE_INITIALIZED),
    )


def _mng_rdwr(ctx: Ctx, tdr: int, leaf_spec: str, short: str) -> Rule:
    """TDH.MNG.RD/WR (``tdh_mng_rd_wr.c``): TDR shared, TD_STATE with the op-state row.

    The field access rules (field ID checks, TDX_METADATA_FIELD_NOT_READABLE) are not
    modelled: the steps take no field operand."""
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    explicit_page(b, f"mng.{short}.tdr", tdr, PageType.PT_TDR, RCX, exclusive=False)
    td_state(b, f"mng.{short}", leaf_spec, t)
    return b.done()


@leaf("TDH.MNG.RD", 11, "mng", ("tdr",), regs=(("rcx", "tdr"),), source="tdh_mng_rd_wr.c")
def tdh_mng_rd(ctx: Ctx, tdr: int) -> Rule:
    """TDH.MNG.RD: read TD metadata; needs keys configured, TDCS and MNG.INIT (§6.16)."""
    return _mng_rdwr(ctx, tdr, "TDH.MNG.RD", "rd")


@leaf("TDH.MNG.WR", 13, "mng", ("tdr",), regs=(("rcx", "tdr"),), source="tdh_mng_rd_wr.c")
def tdh_mng_wr(ctx: Ctx, tdr: int) -> Rule:
    """TDH.MNG.WR: write TD metadata; op states as MNG.RD less PAUSED/POST_EXPORT (§6.16)."""
    return _mng_rdwr(ctx, tdr, "TDH.MNG.WR", "wr")


@leaf("TDH.MNG.VPFLUSHDONE", 19, "mng", ("tdr",), regs=(("rcx", "tdr"),),
      source="tdh_mng_vpflushdone.c")
def tdh_mng_vpflushdone(ctx: Ctx, tdr: int) -> Rule:
    """TDH.MNG.VPFLUSHDONE: no vCPU is associated any more; block the TD, mark its HKID FLUSHED.

    Source: tdh_mng_vpflushdone.c (leaf 19); tdx-reference.md §6.10.  The association check
    applies only once the TDCS exists and MNG.INIT ran; no fatal check (works on fatal TDs).
    """
    b = RuleBuilder(ctx)
    p = ctx.p
    t = S.owner[tdr]
    h = S.hkid[t]
    explicit_page(b, "mng.vpflushdone.tdr", tdr, PageType.PT_TDR, RCX, exclusive=True)
    b.fault("mng.vpflushdone.kot_lock", st(Status.TDX_OPERAND_BUSY, OperandId.KOT))
    b.check("mng.vpflushdone.lifecycle",
            S.lifecycle[t].isin((TdLifecycle.TD_HKID_ASSIGNED, TdLifecycle.TD_KEYS_CONFIGURED)),
            st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
    b.check("mng.vpflushdone.no_assoc_vcpus",
            Or(S.num_tdcx[t] < p.tdcs_pages,
               S.op_state[t] == OpState.OP_STATE_UNINITIALIZED,
               S.num_assoc[t] == 0),
            st(Status.TDX_FLUSHVP_NOT_DONE))
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.kot_wbinvd[h], p.all_packages),
        set_(S.lifecycle[t], TdLifecycle.TD_BLOCKED),
        set_(S.kot_state[h], KotState.KOT_STATE_HKID_FLUSHED),
    )


@leaf("TDH.MNG.KEY.FREEID", 20, "mng", ("tdr",), regs=(("rcx", "tdr"),),
      source="tdh_mng_key_freeid.c")
def tdh_mng_key_freeid(ctx: Ctx, tdr: int) -> Rule:
    """TDH.MNG.KEY.FREEID: free the TD's HKID once CACHE.WB completed on every package.

    Source: tdh_mng_key_freeid.c (leaf 20); tdx-reference.md §6.12.
    """
    b = RuleBuilder(ctx)
    t = S.owner[tdr]
    h = S.hkid[t]
    explicit_page(b, "mng.key_freeid.tdr", tdr, PageType.PT_TDR, RCX, exclusive=True)
    b.check("mng.key_freeid.blocked", S.lifecycle[t] == TdLifecycle.TD_BLOCKED,
            st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
    b.fault("mng.key_freeid.kot_lock", st(Status.TDX_OPERAND_BUSY, OperandId.KOT))
    b.check("mng.key_freeid.wbinvd_done", S.kot_wbinvd[h] == 0,
            st(Status.TDX_WBCACHE_NOT_COMPLETE))
    # ALL_CHECKS_PASSED
    return b.done(
        set_(S.kot_state[h], KotState.KOT_STATE_HKID_FREE),
        set_(S.lifecycle[t], TdLifecycle.TD_TEARDOWN),
    )
