"""Strengthening lemmas: what the induction proof (``tdxcheck prove``) needs besides the
invariants of ``invariants.py`` to make them inductive.

The invariants hold in every reachable state, but not every state that satisfies them is
reachable: a counterexample to induction (CTI) is such an unreachable state from which one
step breaks an invariant.  Each lemma below rules a family of CTIs out by stating a fact
the module's rules keep; it is proved exactly like an invariant (true in the any host's
initial state, and kept by every transition given all invariants and lemmas), so it adds
no assumption.  Each docstring says the rule in words and why the module keeps it.

Only the *module's* transitions (``--host any``) are meant: every lemma is ``module``
guaranteed.  The lemmas are not in ``properties.REGISTRY``/``INVARIANTS`` (no explorer or
replay checks them); they live in ``LEMMAS``.  Slot facts follow the model's choice of
zeroing a reclaimed TD or vCPU slot and a released page's PAMT owner/bepoch
(``model/state.py``, ``model/mem.py::released``).
"""

from __future__ import annotations

from tdxcheck.model.checks import keyid_lines
from tdxcheck.model.enums import (
    KotState,
    OpState,
    PageType,
    SeptState,
    TdLifecycle,
    VcpuState,
)
from tdxcheck.model.expr import All, And, Count, Domain, Expr, Implies, Not
from tdxcheck.model.state import TD_ENTRY_FIELDS, TD_FIELDS, VP_FIELDS, S, Universe

from .base import Clause, Invariant, forall, forall_pairs

_LC = TdLifecycle
_SS = SeptState
_CHILD_TYPES = (PageType.PT_TDCX, PageType.PT_TDVPR, PageType.PT_EPT, PageType.PT_REG)
_LEAF = (_SS.SEPT_MAPPED, _SS.SEPT_BLOCKED, _SS.SEPT_PENDING, _SS.SEPT_PENDING_BLOCKED)
_NON_LEAF = (_SS.SEPT_NL_MAPPED, _SS.SEPT_NL_BLOCKED)


def _pages(u: Universe) -> Domain:
    return u.domain("page")


def _live(t: Expr) -> Expr:
    return S.tdr[t] != 0


def _td_of(v: Expr) -> Expr:
    """The TD of vCPU slot ``v``: the PAMT owner of its TDVPR page."""
    return S.owner[S.tdvpr[v]]


def _vcpu_of(v: Expr, t: Expr) -> Expr:
    return And(S.tdvpr[v] != 0, _td_of(v) == t)


def _lemma(id: str, summary: str, source: str, state: object) -> Invariant:
    return Invariant(id=id, summary=summary, guarantee="module", source=source,
                     state=state)  # type: ignore[arg-type]


# ------------------------------------------------------------------ slots and pages
def _dead_td_slot(u: Universe) -> list[Clause]:
    """A TD slot with no TDR holds zeros: every TDR/TDCS field and every S-EPT entry.

    The slot is empty initially; TDH.PHYMEM.PAGE.RECLAIM of a TDR (the only step that
    clears ``tdr``) zeroes the slot and its S-EPT (``reset_slot``), and TDH.MNG.CREATE only
    fills a slot whose ``tdr`` is 0 (the any host's guard).  So a new TD starts from zeros:
    no leftover lifecycle, counters or S-EPT entries of the TD that was there before."""
    def zero(t: Expr) -> Clause:
        cells = [getattr(S, f)[t] == 0 for f in TD_FIELDS if f != "tdr"]
        cells += [All(u.domain("entry"), lambda e, f=f: getattr(S, f)[t, e] == 0)
                  for f in TD_ENTRY_FIELDS]
        return Clause(Implies(Not(_live(t)), And(*cells)),
                      f"{u.tds[t]} has no TDR but its slot is not zero")

    return forall(u.domain("td"), zero)


DEAD_TD_SLOT = _lemma("dead-td-slot-zero", "a TD slot without a TDR is all zeros",
                      "model/phymem.py reset_slot (TDR reclaim)", _dead_td_slot)


