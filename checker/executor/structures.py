"""The TDX module's constants, permission tables and structures as the executor holds them:
leaf numbers and operand registers, PAMT page types, KOT and TD lifecycle states, the
op-state and S-EPT-state tables, the PAMT/KOT/WBT entries and the TDR, TDCS, TDVPS and S-EPT
pages (M15 = intel/tdx-module tdx_1.5), and ``st()``/``SeamcallFailed`` for statuses."""


from __future__ import annotations

from dataclasses import dataclass, field

from tdxcheck.model.status import OperandId, Status

# --------------------------------------------------------------------------- constants

LINE = 64
PAGE_SIZE = 4096
LINES_PER_PAGE = PAGE_SIZE // LINE

#: PAMT page types (M15 ``src/common/memory_handlers/pamt_manager.h`` ``page_type_t``)
PT_NDA, PT_RSVD, PT_REG, PT_TDR, PT_TDCX, PT_TDVPR, PT_EPT = 0, 1, 3, 4, 5, 6, 8

#: TDR lifecycle (``td_control_structures.h`` ``td_lifecycle_state_t``)
TD_HKID_ASSIGNED, TD_KEYS_CONFIGURED, TD_BLOCKED, TD_TEARDOWN = 0, 1, 2, 3

#: TDCS op state (``include/auto_gen/op_state_lookup.h``)
(OP_UNINITIALIZED, OP_INITIALIZED, OP_RUNNABLE, OP_LIVE_EXPORT, OP_PAUSED_EXPORT,
 OP_POST_EXPORT, OP_MEMORY_IMPORT, OP_STATE_IMPORT, OP_POST_IMPORT, OP_LIVE_IMPORT,
 OP_FAILED_IMPORT) = range(11)
#: op states whose ``tlb_tracking_required`` flag is 1 (``op_state_lookup.c``)
OP_TLB_TRACKING = frozenset({OP_RUNNABLE, OP_LIVE_EXPORT, OP_LIVE_IMPORT})

#: KOT entry state (``tdx_global_data.h``)
KOT_FREE, KOT_ASSIGNED, KOT_FLUSHED, KOT_RESERVED = 0, 1, 2, 3

#: TDVPS state (``tdx_tdvps.h``)
VCPU_UNINITIALIZED, VCPU_READY, VCPU_ACTIVE, VCPU_DISABLED = 0x0, 0x2, 0x4, 0x8

#: S-EPT entry states, by their index in ``include/auto_gen/sept_state_lookup.c`` (§2.7);
#: the non-migrating subset plus REMOVED (never produced here: no import)
SEPT_FREE, SEPT_REMOVED, SEPT_NL_MAPPED, SEPT_NL_BLOCKED = 0, 1, 2, 3
SEPT_MAPPED, SEPT_BLOCKED, SEPT_PENDING, SEPT_PENDING_BLOCKED = 4, 5, 10, 11
SEPT_NAMES = {SEPT_FREE: "FREE", SEPT_REMOVED: "REMOVED", SEPT_NL_MAPPED: "NL_MAPPED",
              SEPT_NL_BLOCKED: "NL_BLOCKED", SEPT_MAPPED: "MAPPED", SEPT_BLOCKED: "BLOCKED",
              SEPT_PENDING: "PENDING", SEPT_PENDING_BLOCKED: "PENDING_BLOCKED"}
#: the 7-bit encoding of each state (§2.7 "Enc"), written into the mirrored entry bytes
SEPT_ENC = {SEPT_FREE: 0x0E, SEPT_REMOVED: 0x0C, SEPT_NL_MAPPED: 0x00, SEPT_NL_BLOCKED: 0x08,
            SEPT_MAPPED: 0x60, SEPT_BLOCKED: 0x68, SEPT_PENDING: 0x70,
            SEPT_PENDING_BLOCKED: 0x78}
SEPT_LEAF = frozenset({SEPT_MAPPED, SEPT_BLOCKED, SEPT_PENDING, SEPT_PENDING_BLOCKED})
SEPT_ANY_BLOCKED = frozenset({SEPT_NL_BLOCKED, SEPT_BLOCKED, SEPT_PENDING_BLOCKED})
#: states whose ``tlb_tracking_required`` flag is 1 (§2.7 table)
SEPT_TLB_TRACKING = frozenset({SEPT_NL_MAPPED, SEPT_NL_BLOCKED, SEPT_MAPPED, SEPT_BLOCKED,
                               SEPT_PENDING, SEPT_PENDING_BLOCKED})
