"""The invariants of scenario-format.md §4, and the module's own structural invariants.

Each ``invariant(...)`` below is one id.  The headline ones (``no-double-assignment``,
``flush-before-reclaim``, ``keyid-after-vpflushdone``, ``flush-before-alloc``,
``clear-before-reuse``, ``no-leak``) are the contract's; the structural ones come from
tdx-reference.md §11 ("Useful invariants to assert") and §7.
"""

from __future__ import annotations

from tdxcheck.model.actions import Action
from tdxcheck.model.checks import keyid_lines, tlb_tracked
from tdxcheck.model.enums import HostPage, KotState, OpState, PageType, TdLifecycle
from tdxcheck.model.expr import All, And, Any, Count, Domain, Expr, If, Implies, Not, Sym
from tdxcheck.model.rule import LEAVES
from tdxcheck.model.state import POST, TD_ENTRY_FIELDS, TD_FIELDS, VP_FIELDS, S, Universe

from .base import Clause, Invariant, forall, forall_pairs, invariant

_LC = TdLifecycle
_HOLDS_KEY = (_LC.TD_HKID_ASSIGNED, _LC.TD_KEYS_CONFIGURED, _LC.TD_BLOCKED)
_CHILD_TYPES = (PageType.PT_TDCX, PageType.PT_TDVPR, PageType.PT_EPT, PageType.PT_REG)
_MODULE_OWNED = (PageType.PT_REG, PageType.PT_TDR, PageType.PT_TDCX, PageType.PT_TDVPR,
                 PageType.PT_EPT)


def live(t: int) -> Expr:
    """TD slot ``t`` holds a TD (its TDR has not been reclaimed)."""
    return S.tdr[t] != 0


def private_lines(u: Universe) -> int | Expr:
    """Dirty-map bits of every private KeyID: the HKIDs and the module's global KeyID (a
    symbol in the parametric reading, which proves no host clause)."""
    p = u.platform
    if not isinstance(p.packages, int):
        return Sym("private_lines")
    mask = 0
    for k in range(1, p.hkids + 1):
        mask |= ((1 << p.packages) - 1) << (k * p.packages)
    return mask


def _pages(u: Universe) -> Domain:
    return u.domain("page")


def _taken(page: int) -> Expr:
    """The step made ``page`` a module page (PT_NDA before, owned after)."""
    return And(S.pt[page] == PageType.PT_NDA, POST.pt[page] != PageType.PT_NDA)


def _handed_pages(a: Action) -> list[int]:
    if a.kind not in LEAVES:
        return []
    return [a.arg(h) for h in LEAVES[a.kind].hands]


# ---------------------------------------------------------------------------------------
def _nda_state(u: Universe) -> list[Clause]:
    """no-double-assignment, state part: a module-owned page is allocated to the TDX code
    (not back in the kernel), and no two live TDs hold the same HKID (KOT single owner,
    tdh_mng_create.c)."""
    out = forall(_pages(u), lambda p: Clause(
        Implies(S.pt[p].isin(_MODULE_OWNED), S.host[p] == HostPage.TDX),
        f"page {u.page_name(p)} is owned by the module but the kernel allocator holds it"))

    def same_hkid(t1: Expr, t2: Expr) -> Clause:
        holds = And(live(t1), live(t2), S.lifecycle[t1].isin(_HOLDS_KEY),
                    S.lifecycle[t2].isin(_HOLDS_KEY), S.hkid[t1] == S.hkid[t2])
        return Clause(Not(holds), f"{u.tds[t1]} and {u.tds[t2]} hold the same HKID at once",
                      by="module")

    return out + forall_pairs((u.domain("td"),), same_hkid)