def _dead_vp_slot(u: Universe) -> list[Clause]:
    """A vCPU slot with no TDVPR holds zeros (state, association, epoch, page count).

    Reclaiming a TDVPR page zeroes the vCPU slot; TDH.VP.CREATE fills only a slot whose
    ``tdvpr`` is 0 and sets every field."""
    return forall(u.domain("vp"), lambda v: Clause(
        Implies(S.tdvpr[v] == 0, And(*(getattr(S, f)[v] == 0 for f in VP_FIELDS
                                       if f != "tdvpr"))),
        f"{u.vps[v]} has no TDVPR but its slot is not zero"))


DEAD_VP_SLOT = _lemma("dead-vcpu-slot-zero", "a vCPU slot without a TDVPR is all zeros",
                      "model/phymem.py reset_slot (TDVPR reclaim)", _dead_vp_slot)


def _td_tdr(u: Universe) -> list[Clause]:
    """A live TD's TDR page is PT_TDR in the PAMT with the TD as its owner, and the TD holds
    a private HKID (1 <= hkid).

    TDH.MNG.CREATE sets ``tdr``, the page's type and owner together and checks the HKID is
    private; only the reclaim of that very page (which zeroes the slot) changes them: any
    other step that changes a page's type needs it PT_NDA or not PT_TDR."""
    return forall(u.domain("td"), lambda t: Clause(
        Implies(_live(t), And(S.pt[S.tdr[t]] == PageType.PT_TDR, S.owner[S.tdr[t]] == t,
                              S.hkid[t] >= 1)),
        f"{u.tds[t]}'s TDR page is not a PT_TDR page owned by it"))


TD_TDR = _lemma("td-tdr-page", "a live TD's TDR page is PT_TDR and owned by the TD",
                "tdh_mng_create.c; pamt_manager.h", _td_tdr)


def _vp_tdvpr(u: Universe) -> list[Clause]:
    """A live vCPU's TDVPR page is PT_TDVPR and names the vCPU (``vpslot``), and a PT_TDVPR
    page is the TDVPR of the vCPU it names; other pages name no vCPU.

    TDH.VP.CREATE sets ``tdvpr`` and the page's type and ``vpslot`` together, in an empty
    slot; the reclaim of the TDVPR page zeroes the slot and the page's ``vpslot``."""
    return forall(u.domain("vp"), lambda v: Clause(
        Implies(S.tdvpr[v] != 0, And(S.pt[S.tdvpr[v]] == PageType.PT_TDVPR,
                                     S.vpslot[S.tdvpr[v]] == v)),
        f"{u.vps[v]}'s TDVPR page is not a PT_TDVPR page naming it")) + forall(
        _pages(u), lambda p: Clause(
            Implies(S.pt[p] == PageType.PT_TDVPR, S.tdvpr[S.vpslot[p]] == p),
            f"TDVPR page {u.page_name(p)} is not its vCPU's TDVPR"))


VP_TDVPR = _lemma("vcpu-tdvpr-page", "a live vCPU's TDVPR page is PT_TDVPR and names it",
                  "tdh_vp_create.c", _vp_tdvpr)


def _only_null_reserved(u: Universe) -> list[Clause]:
    """Only the NULL page is PT_RSVD: the pages start PT_NDA, and every rule that sets a
    page type sets PT_NDA or a TD page type (TDR, TDCX, TDVPR, EPT, REG).  So the reclaim
    of a page, which refuses PT_NDA and PT_RSVD, always finds a TD's page."""
    return forall(_pages(u), lambda p: Clause(S.pt[p] != PageType.PT_RSVD,
                                               f"page {u.page_name(p)} is PT_RSVD"))


ONLY_NULL_RESERVED = _lemma("only-null-reserved", "no page but the NULL page is PT_RSVD",
                            "model/state.py Layout.initial", _only_null_reserved)


