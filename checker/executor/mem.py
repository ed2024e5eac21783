"""The S-EPT and measurement leaves (TDH.MEM.*, TDH.MR.*).

Each runs its checks in the module's order; M15 file per leaf.
"""

from __future__ import annotations

from tdxcheck.model.status import OperandId, Status

from .structures import (
    _BLOCK_OF,
    _UNBLOCK_OF,
    LINE,
    LINES_PER_PAGE,
    OP_RUNNABLE,
    OP_TLB_TRACKING,
    PT_EPT,
    PT_NDA,
    PT_REG,
    PT_TDR,
    SEPT_ALLOWED,
    SEPT_ANY_BLOCKED,
    SEPT_ENC,
    SEPT_FREE,
    SEPT_LEAF,
    SEPT_MAPPED,
    SEPT_NL_BLOCKED,
    SEPT_NL_MAPPED,
    SEPT_PENDING,
    SEPT_PRESENT,
    SEPT_TLB_TRACKING,
    SeamcallFailed,
    SeptPage,
    Tdcs,
    st,
)


class MemLeaves:
    """The S-EPT and measurement leaves (TDH.MEM.*, TDH.MR.*).  Mixed into ``Machine`` (``machine.py``), whose plumbing they use."""

    def _sept_entry_locked(self, tdcs: Tdcs, gpa: int, level: int, tree: bool,
                           prefix: str) -> tuple[SeptPage, int, int]:
        """SEPT_WALK (§3.5) with the tree lock (a fault point), the walk, then the entry lock
        (a fault point).  Returns (page, index, state).  ``check_gpa_validity`` comes first,
        before the tree lock (§3.5 row 1, M15 ``lock_sept_check_and_walk_internal``)."""
        self._check(f"{prefix}.gpa_valid", self._gpa_valid(gpa),
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
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
        part of the level, so any non-zero value there fails the level check, and reserved
        bits 63:52 stay in the GPA, so any non-zero value there fails the GPA check."""
        return rcx & ~0xFFF, rcx & 0xFFF

    def _gpa_valid(self, gpa: int) -> bool:
        """``check_gpa_validity`` (§3.5 row 1): the shared bit (GPAW - 1) clear and no bit at
        or above GPAW: GPAW is 52 with a 5-level S-EPT, else 48."""
        gpaw = 52 if self.pwl >= 4 else 48
        return 0 <= gpa < 1 << (gpaw - 1)

    def _mem_sept_add(self, cpu: int, rcx: int, rdx: int, r8: int, out: dict[str, int]) -> None:
        """TDH.MEM.SEPT.ADD (leaf 3), §6.17, M15 ``tdh_mem_sept_add.c`` (v0, allow_existing=0)."""
        gpa, level = self._gpa_level(rcx)
        tdr_pa, new = self._pa(rdx), self._pa(r8)
        self._explicit_page("mem.sept_add.tdr_page", tdr_pa, OperandId.RDX, PT_TDR, False)
        tdr = self.tdrs[tdr_pa]
        tdcs = self._td_state(tdr, 3, "mem.sept_add")
        self._check("mem.sept_add.level", self._level_ok(gpa, level, 1, self.pwl),
                    st(Status.TDX_OPERAND_INVALID, OperandId.RCX))
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True, "mem.sept_add")
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
        page, idx, state = self._sept_entry_locked(tdcs, gpa, 0, False, "mem.page_add")
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
        page, idx, state = self._sept_entry_locked(tdcs, gpa, 0, True, "mem.page_aug")
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
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True, "mem.range_block")
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
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True, "mem.range_unblock")
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
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True, "mem.page_remove")
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
        page, idx, state = self._sept_entry_locked(tdcs, gpa, level, True, "mem.sept_remove")
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
        self._check("mr.extend.gpa_valid", self._gpa_valid(gpa),
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
