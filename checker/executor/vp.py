"""The vCPU leaves (TDH.VP.*).

Each runs its checks in the module's order; M15 file per leaf.
"""

from __future__ import annotations

from tdxcheck.model.status import OperandId, Status

from .structures import (
    NO_LP,
    PT_NDA,
    PT_TDCX,
    PT_TDR,
    PT_TDVPR,
    TD_KEYS_CONFIGURED,
    VCPU_ACTIVE,
    VCPU_DISABLED,
    VCPU_READY,
    VCPU_UNINITIALIZED,
    Tdcs,
    Tdvps,
    st,
)


class VpLeaves:
    """The vCPU leaves (TDH.VP.*).  Mixed into ``Machine`` (``machine.py``), whose plumbing they use."""

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
        # the 0-step mitigation (handle_stepping_filter) may take the S-EPT tree lock and find
        # it busy (§6.8, §10.7); the association above stays, as on the TD_EPOCH path
        self._fault_point(st(Status.TDX_OPERAND_BUSY, OperandId.SEPT_TREE))
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