def _nda_step(u: Universe, a: Action) -> list[Clause]:
    """no-double-assignment, step part: the host writes or re-allocates no page the module
    owns, takes no HKID twice, and the module takes only pages and HKIDs the host allocated
    (scenario-format.md §4)."""
    out: list[Clause] = []
    if a.kind in ("host_write", "clear_page"):
        p = a.arg("page")
        out.append(Clause(Not(S.pt[p].isin(_MODULE_OWNED)),
                          f"the host wrote page {u.page_name(p)} while the module owns it"))
    if a.kind == "page_alloc":
        p = a.arg("page")
        out.append(Clause(S.host[p] == HostPage.KERNEL,
                          f"page {u.page_name(p)} was allocated to TDX a second time"))
    if a.kind == "hkid_alloc":
        h = a.arg("hkid")
        out.append(Clause(S.host_hkid[h] == 0, f"HKID {h} was taken from the pool twice"))
    if a.kind == "TDH.MNG.CREATE":
        h, tdr = a.arg("hkid"), a.arg("tdr")
        out.append(Clause(Implies(_taken(tdr), S.host_hkid[h] == 1),
                          f"TDH.MNG.CREATE used HKID {h}, which the host has not allocated"))
    for p in _handed_pages(a):
        out.append(Clause(Implies(_taken(p), S.host[p] == HostPage.TDX),
                          f"the module took page {u.page_name(p)}, which the kernel has not "
                          "allocated to the TDX code"))
    return out


NO_DOUBLE_ASSIGNMENT = invariant(Invariant(
    id="no-double-assignment",
    summary="a page or KeyID is never held by two owners at once",
    guarantee="host",
    source="scenario-format.md §4; PAMT single owner (pamt_manager.h), KOT (tdh_mng_create.c)",
    state=_nda_state,
    step=_nda_step,
    depends_on=("mng.create.hkid_free", "mng.create.tdr.pt"),
))


# ---------------------------------------------------------------------------------------
def _fbr_step(u: Universe, a: Action) -> list[Clause]:
    """flush-before-reclaim: a page is not written, cleared, freed or handed to the module
    while dirty lines under a private KeyID (an HKID or the global KeyID) remain for it
    (tdx-reference.md §9: PAGE.WBINVD after REMOVE, global-KeyID WBINVD of the TDR)."""
    priv = private_lines(u)
    out: list[Clause] = []
    if a.kind in ("host_write", "clear_page", "page_free"):
        p = a.arg("page")
        out.append(Clause((S.dirty[p] & priv) == 0,
                          f"{a.step} of page {u.page_name(p)} while dirty lines under a private "
                          "KeyID remain for it (a later write-back would overwrite the host's "
                          "data)"))
    for p in _handed_pages(a):
        out.append(Clause(Implies(_taken(p), (S.dirty[p] & priv) == 0),
                          f"page {u.page_name(p)} was handed to the module again while dirty "
                          "lines under a private KeyID remain for it"))
    return out


FLUSH_BEFORE_RECLAIM = invariant(Invariant(
    id="flush-before-reclaim",
    summary="a page that left the module is not reused while private-KeyID lines remain",
    guarantee="host",
    source="tdx-reference.md §9 (LK tdx_sept_drop_private_spte, tdx_reclaim_td_control_pages)",
    step=_fbr_step,
))


# ---------------------------------------------------------------------------------------
def _kav_state(u: Universe) -> list[Clause]:
    """keyid-after-vpflushdone, state part: while the KOT says an HKID is free, no page holds
    dirty lines under it and no vCPU that used it is still associated with an LP
    (tdh_mng_vpflushdone.c checks num_assoc_vcpus; tdh_mng_key_freeid.c the wbinvd bitmap)."""
    p = u.platform

    def lines_gone(h: Expr, pg: Expr) -> Clause:
        free = S.kot_state[h] == KotState.KOT_STATE_HKID_FREE
        return Clause(Implies(free, (S.dirty[pg] & keyid_lines(p.packages, h)) == 0),
                      f"the KOT says HKID {h} is free while page {u.page_name(pg)} may "
                      f"still hold dirty lines under it")

    def unassociated(h: Expr, v: Expr) -> Clause:
        free = S.kot_state[h] == KotState.KOT_STATE_HKID_FREE
        t = S.owner[S.tdvpr[v]]
        assoc = And(S.tdvpr[v] != 0, S.assoc[v] != 0, S.hkid[t] == h)
        return Clause(Implies(free, Not(assoc)),
                      f"the KOT says HKID {h} is free while {u.vps[v]} is still "
                      "associated with an LP (its cached VMCS is written back under "
                      "that HKID on the next flush)")

    return forall(u.domain("hkid"), lambda h: [
        *forall(_pages(u), lambda pg: lines_gone(h, pg)),
        *forall(u.domain("vp"), lambda v: unassociated(h, v))])


