"""A byte-level TDX platform: memory, caches, keys, and the TDX module's SEAMCALL leaves.

Where things are: ``platform.py`` (memory, caches, keys, host accesses), ``structures.py``
(the module's constants, tables and structures), ``mng.py``, ``vp.py``, ``phymem.py``,
``mem.py`` (the leaves, one file per family as in ``model/``), and this file: ``Machine``
(the module's plumbing, the SEAMCALL entry, the guest side, the structural invariants).

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

from collections.abc import Callable
from typing import Any, ClassVar

from tdxcheck.model.status import OperandId, Status, status_class

from .mem import MemLeaves
from .mng import MngLeaves
from .phymem import PhymemLeaves
from .platform import Platform
from .structures import (
    KOT_ASSIGNED,
    KOT_FLUSHED,
    KOT_FREE,
    KOT_RESERVED,
    LINE,
    NO_LP,
    OP_ALLOWED,
    OP_UNINITIALIZED,
    PT_EPT,
    PT_REG,
    PT_RSVD,
    PT_TDCX,
    PT_TDR,
    PT_TDVPR,
    SEPT_ENC,
    SEPT_FREE,
    SEPT_MAPPED,
    SEPT_NAMES,
    SEPT_NL_BLOCKED,
    SEPT_NL_MAPPED,
    SEPT_PENDING,
    TD_BLOCKED,
    TD_HKID_ASSIGNED,
    TD_KEYS_CONFIGURED,
    TD_TEARDOWN,
    VCPU_ACTIVE,
    VCPU_DISABLED,
    VCPU_READY,
    KotEntry,
    PamtEntry,
    SeamcallFailed,
    SeptPage,
    Tdcs,
    Tdr,
    Tdvps,
    Wbt,
    st,
)
from .vp import VpLeaves

# --------------------------------------------------------------------------- the machine


class Machine(Platform, MngLeaves, VpLeaves, PhymemLeaves, MemLeaves):
    """One TDX platform: packages, CPUs, memory, caches, memory-controller keys, the module.

    ``seamcall(rax, rcx, rdx, r8, cpu)`` is the SEAMCALL instruction; ``host_*`` methods are
    what the kernel does through its KeyID-0 mapping; ``guest_*``/``td_exit`` what the TD does.
    """

    def __init__(self, config: dict[str, int] | None = None, **platform: Any) -> None:
        """``platform``: ``Platform``'s keyword options (ablate, cache_lines, seed,
        keyid_shift)."""
        super().__init__(config, **platform)
        # module
        # PA 0 (the NULL page a raw SEAMCALL passes for a missing page operand) is no page the
        # module hands out: reserved, as the model's NULL page (model/state.py)
        self.pamt: dict[int, PamtEntry] = {0: PamtEntry(pt=PT_RSVD)}
        self.kot: list[KotEntry] = [KotEntry() for _ in range(self.global_keyid + 1)]
        self.kot[self.global_keyid].state = KOT_RESERVED
        self.wbt: list[Wbt] = [Wbt() for _ in range(self.packages)]
        self.tdrs: dict[int, Tdr] = {}
        self.tdcss: dict[int, Tdcs] = {}  # keyed by the PA of TDCS page 0
        self.tdvpss: dict[int, Tdvps] = {}  # keyed by TDVPR PA
        self.sept_pages: dict[int, SeptPage] = {}  # non-root S-EPT pages by PA

        self._fault: tuple[int, bool] | None = None

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

    _LEAVES: ClassVar[dict[int, Callable[..., None]]] = {
        0: VpLeaves._vp_enter, 1: MngLeaves._mng_addcx, 2: MemLeaves._mem_page_add, 3: MemLeaves._mem_sept_add, 4: VpLeaves._vp_addcx,
        6: MemLeaves._mem_page_aug, 7: MemLeaves._mem_range_block, 8: MngLeaves._mng_key_config, 9: MngLeaves._mng_create,
        10: VpLeaves._vp_create, 11: MngLeaves._mng_rd, 13: MngLeaves._mng_wr, 16: MemLeaves._mr_extend, 17: MemLeaves._mr_finalize,
        18: VpLeaves._vp_flush, 19: MngLeaves._mng_vpflushdone, 20: MngLeaves._mng_key_freeid, 21: MngLeaves._mng_init, 22: VpLeaves._vp_init,
        26: VpLeaves._vp_rd, 27: MngLeaves._mng_key_reclaimid, 28: PhymemLeaves._phymem_page_reclaim, 29: MemLeaves._mem_page_remove,
        30: MemLeaves._mem_sept_remove, 38: MemLeaves._mem_track, 39: MemLeaves._mem_range_unblock, 40: PhymemLeaves._phymem_cache_wb,
        41: PhymemLeaves._phymem_page_wbinvd, 43: VpLeaves._vp_wr,
    }

    # ------------------------------------------------------------------ guest side

    def in_guest(self, tdvpr: int) -> bool:
        """Whether the vCPU whose TDVPR is at ``tdvpr`` is running in the guest."""
        vp = self.tdvpss.get(tdvpr)
        return (vp is not None and vp.in_guest
                and self.pamt_entry(tdvpr).pt == PT_TDVPR)

    def guest_on(self, cpu: int) -> int | None:
        """The TDVPR of the vCPU running in the guest on logical CPU ``cpu``, if any: that
        LP is in SEAM non-root mode (TDH.VP.ENTER to its TD exit, M15 ``tdh_vp_enter.c``,
        ``td_exit.c``), so it runs no host code and issues no SEAMCALL."""
        for pa in sorted(self.tdvpss):
            vp = self.tdvpss[pa]
            if vp.in_guest and vp.assoc_lp == cpu:
                return pa
        return None

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