# ------------------------------------------------------------------ TD and vCPU states
def _op_states(u: Universe) -> list[Clause]:
    """A TD's op state is UNINITIALIZED, INITIALIZED or RUNNABLE (no migration leaf is
    modelled), and once it has left UNINITIALIZED every TDCS page is there.

    TDH.MNG.INIT (the only step out of UNINITIALIZED) runs TD_STATE, which checks
    ``num_tdcx >= tdcs_pages``; ``num_tdcx`` never goes down in a live TD."""
    ok = (OpState.OP_STATE_UNINITIALIZED, OpState.OP_STATE_INITIALIZED,
          OpState.OP_STATE_RUNNABLE)
    return forall(u.domain("td"), lambda t: [
        Clause(S.op_state[t].isin(ok), f"{u.tds[t]} is in an op state no modelled leaf reaches"),
        Clause(Implies(S.op_state[t] != OpState.OP_STATE_UNINITIALIZED,
                       S.num_tdcx[t] >= u.platform.tdcs_pages),
               f"{u.tds[t]} is initialised without its TDCS pages")])


OP_STATES = _lemma("op-state-initialised", "op states: U/I/R only; past U, TDCS complete",
                   "tdh_mng_init.c; op_state_lookup.c", _op_states)


def _vcpu_td_initialised(u: Universe) -> list[Clause]:
    """A vCPU's TD has left UNINITIALIZED: TDH.VP.CREATE needs op state INITIALIZED
    (``seamcall_state_lookup``), and no step returns a live TD to UNINITIALIZED.  So
    TDH.MNG.INIT, which zeroes the vCPU counters, finds no vCPU."""
    return forall(u.domain("vp"), lambda v: Clause(
        Implies(S.tdvpr[v] != 0, S.op_state[_td_of(v)] != OpState.OP_STATE_UNINITIALIZED),
        f"{u.vps[v]} belongs to a TD that is not initialised"))


VCPU_TD_INITIALISED = _lemma("vcpu-td-initialised", "a vCPU's TD has run TDH.MNG.INIT",
                             "tdh_vp_create.c; op_state_lookup.c", _vcpu_td_initialised)


def _uninitialised_td(u: Universe) -> list[Clause]:
    """A live TD that has not run TDH.MNG.INIT has no associated vCPU: TDH.MNG.CREATE
    zeroes the slot, and every step that changes ``num_assoc_vcpus`` acts on a vCPU of the
    TD (``vcpu-td-initialised``: a TD past INIT), so the count stays 0 until then.  With
    ``assoc-count-matches`` (which holds once the TD is initialised) this bounds the count
    by the number of vCPUs in every state, as ``state-encoding`` states it."""
    return forall(u.domain("td"), lambda t: Clause(
        Implies(And(_live(t), S.op_state[t] == OpState.OP_STATE_UNINITIALIZED),
                S.num_assoc[t] == 0),
        f"{u.tds[t]} has associated vCPUs before TDH.MNG.INIT"))


UNINITIALISED_TD = _lemma("uninitialised-td-unassociated",
                          "a TD before TDH.MNG.INIT has no associated vCPU",
                          "tdh_mng_create.c; helpers.c associate_vcpu", _uninitialised_td)


def _vcpu_idle(u: Universe) -> list[Clause]:
    """An UNINITIALIZED vCPU is associated with no LP and not in the guest: TDH.VP.CREATE
    clears both, and only TDH.VP.INIT (which leaves UNINITIALIZED) or a step that needs
    READY/DISABLED associates it."""
    return forall(u.domain("vp"), lambda v: Clause(
        Implies(And(S.tdvpr[v] != 0, S.state[v] == VcpuState.VCPU_UNINITIALIZED),
                And(S.assoc[v] == 0, S.in_guest[v] == 0)),
        f"{u.vps[v]} is UNINITIALIZED but associated or running"))


VCPU_IDLE = _lemma("uninitialised-vcpu-idle", "an UNINITIALIZED vCPU is not associated",
                   "tdh_vp_create.c; tdh_vp_init.c", _vcpu_idle)


def _running(u: Universe) -> list[Clause]:
    """A vCPU in the guest is a live, ACTIVE vCPU associated with an LP, of a RUNNABLE TD
    whose keys are configured.

    TDH.VP.ENTER checks all of this and sets ACTIVE; while it runs, its TDVPR is held
    shared (so VP.FLUSH, which needs it exclusively, fails), it stays associated (so
    VPFLUSHDONE, which needs no associated vCPU, fails and the TD stays KEYS_CONFIGURED),
    and its state changes only at ``td_exit``."""
    def entered(v: Expr) -> Clause:
        t = _td_of(v)
        return Clause(Implies(S.in_guest[v] == 1,
                              And(S.tdvpr[v] != 0, S.state[v] == VcpuState.VCPU_ACTIVE,
                                  S.assoc[v] != 0, S.op_state[t] == OpState.OP_STATE_RUNNABLE,
                                  S.lifecycle[t] == _LC.TD_KEYS_CONFIGURED)),
                      f"{u.vps[v]} runs in the guest without being entered")

    return forall(u.domain("vp"), entered)