def _kav_step(u: Universe, a: Action) -> list[Clause]:
    """keyid-after-vpflushdone, step part: the host frees an HKID to its pool, and the module
    gives it to a new TD, only once the KOT says it is free (after a successful FREEID)."""
    if a.kind == "hkid_free":
        h = a.arg("hkid")
        return [Clause(S.kot_state[h] == KotState.KOT_STATE_HKID_FREE,
                       f"HKID {h} went back to the host pool before its TD passed "
                       "VPFLUSHDONE, CACHE.WB on every package and KEY.FREEID", by="host")]
    if a.kind == "TDH.MNG.CREATE":
        h, tdr = a.arg("hkid"), a.arg("tdr")
        return [Clause(Implies(_taken(tdr), S.kot_state[h] == KotState.KOT_STATE_HKID_FREE),
                       f"HKID {h} was reassigned before its previous TD freed it")]
    return []


KEYID_AFTER_VPFLUSHDONE = invariant(Invariant(
    id="keyid-after-vpflushdone",
    summary="an HKID is free only after VPFLUSHDONE, CACHE.WB on every package and FREEID",
    guarantee="module",
    source="tdh_mng_vpflushdone.c, tdh_phymem_cache_wb.c, tdh_mng_key_freeid.c (§6.10-§6.12)",
    state=_kav_state,
    step=_kav_step,
    depends_on=("mng.key_freeid.wbinvd_done", "mng.vpflushdone.no_assoc_vcpus",
                "mng.key_freeid.blocked"),
))


# ---------------------------------------------------------------------------------------
def _fba_step(u: Universe, a: Action) -> list[Clause]:
    """flush-before-alloc: with clflush_before_alloc=1 the module never takes a page with
    dirty KeyID-0 lines (LH tdx_clflush_page before every hand-over)."""
    if not u.platform.clflush_before_alloc:
        return []
    k0 = keyid_lines(u.platform.packages, 0)
    return [Clause(Implies(_taken(p), (POST.dirty[p] & k0) == 0),
                   f"the module took page {u.page_name(p)} while it may hold dirty KeyID-0 "
                   "lines (no CLFLUSH before handing it over)")
            for p in _handed_pages(a)]


FLUSH_BEFORE_ALLOC = invariant(Invariant(
    id="flush-before-alloc",
    summary="the module never takes a page with dirty KeyID-0 lines",
    guarantee="host",
    source="tdx-reference.md §9 (CLFLUSH_BEFORE_ALLOC; LH tdx_clflush_page)",
    step=_fba_step,
))


def _cbr_step(u: Universe, a: Action) -> list[Clause]:
    """clear-before-reuse: with clear_before_reuse=1 a page that left the module is cleared
    with MOVDIR64B before the host writes or frees it (LK tdx_clear_page)."""
    if not u.platform.clear_before_reuse or a.kind not in ("host_write", "page_free"):
        return []
    p = a.arg("page")
    return [Clause(S.uncleared[p] == 0,
                   f"{a.step} of page {u.page_name(p)}, which left the module and has not "
                   "been cleared with MOVDIR64B")]


CLEAR_BEFORE_REUSE = invariant(Invariant(
    id="clear-before-reuse",
    summary="a page that left the module is cleared before the host writes or frees it",
    guarantee="host",
    source="tdx-reference.md §9 (LK tdx_clear_page)",
    step=_cbr_step,
))


def _leak_state(u: Universe) -> list[Clause]:
    """no-leak: after check_no_leak every page is back in the kernel and PT_NDA, and every
    HKID back in the host pool (scenario-format.md §4)."""
    armed = S.leak_armed[0] == 1
    return forall(_pages(u), lambda p: [
        Clause(Implies(armed, S.host[p] == HostPage.KERNEL),
               f"page {u.page_name(p)} is still allocated to the TDX code"),
        Clause(Implies(armed, S.pt[p] == PageType.PT_NDA),
               f"page {u.page_name(p)} is still owned by the module")]) + forall(
        u.domain("hkid"), lambda h: Clause(Implies(armed, S.host_hkid[h] == 0),
                                           f"HKID {h} is not back in the host pool"))


NO_LEAK = invariant(Invariant(
    id="no-leak",
    summary="after check_no_leak nothing is still held",
    guarantee="host",
    source="scenario-format.md §4",
    state=_leak_state,
))


