"""Witnesses: states the model must be able to reach, so that "holds" is not vacuous.

Each is a named ``sometimes`` goal (stateright style): a run of the explorer that
finishes without reaching one reports it as a failure.  A model that cannot even tear a
TD down, reuse an HKID or run a vCPU proves nothing about those paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tdxcheck.model.enums import OpState, SeptState, TdLifecycle
from tdxcheck.model.expr import And, Expr, Or
from tdxcheck.model.state import S, Universe

_LC = TdLifecycle


@dataclass(frozen=True)
class Witness:
    id: str
    summary: str
    goal: Callable[[Universe], Expr]
    needs_faults: bool = False
    applies: Callable[[Universe], bool] = lambda u: True

    def possible(self, u: Universe, faults: bool) -> bool:
        """Whether the configuration has the objects the goal needs."""
        return (faults or not self.needs_faults) and self.applies(u)


def _live(t: int) -> Expr:
    return S.tdr[t] != 0


def _teardown(u: Universe) -> Expr:
    return Or(*(And(_live(t), S.lifecycle[t] == _LC.TD_TEARDOWN) for t in range(len(u.tds))))


def _hkid_reused(u: Universe) -> Expr:
    ts = range(len(u.tds))
    return Or(*(And(_live(a), _live(b), S.lifecycle[a] == _LC.TD_TEARDOWN,
                    S.lifecycle[b].isin((_LC.TD_HKID_ASSIGNED, _LC.TD_KEYS_CONFIGURED)),
                    S.hkid[a] == S.hkid[b]) for a in ts for b in ts if a != b))


def _two_live(u: Universe) -> Expr:
    ts = range(len(u.tds))
    return Or(*(And(_live(a), _live(b), S.chldcnt[a] > 0, S.chldcnt[b] > 0)
                for a in ts for b in ts if a < b))


def _in_guest(u: Universe) -> Expr:
    return Or(*(S.in_guest[v] == 1 for v in range(len(u.vps))))


def _blocked_runnable(u: Universe) -> Expr:
    return Or(*(And(_live(t), S.op_state[t] == OpState.OP_STATE_RUNNABLE,
                    S.sept_state[t, e].isin((SeptState.SEPT_BLOCKED,
                                             SeptState.SEPT_PENDING_BLOCKED)))
                for t in range(len(u.tds)) for e in range(len(u.entries))))


def _interrupted(u: Universe) -> Expr:
    return Or(*(S.wbt_intr[p] == 1 for p in range(u.platform.packages)))


def _pages_for_a_guest_page(u: Universe) -> int:
    """TDR, TDCS, TDVPR and TDCX pages, an S-EPT page per non-root level, one guest page."""
    p = u.platform
    return 1 + p.tdcs_pages + 1 + p.tdcx_pages + (p.sept_levels - 1) + 1


WITNESSES: tuple[Witness, ...] = (
    Witness("td-teardown", "a TD reaches TD_TEARDOWN", _teardown),
    Witness("hkid-reused", "a torn-down TD's HKID is held by another TD", _hkid_reused,
            applies=lambda u: len(u.tds) >= 2),
    Witness("two-tds-own-pages", "two TDs own pages at once", _two_live,
            applies=lambda u: len(u.tds) >= 2 and len(u.pages) >= 4),
    Witness("vcpu-in-guest", "a vCPU runs in the guest", _in_guest),
    Witness("runnable-page-blocked", "a RUNNABLE TD has a blocked private page",
            _blocked_runnable, applies=lambda u: len(u.pages) >= _pages_for_a_guest_page(u)),
    Witness("cache-wb-interrupted", "a CACHE.WB run is interrupted and resumable",
            _interrupted, needs_faults=True),
)
