"""The module's permission matrices, transcribed as literal data.

* ``OP_STATE_ALLOWED``: intel/tdx-module tdx_1.5 ``include/auto_gen/op_state_lookup.c``
  (``seamcall_state_lookup``), tdx-reference.md §4.  Columns U I R LE PE XE MI SI XI LI FI.
* ``SEPT_STATE_ALLOWED``: ``include/auto_gen/sept_state_lookup.c``
  (``seamcall_sept_state_lookup``), tdx-reference.md §5, restricted to the states of
  ``SeptState``.
"""

from __future__ import annotations

from .enums import OpState, SeptState

_COLS = (
    OpState.OP_STATE_UNINITIALIZED,
    OpState.OP_STATE_INITIALIZED,
    OpState.OP_STATE_RUNNABLE,
    OpState.OP_STATE_LIVE_EXPORT,
    OpState.OP_STATE_PAUSED_EXPORT,
    OpState.OP_STATE_POST_EXPORT,
    OpState.OP_STATE_MEMORY_IMPORT,
    OpState.OP_STATE_STATE_IMPORT,
    OpState.OP_STATE_POST_IMPORT,
    OpState.OP_STATE_LIVE_IMPORT,
    OpState.OP_STATE_FAILED_IMPORT,
)

# leaf spec name -> row of the matrix, "Y" allowed, "." not (same order as _COLS)
_ROWS = {
    #                          U I R LE PE XE MI SI XI LI FI
    "TDH.VP.ENTER":          ". . Y Y  .  .  .  .  .  Y  .",
    "TDH.MNG.ADDCX":         "Y . . .  .  .  .  .  .  .  .",
    "TDH.MEM.PAGE.ADD":      ". Y . .  .  .  .  .  .  .  .",
    "TDH.MEM.SEPT.ADD":      ". Y Y Y  .  .  Y  Y  Y  Y  .",
    "TDH.VP.ADDCX":          ". Y . .  .  .  .  Y  .  .  .",
    "TDH.MEM.PAGE.AUG":      ". Y Y Y  .  .  .  .  .  Y  .",
    "TDH.MEM.RANGE.BLOCK":   ". Y Y Y  Y  Y  .  .  Y  Y  .",
    "TDH.VP.CREATE":         ". Y . .  .  .  .  Y  .  .  .",
    "TDH.MNG.RD":            ". Y Y Y  Y  Y  Y  Y  Y  Y  Y",
    "TDH.MNG.WR":            ". Y Y Y  .  .  Y  Y  Y  Y  Y",
    "TDH.MR.EXTEND":         ". Y . .  .  .  .  .  .  .  .",
    "TDH.MR.FINALIZE":       ". Y . .  .  .  .  .  .  .  .",
    "TDH.VP.FLUSH":          "Y Y Y Y  Y  Y  Y  Y  Y  Y  Y",
    "TDH.MNG.INIT":          "Y . . .  .  .  .  .  .  .  .",
    "TDH.VP.INIT":           ". Y . .  .  .  .  .  .  .  .",
    "TDH.VP.RD":             ". Y Y Y  Y  Y  Y  Y  Y  Y  Y",
    "TDH.MEM.PAGE.REMOVE":   ". Y Y Y  Y  Y  .  .  Y  Y  Y",
    "TDH.MEM.SEPT.REMOVE":   ". Y Y Y  Y  Y  Y  Y  Y  Y  Y",
    "TDH.MEM.TRACK":         ". Y Y Y  Y  Y  Y  Y  Y  Y  .",
    "TDH.MEM.RANGE.UNBLOCK": ". Y Y Y  Y  Y  .  .  Y  Y  .",
    "TDH.VP.WR":             ". Y Y Y  .  .  Y  Y  Y  Y  Y",
}

OP_STATE_ALLOWED: dict[str, frozenset[OpState]] = {
    leaf: frozenset(c for c, mark in zip(_COLS, row.split(), strict=True) if mark == "Y")
    for leaf, row in _ROWS.items()
}

_S = SeptState
SEPT_STATE_ALLOWED: dict[str, frozenset[SeptState]] = {
    "TDH.MEM.PAGE.ADD": frozenset({_S.SEPT_FREE}),
    "TDH.MEM.SEPT.ADD": frozenset({_S.SEPT_FREE, _S.SEPT_NL_MAPPED}),
    "TDH.MEM.PAGE.AUG": frozenset({_S.SEPT_FREE}),  # and REMOVED, an import-only state
    "TDH.MEM.RANGE.BLOCK": frozenset({_S.SEPT_NL_MAPPED, _S.SEPT_MAPPED, _S.SEPT_PENDING}),
    "TDH.MR.EXTEND": frozenset({_S.SEPT_MAPPED}),
    "TDH.MEM.PAGE.REMOVE": frozenset(
        {_S.SEPT_MAPPED, _S.SEPT_BLOCKED, _S.SEPT_PENDING, _S.SEPT_PENDING_BLOCKED}
    ),
    "TDH.MEM.SEPT.REMOVE": frozenset({_S.SEPT_NL_MAPPED, _S.SEPT_NL_BLOCKED}),
    "TDH.MEM.RANGE.UNBLOCK": frozenset(
        {_S.SEPT_NL_BLOCKED, _S.SEPT_BLOCKED, _S.SEPT_PENDING_BLOCKED}
    ),
    "TDG.MEM.PAGE.ACCEPT": frozenset({_S.SEPT_PENDING}),
}