# --------------------------------------------------------------------------- structural
def _owner_state(u: Universe) -> list[Clause]:
    """pamt-owner-live: every TDCX/TDVPR/EPT/REG page belongs to a TD whose TDR is still
    PT_TDR, and a TDR page is its own TD's TDR (pamt_manager.h; tdx-reference.md §11.1)."""
    def owned(p: Expr) -> list[Clause]:
        t = S.owner[p]
        return [Clause(Implies(S.pt[p].isin(_CHILD_TYPES),
                               And(S.tdr[t] != 0, S.pt[S.tdr[t]] == PageType.PT_TDR)),
                       f"page {u.page_name(p)} belongs to a TD whose TDR is gone"),
                Clause(Implies(S.pt[p] == PageType.PT_TDR, S.tdr[t] == p),
                       f"TDR page {u.page_name(p)} is not its TD's TDR")]

    return forall(_pages(u), owned)


invariant(Invariant(
    id="pamt-owner-live",
    summary="every TD page's PAMT owner is a live TDR",
    guarantee="module",
    source="tdx-reference.md §11 item 1 (pamt_manager.h)",
    state=_owner_state,
    depends_on=("phymem.page_reclaim.no_children",),
))


def _chldcnt_state(u: Universe) -> list[Clause]:
    """chldcnt-matches-pages: TDR.chldcnt counts the 4K pages the TD owns (§7.5, §11.1);
    RECLAIM of the TDR relies on it."""
    return forall(u.domain("td"), lambda t: Clause(
        Implies(live(t), S.chldcnt[t] == Count(
            _pages(u), lambda p: And(S.pt[p].isin(_CHILD_TYPES), S.owner[p] == t))),
        f"{u.tds[t]}.chldcnt differs from the number of pages it owns"))


invariant(Invariant(
    id="chldcnt-matches-pages",
    summary="TDR.chldcnt equals the number of pages the TD owns",
    guarantee="module",
    source="tdx-reference.md §7.5, §11 item 1",
    state=_chldcnt_state,
))


def _kot_state(u: Universe) -> list[Clause]:
    """kot-matches-lifecycle: an HKID is ASSIGNED/FLUSHED in the KOT exactly when a live TD
    holds it before TEARDOWN; BLOCKED means FLUSHED, earlier means ASSIGNED (§7.1, §11.2/4)."""
    def kot(h: Expr) -> Clause:
        held = Any(u.domain("td"), lambda t: And(live(t), S.hkid[t] == h,
                                                  S.lifecycle[t].isin(_HOLDS_KEY)))
        in_use = S.kot_state[h].isin((KotState.KOT_STATE_HKID_ASSIGNED,
                                      KotState.KOT_STATE_HKID_FLUSHED))
        return Clause(in_use == held, f"KOT state of HKID {h} disagrees with the TDs' lifecycles")

    def lifecycle(t: Expr) -> list[Clause]:
        h = S.hkid[t]
        return [Clause(Implies(And(live(t), S.lifecycle[t] == _LC.TD_BLOCKED),
                               S.kot_state[h] == KotState.KOT_STATE_HKID_FLUSHED),
                       f"{u.tds[t]} is TD_BLOCKED but its HKID is not HKID_FLUSHED"),
                Clause(Implies(And(live(t), S.lifecycle[t].isin((_LC.TD_HKID_ASSIGNED,
                                                                  _LC.TD_KEYS_CONFIGURED))),
                               S.kot_state[h] == KotState.KOT_STATE_HKID_ASSIGNED),
                       f"{u.tds[t]} holds its HKID but the KOT does not say HKID_ASSIGNED")]

    return forall(u.domain("hkid"), kot) + forall(u.domain("td"), lifecycle)


invariant(Invariant(
    id="kot-matches-lifecycle",
    summary="the KOT state of each HKID agrees with the lifecycle of the TD holding it",
    guarantee="module",
    source="tdx-reference.md §7.1, §11 items 2 and 4",
    state=_kot_state,
))


def _assoc_state(u: Universe) -> list[Clause]:
    """assoc-count-matches: TDCS.num_assoc_vcpus equals the number of the TD's vCPUs
    associated with an LP (helpers.c associate_vcpu; §11.5)."""
    return forall(u.domain("td"), lambda t: Clause(
        Implies(And(live(t), S.op_state[t] != OpState.OP_STATE_UNINITIALIZED),
                S.num_assoc[t] == Count(u.domain("vp"), lambda v: And(
                    S.tdvpr[v] != 0, S.owner[S.tdvpr[v]] == t, S.assoc[v] != 0))),
        f"{u.tds[t]}.num_assoc_vcpus differs from its associated vCPUs"))