RUNNING = _lemma("running-vcpu", "a vCPU in the guest was entered and is associated",
                 "tdh_vp_enter.c; td_exit.c", _running)


def _refcounts(u: Universe) -> list[Clause]:
    """``TDCS.refcount[k]`` counts the TD's vCPUs in the guest that entered in an epoch of
    parity ``k`` (TDH.VP.ENTER increments the count of the current epoch and records it in
    the vCPU; ``td_exit`` decrements the vCPU's; TDH.MNG.INIT zeroes them when no vCPU
    exists).  TDH.MEM.TRACK's "previous epoch drained" and ``is_tlb_tracked`` read them."""
    return forall(u.domain("td"), lambda t: [
        Clause(field[t] == Count(u.domain("vp"), lambda v, k=k: And(
            _vcpu_of(v, t), S.in_guest[v] == 1, S.vepoch[v] == k)),
            f"{u.tds[t]}.refcount[{k}] differs from its vCPUs in the "
            f"guest that entered in an epoch of parity {k}")
        for k, field in ((0, S.refcount0), (1, S.refcount1))])


REFCOUNTS = _lemma("epoch-refcounts", "refcount[k] counts the TD's running vCPUs of epoch k",
                   "tdh_vp_enter.c, td_exit.c, tdh_mem_track.c", _refcounts)


def _flushed_unassociated(u: Universe) -> list[Clause]:
    """No vCPU of a TD that passed TDH.MNG.VPFLUSHDONE (BLOCKED or TEARDOWN) is associated
    with an LP: VPFLUSHDONE needs ``num_assoc_vcpus == 0`` once the TD is initialised
    (before that no vCPU exists), and every step that associates a vCPU needs the TD's
    keys configured."""
    return forall(u.domain("vp"), lambda v: Clause(
        Implies(And(S.tdvpr[v] != 0,
                    S.lifecycle[_td_of(v)].isin((_LC.TD_BLOCKED, _LC.TD_TEARDOWN))),
                S.assoc[v] == 0),
        f"{u.vps[v]} is associated although its TD passed VPFLUSHDONE"))


FLUSHED_UNASSOCIATED = _lemma("flushed-td-unassociated",
                              "no vCPU of a BLOCKED/TEARDOWN TD is associated",
                              "tdh_mng_vpflushdone.c", _flushed_unassociated)


# ------------------------------------------------------------------ S-EPT
def _sept_entries(u: Universe) -> list[Clause]:
    """In a live TD before TEARDOWN, an S-EPT entry maps a page exactly when it is not FREE:
    a leaf entry a PT_REG page, a non-leaf entry a PT_EPT page, owned by the TD.

    SEPT.ADD/PAGE.ADD/PAGE.AUG take a PT_NDA page and type it with the entry; the REMOVE
    leaves free the entry and the page together; only PAGE.RECLAIM frees a page behind an
    entry's back, and it needs the TD in TEARDOWN, where no leaf reads the S-EPT again."""
    def entry(t: Expr, e: Expr) -> list[Clause]:
        active = And(_live(t), S.lifecycle[t] != _LC.TD_TEARDOWN)
        st, pg = S.sept_state[t, e], S.sept_page[t, e]
        name = f"{u.tds[t]}.sept[{u.entry_label(e)}]"
        return [Clause(Implies(active, (st == _SS.SEPT_FREE) == (pg == 0)),
                       f"{name} maps a page but is FREE, or the reverse"),
                Clause(Implies(And(active, st.isin(_LEAF)),
                               And(S.pt[pg] == PageType.PT_REG, S.owner[pg] == t)),
                       f"{name} is a leaf but its page is not the TD's PT_REG page"),
                Clause(Implies(And(active, st.isin(_NON_LEAF)),
                               And(S.pt[pg] == PageType.PT_EPT, S.owner[pg] == t)),
                       f"{name} is a non-leaf but its page is not the TD's PT_EPT page")]

    return forall(u.domain("td"), lambda t: forall(u.domain("entry"), lambda e: entry(t, e)))


