"""The TD management leaves (TDH.MNG.*).

Each runs its checks in the module's order; M15 file per leaf.
"""

from __future__ import annotations

from tdxcheck.model.status import OperandId, Status

from .platform import ZERO_LINE
from .structures import (
    KOT_ASSIGNED,
    KOT_FLUSHED,
    KOT_FREE,
    LINE,
    OP_ALLOWED,
    OP_INITIALIZED,
    OP_UNINITIALIZED,
    PT_NDA,
    PT_TDCX,
    PT_TDR,
    SEPT_ENC,
    SEPT_FREE,
    TD_BLOCKED,
    TD_HKID_ASSIGNED,
    TD_KEYS_CONFIGURED,
    TD_TEARDOWN,
    SeptPage,
    Tdcs,
    Tdr,
    st,
)


class MngLeaves:
    """The TD management leaves (TDH.MNG.*).  Mixed into ``Machine`` (``machine.py``), whose plumbing they use."""

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