invariant(Invariant(
    id="assoc-count-matches",
    summary="num_assoc_vcpus equals the number of the TD's vCPUs associated with an LP",
    guarantee="module",
    source="tdx-reference.md §3.7, §11 item 5",
    state=_assoc_state,
))


def _keys_state(u: Universe) -> list[Clause]:
    """keys-configured-all-packages: TD_KEYS_CONFIGURED only once KEY.CONFIG ran on every
    package (tdh_mng_key_config.c; §8, §11.3)."""
    allp = u.platform.all_packages
    return forall(u.domain("td"), lambda t: Clause(
        Implies(And(live(t), S.lifecycle[t] == _LC.TD_KEYS_CONFIGURED), S.pkg_config[t] == allp),
        f"{u.tds[t]} is TD_KEYS_CONFIGURED but not every package is configured"))


invariant(Invariant(
    id="keys-configured-all-packages",
    summary="KEYS_CONFIGURED means the key is configured on every package",
    guarantee="module",
    source="tdh_mng_key_config.c; tdx-reference.md §8, §11 item 3",
    state=_keys_state,
))


def _tlb_step(u: Universe, a: Action) -> list[Clause]:
    """tlb-tracked-before-remove: when a page leaves a TD, no vCPU of that TD running in the
    guest entered before the page was blocked (it could still hold a translation); this is
    the goal of BLOCK + TRACK + exit that is_tlb_tracked (helpers.h) checks (§3.6, §7.6)."""
    if a.kind not in ("TDH.MEM.PAGE.REMOVE", "TDH.MEM.SEPT.REMOVE"):
        return []
    tdr, gpa, level = a.arg("tdr"), a.arg("gpa"), a.arg("level")
    try:
        e = u.entry(gpa, level)
    except ValueError:
        return []
    t = S.owner[tdr]
    page = S.sept_page[t, e]
    removed = And(S.pt[tdr] == PageType.PT_TDR, S.pt[page] != PageType.PT_NDA,
                  POST.pt[page] == PageType.PT_NDA)
    def tracked(v: Expr) -> Clause:
        running = And(S.tdvpr[v] != 0, S.owner[S.tdvpr[v]] == t, S.in_guest[v] == 1)
        # entered after the block: its epoch is newer than the page's block epoch
        vage = If(S.vepoch[v] == S.epoch[t], 0, 1)
        return Clause(
            Implies(And(removed, running), vage < S.bepoch_age[page]),
            f"a page left {a.step}'s TD while {u.vps[v]} runs in the guest and may still hold "
            "a TLB translation to it (no BLOCK + TRACK + exit since)")

    return forall(u.domain("vp"), tracked)


invariant(Invariant(
    id="tlb-tracked-before-remove",
    summary="no running vCPU can still translate to a page the TD has removed",
    guarantee="module",
    source="tdh_mem_page_remove.c, is_tlb_tracked (helpers.h); tdx-reference.md §3.6, §7.6",
    step=_tlb_step,
    depends_on=("mem.page_remove.blocked", "mem.page_remove.tlb_tracked"),
))

_ = tlb_tracked  # the module's own tracking test; the invariant states the goal instead