#: states with RWX != 0: the only ones a walk descends through / MR.EXTEND accepts
SEPT_PRESENT = frozenset({SEPT_NL_MAPPED, SEPT_MAPPED})

#: SEAMCALL leaf numbers (M15 ``include/tdx_api_defs.h`` ``seamcall_leaf_opcode_e``; LH
#: ``arch/x86/virt/vmx/tdx/tdx.h``), by the spec name the scenario format uses
LEAF: dict[str, int] = {
    "TDH.VP.ENTER": 0, "TDH.MNG.ADDCX": 1, "TDH.MEM.PAGE.ADD": 2, "TDH.MEM.SEPT.ADD": 3,
    "TDH.VP.ADDCX": 4, "TDH.MEM.PAGE.AUG": 6, "TDH.MEM.RANGE.BLOCK": 7,
    "TDH.MNG.KEY.CONFIG": 8, "TDH.MNG.CREATE": 9, "TDH.VP.CREATE": 10, "TDH.MNG.RD": 11,
    "TDH.MNG.WR": 13, "TDH.MR.EXTEND": 16, "TDH.MR.FINALIZE": 17, "TDH.VP.FLUSH": 18,
    "TDH.MNG.VPFLUSHDONE": 19, "TDH.MNG.KEY.FREEID": 20, "TDH.MNG.INIT": 21,
    "TDH.VP.INIT": 22, "TDH.VP.RD": 26, "TDH.MNG.KEY.RECLAIMID": 27,
    "TDH.PHYMEM.PAGE.RECLAIM": 28, "TDH.MEM.PAGE.REMOVE": 29, "TDH.MEM.SEPT.REMOVE": 30,
    "TDH.MEM.TRACK": 38, "TDH.MEM.RANGE.UNBLOCK": 39, "TDH.PHYMEM.CACHE.WB": 40,
    "TDH.PHYMEM.PAGE.WBINVD": 41, "TDH.VP.WR": 43,
}
LEAF_NAME: dict[int, str] = {v: k for k, v in LEAF.items()}

#: which registers of each leaf carry a page (PA) and which carry plain integers; used by the
#: untyped ``seamcall`` form to turn page names into addresses (M15 handler signatures, §6)
LEAF_REGS: dict[str, dict[str, str]] = {
    "TDH.VP.ENTER": {"rcx": "page"},
    "TDH.MNG.ADDCX": {"rcx": "page", "rdx": "page"},
    "TDH.MEM.PAGE.ADD": {"rcx": "int", "rdx": "page", "r8": "page"},
    "TDH.MEM.SEPT.ADD": {"rcx": "int", "rdx": "page", "r8": "page"},
    "TDH.VP.ADDCX": {"rcx": "page", "rdx": "page"},
    "TDH.MEM.PAGE.AUG": {"rcx": "int", "rdx": "page", "r8": "page"},
    "TDH.MEM.RANGE.BLOCK": {"rcx": "int", "rdx": "page"},
    "TDH.MNG.KEY.CONFIG": {"rcx": "page"},
    "TDH.MNG.CREATE": {"rcx": "page", "rdx": "int"},
    "TDH.VP.CREATE": {"rcx": "page", "rdx": "page"},
    "TDH.MNG.RD": {"rcx": "page", "rdx": "int"},
    "TDH.MNG.WR": {"rcx": "page", "rdx": "int", "r8": "int"},
    "TDH.MR.EXTEND": {"rcx": "int", "rdx": "page"},
    "TDH.MR.FINALIZE": {"rcx": "page"},
    "TDH.VP.FLUSH": {"rcx": "page"},
    "TDH.MNG.VPFLUSHDONE": {"rcx": "page"},
    "TDH.MNG.KEY.FREEID": {"rcx": "page"},
    "TDH.MNG.INIT": {"rcx": "page", "rdx": "int"},
    "TDH.VP.INIT": {"rcx": "page", "rdx": "int", "r8": "int"},
    "TDH.VP.RD": {"rcx": "page", "rdx": "int"},
    "TDH.VP.WR": {"rcx": "page", "rdx": "int", "r8": "int"},
    "TDH.MNG.KEY.RECLAIMID": {},
    "TDH.PHYMEM.PAGE.RECLAIM": {"rcx": "page"},
    "TDH.MEM.PAGE.REMOVE": {"rcx": "int", "rdx": "page"},
    "TDH.MEM.SEPT.REMOVE": {"rcx": "int", "rdx": "page"},
    "TDH.MEM.TRACK": {"rcx": "page"},
    "TDH.MEM.RANGE.UNBLOCK": {"rcx": "int", "rdx": "page"},
    "TDH.PHYMEM.CACHE.WB": {"rcx": "int"},
    "TDH.PHYMEM.PAGE.WBINVD": {"rcx": "page"},
}