SEPT_ENTRIES = _lemma("sept-entry-page", "a mapped S-EPT entry's page is typed and owned",
                      "tdh_mem_sept_add.c, tdh_mem_page_add.c/aug.c, *_remove.c",
                      _sept_entries)


def _sept_distinct(u: Universe) -> list[Clause]:
    """No page is mapped by two S-EPT entries (of one TD or of two) before TEARDOWN: a page
    enters the S-EPT only from PT_NDA, and a mapped page is not PT_NDA (``sept-entry-page``).
    Else removing one mapping would free a page the other still maps."""
    def apart(a: tuple[Expr, Expr], b: tuple[Expr, Expr]) -> Clause:
        (t1, e1), (t2, e2) = a, b
        both = And(_live(t1), S.lifecycle[t1] != _LC.TD_TEARDOWN,
                   _live(t2), S.lifecycle[t2] != _LC.TD_TEARDOWN,
                   S.sept_state[t1, e1] != _SS.SEPT_FREE, S.sept_state[t2, e2] != _SS.SEPT_FREE)
        return Clause(Implies(both, S.sept_page[t1, e1] != S.sept_page[t2, e2]),
                      f"{u.tds[t1]}.sept[{u.entry_label(e1)}] and "
                      f"{u.tds[t2]}.sept[{u.entry_label(e2)}] map the same page")

    return forall_pairs((u.domain("td"), u.domain("entry")), apart)


SEPT_DISTINCT = _lemma("sept-pages-distinct", "no page is mapped by two S-EPT entries",
                       "tdh_mem_page_add.c, tdh_mem_page_aug.c, tdh_mem_sept_add.c",
                       _sept_distinct)


# ------------------------------------------------------------------ caches
def _flushed_lines(u: Universe) -> list[Clause]:
    """A FLUSHED HKID has no dirty line on a package whose bit its KOT ``wbinvd_bitmap`` has
    cleared.

    VPFLUSHDONE makes the HKID FLUSHED with every bit set; TDH.PHYMEM.CACHE.WB clears a
    package's bit only in the run that writes that package's lines of the HKID back; and no
    line under a FLUSHED HKID is dirtied again (only a KEYS_CONFIGURED TD, whose HKID is
    ASSIGNED, gets new pages).  So KEY.FREEID's ``wbinvd_bitmap == 0`` means no line left."""
    p = u.platform

    def gone(h: Expr, k: Expr, pg: Expr) -> Clause:
        flushed = S.kot_state[h] == KotState.KOT_STATE_HKID_FLUSHED
        done = ((S.kot_wbinvd[h] >> k) & 1) == 0
        return Clause(Implies(And(flushed, done),
                              (S.dirty[pg] & keyid_lines(p.packages, h, k)) == 0),
                      f"HKID {h} is written back on package {k} but page "
                      f"{u.page_name(pg)} still has a dirty line of it there")

    return forall(u.domain("hkid"), lambda h: forall(u.domain("pkg"), lambda k: forall(
        _pages(u), lambda pg: gone(h, k, pg))))


FLUSHED_LINES = _lemma("flushed-hkid-lines-written-back",
                       "a FLUSHED HKID has no dirty line on a written-back package",
                       "tdh_phymem_cache_wb.c; tdh_mng_key_freeid.c", _flushed_lines)


LEMMAS: tuple[Invariant, ...] = (
    DEAD_TD_SLOT, DEAD_VP_SLOT, TD_TDR, VP_TDVPR, ONLY_NULL_RESERVED, OP_STATES,
    VCPU_TD_INITIALISED, VCPU_IDLE, RUNNING, REFCOUNTS, FLUSHED_UNASSOCIATED, SEPT_ENTRIES,
    SEPT_DISTINCT, FLUSHED_LINES, UNINITIALISED_TD,
)

__all__ = ["LEMMAS"]