# ---------------------------------------------------------------------------------------
def typed_operands(a: Action) -> list[tuple[str, int, PageType]]:
    """The page operands of SEAMCALL ``a`` that the leaf reads as a page of one PAMT type,
    with that type: ``("tdr", page, PT_TDR)`` (the TD's root), ``("tdvpr", page, PT_TDVPR)``
    (the vCPU's root), ``("take", page, PT_NDA)`` (a page the leaf makes a TD page: the
    TDR of TDH.MNG.CREATE, the TDVPR of TDH.VP.CREATE, the pages the wrappers hand over),
    ``("lines", page, PT_NDA)`` (the page TDH.PHYMEM.PAGE.WBINVD writes back).  Each is
    the type the leaf's EXPLICIT_PAGE check names (``check_and_lock_explicit_tdr``,
    ``check_and_lock_explicit_private_hpa``, helpers.c)."""
    if a.kind not in LEAVES or LEAVES[a.kind].family == "guest":
        return []
    ldef = LEAVES[a.kind]
    out: list[tuple[str, int, PageType]] = []
    for name in ldef.operands:
        if name == "tdr":
            out.append(("take", a.arg(name), PageType.PT_NDA) if a.kind == "TDH.MNG.CREATE"
                       else ("tdr", a.arg(name), PageType.PT_TDR))
        elif name == "tdvpr":
            out.append(("take", a.arg(name), PageType.PT_NDA) if a.kind == "TDH.VP.CREATE"
                       else ("tdvpr", a.arg(name), PageType.PT_TDVPR))
        elif name == "page" and name in ldef.hands:
            out.append(("take", a.arg(name), PageType.PT_NDA))
        elif name == "page" and a.kind == "TDH.PHYMEM.PAGE.WBINVD":
            out.append(("lines", a.arg(name), PageType.PT_NDA))
    return out


def _otr_step(u: Universe, a: Action) -> list[Clause]:
    """operand-type-respected: a page operand whose PAMT type is not the one the leaf reads
    it as is not acted on.  A TDR operand that is not PT_TDR leaves the TD its PAMT owner
    names unchanged (TDR and TDCS fields, S-EPT entries); a TDVPR operand that is not
    PT_TDVPR leaves the vCPU it names unchanged (TDVPS fields); a page the leaf would make a
    TD page keeps its PAMT entry unless it was PT_NDA; a page PAGE.WBINVD would write back
    keeps its cache lines unless it was PT_NDA."""
    out: list[Clause] = []
    for role, p, want in typed_operands(a):
        wrong = S.pt[p] != want
        # the TD (vCPU) the page names, for every TD (vCPU): a universe with none (a
        # scenario that names no td) has nothing to act on, and no index out of range; the
        # parametric prover reads the same clauses as ∀-clauses (forall, All)
        if role == "tdr":
            what = f"acted on the TD of page {u.page_name(p)} as if it were a TDR"

            def td_same(t: int | Expr, p: int = p, wrong: Expr = wrong, what: str = what) -> Clause:
                same = [getattr(POST, f)[t] == getattr(S, f)[t] for f in TD_FIELDS]
                same += [All(u.domain("entry"),
                             lambda e, f=f: getattr(POST, f)[t, e] == getattr(S, f)[t, e])
                         for f in TD_ENTRY_FIELDS]
                return Clause(Implies(And(wrong, S.owner[p] == t), And(*same)),
                              f"{a.step}: the module {what} (its PAMT type says otherwise)")

            out += forall(u.domain("td"), td_same)
            continue
        if role == "tdvpr":
            what = f"acted on the vCPU of page {u.page_name(p)} as if it were a TDVPR"

            def vp_same(v: int | Expr, p: int = p, wrong: Expr = wrong, what: str = what) -> Clause:
                same = [getattr(POST, f)[v] == getattr(S, f)[v] for f in VP_FIELDS]
                return Clause(Implies(And(wrong, S.vpslot[p] == v), And(*same)),
                              f"{a.step}: the module {what} (its PAMT type says otherwise)")

            out += forall(u.domain("vp"), vp_same)
            continue
        if role == "take":
            same = [POST.pt[p] == S.pt[p], POST.owner[p] == S.owner[p],
                    POST.vpslot[p] == S.vpslot[p]]
            what = f"made page {u.page_name(p)} a TD page although it was not PT_NDA"
        else:
            same = [POST.dirty[p] == S.dirty[p]]
            what = f"wrote back page {u.page_name(p)}'s lines although it was not PT_NDA"
        out.append(Clause(Implies(wrong, And(*same)),
                          f"{a.step}: the module {what} (its PAMT type says otherwise)"))
    return out


invariant(Invariant(
    id="operand-type-respected",
    summary="the module acts on a page as a TDR, TDVPR or new TD page only if its PAMT "
            "type says so",
    guarantee="module",
    source="check_and_lock_explicit_tdr, check_and_lock_explicit_private_hpa (helpers.c); "
           "tdx-reference.md §3.1",
    step=_otr_step,
    depends_on=("mng.key_config.tdr.pt", "vp.enter.tdvpr.pt", "mng.create.tdr.pt"),
))