_U, _I, _R, _LE, _PE, _XE, _MI, _SI, _XI, _LI, _FI = range(11)
_ALL_OPS = frozenset(range(11))
#: ``seamcall_state_lookup`` (M15 ``include/auto_gen/op_state_lookup.c``), §4: op states in
#: which each leaf that checks the op state is allowed
OP_ALLOWED: dict[int, frozenset[int]] = {
    0: frozenset({_R, _LE, _LI}),                                  # VP.ENTER
    1: frozenset({_U}),                                            # MNG.ADDCX (pages > MIN)
    2: frozenset({_I}),                                            # MEM.PAGE.ADD
    3: frozenset({_I, _R, _LE, _MI, _SI, _XI, _LI}),               # MEM.SEPT.ADD
    4: frozenset({_I, _SI}),                                       # VP.ADDCX
    6: frozenset({_I, _R, _LE, _LI}),                              # MEM.PAGE.AUG
    7: frozenset({_I, _R, _LE, _PE, _XE, _XI, _LI}),               # MEM.RANGE.BLOCK
    10: frozenset({_I, _SI}),                                      # VP.CREATE
    11: _ALL_OPS - {_U},                                           # MNG.RD
    13: frozenset({_I, _R, _LE, _MI, _SI, _XI, _LI, _FI}),         # MNG.WR
    16: frozenset({_I}),                                           # MR.EXTEND
    17: frozenset({_I}),                                           # MR.FINALIZE
    21: frozenset({_U}),                                           # MNG.INIT
    22: frozenset({_I}),                                           # VP.INIT
    26: _ALL_OPS - {_U},                                           # VP.RD
    29: frozenset({_I, _R, _LE, _PE, _XE, _XI, _LI, _FI}),         # MEM.PAGE.REMOVE
    30: _ALL_OPS - {_U},                                           # MEM.SEPT.REMOVE
    38: _ALL_OPS - {_U, _FI},                                      # MEM.TRACK
    39: frozenset({_I, _R, _LE, _PE, _XE, _XI, _LI}),              # MEM.RANGE.UNBLOCK
    43: frozenset({_I, _R, _LE, _MI, _SI, _XI, _LI, _FI}),         # VP.WR
}

#: ``seamcall_sept_state_lookup`` (``sept_state_lookup.c``), §5, restricted to our states
SEPT_ALLOWED: dict[int, frozenset[int]] = {
    2: frozenset({SEPT_FREE}),                                      # PAGE.ADD
    3: frozenset({SEPT_FREE, SEPT_NL_MAPPED}),                      # SEPT.ADD
    6: frozenset({SEPT_FREE, SEPT_REMOVED}),                        # PAGE.AUG
    7: frozenset({SEPT_NL_MAPPED, SEPT_MAPPED, SEPT_PENDING}),      # RANGE.BLOCK
    16: frozenset({SEPT_MAPPED}),                                   # MR.EXTEND
    29: frozenset({SEPT_MAPPED, SEPT_BLOCKED, SEPT_PENDING, SEPT_PENDING_BLOCKED}),  # REMOVE
    30: frozenset({SEPT_NL_MAPPED, SEPT_NL_BLOCKED}),               # SEPT.REMOVE
    39: frozenset({SEPT_NL_BLOCKED, SEPT_BLOCKED, SEPT_PENDING_BLOCKED}),  # UNBLOCK
}
_BLOCK_OF = {SEPT_NL_MAPPED: SEPT_NL_BLOCKED, SEPT_MAPPED: SEPT_BLOCKED,
             SEPT_PENDING: SEPT_PENDING_BLOCKED}
