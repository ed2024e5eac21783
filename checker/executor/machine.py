"""A byte-level TDX platform: memory, caches, keys, and the TDX module's SEAMCALL leaves.

This is tdxcheck's second, independent implementation of the rules in
``../shared/tdx-reference.md`` (written from that text and from the TDX module source it cites,
``intel/tdx-module`` branch ``tdx_1.5`` = M15; it imports nothing from ``tdxcheck.model`` except
the step table and the status codes).  Its statuses are compared step by step with the model's,
so every leaf runs its checks in the module's order and the first failing check decides the
64-bit status, operand id included.

What is concrete here and abstract in the model:

* **Physical memory** is bytes: every 64-byte line holds ciphertext, the platform's TD-owner bit
  (logical integrity, as on SPR/EMR: set by a write with a TDX KeyID, cleared by a KeyID-0 write),
  the KeyID it was written with, and a global write sequence number (``seq``) that says which of
  two writes to the same line is the newer one.
* **Caches**: one per package, LRU, holding lines tagged ``(physical line address, KeyID)`` with
  plaintext, a dirty bit and the ``seq`` of their last write.  Caches do not keep KeyID aliases
  coherent (the hardware does not, LH ``init_tdx_module`` comment, kvm-sequences.md §1.9): two tags
  for the same physical line are two unrelated cache lines.  One tag lives in at most one package
  (a write or read elsewhere moves it there).  A dirty line goes to memory when it is evicted
  (capacity, the guest's working set displacing it at a TD exit, ``finish``), flushed
  (CLFLUSH / PAGE.WBINVD / CACHE.WB) - encrypted at that moment with the key its KeyID has *then*.
* **Encryption**: each package's memory controller holds a key per KeyID; a line's home package is
  chosen by its page frame (page interleaving).  KeyID 0 is plaintext; the module's global KeyID
  gets a key at platform init (TDH.SYS.KEY.CONFIG); a private HKID gets a fresh random key on a
  package when TDH.MNG.KEY.CONFIG runs there (PCONFIG ``KEYID_SET_KEY_RANDOM``, M15
  ``helpers.c::program_mktme_keys``).  The cipher is XOR with a BLAKE2b keystream of (key, line
  address): enough to make data written under one key read as garbage under another.
* **Module state**: PAMT entries, the KOT, the per-package WBT, TDR, TDCS, TDVPS and S-EPT pages are
  Python objects keyed by physical address, as the module finds them (the TDR by its PA, the TDCS
  by ``TDR.tdcx_pa[0]``, a vCPU by its TDVPR PA, S-EPT pages by PA).  Every field update is also
  mirrored as a normal store of the fields' bytes into the page's first line(s) under the KeyID the
  module maps that page with (global KeyID for the TDR, the TD's HKID for the rest), so module
  activity leaves real dirty lines in the cache of the package the SEAMCALL ran on.  Page
  initialization (MNG.CREATE, ADDCX, VP.CREATE, VP.ADDCX, SEPT.ADD, PAGE.ADD) uses direct
  MOVDIR64B stores, as M15 does (``zero_area_cacheline``, ``fill_area_cacheline``,
  ``cache_aligned_copy_direct``).

Consequences (:class:`Consequence`) are what the concrete machine sees go wrong; the model's
invariants predict them:

* ``corrupted-host-data`` - a stale dirty line cached under some KeyID is written back over newer
  bytes the host wrote under KeyID 0 (the line's later KeyID-0 data is lost).  Detected by
  ``seq``: the written-back line is older than what memory holds.
* ``corrupted-td-data`` - the same over newer bytes written under a TDX KeyID (a TD's page or a
  module control structure), e.g. the kernel's dirty KeyID-0 lines of a page handed to the module
  without CLFLUSH (flush-before-alloc).
* ``hkid-reuse-dirty-lines`` - a new key is programmed for an HKID while lines written under its
  old key are still dirty in a cache; reported again when such a line is later written back with
  the new key (its data is then lost).
* ``machine-check`` - a KeyID-0 fill (host read or partial write) of a line whose TD-owner bit is
  set, on a platform with the partial-write erratum (``clear_before_reuse=1``, Linux
  ``X86_BUG_TDX_PW_MCE``); or a fill under a TDX KeyID of a line whose TD-owner bit is clear (the
  integrity check poisons it; a #MC in SEAM/guest mode).
* ``leaked-page`` / ``leaked-hkid`` - recorded by the runner (``runner.py``).
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar

from tdxcheck.model.status import OperandId, Status, status_class

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


# --------------------------------------------------------------------------- consequences


@dataclass
class Consequence:
    """Something the concrete machine saw go wrong (kinds: module docstring and runner.py).

    ``step_index`` is the 0-based index of the ``Executor.step`` call during which it showed up
    (``finish()`` uses the number of steps).  ``address``/``expected``/``found`` are filled for
    data corruption; ``count`` says how many lines of the same page were hit in that step.
    """

    kind: str
    step_index: int
    message: str
    address: int | None = None
    expected: bytes | None = None
    found: bytes | None = None
    count: int = 1


# --------------------------------------------------------------------------- bytes and keys


@lru_cache(maxsize=1 << 16)
def _keystream(key: int, line: int) -> bytes:
    return hashlib.blake2b(line.to_bytes(8, "little"), key=key.to_bytes(16, "little"),
                           digest_size=LINE).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(LINE, "little")


ZERO_LINE = bytes(LINE)


@dataclass
class MemLine:
    """One 64-byte line of DRAM as the memory controller stores it."""

    data: bytes = ZERO_LINE  # ciphertext
    td_bit: bool = False  # TD-owner bit (logical integrity)
    seq: int = 0  # write sequence number of the data held
    keyid: int = 0  # KeyID the data was written with
    keygen: int = 0  # generation of that KeyID's key on the home package at the time


@dataclass
class CacheLine:
    """A cached line: tag ``(line address, KeyID)``, plaintext, dirty bit, write seq."""

    data: bytes
    dirty: bool
    seq: int
    keygen: int


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


# --------------------------------------------------------------------------- the machine


class Machine:
    """One TDX platform: packages, CPUs, memory, caches, memory-controller keys, the module.

    ``seamcall(rax, rcx, rdx, r8, cpu)`` is the SEAMCALL instruction; ``host_*`` methods are
    what the kernel does through its KeyID-0 mapping; ``guest_*``/``td_exit`` what the TD does.
    """

    def __init__(
        self,
        config: dict[str, int] | None = None,
        *,
        ablate: Iterable[str] = (),
        cache_lines: int = 4096,
        seed: int = 0,
        keyid_shift: int = 40,
    ) -> None:
        cfg = dict(DEFAULT_CONFIG)
        cfg.update(config or {})
        self.cfg = cfg
        self.packages = cfg["packages"]
        self.cpus_per_package = cfg["cpus_per_package"]
        self.ncpus = self.packages * self.cpus_per_package
        self.global_keyid = cfg["hkids"]  # the module's own KeyID (TDH.SYS.CONFIG), §2.4
        self.min_tdcs = cfg["tdcs_pages"]  # MIN_NUM_TDCS_PAGES
        self.max_tdcs = cfg["tdcs_pages"] + 3  # MAX_NUM_TDCS_PAGES
        self.min_tdvps = 1 + cfg["tdcx_pages"]  # MIN_TDVPS_PAGES
        self.max_tdvps = 1 + cfg["tdcx_pages"] + 9  # MAX_TDVPS_PAGES
        self.pwl = cfg["sept_levels"] - 1  # eptp.ept_pwl: level of the root's entries
        self.all_pkgs = (1 << self.packages) - 1  # global pkg_config_bitmap: every package
        self.pw_mce_erratum = bool(cfg["clear_before_reuse"])
        self.clflush_before_alloc = bool(cfg["clflush_before_alloc"])
        self.keyid_shift = keyid_shift
        self.pa_mask = (1 << keyid_shift) - 1
        self.ablate = frozenset(ABLATION_ALIASES.get(a, a) for a in ablate)
        self.cache_capacity = cache_lines
        self._rng = random.Random(seed)

        # platform
        self.memory: dict[int, MemLine] = {}
        self.caches: list[OrderedDict[tuple[int, int], CacheLine]] = [
            OrderedDict() for _ in range(self.packages)]
        self.keys: list[dict[int, tuple[int, int]]] = [{} for _ in range(self.packages)]
        for p in range(self.packages):  # TDH.SYS.KEY.CONFIG on every package
            self.keys[p][self.global_keyid] = (self._new_key(), 1)
        self._seq = 0

        # module
        self.pamt: dict[int, PamtEntry] = {}
        self.kot: list[KotEntry] = [KotEntry() for _ in range(self.global_keyid + 1)]
        self.kot[self.global_keyid].state = KOT_RESERVED
        self.wbt: list[Wbt] = [Wbt() for _ in range(self.packages)]
        self.tdrs: dict[int, Tdr] = {}
        self.tdcss: dict[int, Tdcs] = {}  # keyed by the PA of TDCS page 0
        self.tdvpss: dict[int, Tdvps] = {}  # keyed by TDVPR PA
        self.sept_pages: dict[int, SeptPage] = {}  # non-root S-EPT pages by PA

        # reporting
        self.consequences: list[Consequence] = []
        self.step_index = 0
        self._fault: tuple[int, bool] | None = None
        self._reported: dict[tuple[str, int, int], Consequence] = {}

    # ------------------------------------------------------------------ small helpers

    def pkg_of(self, cpu: int) -> int:
        """Package of a logical CPU: ``cpu // cpus_per_package`` (scenario-format.md §1)."""
        if not 0 <= cpu < self.ncpus:
            raise ValueError(f"cpu {cpu} does not exist (the platform has {self.ncpus})")
        return cpu // self.cpus_per_package

    def home_of(self, line: int) -> int:
        """Package whose memory controller holds a line (pages interleave across packages)."""
        return (line >> 12) % self.packages

    def _new_key(self) -> int:
        return self._rng.getrandbits(128) | 1

    @property
    def seq(self) -> int:
        """The number of line writes so far (each write's ``seq``; also a handy data stamp)."""
        return self._seq

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _key(self, home: int, keyid: int) -> tuple[int, int]:
        if keyid == 0:
            return 0, 0
        return self.keys[home].get(keyid, (0, 0))

    def _cipher(self, line: int, keyid: int, data: bytes, key: int) -> bytes:
        if keyid == 0 or key == 0:
            # KeyID 0 is plaintext; a never-programmed KeyID behaves like it (cannot happen for
            # module writes: the module writes under an HKID only after KEY.CONFIG)
            return data
        return _xor(data, _keystream(key, line))

    def report(self, kind: str, page: int, message: str, *, address: int | None = None,
               expected: bytes | None = None, found: bytes | None = None) -> None:
        """Record a consequence; repeated hits on one page in one step are counted, not listed."""
        k = (kind, page, self.step_index)
        prev = self._reported.get(k)
        if prev is not None:
            prev.count += 1
            return
        c = Consequence(kind, self.step_index, message, address, expected, found)
        self._reported[k] = c
        self.consequences.append(c)

    # ------------------------------------------------------------------ caches and memory

    def _find(self, tag: tuple[int, int]) -> int | None:
        for p, cache in enumerate(self.caches):
            if tag in cache:
                return p
        return None

    def _write_back(self, tag: tuple[int, int], cl: CacheLine) -> None:
        """A dirty line reaches memory, encrypted with its KeyID's key *now* (§ module doc)."""
        line, keyid = tag
        home = self.home_of(line)
        key, gen = self._key(home, keyid)
        old = self.memory.get(line, MemLine())
        if keyid != 0 and cl.keygen != gen:
            self.report("hkid-reuse-dirty-lines", line & ~0xFFF,
                        f"line 0x{line:x} written under HKID {keyid}'s old key was written back "
                        f"with the key programmed for its new owner: the old data is lost and "
                        f"the bytes are garbage to everyone", address=line)
        if cl.seq < old.seq and not self._newer_alias_cached(line, keyid, old.seq):
            # stale: a newer write to this physical line (under another KeyID) already reached
            # memory, and this write-back destroys it (unless an even newer dirty copy is still
            # cached under yet another KeyID: that one lands last and nothing is lost)
            okey, _ = self._key(home, old.keyid)
            expected = self._cipher(line, old.keyid, old.data, okey)
            new_cipher = self._cipher(line, keyid, cl.data, key)
            found = self._cipher(line, old.keyid, new_cipher, okey)
            kind = "corrupted-host-data" if old.keyid == 0 else "corrupted-td-data"
            whose = ("the host's newer KeyID-0 data" if old.keyid == 0
                     else f"newer data written under KeyID {old.keyid}")
            self.report(kind, line & ~0xFFF,
                        f"0x{line:x}: a stale dirty line cached under KeyID {keyid} was written "
                        f"back over {whose}: expected {expected[:16].hex()}.. found "
                        f"{found[:16].hex()}..", address=line, expected=expected, found=found)
        self.memory[line] = MemLine(self._cipher(line, keyid, cl.data, key), keyid != 0,
                                    cl.seq, keyid, gen)

    def _newer_alias_cached(self, line: int, keyid: int, seq: int) -> bool:
        for cache in self.caches:
            for k in range(self.global_keyid + 1):
                if k == keyid:
                    continue
                cl = cache.get((line, k))
                if cl is not None and cl.dirty and cl.seq > seq:
                    return True
        return False

    def _evict(self, pkg: int, tag: tuple[int, int]) -> None:
        cl = self.caches[pkg].pop(tag)
        if cl.dirty:
            self._write_back(tag, cl)

    def _insert(self, pkg: int, tag: tuple[int, int], cl: CacheLine) -> None:
        cache = self.caches[pkg]
        cache[tag] = cl
        cache.move_to_end(tag)
        while len(cache) > self.cache_capacity:
            oldest = next(iter(cache))
            self._evict(pkg, oldest)

    def _fill(self, pkg: int, line: int, keyid: int) -> CacheLine:
        """Bring ``(line, keyid)`` into ``pkg``'s cache: from another package, else from memory."""
        tag = (line, keyid)
        other = self._find(tag)
        if other is not None:
            cl = self.caches[other].pop(tag)
            self._insert(pkg, tag, cl)
            return cl
        mem = self.memory.get(line, MemLine())
        home = self.home_of(line)
        if keyid == 0 and mem.td_bit and self.pw_mce_erratum:
            self.report("machine-check", line & ~0xFFF,
                        f"#MC: KeyID-0 access to line 0x{line:x} whose TD-owner bit is set "
                        f"(last written under KeyID {mem.keyid}); this platform has the "
                        f"partial-write erratum (X86_BUG_TDX_PW_MCE)", address=line)
        elif keyid != 0 and not mem.td_bit:
            self.report("machine-check", line & ~0xFFF,
                        f"#MC in SEAM/guest mode: read of line 0x{line:x} under KeyID {keyid} "
                        f"failed the integrity check (TD-owner bit clear: last written under "
                        f"KeyID {mem.keyid})", address=line)
        if keyid == 0 and mem.td_bit:
            data = ZERO_LINE  # a TD-owned line reads as zeros through a non-TD KeyID
        else:
            key, _ = self._key(home, keyid)
            data = self._cipher(line, keyid, mem.data, key)
        cl = CacheLine(data, False, mem.seq, self._key(home, keyid)[1])
        self._insert(pkg, tag, cl)
        return cl

    def store(self, cpu: int, addr: int, keyid: int, data: bytes) -> None:
        """A normal (write-back cached) store of ``data`` at ``addr`` through ``keyid``."""
        pkg = self.pkg_of(cpu)
        line = addr & ~(LINE - 1)
        off = addr - line
        assert off + len(data) <= LINE, "a store stays inside one line"
        tag = (line, keyid)
        if off == 0 and len(data) == LINE and self._find(tag) is None:
            old = None  # a full-line store needs no read-for-ownership
        else:
            old = self._fill(pkg, line, keyid).data
        if old is None:
            new = data
        else:
            new = old[:off] + data + old[off + len(data):]
        home = self.home_of(line)
        self._insert(pkg, tag, CacheLine(new, True, self._next_seq(), self._key(home, keyid)[1]))

    def load(self, cpu: int, addr: int, keyid: int, length: int = LINE) -> bytes:
        """A cached load through ``keyid`` (fills the line into the CPU's package cache)."""
        line = addr & ~(LINE - 1)
        off = addr - line
        cl = self._fill(self.pkg_of(cpu), line, keyid)
        return cl.data[off:off + length]

    def movdir64b(self, line: int, keyid: int, data: bytes) -> None:
        """A direct store (MOVDIR64B) of a whole line: straight to memory, invalidating cached
        copies of the same tag; lines cached under other KeyIDs are untouched (§9, LK
        ``tdx_clear_page``).  With ``clflush_before_alloc=0`` the platform needs no CLFLUSH
        before allocation, modelled as: a direct store under a TDX KeyID also drops the line's
        KeyID-0 copies."""
        for cache in self.caches:
            cache.pop((line, keyid), None)
            if keyid != 0 and not self.clflush_before_alloc:
                cache.pop((line, 0), None)
        home = self.home_of(line)
        key, gen = self._key(home, keyid)
        self.memory[line] = MemLine(self._cipher(line, keyid, data, key), keyid != 0,
                                    self._next_seq(), keyid, gen)

    def movdir64b_page(self, pa: int, keyid: int, fill: bytes = ZERO_LINE) -> None:
        for i in range(LINES_PER_PAGE):
            self.movdir64b(pa + i * LINE, keyid, fill)

    def flush_line(self, line: int, keyid: int) -> None:
        """CLFLUSH(OPT) through ``keyid``: write back if dirty and invalidate, in every package."""
        p = self._find((line, keyid))
        if p is not None:
            self._evict(p, (line, keyid))

    def flush_page(self, pa: int, keyid: int) -> None:
        for i in range(LINES_PER_PAGE):
            self.flush_line(pa + i * LINE, keyid)

    def evict_all(self, pkg: int | None = None, keep_keyid: int | None = None) -> None:
        """Write back and invalidate every line (of one package; optionally sparing one KeyID),
        oldest first (LRU order)."""
        for p in range(self.packages) if pkg is None else (pkg,):
            for tag in list(self.caches[p]):
                if keep_keyid is not None and tag[1] == keep_keyid:
                    continue
                self._evict(p, tag)

    def dirty_lines(self, keyid: int | None = None, pa: int | None = None) -> list[tuple[int, int, int]]:
        """``(package, line, keyid)`` of every dirty cached line, optionally filtered."""
        out = []
        for p, cache in enumerate(self.caches):
            for (line, k), cl in cache.items():
                if not cl.dirty:
                    continue
                if keyid is not None and k != keyid:
                    continue
                if pa is not None and line & ~0xFFF != pa:
                    continue
                out.append((p, line, k))
        return out

    def peek(self, line: int, keyid: int) -> bytes:
        """What memory holds for ``line`` decrypted with ``keyid``'s current key (no cache, no
        side effect; for tests and reports)."""
        mem = self.memory.get(line, MemLine())
        key, _ = self._key(self.home_of(line), keyid)
        return self._cipher(line, keyid, mem.data, key)

    def td_bit(self, line: int) -> bool:
        return self.memory.get(line, MemLine()).td_bit

    def program_key(self, pkg: int, hkid: int) -> None:
        """PCONFIG ``KEYID_SET_KEY_RANDOM`` on one package (M15 ``program_mktme_keys``)."""
        home_dirty = [(p, line) for p, line, _ in self.dirty_lines(keyid=hkid)
                      if self.home_of(line) == pkg]
        if home_dirty:
            pages = sorted({line & ~0xFFF for _, line in home_dirty})
            self.report("hkid-reuse-dirty-lines", pages[0],
                        f"a new key for HKID {hkid} was programmed on package {pkg} while "
                        f"{len(home_dirty)} line(s) written under its old key were still dirty "
                        f"in a cache (pages {', '.join(hex(p) for p in pages)})",
                        address=home_dirty[0][1])
        _, gen = self.keys[pkg].get(hkid, (0, 0))
        self.keys[pkg][hkid] = (self._new_key(), gen + 1)

    # ------------------------------------------------------------------ host side

    def host_write(self, cpu: int, pa: int, pattern: bytes, lines: Iterable[int]) -> None:
        """The kernel writes part of each given line of a page through KeyID 0 (normal stores:
        a read-for-ownership then a partial write)."""
        for i in lines:
            self.store(cpu, pa + i * LINE, 0, pattern)

    def host_clear_page(self, pa: int) -> None:
        """``tdx_clear_page``: 64 x MOVDIR64B of zeros under KeyID 0 (LK; §9 "Clearing")."""
        self.movdir64b_page(pa, 0, ZERO_LINE)

    # ------------------------------------------------------------------ module plumbing

    def pamt_entry(self, pa: int) -> PamtEntry:
        e = self.pamt.get(pa)
        if e is None:
            e = self.pamt[pa] = PamtEntry()
        return e

    def _check(self, name: str, ok: bool, status: int) -> None:
        """One check of a leaf: fail with ``status`` unless it holds or is ablated by name."""
        if not ok and name not in self.ablate:
            raise SeamcallFailed(status)

    def _fault_point(self, code: int) -> None:
        """A point where the module may fail for outside reasons (scenario-format.md §5): return
        ``code`` here if the step's ``fault=`` names it (without an operand id: the first fault
        point of that status class in the leaf's order)."""
        f = self._fault
        if f is None:
            return
        fcode, has_opid = f
        if (fcode == code) if has_opid else (status_class(fcode) == status_class(code)):
            self._fault = None
            raise SeamcallFailed(code)

    def _explicit_page(self, name: str, pa: int, opid: OperandId, expected_pt: int,
                       exclusive: bool) -> PamtEntry:
        """EXPLICIT_PAGE (§3.1, M15 ``helpers.c::check_and_lock_explicit_private_hpa``): checks
        1, 2 and 4 cannot fail here (valid 4K pages in a TDMR); 3 = the PAMT lock (only a running
        vCPU holds one across steps, shared, so only exclusive requests fail); 5 = the type."""
        e = self.pamt_entry(pa)
        if exclusive and e.holders:
            raise SeamcallFailed(st(Status.TDX_OPERAND_BUSY, opid))
        self._check(name, e.pt == expected_pt, st(Status.TDX_PAGE_METADATA_INCORRECT, opid))
        return e

    def _implicit_tdr(self, owner: int) -> Tdr:
        """IMPLICIT_TDR(shared) (§3.3): found through the PAMT owner; a shared lock never fails."""
        return self.tdrs[owner]

    def _td_state(self, tdr: Tdr, leaf: int, prefix: str) -> Tdcs:
        """TD_STATE (§3.4, M15 ``check_any_td_state_map_tdcs_and_lock``): fatal, lifecycle,
        TDCS allocated, (op_state_lock: never contended here), op-state matrix (§4)."""
        self._check(f"{prefix}.not_fatal", tdr.fatal == 0, st(Status.TDX_TD_FATAL))
        self._check(f"{prefix}.keys_configured", tdr.lifecycle == TD_KEYS_CONFIGURED,
                    st(Status.TDX_TD_KEYS_NOT_CONFIGURED))
        self._check(f"{prefix}.tdcs_allocated", tdr.num_tdcx >= self.min_tdcs,
                    st(Status.TDX_TDCS_NOT_ALLOCATED))
        tdcs = self.tdcss[tdr.tdcx_pa[0]]
        self._check(f"{prefix}.op_state", tdcs.op_state in OP_ALLOWED[leaf],
                    st(Status.TDX_OP_STATE_INCORRECT))
        return tdcs

    def _tlb_tracked(self, tdcs: Tdcs, bepoch: int) -> bool:
        """``is_tlb_tracked`` (§3.6, M15 ``helpers.h``)."""
        e = tdcs.td_epoch
        return bepoch < e - 1 or (bepoch == e - 1 and tdcs.refcount[bepoch & 1] == 0)

    def _walk(self, tdcs: Tdcs, gpa: int, level: int) -> tuple[int, SeptPage, int]:
        """``secure_ept_walk`` (§3.5, M15 ``sept_manager.c``): from the root down; stop at the
        requested level, or early at an entry with RWX=0 or a leaf.  Returns the level reached,
        the S-EPT page and the entry index there."""
        lvl, page = self.pwl, tdcs.root
        while True:
            idx = (gpa >> (12 + 9 * lvl)) & 511
            if lvl == level:
                return lvl, page, idx
            ent = page.entries.get(idx)
            if ent is None or ent[0] != SEPT_NL_MAPPED or lvl == 0:
                return lvl, page, idx
            page = self.sept_pages[ent[1]]
            lvl -= 1

    @staticmethod
    def _entry_state(page: SeptPage, idx: int) -> int:
        ent = page.entries.get(idx)
        return SEPT_FREE if ent is None else ent[0]

    def _level_ok(self, gpa: int, level: int, lo: int, hi: int) -> bool:
        """``verify_page_info_input``: level in range and the GPA aligned to it."""
        return lo <= level <= hi and gpa & ((1 << (12 + 9 * level)) - 1) == 0

    # mirrored bytes ---------------------------------------------------------

    def _mirror_tdr(self, cpu: int, pa: int) -> None:
        """TDR fields live in the TDR page, mapped with the global KeyID (§9 table, LK)."""
        t = self.tdrs[pa]
        data = (t.lifecycle.to_bytes(1, "little") + t.fatal.to_bytes(1, "little")
                + t.hkid.to_bytes(2, "little") + t.num_tdcx.to_bytes(4, "little")
                + t.chldcnt.to_bytes(4, "little") + t.pkg_config_bitmap.to_bytes(4, "little"))
        self.store(cpu, pa, self.global_keyid, data)

    def _mirror_tdcs(self, cpu: int, tdr: Tdr) -> None:
        c = self.tdcss[tdr.tdcx_pa[0]]
        data = (c.op_state.to_bytes(1, "little") + bytes(3) + c.num_vcpus.to_bytes(4, "little")
                + c.num_assoc_vcpus.to_bytes(4, "little") + (c.td_epoch & 0xFFFFFFFF).to_bytes(4, "little"))
        self.store(cpu, tdr.tdcx_pa[0], tdr.hkid, data)
        self.store(cpu, tdr.tdcx_pa[0] + LINE, tdr.hkid,
                   c.refcount[0].to_bytes(2, "little") + c.refcount[1].to_bytes(2, "little"))

    def _mirror_tdvps(self, cpu: int, pa: int, hkid: int) -> None:
        v = self.tdvpss[pa]
        lp = 0xFFFFFFFF if v.assoc_lp is None else v.assoc_lp
        data = (v.state.to_bytes(1, "little") + len(v.pages).to_bytes(1, "little") + bytes(2)
                + lp.to_bytes(4, "little") + (v.vcpu_epoch & 0xFFFFFFFF).to_bytes(4, "little")
                + v.vcpu_index.to_bytes(4, "little"))
        self.store(cpu, pa, hkid, data)

    def _mirror_entry(self, cpu: int, page: SeptPage, idx: int, hkid: int) -> None:
        ent = page.entries.get(idx)
        value = (SEPT_ENC[SEPT_FREE] | (1 << 63)) if ent is None else (
            SEPT_ENC[ent[0]] | (ent[1] & 0x000FFFFFFFFFF000))
        self.store(cpu, page.pa + idx * 8, hkid, value.to_bytes(8, "little"))

    def _root_pa(self, tdr: Tdr) -> int:
        return tdr.tdcx_pa[min(3, len(tdr.tdcx_pa) - 1)]  # SEPT_ROOT_PAGE_INDEX = 3

    # ------------------------------------------------------------------ SEAMCALL entry

    def seamcall(self, rax: int, rcx: int = 0, rdx: int = 0, r8: int = 0, cpu: int = 0,
                 *, fault: tuple[int, bool] | None = None) -> tuple[int, dict[str, int]]:
        """SEAMCALL: leaf in RAX bits 15:0 (version in 23:16, not modelled), operands in RCX,
        RDX, R8 as physical addresses with KeyID bits (``pa | keyid << keyid_shift``) or
        integers.  Returns ``(rax_status, outputs)``; ``outputs`` holds the output registers
        the leaf defines (``rcx``/``rdx``/``r8``)."""
        leaf = rax & 0xFFFF
        handler = self._LEAVES.get(leaf)
        self.pkg_of(cpu)  # validates cpu
        if handler is None:
            return st(Status.TDX_OPERAND_INVALID, OperandId.RAX), {}
        self._fault = fault
        out: dict[str, int] = {}
        try:
            handler(self, cpu, rcx, rdx, r8, out)
            status = st(Status.TDX_SUCCESS)
        except SeamcallFailed as e:
            status = e.status
        finally:
            self._fault = None
        return status, out

    def _pa(self, reg: int) -> int:
        return reg & self.pa_mask

    # ------------------------------------------------------------------ TD management leaves

    def _mng_create(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MNG.CREATE (leaf 9), §6.1, M15 ``tdh_mng_create.c``."""
        tdr_pa, hkid = self._pa(rcx), rdx
        # is_private_hkid: private_hkid_min..max includes the module's global KeyID (M15
        # tdh_sys_init.c), which is KOT HKID_RESERVED and so fails check 4, not check 1
        self._check("mng.create.hkid_private", 1 <= hkid <= self.global_keyid,
                    st(Status.TDX_OPERAND_INVALID, OperandId.RDX))
        e = self._explicit_page("mng.create.tdr_page", tdr_pa, OperandId.RCX, PT_NDA, True)
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.KOT))
        self._check("mng.create.hkid_free", self.kot[hkid].state == KOT_FREE,
                    st(Status.TDX_HKID_NOT_FREE))
        # the TDR page is zeroed with direct writes *before* the TD_UUID is drawn, so a
        # TDX_RND_NO_ENTROPY failure leaves a PT_NDA page whose lines carry the TD-owner bit
        self.movdir64b_page(tdr_pa, self.global_keyid)
        self._fault_point(st(Status.TDX_RND_NO_ENTROPY))
        # ALL_CHECKS_PASSED
        self.kot[hkid].state = KOT_ASSIGNED
        self.tdrs[tdr_pa] = Tdr(hkid=hkid)
        e.pt, e.owner, e.bepoch = PT_TDR, 0, 0
        self._mirror_tdr(cpu, tdr_pa)

    def _mng_key_config(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MNG.KEY.CONFIG (leaf 8), §6.2, M15 ``tdh_mng_key_config.c``: per package."""
        tdr_pa = self._pa(rcx)
        self._explicit_page("mng.key_config.tdr_page", tdr_pa, OperandId.RCX, PT_TDR, True)
        tdr = self.tdrs[tdr_pa]
        pkg = self.pkg_of(cpu)
        self._check("mng.key_config.not_fatal", tdr.fatal == 0, st(Status.TDX_TD_FATAL))
        self._check("mng.key_config.hkid_assigned", tdr.lifecycle == TD_HKID_ASSIGNED,
                    st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
        self._check("mng.key_config.pkg_not_configured", not tdr.pkg_config_bitmap & (1 << pkg),
                    st(Status.TDX_KEY_CONFIGURED))
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.KET))
        self._fault_point(st(Status.TDX_KEY_GENERATION_FAILED))
        # ALL_CHECKS_PASSED
        self.program_key(pkg, tdr.hkid)
        tdr.pkg_config_bitmap |= 1 << pkg
        if tdr.pkg_config_bitmap == self.all_pkgs:
            tdr.lifecycle = TD_KEYS_CONFIGURED
        self._mirror_tdr(cpu, tdr_pa)

    def _mng_addcx(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MNG.ADDCX (leaf 1), §6.3, M15 ``tdh_mng_add_cx.c``."""
        page, tdr_pa = self._pa(rcx), self._pa(rdx)
        self._explicit_page("mng.addcx.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, True)
        tdr = self.tdrs[tdr_pa]
        self._check("mng.addcx.not_fatal", tdr.fatal == 0, st(Status.TDX_TD_FATAL))
        self._check("mng.addcx.keys_configured", tdr.lifecycle == TD_KEYS_CONFIGURED,
                    st(Status.TDX_TD_KEYS_NOT_CONFIGURED))
        self._check("mng.addcx.tdcx_num", tdr.num_tdcx < self.max_tdcs,
                    st(Status.TDX_TDCX_NUM_INCORRECT))
        e = self._explicit_page("mng.addcx.new_page", page, OperandId.RCX, PT_NDA, True)
        n = tdr.num_tdcx
        # "ALL_CHECKS_PASSED" is commented here in M15, yet the page is filled with direct
        # writes under the TD's HKID before the two checks below can still fail
        self.movdir64b_page(page, tdr.hkid,
                            b"\xff" * LINE if n == 2 else
                            (SEPT_ENC[SEPT_FREE] | (1 << 63)).to_bytes(8, "little") * 8
                            if n == 3 else ZERO_LINE)
        if n + 1 >= self.min_tdcs:
            if n + 1 == self.min_tdcs:
                self._fault_point(st(Status.TDX_RND_NO_ENTROPY))  # migration key
            else:
                tdcs = self.tdcss[tdr.tdcx_pa[0]]
                self._check("mng.addcx.op_state", tdcs.op_state in OP_ALLOWED[1],
                            st(Status.TDX_OP_STATE_INCORRECT))
        if n == 0:  # OP_STATE lives in TDCS page 0, zero = UNINITIALIZED
            tdr.tdcs = self.tdcss[page] = Tdcs(root=SeptPage(page, self.pwl))
        tdr.tdcx_pa.append(page)
        tdr.num_tdcx += 1
        tdr.chldcnt += 1
        if len(tdr.tdcx_pa) - 1 == min(3, self.min_tdcs - 1):
            self.tdcss[tdr.tdcx_pa[0]].root.pa = page  # the S-EPT root page
        e.pt, e.owner, e.bepoch = PT_TDCX, tdr_pa, 0
        self._mirror_tdr(cpu, tdr_pa)

    def _mng_init(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MNG.INIT (leaf 21), §6.4: TD_PARAMS are always valid here."""
        tdr_pa = self._pa(rcx)
        self._explicit_page("mng.init.tdr_page", tdr_pa, OperandId.RCX, PT_TDR, True)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 21, "mng.init")
        # ALL_CHECKS_PASSED
        tdcs.num_vcpus = tdcs.num_assoc_vcpus = 0
        tdcs.td_epoch, tdcs.refcount = 1, [0, 0]
        tdcs.max_vcpus = self.cfg["max_vcpus"]
        tdcs.op_state = OP_INITIALIZED
        self._mirror_tdcs(cpu, tdr)

    def _mng_rdwr(self, cpu: int, rcx: int, leaf: int, prefix: str) -> None:
        """TDH.MNG.RD / TDH.MNG.WR (11 / 13), §6.16: page and state checks only (no field)."""
        tdr_pa = self._pa(rcx)
        self._explicit_page(f"{prefix}.tdr_page", tdr_pa, OperandId.RCX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        self._td_state(tdr, leaf, prefix)
        if leaf == 13:
            self._mirror_tdcs(cpu, tdr)

    def _mng_rd(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        self._mng_rdwr(cpu, rcx, 11, "mng.rd")

    def _mng_wr(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        self._mng_rdwr(cpu, rcx, 13, "mng.wr")

    def _mng_vpflushdone(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MNG.VPFLUSHDONE (leaf 19), §6.10, M15 ``tdh_mng_vpflushdone.c``."""
        tdr_pa = self._pa(rcx)
        self._explicit_page("mng.vpflushdone.tdr_page", tdr_pa, OperandId.RCX, PT_TDR, True)
        tdr = self.tdrs[tdr_pa]
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.KOT))
        self._check("mng.vpflushdone.lifecycle",
                    tdr.lifecycle in (TD_HKID_ASSIGNED, TD_KEYS_CONFIGURED),
                    st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
        if tdr.num_tdcx >= self.min_tdcs:
            tdcs = self.tdcss[tdr.tdcx_pa[0]]
            if tdcs.op_state != OP_UNINITIALIZED:
                self._check("mng.vpflushdone.no_assoc_vcpus", tdcs.num_assoc_vcpus == 0,
                            st(Status.TDX_FLUSHVP_NOT_DONE))
        # ALL_CHECKS_PASSED
        kot = self.kot[tdr.hkid]
        kot.wbinvd_bitmap = self.all_pkgs
        tdr.lifecycle = TD_BLOCKED
        kot.state = KOT_FLUSHED
        self._mirror_tdr(cpu, tdr_pa)

    def _mng_key_freeid(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MNG.KEY.FREEID (leaf 20), §6.12, M15 ``tdh_mng_key_freeid.c``."""
        tdr_pa = self._pa(rcx)
        self._explicit_page("mng.key_freeid.tdr_page", tdr_pa, OperandId.RCX, PT_TDR, True)
        tdr = self.tdrs[tdr_pa]
        self._check("mng.key_freeid.blocked", tdr.lifecycle == TD_BLOCKED,
                    st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.KOT))
        kot = self.kot[tdr.hkid]
        self._check("mng.key_freeid.wbinvd_done", kot.wbinvd_bitmap == 0,
                    st(Status.TDX_WBCACHE_NOT_COMPLETE))
        # ALL_CHECKS_PASSED
        kot.state = KOT_FREE
        tdr.lifecycle = TD_TEARDOWN
        self._mirror_tdr(cpu, tdr_pa)

    def _mng_key_reclaimid(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MNG.KEY.RECLAIMID (leaf 27), §6.13: no checks, no effect."""

    # ------------------------------------------------------------------ vCPU leaves

    def _vp_create(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.VP.CREATE (leaf 10), §6.5, M15 ``tdh_vp_create.c``."""
        tdvpr, tdr_pa = self._pa(rcx), self._pa(rdx)
        self._explicit_page("vp.create.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        self._td_state(tdr, 10, "vp.create")
        e = self._explicit_page("vp.create.tdvpr_page", tdvpr, OperandId.RCX, PT_NDA, True)
        # ALL_CHECKS_PASSED
        self.movdir64b_page(tdvpr, tdr.hkid)
        self.tdvpss[tdvpr] = Tdvps(pages=[tdvpr])
        tdr.chldcnt += 1
        e.pt, e.owner, e.bepoch = PT_TDVPR, tdr_pa, 0
        self._mirror_tdr(cpu, tdr_pa)

    def _vp_addcx(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.VP.ADDCX (leaf 4), §6.6, M15 ``tdh_vp_addcx.c``."""
        page, tdvpr = self._pa(rcx), self._pa(rdx)
        ve = self._explicit_page("vp.addcx.tdvpr_page", tdvpr, OperandId.RDX, PT_TDVPR, True)
        tdr = self._implicit_tdr(ve.owner)
        self._td_state(tdr, 4, "vp.addcx")
        vp = self.tdvpss[tdvpr]
        self._check("vp.addcx.uninitialized", vp.state == VCPU_UNINITIALIZED,
                    st(Status.TDX_VCPU_STATE_INCORRECT))
        self._check("vp.addcx.tdvps_num", len(vp.pages) < self.max_tdvps,
                    st(Status.TDX_TDCX_NUM_INCORRECT))
        e = self._explicit_page("vp.addcx.new_page", page, OperandId.RCX, PT_NDA, True)
        # ALL_CHECKS_PASSED
        self.movdir64b_page(page, tdr.hkid)
        vp.pages.append(page)
        tdr.chldcnt += 1
        e.pt, e.owner, e.bepoch = PT_TDCX, ve.owner, 0
        self._mirror_tdvps(cpu, tdvpr, tdr.hkid)
        self._mirror_tdr(cpu, ve.owner)

    def _check_and_associate(self, vp: Tdvps, tdcs: Tdcs, cpu: int, allow_disabled: bool,
                             prefix: str) -> None:
        """``check_and_associate_vcpu`` (§3.7, M15 ``helpers.c``): state, then CAS the LP."""
        ok = vp.state == VCPU_READY or (allow_disabled and vp.state == VCPU_DISABLED)
        self._check(f"{prefix}.vcpu_state", ok, st(Status.TDX_VCPU_STATE_INCORRECT))
        if vp.assoc_lp is not NO_LP and vp.assoc_lp != cpu:
            self._check(f"{prefix}.not_associated_elsewhere", False,
                        st(Status.TDX_VCPU_ASSOCIATED))
            return
        if vp.assoc_lp is NO_LP:
            vp.assoc_lp = cpu
            tdcs.num_assoc_vcpus += 1

    def _vp_init(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.VP.INIT (leaf 22), §6.7, M15 ``tdh_vp_init.c``."""
        tdvpr = self._pa(rcx)
        ve = self._explicit_page("vp.init.tdvpr_page", tdvpr, OperandId.RCX, PT_TDVPR, True)
        tdr = self._implicit_tdr(ve.owner)
        tdcs = self._td_state(tdr, 22, "vp.init")
        vp = self.tdvpss[tdvpr]
        self._check("vp.init.tdvps_num", len(vp.pages) >= self.min_tdvps,
                    st(Status.TDX_TDCX_NUM_INCORRECT))
        self._check("vp.init.uninitialized", vp.state == VCPU_UNINITIALIZED,
                    st(Status.TDX_VCPU_STATE_INCORRECT))
        self._check("vp.init.max_vcpus", tdcs.num_vcpus < tdcs.max_vcpus,
                    st(Status.TDX_MAX_VCPUS_EXCEEDED))
        # ALL_CHECKS_PASSED (IA32_TSC_ADJUST is never changed here)
        vp.vcpu_index = tdcs.num_vcpus
        tdcs.num_vcpus += 1
        vp.state = VCPU_READY
        vp.assoc_lp = cpu  # associate_vcpu_initial
        tdcs.num_assoc_vcpus += 1
        self._mirror_tdvps(cpu, tdvpr, tdr.hkid)
        self._mirror_tdcs(cpu, tdr)

    def _vp_enter(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.VP.ENTER (leaf 0), §6.8, M15 ``tdh_vp_enter.c``: the vCPU runs until ``td_exit``.

        The association made by ``check_and_associate_vcpu`` stays on the TD_EPOCH failure path
        (M15 ``EXIT_FAILURE`` does not undo it)."""
        tdvpr = self._pa(rcx)
        ve = self._explicit_page("vp.enter.tdvpr_page", tdvpr, OperandId.RCX, PT_TDVPR, False)
        tdr = self._implicit_tdr(ve.owner)
        tdcs = self._td_state(tdr, 0, "vp.enter")
        vp = self.tdvpss[tdvpr]
        self._check("vp.enter.tdvps_num", len(vp.pages) >= self.min_tdvps,
                    st(Status.TDX_TDCX_NUM_INCORRECT))
        self._check_and_associate(vp, tdcs, cpu, False, "vp.enter")
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.TD_EPOCH))
        # adjust_tlb_tracking_state: refcount of the current epoch, vcpu_epoch := td_epoch
        tdcs.refcount[tdcs.td_epoch & 1] += 1
        vp.vcpu_epoch = tdcs.td_epoch
        vp.state = VCPU_ACTIVE
        vp.in_guest = True
        ve.holders += 1  # TDVPR and TDR stay shared-locked while the vCPU runs
        self.pamt_entry(ve.owner).holders += 1
        self._mirror_tdvps(cpu, tdvpr, tdr.hkid)
        self._mirror_tdcs(cpu, tdr)

    def _vp_flush(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.VP.FLUSH (leaf 18), §6.9, M15 ``tdh_vp_flush.c``."""
        tdvpr = self._pa(rcx)
        ve = self._explicit_page("vp.flush.tdvpr_page", tdvpr, OperandId.RCX, PT_TDVPR, True)
        tdr = self._implicit_tdr(ve.owner)
        self._check("vp.flush.keys_configured", tdr.lifecycle == TD_KEYS_CONFIGURED,
                    st(Status.TDX_TD_KEYS_NOT_CONFIGURED))
        vp = self.tdvpss[tdvpr]
        self._check("vp.flush.tdvps_num", len(vp.pages) >= self.min_tdvps,
                    st(Status.TDX_TDCX_NUM_INCORRECT))
        self._check("vp.flush.associated_here", vp.assoc_lp == cpu,
                    st(Status.TDX_VCPU_NOT_ASSOCIATED))
        # ALL_CHECKS_PASSED
        if vp.assoc_lp is not NO_LP:
            vp.assoc_lp = NO_LP
            self.tdcss[tdr.tdcx_pa[0]].num_assoc_vcpus -= 1
        self._mirror_tdvps(cpu, tdvpr, tdr.hkid)

    def _vp_rdwr(self, cpu: int, rcx: int, leaf: int, prefix: str) -> None:
        """TDH.VP.RD / TDH.VP.WR (26 / 43), §6.16, M15 ``tdh_vp_rd_wr.c``: associates."""
        tdvpr = self._pa(rcx)
        ve = self._explicit_page(f"{prefix}.tdvpr_page", tdvpr, OperandId.RCX, PT_TDVPR, False)
        tdr = self._implicit_tdr(ve.owner)
        tdcs = self._td_state(tdr, leaf, prefix)
        vp = self.tdvpss[tdvpr]
        self._check(f"{prefix}.tdvps_num", len(vp.pages) >= self.min_tdvps,
                    st(Status.TDX_TDCX_NUM_INCORRECT))
        self._check_and_associate(vp, tdcs, cpu, leaf == 26, prefix)
        self._mirror_tdvps(cpu, tdvpr, tdr.hkid)

    def _vp_rd(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        self._vp_rdwr(cpu, rcx, 26, "vp.rd")

    def _vp_wr(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        self._vp_rdwr(cpu, rcx, 43, "vp.wr")

    # ------------------------------------------------------------------ physical memory leaves

    def _phymem_cache_wb(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.PHYMEM.CACHE.WB (leaf 40), §6.11, M15 ``tdh_phymem_cache_wb.c``: per package,
        resumable; the snapshot of FLUSHED HKIDs is taken at START."""
        pkg = self.pkg_of(cpu)
        self._check("phymem.cache_wb.cmd", rcx <= 1, st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.WBCACHE))
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.KOT))
        wbt = self.wbt[pkg]
        if rcx == 0:  # START: a new snapshot discards an interrupted run's progress
            wbt.snapshot = frozenset(h for h in range(1, self.global_keyid)
                                     if self.kot[h].state == KOT_FLUSHED)
            wbt.intr_point = 0
            if not wbt.snapshot:
                raise SeamcallFailed(st(Status.TDX_NO_HKID_READY_TO_WBCACHE))
        else:
            self._check("phymem.cache_wb.resume_point", wbt.intr_point != 0,
                        st(Status.TDX_WBCACHE_RESUME_ERROR))
        block = wbt.intr_point
        cache = self.caches[pkg]
        while True:
            if block < WBCACHE_BLOCKS:
                for tag in [t for t in cache
                            if t[1] in wbt.snapshot and (t[0] >> 6) % WBCACHE_BLOCKS == block]:
                    self._evict(pkg, tag)  # WBINVD of the sub-block: write back + invalidate
                block += 1
            f = self._fault
            if f is not None and status_class(f[0]) == Status.TDX_INTERRUPTED_RESUMABLE:
                wbt.intr_point = block  # >= 1: at least one sub-block was done
                self._fault_point(st(Status.TDX_INTERRUPTED_RESUMABLE))
            if block >= WBCACHE_BLOCKS:
                break
        wbt.intr_point = 0
        for h in wbt.snapshot:
            self.kot[h].wbinvd_bitmap &= ~(1 << pkg)

    def _phymem_page_reclaim(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.PHYMEM.PAGE.RECLAIM (leaf 28), §6.14, M15 ``tdh_phymem_page_reclaim.c``.
        Outputs: RCX page type, RDX owner TDR PA, R8 page size level (always 4K here)."""
        pa = self._pa(rcx)
        e = self.pamt_entry(pa)
        if e.holders:  # PAMT walk with an exclusive lock
            raise SeamcallFailed(st(Status.TDX_OPERAND_BUSY, OperandId.RCX))
        self._check("phymem.page_reclaim.page_type", e.pt not in (PT_NDA, PT_RSVD),
                    st(Status.TDX_PAGE_METADATA_INCORRECT, OperandId.RCX))
        if e.pt != PT_TDR:
            tdr = self._implicit_tdr(e.owner)
            self._check("phymem.page_reclaim.teardown", tdr.lifecycle == TD_TEARDOWN,
                        st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
            # ALL_CHECKS_PASSED
            tdr.chldcnt -= 1
            self._mirror_tdr(cpu, e.owner)
            owner = e.owner
        else:
            tdr = self.tdrs[pa]
            self._check("phymem.page_reclaim.tdr_teardown", tdr.lifecycle == TD_TEARDOWN,
                        st(Status.TDX_LIFECYCLE_STATE_INCORRECT))
            self._check("phymem.page_reclaim.no_children", tdr.chldcnt == 0,
                        st(Status.TDX_TD_ASSOCIATED_PAGES_EXIST))
            owner = 0
        out.update(rcx=e.pt, rdx=owner, r8=0)
        e.pt = PT_NDA  # owner left stale; the module neither clears nor flushes the page

    def _phymem_page_wbinvd(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.PHYMEM.PAGE.WBINVD (leaf 41), §6.15: the page must be PT_NDA (shared lock);
        CLFLUSHOPT of every line through the KeyID given in RCX's KeyID bits."""
        pa, keyid = self._pa(rcx), rcx >> self.keyid_shift
        self._explicit_page("phymem.page_wbinvd.page_nda", pa, OperandId.RCX, PT_NDA, False)
        self.flush_page(pa, keyid)

    # ------------------------------------------------------------------ S-EPT leaves

    def _sept_entry_locked(self, tdcs: Tdcs, gpa: int, level: int, tree: bool) -> tuple[SeptPage, int, int]:
        """SEPT_WALK (§3.5) with the tree lock (a fault point), the walk, then the entry lock
        (a fault point).  Returns (page, index, state)."""
        if tree:
            self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.SEPT_TREE))
        lvl, page, idx = self._walk(tdcs, gpa, level)
        if lvl != level:
            raise SeamcallFailed(st(Status.TDX_EPT_WALK_FAILED, OperandId.RCX))
        if tree:
            self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.RCX))
        return page, idx, self._entry_state(page, idx)

    def _gpa_level(self, rcx: int) -> tuple[int, int]:
        """``page_info_api_input_t``: bits 2:0 level, 51:12 GPA; reserved bits 11:3 are read as
        part of the level, so any non-zero value there fails the level check."""
        return rcx & 0x000FFFFFFFFFF000, rcx & 0xFFF

    def _mem_sept_add(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MEM.SEPT.ADD (leaf 3), §6.17, M15 ``tdh_mem_sept_add.c`` (v0, allow_existing=0)."""
        gpa, level = self._gpa_level(rcx)
        tdr_pa, new = self._pa(rdx), self._pa(r8)
        self._explicit_page("mem.sept_add.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 3, "mem.sept_add")
        self._check("mem.sept_add.level", self._level_ok(gpa, level, 1, self.pwl),
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True)
        self._check("mem.sept_add.entry_state", state in SEPT_ALLOWED[3],
                    st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, OperandId.RCX))
        if state == SEPT_NL_MAPPED:  # exists, and allow_existing = 0
            raise SeamcallFailed(st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, OperandId.RCX))
        e = self._explicit_page("mem.sept_add.new_page", new, OperandId.R8, PT_NDA, True)
        # ALL_CHECKS_PASSED
        self.movdir64b_page(new, tdr.hkid,
                            (SEPT_ENC[SEPT_FREE] | (1 << 63)).to_bytes(8, "little") * 8)
        self.sept_pages[new] = SeptPage(new, level - 1)
        e.pt, e.owner, e.bepoch = PT_EPT, tdr_pa, 0
        tdr.chldcnt += 1
        page.entries[idx] = [SEPT_NL_MAPPED, new]
        self._mirror_entry(cpu, page, idx, tdr.hkid)
        self._mirror_tdr(cpu, tdr_pa)

    def _mem_page_add(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MEM.PAGE.ADD (leaf 2), §6.18, M15 ``tdh_mem_page_add.c``: the TDR exclusive lock
        serializes the S-EPT (no tree or entry lock); the source page is always valid."""
        gpa, level = self._gpa_level(rcx)
        tdr_pa, target = self._pa(rdx), self._pa(r8)
        self._explicit_page("mem.page_add.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, True)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 2, "mem.page_add")
        self._check("mem.page_add.level", self._level_ok(gpa, level, 0, 0),
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        page, idx, state = self._sept_entry_locked(tdcs, gpa, 0, False)
        self._check("mem.page_add.entry_free", state in SEPT_ALLOWED[2],
                    st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, OperandId.RCX))
        e = self._explicit_page("mem.page_add.target_page", target, OperandId.R8, PT_NDA, True)
        # ALL_CHECKS_PASSED: copy the source with direct writes under the TD's HKID
        for i in range(LINES_PER_PAGE):
            self.movdir64b(target + i * LINE, tdr.hkid,
                           (b"SRC" + gpa.to_bytes(8, "little") + i.to_bytes(2, "little")).ljust(LINE, b"\0"))
        page.entries[idx] = [SEPT_MAPPED, target]
        tdr.chldcnt += 1
        e.pt, e.owner, e.bepoch = PT_REG, tdr_pa, 0
        self._mirror_entry(cpu, page, idx, tdr.hkid)
        self._mirror_tdr(cpu, tdr_pa)

    def _mem_page_aug(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MEM.PAGE.AUG (leaf 6), §6.19, M15 ``tdh_mem_page_aug.c`` (4K only)."""
        gpa, level = self._gpa_level(rcx)
        tdr_pa, target = self._pa(rdx), self._pa(r8)
        self._explicit_page("mem.page_aug.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 6, "mem.page_aug")
        self._check("mem.page_aug.level", self._level_ok(gpa, level, 0, 0),
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        page, idx, state = self._sept_entry_locked(tdcs, gpa, 0, True)
        self._check("mem.page_aug.entry_state", state in SEPT_ALLOWED[6],
                    st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, OperandId.RCX))
        e = self._explicit_page("mem.page_aug.target_page", target, OperandId.R8, PT_NDA, True)
        # ALL_CHECKS_PASSED: the page's content is not touched until the guest accepts it
        page.entries[idx] = [SEPT_PENDING, target]
        tdr.chldcnt += 1
        e.pt, e.owner, e.bepoch = PT_REG, tdr_pa, 0
        self._mirror_entry(cpu, page, idx, tdr.hkid)
        self._mirror_tdr(cpu, tdr_pa)

    def _mem_range_block(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MEM.RANGE.BLOCK (leaf 7), §6.20, M15 ``tdh_mem_range_block.c``."""
        gpa, level = self._gpa_level(rcx)
        tdr_pa = self._pa(rdx)
        self._explicit_page("mem.range_block.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 7, "mem.range_block")
        self._check("mem.range_block.level", self._level_ok(gpa, level, 0, self.pwl),
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True)
        if state in SEPT_ANY_BLOCKED:
            raise SeamcallFailed(st(Status.TDX_GPA_RANGE_ALREADY_BLOCKED, OperandId.RCX))
        self._check("mem.range_block.entry_state", state in SEPT_ALLOWED[7],
                    st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, OperandId.RCX))
        # ALL_CHECKS_PASSED
        ent = page.entries[idx]
        ent[0] = _BLOCK_OF[ent[0]]
        self.pamt_entry(ent[1]).bepoch = tdcs.td_epoch
        self._mirror_entry(cpu, page, idx, tdr.hkid)

    def _mem_range_unblock(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MEM.RANGE.UNBLOCK (leaf 39), §6.24, M15 ``tdh_mem_range_unblock.c``."""
        gpa, level = self._gpa_level(rcx)
        tdr_pa = self._pa(rdx)
        self._explicit_page("mem.range_unblock.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 39, "mem.range_unblock")
        self._check("mem.range_unblock.level", self._level_ok(gpa, level, 0, self.pwl),
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True)
        self._check("mem.range_unblock.entry_state", state in SEPT_ALLOWED[39],
                    st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, OperandId.RCX))
        ent = page.entries[idx]
        if state in SEPT_TLB_TRACKING and tdcs.op_state in OP_TLB_TRACKING:
            self._check("mem.range_unblock.tlb_tracked",
                        self._tlb_tracked(tdcs, self.pamt_entry(ent[1]).bepoch),
                        st(Status.TDX_TLB_TRACKING_NOT_DONE, OperandId.SEPT_TREE))
        # ALL_CHECKS_PASSED
        ent[0] = _UNBLOCK_OF[ent[0]]
        self._mirror_entry(cpu, page, idx, tdr.hkid)

    def _mem_track(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MEM.TRACK (leaf 38), §6.21, M15 ``tdh_mem_track.c``."""
        tdr_pa = self._pa(rcx)
        self._explicit_page("mem.track.tdr_page", tdr_pa, OperandId.RCX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 38, "mem.track")
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.TD_EPOCH))
        self._check("mem.track.previous_epoch_done", tdcs.refcount[1 - (tdcs.td_epoch & 1)] == 0,
                    st(Status.TDX_PREVIOUS_TLB_EPOCH_BUSY))
        # ALL_CHECKS_PASSED
        tdcs.td_epoch += 1
        self._mirror_tdcs(cpu, tdr)

    def _mem_page_remove(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MEM.PAGE.REMOVE (leaf 29), §6.22, M15 ``tdh_mem_page_remove.c``.
        Output RCX = the removed page's HPA."""
        gpa, level = self._gpa_level(rcx)
        tdr_pa = self._pa(rdx)
        self._explicit_page("mem.page_remove.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 29, "mem.page_remove")
        self._check("mem.page_remove.level", self._level_ok(gpa, level, 0, min(2, self.pwl)),
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True)
        self._check("mem.page_remove.entry_state",
                    state in SEPT_LEAF and state in SEPT_ALLOWED[29],
                    st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, OperandId.RCX))
        ent = page.entries[idx]
        pe = self.pamt_entry(ent[1])  # its exclusive PAMT lock: never held by anyone else
        if state in SEPT_TLB_TRACKING and tdcs.op_state in OP_TLB_TRACKING:
            self._check("mem.page_remove.blocked", state in SEPT_ANY_BLOCKED,
                        st(Status.TDX_GPA_RANGE_NOT_BLOCKED, OperandId.RCX))
            self._check("mem.page_remove.tlb_tracked", self._tlb_tracked(tdcs, pe.bepoch),
                        st(Status.TDX_TLB_TRACKING_NOT_DONE, OperandId.RCX))
        # ALL_CHECKS_PASSED
        del page.entries[idx]
        tdr.chldcnt -= 1
        pe.pt = PT_NDA
        out["rcx"] = ent[1]
        self._mirror_entry(cpu, page, idx, tdr.hkid)
        self._mirror_tdr(cpu, tdr_pa)

    def _mem_sept_remove(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MEM.SEPT.REMOVE (leaf 30), §6.23, M15 ``tdh_mem_sept_remove.c``.
        Output RCX = the removed S-EPT page's HPA."""
        gpa, level = self._gpa_level(rcx)
        tdr_pa = self._pa(rdx)
        self._explicit_page("mem.sept_remove.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 30, "mem.sept_remove")
        self._check("mem.sept_remove.level", self._level_ok(gpa, level, 1, self.pwl),
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True)
        self._check("mem.sept_remove.entry_state", state in SEPT_ALLOWED[30],
                    st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, OperandId.RCX))
        ent = page.entries[idx]
        child = self.sept_pages[ent[1]]
        ce = self.pamt_entry(ent[1])
        if state in SEPT_TLB_TRACKING and tdcs.op_state in OP_TLB_TRACKING:
            self._check("mem.sept_remove.blocked", state == SEPT_NL_BLOCKED,
                        st(Status.TDX_GPA_RANGE_NOT_BLOCKED, OperandId.RCX))
            self._check("mem.sept_remove.tlb_tracked", self._tlb_tracked(tdcs, ce.bepoch),
                        st(Status.TDX_TLB_TRACKING_NOT_DONE, OperandId.RCX))
        self._check("mem.sept_remove.child_free", not child.entries,
                    st(Status.TDX_EPT_PAGE_NOT_FREE, OperandId.RCX))
        # ALL_CHECKS_PASSED
        del page.entries[idx]
        tdr.chldcnt -= 1
        ce.pt = PT_NDA
        out["rcx"] = ent[1]
        self._mirror_entry(cpu, page, idx, tdr.hkid)
        self._mirror_tdr(cpu, tdr_pa)

    def _mr_extend(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MR.EXTEND (leaf 16), §6.25, M15 ``tdh_mr_extend.c``: walk to a present leaf."""
        gpa, tdr_pa = rcx, self._pa(rdx)
        self._explicit_page("mr.extend.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, True)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 16, "mr.extend")
        self._check("mr.extend.gpa_aligned", gpa % 256 == 0,
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        _, page, idx = self._walk(tdcs, gpa, 0)
        state = self._entry_state(page, idx)
        if state not in SEPT_LEAF or state not in SEPT_PRESENT:
            raise SeamcallFailed(st(Status.TDX_EPT_ENTRY_NOT_PRESENT, OperandId.RCX))
        self._check("mr.extend.mapped", state in SEPT_ALLOWED[16],
                    st(Status.TDX_EPT_ENTRY_NOT_PRESENT))
        # ALL_CHECKS_PASSED: MRTD updated (TDCS measurement fields)
        self._mirror_tdcs(cpu, tdr)

    def _mr_finalize(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MR.FINALIZE (leaf 17), §6.26, M15 ``tdh_mr_finalize.c``."""
        tdr_pa = self._pa(rcx)
        self._explicit_page("mr.finalize.tdr_page", tdr_pa, OperandId.RCX, PT_TDR, True)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 17, "mr.finalize")
        self._check("mr.finalize.vcpus", tdcs.num_vcpus >= 1, st(Status.TDX_NO_VCPUS))
        # ALL_CHECKS_PASSED
        tdcs.op_state = OP_RUNNABLE
        self._mirror_tdcs(cpu, tdr)

    _LEAVES: ClassVar[dict[int, Callable[..., None]]] = {
        0: _vp_enter, 1: _mng_addcx, 2: _mem_page_add, 3: _mem_sept_add, 4: _vp_addcx,
        6: _mem_page_aug, 7: _mem_range_block, 8: _mng_key_config, 9: _mng_create,
        10: _vp_create, 11: _mng_rd, 13: _mng_wr, 16: _mr_extend, 17: _mr_finalize,
        18: _vp_flush, 19: _mng_vpflushdone, 20: _mng_key_freeid, 21: _mng_init, 22: _vp_init,
        26: _vp_rd, 27: _mng_key_reclaimid, 28: _phymem_page_reclaim, 29: _mem_page_remove,
        30: _mem_sept_remove, 38: _mem_track, 39: _mem_range_unblock, 40: _phymem_cache_wb,
        41: _phymem_page_wbinvd, 43: _vp_wr,
    }

    # ------------------------------------------------------------------ guest side

    def in_guest(self, tdvpr: int) -> bool:
        """Whether the vCPU whose TDVPR is at ``tdvpr`` is running in the guest."""
        vp = self.tdvpss.get(tdvpr)
        return (vp is not None and vp.in_guest
                and self.pamt_entry(tdvpr).pt == PT_TDVPR)

    def _guest_writes(self, tdr_pa: int, cpu: int) -> None:
        """While it ran, the guest wrote to its mapped private pages under its HKID."""
        tdr = self.tdrs[tdr_pa]
        tdcs = self.tdcss[tdr.tdcx_pa[0]]
        pages = [tdcs.root, *(p for pa, p in self.sept_pages.items()
                              if self.pamt_entry(pa).pt == PT_EPT
                              and self.pamt_entry(pa).owner == tdr_pa)]
        for sp in pages:
            if sp.level != 0:
                continue
            for ent in sp.entries.values():
                if ent[0] == SEPT_MAPPED:
                    self.store(cpu, ent[1] + LINE, tdr.hkid,
                               b"guest" + self._seq.to_bytes(8, "little"))

    def td_exit(self, tdvpr: int, reason: str) -> None:
        """The running vCPU exits (§6.8 exit effects, M15 ``td_exit.c``): ``normal`` → READY,
        ``vcpu_fatal`` (TDX_NON_RECOVERABLE_VCPU) → DISABLED, ``td_fatal``
        (TDX_NON_RECOVERABLE_TD) → TDR.fatal = 1 with the vCPU state unchanged; in every case
        ``refcount[vcpu_epoch & 1] -= 1``, the TDR/TDVPR PAMT locks are released and the vCPU
        stays associated.  The guest's working set has displaced every other line of that
        package's cache meanwhile (written back)."""
        vp = self.tdvpss[tdvpr]
        ve = self.pamt_entry(tdvpr)
        tdr = self.tdrs[ve.owner]
        tdcs = self.tdcss[tdr.tdcx_pa[0]]
        cpu = vp.assoc_lp if vp.assoc_lp is not None else 0
        self._guest_writes(ve.owner, cpu)
        tdcs.refcount[vp.vcpu_epoch & 1] -= 1
        if reason == "normal":
            vp.state = VCPU_READY
        elif reason == "vcpu_fatal":
            vp.state = VCPU_DISABLED
        elif reason == "td_fatal":
            tdr.fatal = 1
        else:
            raise ValueError(f"unknown td_exit reason {reason!r}")
        vp.in_guest = False
        ve.holders -= 1
        self.pamt_entry(ve.owner).holders -= 1
        self._mirror_tdvps(cpu, tdvpr, tdr.hkid)
        self._mirror_tdcs(cpu, tdr)
        self._mirror_tdr(cpu, ve.owner)
        self.evict_all(self.pkg_of(cpu), keep_keyid=tdr.hkid)

    def tdg_mem_page_accept(self, tdvpr: int, gpa: int) -> int:
        """TDG.MEM.PAGE.ACCEPT from the running vCPU: walk to level 0; PENDING → MAPPED with the
        page zeroed by direct writes under the TD's HKID, then the guest writes to it; the walk
        not reaching level 0 → TDX_EPT_WALK_FAILED|RCX; another state →
        TDX_EPT_ENTRY_STATE_INCORRECT|RCX (§5 last row)."""
        vp = self.tdvpss[tdvpr]
        tdr = self.tdrs[self.pamt_entry(tdvpr).owner]
        tdcs = self.tdcss[tdr.tdcx_pa[0]]
        lvl, page, idx = self._walk(tdcs, gpa & 0x000FFFFFFFFFF000, 0)
        if lvl != 0:
            return st(Status.TDX_EPT_WALK_FAILED, OperandId.RCX)
        if self._entry_state(page, idx) != SEPT_PENDING:
            return st(Status.TDX_EPT_ENTRY_STATE_INCORRECT, OperandId.RCX)
        ent = page.entries[idx]
        cpu = vp.assoc_lp if vp.assoc_lp is not None else 0
        self.movdir64b_page(ent[1], tdr.hkid)
        ent[0] = SEPT_MAPPED
        self._mirror_entry(cpu, page, idx, tdr.hkid)
        self.store(cpu, ent[1], tdr.hkid, b"accepted" + gpa.to_bytes(8, "little"))
        return st(Status.TDX_SUCCESS)

    # ------------------------------------------------------------------ invariants

    def check_invariants(self) -> list[str]:
        """The module's structural invariants (§11 list, §7.5), the epoch bookkeeping (§7.6) and
        the cache model's own; returns one sentence per violation (empty when all hold)."""
        bad: list[str] = []
        live_tdrs = {pa: t for pa, t in self.tdrs.items() if self.pamt_entry(pa).pt == PT_TDR}
        children: dict[int, int] = {pa: 0 for pa in live_tdrs}
        for pa, e in self.pamt.items():
            if e.pt in (PT_TDCX, PT_TDVPR, PT_EPT, PT_REG):
                if e.owner not in live_tdrs:
                    bad.append(f"page 0x{pa:x} (pt {e.pt}) owned by 0x{e.owner:x}, not a PT_TDR")
                else:
                    children[e.owner] += 1
        for pa, t in live_tdrs.items():
            if t.chldcnt != children[pa]:
                bad.append(f"TDR 0x{pa:x}: chldcnt {t.chldcnt} != {children[pa]} owned pages")
            if t.num_tdcx != len(t.tdcx_pa):
                bad.append(f"TDR 0x{pa:x}: num_tdcx {t.num_tdcx} != {len(t.tdcx_pa)}")
            if t.lifecycle == TD_KEYS_CONFIGURED and t.pkg_config_bitmap != self.all_pkgs:
                bad.append(f"TDR 0x{pa:x}: KEYS_CONFIGURED with pkg bitmap {t.pkg_config_bitmap}")
            if t.lifecycle == TD_BLOCKED and self.kot[t.hkid].state != KOT_FLUSHED:
                bad.append(f"TDR 0x{pa:x}: TD_BLOCKED but KOT[{t.hkid}] not FLUSHED")
        for h in range(1, self.global_keyid):
            holders = [pa for pa, t in live_tdrs.items() if t.hkid == h
                       and t.lifecycle in (TD_HKID_ASSIGNED, TD_KEYS_CONFIGURED, TD_BLOCKED)]
            state = self.kot[h].state
            if (state in (KOT_ASSIGNED, KOT_FLUSHED)) != (len(holders) == 1) or len(holders) > 1:
                bad.append(f"KOT[{h}] state {state} but held by {len(holders)} TDR(s)")
            if state == KOT_FREE and not self.ablate and self.dirty_lines(keyid=h):
                bad.append(f"KOT[{h}] is FREE while lines under HKID {h} are still dirty")
        if self.kot[self.global_keyid].state != KOT_RESERVED:
            bad.append("the global KeyID's KOT entry is not HKID_RESERVED")
        # vCPUs, association and epochs
        for pa, t in live_tdrs.items():
            n_run = sum(1 for v in self.tdvpss.values() if v.in_guest and v.pages
                        and self.pamt_entry(v.pages[0]).owner == pa
                        and self.pamt_entry(v.pages[0]).pt == PT_TDVPR)
            if self.pamt_entry(pa).holders != n_run:
                bad.append(f"TDR 0x{pa:x}: {self.pamt_entry(pa).holders} PAMT holders, {n_run} running")
            # after KEY.FREEID the module never reads the TDCS or the S-EPT again and RECLAIM
            # leaves them dangling, so these hold until TD_TEARDOWN
            if t.num_tdcx < self.min_tdcs or t.lifecycle == TD_TEARDOWN or t.tdcs is None:
                continue
            tdcs = t.tdcs
            vps = [(vpa, v) for vpa, v in self.tdvpss.items()
                   if self.pamt_entry(vpa).pt == PT_TDVPR and self.pamt_entry(vpa).owner == pa]
            if tdcs.op_state != OP_UNINITIALIZED:
                n_assoc = sum(1 for _, v in vps if v.assoc_lp is not NO_LP)
                if tdcs.num_assoc_vcpus != n_assoc:
                    bad.append(f"TD 0x{pa:x}: num_assoc_vcpus {tdcs.num_assoc_vcpus} != {n_assoc}")
                for parity in (0, 1):
                    running = sum(1 for _, v in vps if v.in_guest and v.vcpu_epoch & 1 == parity)
                    if tdcs.refcount[parity] != running:
                        bad.append(f"TD 0x{pa:x}: refcount[{parity}] {tdcs.refcount[parity]} "
                                   f"!= {running} running vCPUs of that epoch parity")
            for vpa, v in vps:
                if v.in_guest and (v.state != VCPU_ACTIVE or self.pamt_entry(vpa).holders != 1):
                    bad.append(f"vCPU 0x{vpa:x} in guest with state {v.state}")
                if not v.in_guest and self.pamt_entry(vpa).holders:
                    bad.append(f"vCPU 0x{vpa:x} holds its PAMT lock outside the guest")
            # the S-EPT tree references exactly the EPT and REG pages the TD owns
            seen: dict[int, int] = {}
            stack = [tdcs.root]
            while stack:
                sp = stack.pop()
                for ent in sp.entries.values():
                    seen[ent[1]] = seen.get(ent[1], 0) + 1
                    e = self.pamt_entry(ent[1])
                    want = PT_EPT if ent[0] in (SEPT_NL_MAPPED, SEPT_NL_BLOCKED) else PT_REG
                    if e.pt != want or e.owner != pa:
                        bad.append(f"TD 0x{pa:x}: S-EPT entry {SEPT_NAMES[ent[0]]} -> 0x{ent[1]:x} "
                                   f"whose PAMT is pt {e.pt} owner 0x{e.owner:x}")
                    if want == PT_EPT and ent[1] in self.sept_pages:
                        stack.append(self.sept_pages[ent[1]])
            for ppa, e in self.pamt.items():
                if e.owner == pa and e.pt in (PT_EPT, PT_REG) and seen.get(ppa) != 1:
                    bad.append(f"TD 0x{pa:x}: page 0x{ppa:x} (pt {e.pt}) referenced "
                               f"{seen.get(ppa, 0)} times by its S-EPT")
        # caches: one tag lives in one package at most
        tags: set[tuple[int, int]] = set()
        for cache in self.caches:
            for tag in cache:
                if tag in tags:
                    bad.append(f"line 0x{tag[0]:x} KeyID {tag[1]} cached in two packages")
                tags.add(tag)
            if len(cache) > self.cache_capacity:
                bad.append("a cache holds more lines than its capacity")
        return bad
