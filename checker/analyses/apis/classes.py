"""The thirteen classes of host mistake (api-variants.md §4), each a named step predicate.

A class is the *step at which the mistake takes effect*: the call the module sees with a
wrong operand, or the host's own step that relies on something it skipped (a page freed
while it still holds private-KeyID lines is where a missing or wrong-KeyID WBINVD shows).
Each predicate reads the state before one model action (``expr``) and, for the swapped
operands, the move that made it (``mark``).  What happens at that step gives the verdict
(``run.py``): refused by the module (*caught*, with the status and the check), accepted and
an invariant breaks (*silent*), accepted and nothing breaks (*harmless*).

``cannot_write`` is the static part: a class no move of the API can make at all (no call
takes a page address and an HKID of one integer type; every wrapper that hands a page over
CLFLUSHes it) is impossible whatever the run, by construction of the API's moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tdxcheck.model.actions import Action
from tdxcheck.model.checks import keyid_lines, tlb_tracked, tracking_required
from tdxcheck.model.enums import HostPage, KotState, PageType, SeptState, TdLifecycle
from tdxcheck.model.expr import And, Expr, Not, Or
from tdxcheck.model.rule import LEAVES
from tdxcheck.model.state import S, Universe
from tdxcheck.properties.invariants import private_lines, typed_operands

_PT = PageType
_OWNED = (_PT.PT_REG, _PT.PT_TDR, _PT.PT_TDCX, _PT.PT_TDVPR, _PT.PT_EPT)
_LEAF_WITH_PAGE = (SeptState.SEPT_MAPPED, SeptState.SEPT_BLOCKED, SeptState.SEPT_PENDING,
                   SeptState.SEPT_PENDING_BLOCKED)
_NON_LEAF = (SeptState.SEPT_NL_MAPPED, SeptState.SEPT_NL_BLOCKED)
_BLOCKED = (SeptState.SEPT_BLOCKED, SeptState.SEPT_PENDING_BLOCKED, SeptState.SEPT_NL_BLOCKED)

ExprFn = Callable[[Universe, Action, bool], "Expr | None"]


@dataclass(frozen=True)
class MisuseClass:
    """One class of host mistake: ``expr(u, action, via_handle)`` is the condition on the
    state before ``action`` under which that action is the mistake (None: this action
    never is); ``mark`` a move mark that makes every action of the move one."""

    number: int
    id: str
    title: str
    expr: ExprFn | None = None
    mark: str = ""
    static: str = ""  # the Move attribute that must be set for the class to be writable
    cannot_write: str = ""  # why, when no move of the API has it
    #: why the configuration cannot show it under an API (with or without a raw
    #: SEPT.REMOVE), or ""
    needs: Callable[[Universe, bool], str] | None = None
    #: the module checks that judge this very mistake (suffixes of check names); a refusal
    #: by another check refused the call for some other reason
    checks: tuple[str, ...] = ()
    #: the invariants that state this mistake's harm: an accepted instance is silent when
    #: it breaks one of them (another invariant broken by the same step is another mistake
    #: made in it, such as a page the host never allocated)
    invariants: tuple[str, ...] = ()

    def judged_by(self, check: str) -> bool:
        return any(check.endswith(c) for c in self.checks)

    def applies(self, u: Universe, sept_remove: bool = True) -> str:
        """"" if the configuration can show this class (under an API that has, or has not,
        TDH.MEM.SEPT.REMOVE), else why not."""
        return self.needs(u, sept_remove) if self.needs is not None else ""


def _seamcall(a: Action) -> bool:
    return a.kind in LEAVES and LEAVES[a.kind].family != "guest"


def _handed(a: Action) -> list[int]:
    return [a.arg(h) for h in LEAVES[a.kind].hands] if _seamcall(a) else []


def _swapped(u: Universe, a: Action, via: bool) -> Expr | None:
    """A call whose HKID operand is a page address (and whose page operand an HKID)."""
    from tdxcheck.model.expr import TRUE

    from .host import PA_AS_HKID

    if a.kind in LEAVES and PA_AS_HKID in (a.arg("hkid"), a.arg("keyid")):
        return TRUE
    return None


def _wrong_type(u: Universe, a: Action, via: bool) -> Expr | None:
    """A TDR (TDVPR) operand whose PAMT type is not PT_TDR (PT_TDVPR)."""
    terms = [S.pt[p] != want for role, p, want in typed_operands(a) if role in ("tdr", "tdvpr")]
    return Or(*terms) if terms else None


def _no_clflush(u: Universe, a: Action) -> Expr | None:
    """A page handed over while it may hold dirty KeyID-0 lines (no CLFLUSH)."""
    k0 = keyid_lines(u.platform.packages, 0)
    terms = [(S.dirty[p] & k0) != 0 for p in _handed(a) if p and p not in a.clflush]
    return Or(*terms) if terms else None


def _reuse_dirty(u: Universe, a: Action, via: bool) -> Expr | None:
    """A page that left the module (PT_NDA) freed or handed over again while it holds dirty
    lines under a private KeyID: no WBINVD, or one with the wrong KeyID."""
    priv = private_lines(u)
    pages = [a.arg("page")] if a.kind == "page_free" else _handed(a)
    terms = [And(S.pt[p] == _PT.PT_NDA, (S.dirty[p] & priv) != 0) for p in pages if p]
    return Or(*terms) if terms else None


def _clear_order(u: Universe, a: Action, via: bool) -> Expr | None:
    """A page cleared while it still holds private-KeyID lines (clear before WBINVD), or
    freed without the clear (no clear before reuse)."""
    if a.kind == "clear_page":
        p = a.arg("page")
        return And(S.pt[p] == _PT.PT_NDA, (S.dirty[p] & private_lines(u)) != 0)
    if a.kind == "page_free":
        p = a.arg("page")
        return And(S.pt[p] == _PT.PT_NDA, S.uncleared[p] == 1)
    return None


def _hkid_early(u: Universe, a: Action, via: bool) -> Expr | None:
    """The HKID back to the pool while the KOT does not say it is free: before FREEID, or
    after a FREEID that failed."""
    if a.kind != "hkid_free":
        return None
    return S.kot_state[a.arg("hkid")] != KotState.KOT_STATE_HKID_FREE


def _teardown_skipped(u: Universe, a: Action, via: bool) -> Expr | None:
    """KEY.FREEID of a TD that VPFLUSHDONE did not block, or whose HKID has not been
    written back on every package (CACHE.WB skipped on one)."""
    if a.kind != "TDH.MNG.KEY.FREEID":
        return None
    tdr = a.arg("tdr")
    t = S.owner[tdr]
    lc = TdLifecycle
    return And(S.pt[tdr] == _PT.PT_TDR, S.tdr[t] == tdr, Or(
        S.lifecycle[t].isin((lc.TD_HKID_ASSIGNED, lc.TD_KEYS_CONFIGURED)),
        And(S.lifecycle[t] == lc.TD_BLOCKED, S.kot_wbinvd[S.hkid[t]] != 0)))


def _remove_untracked(u: Universe, a: Action, via: bool) -> Expr | None:
    """PAGE.REMOVE (SEPT.REMOVE) of a page of a TD that needs TLB tracking, with the entry
    not blocked, or blocked but not tracked (no TRACK since, or a vCPU not kicked out)."""
    if a.kind not in ("TDH.MEM.PAGE.REMOVE", "TDH.MEM.SEPT.REMOVE"):
        return None
    tdr, gpa, level = a.arg("tdr"), a.arg("gpa"), a.arg("level")
    try:
        e = u.entry(gpa, level)
    except ValueError:
        return None
    t = S.owner[tdr]
    states = _LEAF_WITH_PAGE if a.kind == "TDH.MEM.PAGE.REMOVE" else _NON_LEAF
    entry = S.sept_state[t, e]
    return And(S.pt[tdr] == _PT.PT_TDR, tracking_required(t), entry.isin(states),
               Not(And(entry.isin(_BLOCKED), tlb_tracked(t, S.sept_page[t, e]))))


def _free_owned(u: Universe, a: Action, via: bool) -> Expr | None:
    """A page freed to the kernel while the module owns it."""
    if a.kind != "page_free":
        return None
    return S.pt[a.arg("page")].isin(_OWNED)


def _tdr_first(u: Universe, a: Action, via: bool) -> Expr | None:
    """RECLAIM of a TDR while its TD still owns other pages (the TDCS first)."""
    if a.kind != "TDH.PHYMEM.PAGE.RECLAIM":
        return None
    p = a.arg("page")
    return And(S.pt[p] == _PT.PT_TDR, S.chldcnt[S.owner[p]] > 0)


def _wrong_cpu(u: Universe, a: Action, via: bool) -> Expr | None:
    """A vCPU used on a CPU while it is associated with another (migrated without a
    flush), or flushed on a CPU it is not associated with."""
    if a.kind not in ("TDH.VP.ENTER", "TDH.VP.RD", "TDH.VP.WR", "TDH.VP.FLUSH"):
        return None
    p = a.arg("tdvpr")
    assoc = S.assoc[S.vpslot[p]]
    return And(S.pt[p] == _PT.PT_TDVPR, assoc != 0, assoc != a.cpu + 1)


def _stale_handle(u: Universe, a: Action, via: bool) -> Expr | None:
    """A call through a handle with no live TD (vCPU) of its own, never created or torn
    down, whose page field names another TD's live TDR (vCPU's TDVPR): the module acts on
    that other TD.  A call through a live sealed handle never is one."""
    if via or not _seamcall(a):
        return None
    terms = []
    for role, p, _want in typed_operands(a):
        if role == "tdr" and len(u.tds) >= 2:
            terms.append(And(S.pt[p] == _PT.PT_TDR,
                             Or(*(S.tdr[t] == 0 for t in range(len(u.tds))))))
        elif role == "tdvpr" and len(u.vps) >= 2:
            terms.append(And(S.pt[p] == _PT.PT_TDVPR,
                             Or(*(S.tdvpr[v] == 0 for v in range(len(u.vps))))))
    return Or(*terms) if terms else None


def _leak(u: Universe, a: Action, via: bool) -> Expr | None:
    """The host declares it is done (``check_no_leak``) while it still holds a page, or a
    page is still the module's, or an HKID is still out of the pool: it never tore it
    down."""
    if a.kind != "check_no_leak":
        return None
    held = [S.host[p] != HostPage.KERNEL for p in range(1, u.n_pages)]
    held += [S.pt[p] != _PT.PT_NDA for p in range(1, u.n_pages)]
    held += [S.host_hkid[h] == 1 for h in range(1, u.platform.hkids)]
    return And(S.leak_armed[0] == 0, Or(*held))


def _needs_two(u: Universe, sept_remove: bool) -> str:
    return "" if len(u.tds) >= 2 or len(u.vps) >= 2 else \
        "needs two TDs or two vCPUs (one handle dead while another is live)"


def _needs_cpus(u: Universe, sept_remove: bool) -> str:
    return "" if u.platform.cpus >= 2 else "needs two CPUs"


def _needs_guest_page(u: Universe, sept_remove: bool) -> str:
    """A runnable TD (MR.FINALIZE needs a vCPU: ``mr.finalize.vcpus``) with a page to
    remove: where the API has TDH.MEM.SEPT.REMOVE (the raw seamcall; no upstream wrapper,
    api-variants.md §2), the S-EPT page below the root will do (it needs BLOCK and TRACK as
    PAGE.REMOVE does); otherwise a guest page mapped through every S-EPT level."""
    p = u.platform
    td_vcpu = 1 + p.tdcs_pages + 1 + p.tdcx_pages
    if sept_remove and p.sept_levels >= 2:
        need, what = td_vcpu + 1, "TD, vCPU, an S-EPT page to SEPT.REMOVE"
    else:
        need, what = td_vcpu + p.sept_levels, "TD, vCPU, S-EPT and a guest page"
    return "" if len(u.pages) >= need else f"needs {need} pages ({what})"


CLASSES: tuple[MisuseClass, ...] = (
    MisuseClass(1, "wrong-type-operand", "a page of the wrong PAMT type as TDR / TDVPR",
                _wrong_type, checks=(".tdr.pt", ".tdvpr.pt"),
                invariants=("operand-type-respected",)),
    MisuseClass(2, "hkid-page-swap", "an HKID and a page address swapped", _swapped,
                static="swap", cannot_write="no call takes a page address and an HKID of "
                "one integer type", checks=("mng.create.hkid_private",
                                            "phymem.page_wbinvd.page.pt")),
    MisuseClass(3, "no-clflush", "a page handed to the module without CLFLUSH",
                lambda u, a, via: _no_clflush(u, a), static="unflushed",
                cannot_write="every wrapper that hands a page over CLFLUSHes it",
                invariants=("flush-before-alloc",)),
    MisuseClass(4, "no-or-wrong-wbinvd", "no, or wrong-KeyID, WBINVD after REMOVE / "
                "RECLAIM (the page reused with private-KeyID lines)", _reuse_dirty,
                invariants=("flush-before-reclaim",)),
    MisuseClass(5, "clear-order", "clear before WBINVD, or no clear before reuse",
                _clear_order,
                invariants=("flush-before-reclaim", "clear-before-reuse")),
    MisuseClass(6, "hkid-freed-early", "HKID back to the pool before FREEID, or after a "
                "failed FREEID", _hkid_early,
                invariants=("keyid-after-vpflushdone",)),
    MisuseClass(7, "teardown-step-skipped", "CACHE.WB skipped on a package, or VPFLUSHDONE "
                "skipped (FREEID too early)", _teardown_skipped,
                checks=("mng.key_freeid.blocked", "mng.key_freeid.wbinvd_done"),
                invariants=("keyid-after-vpflushdone",)),
    MisuseClass(8, "remove-untracked", "REMOVE without BLOCK / TRACK / kick",
                _remove_untracked, needs=_needs_guest_page,
                checks=("_remove.blocked", "_remove.tlb_tracked"),
                invariants=("tlb-tracked-before-remove",)),
    MisuseClass(9, "free-while-owned", "a page freed while the module owns it", _free_owned,
                invariants=("no-double-assignment",)),
    MisuseClass(10, "tdr-before-tdcs", "TDR reclaimed before its TDCS", _tdr_first,
                checks=("phymem.page_reclaim.no_children",),
                invariants=("pamt-owner-live", "chldcnt-matches-pages")),
    MisuseClass(11, "vcpu-wrong-cpu", "a vCPU migrated without flush, or flushed on the "
                "wrong CPU", _wrong_cpu, needs=_needs_cpus,
                checks=(".not_associated_elsewhere", "vp.flush.associated_here")),
    MisuseClass(12, "stale-handle", "a stale handle after teardown (its page now another "
                "TD's)", _stale_handle, needs=_needs_two),
    MisuseClass(13, "leak", "never tearing down (leak)", _leak,
                invariants=("no-leak",)),
)
CLASS_BY_ID: dict[str, MisuseClass] = {c.id: c for c in CLASSES}


def misuse_class(key: str) -> MisuseClass:
    """A class by id or number."""
    from tdxcheck.checker.scenario import InputError

    for c in CLASSES:
        if key in (c.id, str(c.number)):
            return c
    raise InputError(f"unknown misuse class {key!r} (have: "
                     f"{', '.join(f'{c.number} {c.id}' for c in CLASSES)})")