_UNBLOCK_OF = {v: k for k, v in _BLOCK_OF.items()}

#: CACHE.WB works through the cache in this many sub-blocks (lines grouped by set index); an
#: interruption saves the index of the next one (M15 ``tdh_phymem_cache_wb.c`` ``intr_point``)
WBCACHE_BLOCKS = 4

NO_LP = None  # TDVPS.assoc_lpid == VCPU_NO_LP

#: config keys of scenario-format.md §1 and their defaults
DEFAULT_CONFIG: dict[str, int] = {
    "packages": 2, "cpus_per_package": 2, "hkids": 4, "tdcs_pages": 6, "tdcx_pages": 5,
    "max_vcpus": 8, "sept_levels": 4, "clflush_before_alloc": 1, "clear_before_reuse": 1,
    "wrapper_clflush": 1,
}

#: ablation names this executor understands besides its own check names (``ablate=``)
ABLATION_ALIASES = {"freeid-wbinvd-check": "mng.key_freeid.wbinvd_done"}


def st(status: Status, opid: OperandId | int = 0) -> int:
    """``api_error_with_operand_id(err, id)`` = ``err + id`` (M15 ``include/tdx_api_defs.h``)."""
    return int(status) + int(opid)


class SeamcallFailed(Exception):
    """A leaf stopped at a failing check; ``status`` is what it returns in RAX."""

    def __init__(self, status: int) -> None:
        super().__init__(f"0x{status:016X}")
        self.status = status


# --------------------------------------------------------------------------- module structures


@dataclass
class PamtEntry:
    """``pamt_entry_t`` (§2.1); ``holders`` counts shared PAMT locks held across steps (only a
    running vCPU holds any: VP.ENTER keeps its TDR and TDVPR shared-locked until TD exit)."""

    pt: int = PT_NDA
    owner: int = 0
    bepoch: int = 0
    holders: int = 0


@dataclass
class KotEntry:
    """KOT entry (§2.4): ``state`` and ``wbinvd_bitmap``."""

    state: int = KOT_FREE
    wbinvd_bitmap: int = 0


@dataclass
class Wbt:
    """Per-package write-back table entry (§2.4): interruption point and HKID snapshot."""

    intr_point: int = 0
    snapshot: frozenset[int] = frozenset()


@dataclass
class Tdr:
    """TD root page fields (``tdr_td_management_fields_t``, ``tdr_key_managment_fields_t``)."""

    hkid: int
    lifecycle: int = TD_HKID_ASSIGNED
    fatal: int = 0
    num_tdcx: int = 0
    chldcnt: int = 0
    pkg_config_bitmap: int = 0
    tdcx_pa: list[int] = field(default_factory=list)
    #: the TDCS found at ``tdcx_pa[0]`` when it was added (kept so that a TD in teardown whose
    #: TDCS page was reclaimed and reused still reports its own last op state)
    tdcs: Tdcs | None = None


@dataclass
class SeptPage:
    """One S-EPT page: 512 entries of ``level`` (missing index = FREE), each ``[state, pa]``."""

    pa: int
    level: int
    entries: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class Tdcs:
    """TDCS fields used by the rules (§2.3); the S-EPT root lives in TDCS page 3."""

    root: SeptPage
    op_state: int = OP_UNINITIALIZED
    num_vcpus: int = 0
    num_assoc_vcpus: int = 0
    max_vcpus: int = 0
    td_epoch: int = 0
    refcount: list[int] = field(default_factory=lambda: [0, 0])


@dataclass
class Tdvps:
    """vCPU state (``tdx_tdvps.h``): ``pages`` is ``tdvps_pa[]`` (index 0 = the TDVPR)."""

    pages: list[int]
    state: int = VCPU_UNINITIALIZED
    assoc_lp: int | None = NO_LP
    vcpu_epoch: int = 0
    vcpu_index: int = 0
    in_guest: bool = False  # between a successful VP.ENTER and its TD exit
