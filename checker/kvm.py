"""``--host kvm``: upstream KVM's TDX host code as a program the explorer runs.

Every host step mirrors a kernel function (kvm-sequences.md §1, tdx-reference.md §10; KVM =
``arch/x86/kvm/vmx/tdx.c``, KVM's order in ``arch/x86/kvm/x86.c``), and is checked against
*every* invariant (the host obligations included), because here the host is KVM itself.

Threads (each step atomic; the explorer tries every interleaving):

``vm``
    the VM's life from userspace's ioctls to ``kvm_destroy_vm``:
    ``__tdx_td_init`` (HKID, TDR/TDCS pages, MNG.CREATE under ``tdx_lock``, KEY.CONFIG on the
    first CPU of each package, ADDCX, MNG.INIT, MNG.RD, with the "teardown" error label),
    ``tdx_td_vcpu_init`` (VP.CREATE, VP.ADDCX, VP.INIT on the vCPU's CPU),
    ``KVM_TDX_INIT_MEM_REGION`` (SEPT.ADD for the missing levels, PAGE.ADD, MR.EXTEND),
    ``tdx_td_finalize`` (MR.FINALIZE); then it waits for the vCPU and zap threads and tears
    the VM down: ``kvm_gmem_release`` (zap every private leaf with the HKID still
    assigned), ``tdx_mmu_release_hkid``, ``tdx_vcpu_free``, ``tdx_sept_free_private_spt``,
    ``tdx_vm_destroy``.  A failed ioctl sends it straight to the teardown (userspace gives up
    and closes the VM).
``vcpuN``
    ``KVM_RUN``: ``tdx_vcpu_load`` onto any CPU (flushing the vCPU on its old CPU),
    ``tdx_vcpu_run`` (VP.ENTER), the guest's exits and ACCEPTs, the private EPT violation
    (guest_memfd allocates a folio, ``tdx_mem_page_aug``), closing the vCPU fd.
``zap``
    a runtime removal of a private leaf (``fallocate(PUNCH_HOLE)`` on the guest_memfd):
    ``tdx_sept_remove_private_spte`` with ``mmu_lock`` held for write.
``mmu``
    the zap sequence itself, shared by ``zap`` and by ``kvm_gmem_release``: RANGE.BLOCK,
    ``tdx_track`` (TRACK and the kick), PAGE.REMOVE, each retried once after a BUSY with
    ``wait_for_sept_zap`` set and every vCPU kicked out, then PAGE.WBINVD with the HKID,
    ``tdx_clear_page`` and the folio's free.

KVM's error paths: ``KVM_BUG_ON``/``TDX_BUG_ON`` mark the VM dead; KVM then leaks what the
module may still own (pages, the HKID) rather than free it.  Pinned guest pages (the
``get_page`` in ``tdx_sept_set_private_spte``) stay out of the allocator when a zap fails;
``pinning=False`` models 6.19, where guest_memfd frees the folio after the invalidation
returns whatever happened.

The state is the model state followed by KVM's own variables (``HOST_CELLS``).  Module faults
(``faults=True``) are the environment's; a fault KVM's own locking rules out is never
injected, and a BUSY from a lock the guest holds happens only while a vCPU is in the guest
(``env_gate``).  A terminal state that still holds pages or HKIDs is a *leak*: if no
environment event happened on the path it is a ``no-leak`` violation (KVM should have given
everything back); otherwise it is reported as data (``leak[...]`` goals) with the KVM error
path that chose to leak.

``preempt_init=True`` adds one KVM race that is off by default: ``tdx_vcpu_init`` runs with the
vCPU loaded (``tdx_vcpu_unlocked_ioctl``: vcpu_load) and preemptible, and between
``tdh_vp_init`` (which associates the vCPU with this CPU) and ``tdx->state =
VCPU_TD_STATE_INITIALIZED`` the thread can be preempted and resume on another CPU:
``kvm_sched_in`` -> ``tdx_vcpu_load`` -> ``tdx_flush_vp`` skips TDH.VP.FLUSH because the vCPU is
still UNINITIALIZED, yet sets ``vcpu->cpu`` to the new CPU.  Every later flush then runs on
a CPU the vCPU is not associated with (TDX_VCPU_NOT_ASSOCIATED counts as success), so
VPFLUSHDONE says TDX_FLUSHVP_NOT_DONE and KVM leaks the HKID and every TD page with no
module fault at all: a ``no-leak`` violation (a finding about KVM, kvm-x86 @09c6f74e).

A mutant (``checker/mutants.py``) is this program with one named switch flipped; each switch
is read in exactly one place below (``self.mut(...)``).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tdxcheck.model.actions import Action, describe
from tdxcheck.model.compile import NOT_ENABLED
from tdxcheck.model.enums import HostPage, PageType, SeptState
from tdxcheck.model.rule import LEAVES, Fault
from tdxcheck.model.state import Platform, State, Universe
from tdxcheck.model.status import Status, status_class, status_name

from .engine import Engine, Violation
from .explore import Edge
from .programs import counter_cells
from .traces import raw_seamcall

# --------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class KvmConfig:
    """A named configuration of the kvm host: one TD, its vCPUs, a guest_memfd pool."""

    name: str
    platform: Platform
    vps: int
    guest_pages: int  # guest_memfd folios the guest's private memory can use
    gpas: tuple[int, ...]  # private GPAs; the first is populated at build time
    zaps: int  # runtime zaps (PUNCH_HOLE) the zap thread may do

    def universe(self) -> Universe:
        p = self.platform
        pages = ["tdr", *(f"cs{i}" for i in range(p.tdcs_pages))]
        for v in range(self.vps):
            pages.append(f"vpr{v}")
            pages += [f"cx{v}_{i}" for i in range(p.tdcx_pages)]
        pages += [f"sept{lv}" for lv in range(p.sept_levels - 1, 0, -1)]
        pages += [f"m{i}" for i in range(self.guest_pages)]
        return Universe(p, ("td0",), tuple(f"vp{v}" for v in range(self.vps)), tuple(pages),
                        self.gpas)

    def describe(self) -> str:
        p = self.platform
        return (f"{self.name}: 1 TD, {self.vps} vCPU(s), {p.packages} package(s) x "
                f"{p.cpus_per_package} CPU(s), {p.hkids - 1} private HKID(s), TDCS "
                f"{p.tdcs_pages}, TDCX {p.tdcx_pages}, S-EPT depth {p.sept_levels}, GPAs "
                f"{[hex(g) for g in self.gpas]}, {self.guest_pages} guest_memfd page(s), "
                f"{self.zaps} runtime zap(s)")


def _plat(**kw: int) -> Platform:
    base = {"hkids": 2, "tdcs_pages": 1, "tdcx_pages": 0, "max_vcpus": 1, "sept_levels": 2}
    base.update(kw)
    return Platform(**base)


KVM_CONFIGS: dict[str, KvmConfig] = {
    # two CPUs on one package: migration, one CACHE.WB
    "tiny": KvmConfig("tiny", _plat(packages=1, cpus_per_package=2), vps=1, guest_pages=1,
                      gpas=(0x0,), zaps=1),
    # two packages of one CPU (migration crosses packages), a TDCX page, a second GPA
    # faulted in at run time (PAGE.AUG), two guest_memfd pages, two runtime zaps
    "default": KvmConfig("default", _plat(packages=2, cpus_per_package=1, tdcx_pages=1),
                         vps=1, guest_pages=2, gpas=(0x0, 0x1000), zaps=2),
    # two vCPUs: one can be in the guest while the other runs KVM code (the kick,
    # wait_for_sept_zap and the guest-held S-EPT locks matter)
    "large": KvmConfig("large", _plat(packages=2, cpus_per_package=1, tdcx_pages=1,
                                      max_vcpus=2), vps=2, guest_pages=2,
                       gpas=(0x0, 0x1000), zaps=2),
}


def kvm_config(name: str) -> KvmConfig:
    if name not in KVM_CONFIGS:
        raise ValueError(f"unknown kvm configuration {name!r} (have: {', '.join(KVM_CONFIGS)})")
    return KVM_CONFIGS[name]


# --------------------------------------------------------------------------- KVM's error sites

#: every place where KVM's code reports an error (KVM_BUG_ON / TDX_BUG_ON / WARN / -errno);
#: a path's ``errors`` cell is a bitmap over this tuple
ERROR_SITES: tuple[str, ...] = (
    "__tdx_td_init: tdh_mng_create",
    "__tdx_td_init: tdh_mng_key_config",
    "__tdx_td_init: tdh_mng_addcx",
    "__tdx_td_init: tdh_mng_init",
    "tdx_td_init: td_tdcs_exec_read64 (tdh_mng_rd)",
    "tdx_td_vcpu_init: tdh_vp_create",
    "tdx_td_vcpu_init: tdh_vp_addcx",
    "tdx_td_vcpu_init: tdh_vp_init",
    "tdx_vcpu_init: tdh_vp_wr (td_vmcs_write)",
    "tdx_sept_link_private_spt: tdh_mem_sept_add",
    "tdx_gmem_post_populate: tdh_mem_page_add",
    "tdx_gmem_post_populate: tdh_mr_extend",
    "tdx_td_finalize: tdh_mr_finalize",
    "tdx_vcpu_run: tdh_vp_enter",
    "tdx_flush_vp: tdh_vp_flush",
    "tdx_mem_page_aug: tdh_mem_page_aug",
    "tdx_sept_remove_private_spte: HKID not assigned",
    "tdx_sept_zap_private_spte: tdh_mem_range_block",
    "tdx_track: tdh_mem_track",
    "tdx_sept_drop_private_spte: tdh_mem_page_remove",
    "tdx_sept_drop_private_spte: tdh_phymem_page_wbinvd_hkid",
    "tdx_mmu_release_hkid: tdh_mng_vpflushdone (TDX_FLUSHVP_NOT_DONE)",
    "tdx_mmu_release_hkid: tdh_mng_vpflushdone",
    "smp_func_do_phymem_cache_wb: tdh_phymem_cache_wb",
    "tdx_mmu_release_hkid: tdh_mng_key_freeid",
    "tdx_reclaim_control_page: tdh_phymem_page_reclaim",
    "tdx_sept_free_private_spt: HKID still assigned",
    "tdx_sept_free_private_spt: tdh_phymem_page_reclaim",
    "tdx_reclaim_td_control_pages: tdh_phymem_page_reclaim (TDR)",
    "tdx_reclaim_td_control_pages: tdh_phymem_page_wbinvd_tdr",
)
_SITE = {s: i for i, s in enumerate(ERROR_SITES)}

#: the error sites where KVM decides to leak (it stops giving pages or the HKID back);
#: a leak is named after the first of them on its path
LEAK_SITES: frozenset[str] = frozenset({
    "tdx_sept_remove_private_spte: HKID not assigned",
    "tdx_sept_zap_private_spte: tdh_mem_range_block",
    "tdx_sept_drop_private_spte: tdh_mem_page_remove",
    "tdx_sept_drop_private_spte: tdh_phymem_page_wbinvd_hkid",
    "tdx_mmu_release_hkid: tdh_mng_vpflushdone (TDX_FLUSHVP_NOT_DONE)",
    "tdx_mmu_release_hkid: tdh_mng_vpflushdone",
    "tdx_mmu_release_hkid: tdh_mng_key_freeid",
    "tdx_reclaim_control_page: tdh_phymem_page_reclaim",
    "tdx_sept_free_private_spt: HKID still assigned",
    "tdx_sept_free_private_spt: tdh_phymem_page_reclaim",
    "tdx_reclaim_td_control_pages: tdh_phymem_page_reclaim (TDR)",
    "tdx_reclaim_td_control_pages: tdh_phymem_page_wbinvd_tdr",
})

#: every mutation switch this file reads (each in one place); ``checker/mutants.py`` names them
SWITCHES: tuple[str, ...] = (
    "skip_cache_wb_one_package", "free_hkid_on_freeid_failure", "flush_vp_wrong_cpu",
    "skip_wbinvd_after_remove", "clear_before_wbinvd", "skip_tdr_global_wbinvd",
    "reclaim_tdr_before_tdcs", "skip_track_before_remove", "skip_kick_after_track",
    "skip_clflush_page_aug", "skip_clear_after_reclaim", "migrate_without_flush",
    "hkid_free_before_freeid", "skip_vpflushdone", "vm_destroy_before_sept_free",
    "vcpu_free_without_reclaim", "release_hkid_before_gmem_zap", "skip_vp_flush_on_release",
    "ignore_flushvp_not_done", "free_page_after_failed_reclaim",
    "free_sept_page_after_failed_reclaim",
)

_BUSY = int(Status.TDX_OPERAND_BUSY)
_NOT_ASSOC = int(Status.TDX_VCPU_NOT_ASSOCIATED)
_FLUSHVP_NOT_DONE = int(Status.TDX_FLUSHVP_NOT_DONE)
_INTERRUPTED = int(Status.TDX_INTERRUPTED_RESUMABLE)
_NO_HKID_READY = int(Status.TDX_NO_HKID_READY_TO_WBCACHE)
_RND = int(Status.TDX_RND_NO_ENTROPY)

# zap machine program counter (``mmu`` thread)
Z_IDLE, Z_BLOCK_RETRY, Z_TRACK, Z_TRACK_RETRY, Z_REMOVE, Z_REMOVE_RETRY, Z_DROP = range(7)
# vCPU thread state
V_NOT_STARTED, V_RUN, V_DONE = range(3)
# KVM's kvm_tdx->state
TD_STATE_UNINITIALIZED, TD_STATE_INITIALIZED, TD_STATE_RUNNABLE = range(3)


class _Disabled(Exception):
    """The move cannot happen in this state (or its fault point does not fire here)."""


# --------------------------------------------------------------------------- one move


class _Move:
    """One atomic step of one thread: model actions in order, KVM's variables, violations."""

    __slots__ = ("acts", "calls", "fault", "h", "k", "m", "pc", "status", "tag", "viol")

    def __init__(self, k: KvmHost, m: State, h: list[int], fault: str | None, tag: str,
                 record: bool) -> None:
        self.k = k
        self.m = m
        self.h = h
        self.viol: list[Violation] = []
        self.status: int | None = None
        self.fault = fault
        self.tag = tag
        self.calls: list[str] | None = [] if record else None
        # (action, the fault's status or None, status or None, state before), when recording
        self.acts: list[tuple[Action, int | None, int | None, State]] = []
        self.pc = -1  # the vm thread's pc when this is one of its steps

    # ---- model
    def get(self, fld: str, *idx: int) -> int:
        return int(self.m[self.k.lay.flat(fld, idx)])

    def call(self, a: Action, faultable: bool = False) -> int:
        """A SEAMCALL through its wrapper; with ``faultable`` the move's fault may fire."""
        k = self.k
        fidx = -1
        if faultable and self.fault is not None:
            fidx, pos = k.fault_index(a, self.fault)
            if fidx < 0 or not k.env_gate(self.fault, self):
                raise _Disabled
        r = k.engine.step(self.m, a, fidx)
        if r.status == NOT_ENABLED:
            raise _Disabled
        if fidx >= 0:
            if r.where != pos:  # the fault point is not on this path (Fault.cond)
                raise _Disabled
            self.h[k.ENV] = 1
        if self.calls is not None:
            self.acts.append((a, r.status if fidx >= 0 else None, r.status, self.m))
        self.m = r.state
        self.viol.extend(r.step_violations)
        assert r.status is not None
        self.status = r.status
        if self.calls is not None:
            f = f" [fault {status_name(r.status)}]" if fidx >= 0 else ""
            self.calls.append(f"{describe(a, k.u)}{f} -> {status_name(r.status)}")
        return r.status

    def host(self, a: Action) -> None:
        """A host (or guest) action that is not a SEAMCALL."""
        r = self.k.engine.step(self.m, a)
        if r.status == NOT_ENABLED:
            raise _Disabled
        if self.calls is not None:
            self.acts.append((a, None, r.status, self.m))
        self.m = r.state
        self.viol.extend(r.step_violations)
        if a.kind == "TDG.MEM.PAGE.ACCEPT":
            self.status = r.status
        if self.calls is not None:
            st = f" -> {status_name(r.status)}" if r.status is not None else ""
            self.calls.append(f"{describe(a, self.k.u)}{st}")

    # ---- KVM's variables
    def __getitem__(self, i: int) -> int:
        return self.h[i]

    def __setitem__(self, i: int, v: int) -> None:
        self.h[i] = v

    def error(self, site: str, bug: bool = True) -> None:
        """KVM reports an error at ``site``; ``bug``: KVM_BUG_ON marks the VM dead."""
        k = self.k
        if self.calls is not None:
            self.calls.append(("KVM_BUG_ON" if bug else "error") + f" ({site})")
        self.h[k.ERRORS] |= 1 << _SITE[site]
        if site in LEAK_SITES and not self.h[k.LEAK]:
            self.h[k.LEAK] = _SITE[site] + 1
        if bug:
            self.h[k.DEAD] = 1

    def env(self) -> None:
        """Something outside KVM happened (a guest's fatal exit, a retry budget spent)."""
        self.h[self.k.ENV] = 1

    def goto(self, name: str) -> None:
        self.h[self.k.VMPC] = self.k.pc_of[name]

    def stay(self) -> None:
        """The vm thread stays on this step (a loop, or waiting for the mmu thread)."""
        self.h[self.k.VMPC] = self.pc


# --------------------------------------------------------------------------- the program


@dataclass
class _Op:
    """One step of the ``vm`` thread: a kernel function's next SEAMCALL (or host work)."""

    name: str
    label: str
    fn: Callable[[_Move], None]
    sample: Action | None = None  # an action of the faultable SEAMCALL (its fault points)
    skip: Callable[[_Move], str | None] | None = None  # -> jump target when KVM skips it
    tags: tuple[str, ...] = ("",)  # host-level variants (edges) besides fault choices


@dataclass
class _EdgeDef:
    thread: int
    slot: int  # vm: pc; vcpu: V_RUN; mmu: zpc; zap: 0
    fn: Callable[[_Move], None]
    fault: str | None
    tag: str


@dataclass
class KvmRunInfo:
    """What one move did, for people: the calls with their statuses."""

    label: str
    calls: list[str] = field(default_factory=list)


class KvmHost:
    """``--host kvm`` (see the module docstring).  A Program for ``explore``."""

    def __init__(self, config: KvmConfig | Universe, faults: bool = False,
                 ablate: Sequence[str] = (), mutant: str | None = None,
                 pinning: bool = True, gpas_zapped: Sequence[int] | None = None,
                 preempt_init: bool = False) -> None:
        if isinstance(config, Universe):
            raise TypeError("KvmHost takes a KvmConfig (its universe names KVM's pages)")
        if mutant is not None and mutant not in SWITCHES:
            raise ValueError(f"unknown mutation switch {mutant!r}")
        self.config = config
        self.u = config.universe()
        self.faults = faults
        self.mutant = mutant
        self.pinning = pinning
        self.preempt_init = preempt_init
        self.engine = Engine(self.u, ablate=ablate)
        self.lay = self.engine.layout
        self.n = self.lay.size
        u, p = self.u, self.u.platform
        self.cpus = p.cpus
        self.nvp = len(u.vps)
        self.ngpa = len(u.gpas)
        # KVM's pages (page indices of the universe)
        pg = u.page_index
        self.TDR = pg("tdr")
        self.CS = [pg(f"cs{i}") for i in range(p.tdcs_pages)]
        self.VPR = [pg(f"vpr{v}") for v in range(self.nvp)]
        self.CX = [[pg(f"cx{v}_{i}") for i in range(p.tdcx_pages)] for v in range(self.nvp)]
        self.SEPT = {lv: pg(f"sept{lv}") for lv in range(p.sept_levels - 1, 0, -1)}
        self.POOL = [pg(f"m{i}") for i in range(config.guest_pages)]
        for g in u.gpas:  # one S-EPT page per level covers every GPA of the config
            assert g >> (12 + 9 * (p.sept_levels - 1)) == 0, "GPAs must share the S-EPT pages"
        self.HKID = 1  # tdx_guest_keyid_alloc(): the IDA's lowest free KeyID
        self._faults_cache: dict[tuple[Action, str], tuple[int, int]] = {}
        self._layout_host()
        self._build()
        self.names = ["vm", *(f"vcpu{v}" for v in range(self.nvp)), "mmu", "zap"]
        self.self_loops = 0

    # ------------------------------------------------------------------ host cells
    def _layout_host(self) -> None:
        cells: list[tuple[str, int]] = [
            ("vm_pc", 0), ("kvm_hkid", self.u.platform.hkids - 1), ("td_state", 2),
            ("vm_dead", 1), ("env_event", 1), ("errors", (1 << len(ERROR_SITES)) - 1),
            ("leak_site", len(ERROR_SITES)),
            ("wait_for_sept_zap", 1), ("cache_wb_resume", 1),
            ("zap_pc", Z_DROP), ("zap_gpa", max(self.ngpa - 1, 0)),
            ("zap_page", self.u.n_pages - 1), ("zaps_done", self.config.zaps),
            ("zap_thread_done", 1),
        ]
        for v in range(self.nvp):
            cells += [(f"vcpu{v}.thread", V_DONE), (f"vcpu{v}.cpu", self.cpus),
                      (f"vcpu{v}.initialized", 1)]
        for g in range(self.ngpa):
            cells += [(f"gpa{g}.mirror", self.u.n_pages - 1),
                      (f"gpa{g}.gmem", self.u.n_pages - 1)]
        self.host_cells = cells
        idx = {name: i for i, (name, _) in enumerate(cells)}
        self.VMPC, self.HK, self.TDS = idx["vm_pc"], idx["kvm_hkid"], idx["td_state"]
        self.DEAD, self.ENV, self.ERRORS = idx["vm_dead"], idx["env_event"], idx["errors"]
        self.LEAK = idx["leak_site"]
        self.WAIT, self.CWB = idx["wait_for_sept_zap"], idx["cache_wb_resume"]
        self.ZPC, self.ZG, self.ZPAGE = idx["zap_pc"], idx["zap_gpa"], idx["zap_page"]
        self.ZAPS, self.ZDONE = idx["zaps_done"], idx["zap_thread_done"]
        self.VT = [idx[f"vcpu{v}.thread"] for v in range(self.nvp)]
        self.VCPU = [idx[f"vcpu{v}.cpu"] for v in range(self.nvp)]  # cpu + 1, 0 = -1
        self.VINIT = [idx[f"vcpu{v}.initialized"] for v in range(self.nvp)]
        self.MIRROR = [idx[f"gpa{g}.mirror"] for g in range(self.ngpa)]
        self.GMEM = [idx[f"gpa{g}.gmem"] for g in range(self.ngpa)]

    # ------------------------------------------------------------------ helpers
    def mut(self, name: str) -> bool:
        """The mutation switch ``name`` is flipped (one read per switch: see SWITCHES)."""
        assert name in SWITCHES, name
        return self.mutant == name

    def act(self, kind: str, cpu: int = 0, clflush: bool = True, **kw: Any) -> Action:
        """A typed wrapper call (its CLFLUSH of the pages it hands over, LH tdx_clflush_page)
        or a host/guest action, with the operands in the leaf's order."""
        key = (kind, cpu, clflush, tuple(sorted(kw.items())))
        a = self._acts.get(key)
        if a is not None:
            return a
        if kind in LEAVES:
            ldef = LEAVES[kind]
            order = {o: i for i, o in enumerate(ldef.operands)}
            args = tuple(sorted(kw.items(), key=lambda kv: order[kv[0]]))
            handed = tuple(kw[h] for h in ldef.hands) if clflush and \
                self.u.platform.wrapper_clflush else ()
            step = _WRAPPER.get(kind, kind)
            if kind == "TDH.PHYMEM.PAGE.WBINVD":
                step = "tdh_phymem_page_wbinvd_tdr" if kw["keyid"] == \
                    self.u.platform.global_keyid else "tdh_phymem_page_wbinvd_hkid"
            a = Action(step, kind, args, cpu, handed)
        else:
            a = Action(kind, kind, tuple(kw.items()), cpu)
        self._acts[key] = a
        return a

    def fault_index(self, a: Action, name: str) -> tuple[int, int]:
        """(index among the rule's faults, index in rule.steps) of fault ``name``, or -1."""
        key = (a, name)
        r = self._faults_cache.get(key)
        if r is None:
            rule = self.engine.compiled(a).rule
            r = (-1, -1)
            k = 0
            for i, st in enumerate(rule.steps):
                if isinstance(st, Fault):
                    if st.name == name:
                        r = (k, i)
                        break
                    k += 1
            self._faults_cache[key] = r
        return r

    def env_gate(self, fault: str, mv: _Move) -> bool:
        """Whether the environment can make fault point ``fault`` fire now.

        A BUSY on the S-EPT tree or entry lock comes from the guest (0-step mitigation in
        VP.ENTER, a TDCALL such as ACCEPT): only while a vCPU is in the guest.  TRACK's
        TD_EPOCH BUSY comes from a VP.ENTER in flight (a vCPU that may enter: running, out of
        the guest, not held back by wait_for_sept_zap); VP.ENTER's from a TRACK in flight,
        and its 0-step S-EPT tree BUSY from a host S-EPT SEAMCALL in flight (a zap).  Every
        VP.ENTER BUSY is absorbed (KVM re-enters later), so those are self-loops anyway.
        """
        if fault.endswith((".sept_tree_lock", ".sept_entry_lock")):
            return any(mv.get("in_guest", v) for v in range(self.nvp))
        if fault == "mem.track.epoch_lock":
            return not mv[self.WAIT] and any(
                mv[self.VT[v]] == V_RUN and not mv.get("in_guest", v) for v in range(self.nvp))
        if fault == "vp.enter.epoch_lock":
            return mv[self.ZPC] in (Z_TRACK, Z_TRACK_RETRY)
        if fault == "vp.enter.zero_step":
            return mv[self.ZPC] != Z_IDLE
        return True

    @staticmethod
    def fault_allowed(name: str) -> bool:
        """Fault points KVM's own locking rules out are never injected: ``tdx_lock``
        serialises MNG.CREATE, VPFLUSHDONE, CACHE.WB and KEY.FREEID of every TD (KOT and
        WBCACHE contention); everything else can happen."""
        return not (name.endswith(".kot_lock") or name == "phymem.cache_wb.wbt_lock")

    def _fault_names(self, a: Action | None) -> list[str]:
        if a is None or not self.faults:
            return []
        return [f.name for f in self.engine.compiled(a).rule.faults
                if self.fault_allowed(f.name)]

    def kick(self, mv: _Move) -> None:
        """kvm_make_all_cpus_request(KVM_REQ_OUTSIDE_GUEST_MODE): every vCPU in the guest
        exits (the IPI is acknowledged before the request returns)."""
        for v in range(self.nvp):
            if mv.get("in_guest", v):
                mv.host(self.act("td_exit", vp=v, reason="normal"))

    def vcpu_load(self, mv: _Move, v: int, c: int) -> None:
        """kvm_arch_vcpu_load(vcpu, c) -> tdx_vcpu_load: ``if (vcpu->cpu == cpu ||
        !is_hkid_assigned) return;`` else tdx_flush_vp_on_cpu (an IPI to the old CPU runs
        tdx_flush_vp there: TDH.VP.FLUSH only once KVM's vCPU state is INITIALIZED,
        TDX_VCPU_NOT_ASSOCIATED counts as success, then tdx_disassociate_vp), list_add on
        cpu c; kvm_arch_vcpu_load sets vcpu->cpu = cpu.  Reached from vcpu_load() and from
        kvm_sched_in() (the preempt notifier), so on every CPU change of a thread that has
        the vCPU loaded."""
        if mv[self.VCPU[v]] == c + 1:
            raise _Disabled
        old = mv[self.VCPU[v]] - 1
        if mv[self.HK] and old >= 0 and not self.mut("migrate_without_flush"):
            if mv[self.VINIT[v]]:
                st = mv.call(self.act("TDH.VP.FLUSH", cpu=old, tdvpr=self.VPR[v]))
                if st and status_class(st) != _NOT_ASSOC:
                    mv.error("tdx_flush_vp: tdh_vp_flush")
            mv[self.VCPU[v]] = 0  # tdx_disassociate_vp: vcpu->cpu = -1
        mv[self.VCPU[v]] = c + 1  # list_add on cpu c; vcpu->cpu = cpu

    def reclaim_page(self, mv: _Move, page: int) -> int:
        """tdx_reclaim_page: TDH.PHYMEM.PAGE.RECLAIM, then tdx_clear_page on success (no
        per-page WBINVD: CACHE.WB on every package already flushed the freed HKID)."""
        st = mv.call(self.act("TDH.PHYMEM.PAGE.RECLAIM", page=page))
        if not st and not self.mut("skip_clear_after_reclaim"):
            mv.host(self.act("clear_page", page=page))
        return st

    def held(self, mv: _Move, page: int) -> bool:
        """KVM still has the page (its pointer is set: allocated to the TDX code)."""
        return bool(mv.get("host", page) == HostPage.TDX)

    # ------------------------------------------------------------------ build
    def _build(self) -> None:
        self._acts: dict[Any, Action] = {}
        self.ops: list[_Op] = []
        self._vm_program()
        self.pc_of = {op.name: i for i, op in enumerate(self.ops)}
        self.edges: list[Edge] = []
        self._defs: list[_EdgeDef] = []
        self._slots: dict[tuple[int, int], list[int]] = {}

        def add(thread: int, slot: int, label: str, fn: Callable[[_Move], None],
                sample: Action | None, tags: Sequence[str] = ("",)) -> None:
            for tag in tags:
                for fault in [None, *self._fault_names(sample)]:
                    eid = len(self.edges)
                    lab = label + (f" ({tag})" if tag else "")
                    self.edges.append(Edge(lab, thread, fault))
                    self._defs.append(_EdgeDef(thread, slot, fn, fault, tag))
                    self._slots.setdefault((thread, slot), []).append(eid)

        for pc, op in enumerate(self.ops):
            add(0, pc, op.label, op.fn, op.sample, op.tags)
        for v in range(self.nvp):
            self._vcpu_program(v, lambda *a, v=v: add(1 + v, V_RUN, *a))
        mmu = 1 + self.nvp
        self._mmu_program(lambda zpc, *a: add(mmu, zpc, *a))
        self._zap_thread(lambda *a: add(mmu + 1, 0, *a))

    # ------------------------------------------------------------------ vm thread
    def _vm_program(self) -> None:
        ops = self.ops
        p = self.u.platform
        k = self
        td, tdr, h = 0, self.TDR, self.HKID
        g0 = self.u.gpas[0]

        def op(name: str, label: str, fn: Callable[[_Move], None],
               sample: Action | None = None,
               skip: Callable[[_Move], str | None] | None = None,
               tags: tuple[str, ...] = ("",)) -> None:
            ops.append(_Op(name, label, fn, sample, skip, tags))

        # ---- __tdx_td_init (KVM_TDX_INIT_VM) ------------------------------------------
        def alloc(mv: _Move) -> None:
            mv.host(k.act("hkid_alloc", hkid=h))
            mv[k.HK] = h
            for pgx in [tdr, *k.CS]:
                mv.host(k.act("page_alloc", page=pgx))
        op("init.alloc", "__tdx_td_init: tdx_guest_keyid_alloc() and alloc_page() for the TDR "
           "and the TDCS pages", alloc)

        def teardown_init(mv: _Move) -> None:
            """The "teardown" label: TDCS pages not added go straight back to the allocator,
            then tdx_mmu_release_hkid() and tdx_reclaim_td_control_pages()."""
            for c in k.CS:
                if k.held(mv, c) and mv.get("pt", c) == PageType.PT_NDA:
                    mv.host(k.act("page_free", page=c))
            mv.goto("release.start")

        create = k.act("TDH.MNG.CREATE", td=td, tdr=tdr, hkid=h)

        def mng_create(mv: _Move) -> None:
            st = mv.call(create, faultable=True)
            if st:
                # RND_NO_ENTROPY -> -EAGAIN, else TDX_BUG_ON; both go to free_packages: the
                # module took nothing, so every page and the HKID go straight back
                mv.error("__tdx_td_init: tdh_mng_create", bug=status_class(st) != _RND)
                for pgx in [tdr, *k.CS]:
                    mv.host(k.act("page_free", page=pgx))
                mv.host(k.act("hkid_free", hkid=h))
                mv[k.HK] = 0
                mv.goto("end")
        op("init.create", "__tdx_td_init: tdh_mng_create() under tdx_lock", mng_create, create)

        for pkg in range(p.packages):
            kc = k.act("TDH.MNG.KEY.CONFIG", cpu=pkg * p.cpus_per_package, tdr=tdr)

            def key_config(mv: _Move, kc: Action = kc) -> None:
                if mv.call(kc, faultable=True):
                    mv.error("__tdx_td_init: tdh_mng_key_config")
                    teardown_init(mv)
            op(f"init.key_config.pkg{pkg}", f"__tdx_td_init: smp_call_on_cpu(cpu"
               f"{pkg * p.cpus_per_package}, tdh_mng_key_config) for package {pkg}",
               key_config, kc)

        for i, c in enumerate(self.CS):
            ax = k.act("TDH.MNG.ADDCX", page=c, tdr=tdr)

            def addcx(mv: _Move, ax: Action = ax) -> None:
                st = mv.call(ax, faultable=True)
                if st:
                    mv.error("__tdx_td_init: tdh_mng_addcx", bug=status_class(st) != _RND)
                    teardown_init(mv)
            op(f"init.addcx{i}", f"__tdx_td_init: tdh_mng_addcx(TDCS page {i})", addcx, ax)

        def mng_init(mv: _Move) -> None:
            if mv.call(k.act("TDH.MNG.INIT", tdr=tdr)):
                mv.error("__tdx_td_init: tdh_mng_init")
                teardown_init(mv)
        op("init.mng_init", "__tdx_td_init: tdh_mng_init()", mng_init)

        def mng_rd(mv: _Move) -> None:
            if mv.call(k.act("TDH.MNG.RD", tdr=tdr)):
                # td_tdcs_exec_read64: pr_err and return 0; tdx_td_init goes on
                mv.error("tdx_td_init: td_tdcs_exec_read64 (tdh_mng_rd)", bug=False)
            mv[k.TDS] = TD_STATE_INITIALIZED
        op("init.mng_rd", "tdx_td_init: td_tdcs_exec_read64() -> tdh_mng_rd() (TSC offset, "
           "multiplier); state := TD_STATE_INITIALIZED", mng_rd)

        # ---- KVM_CREATE_VCPU + KVM_TDX_INIT_VCPU (tdx_td_vcpu_init) ------------------
        for v in range(self.nvp):
            vpr, cxs = self.VPR[v], self.CX[v]
            vc = k.act("TDH.VP.CREATE", vp=v, tdvpr=vpr, tdr=tdr)

            def vp_create(mv: _Move, v: int = v, vpr: int = vpr, cxs: list[int] = cxs,
                          vc: Action = vc) -> None:
                # kvm_arch_vcpu_create: vcpu_load on cpu0 puts the vCPU on cpu0's
                # associated_tdvcpus list (no SEAMCALL: vcpu->cpu was -1)
                mv[k.VCPU[v]] = 1
                for pgx in [vpr, *cxs]:
                    mv.host(k.act("page_alloc", page=pgx))
                if mv.call(vc, faultable=True):
                    mv.error("tdx_td_vcpu_init: tdh_vp_create")
                    for pgx in [vpr, *cxs]:  # the module took none of them
                        mv.host(k.act("page_free", page=pgx))
                    mv.goto("destroy.gmem")
            op(f"vcpu{v}.create", f"kvm_vm_ioctl_create_vcpu(vcpu{v}) on cpu0; "
               f"tdx_td_vcpu_init: alloc_page() for the TDVPR and TDCX pages, tdh_vp_create()",
               vp_create, vc)
            for i, cx in enumerate(cxs):
                va = k.act("TDH.VP.ADDCX", page=cx, tdvpr=vpr)

                def vp_addcx(mv: _Move, i: int = i, cxs: list[int] = cxs,
                             va: Action = va) -> None:
                    if mv.call(va, faultable=True):
                        mv.error("tdx_td_vcpu_init: tdh_vp_addcx")
                        for pgx in cxs[i:]:  # pages >= i were not added
                            mv.host(k.act("page_free", page=pgx))
                        mv.goto("destroy.gmem")
                op(f"vcpu{v}.addcx{i}", f"tdx_td_vcpu_init: tdh_vp_addcx(vcpu{v}, TDCX {i})",
                   vp_addcx, va)

            def vp_init(mv: _Move, v: int = v, vpr: int = vpr) -> None:
                # the ioctl thread may be preempted (preemption is enabled once the
                # mmu_lock guard around VP.INIT ends) and resume on another CPU before
                # or after the VMCS writes: kvm_sched_in -> tdx_vcpu_load while KVM's
                # vCPU state is still UNINITIALIZED, so tdx_flush_vp skips TDH.VP.FLUSH
                where, _, to = mv.tag.partition(":cpu")
                a = k.act("TDH.VP.INIT", cpu=mv[k.VCPU[v]] - 1, tdvpr=vpr)
                if mv.call(a):
                    mv.error("tdx_td_vcpu_init: tdh_vp_init")
                    mv.goto("destroy.gmem")
                    return
                if where == "before VP.WR":
                    k.vcpu_load(mv, v, int(to))
                # tdx_vcpu_init: td_vmcs_write16/64 and td_vmcs_setbit32 (three TDH.VP.WR on
                # vcpu->cpu, one here: they pass the same checks); a failure is
                # tdh_vp_wr_failed's KVM_BUG_ON, and tdx_vcpu_init goes on regardless
                wr = k.act("TDH.VP.WR", cpu=mv[k.VCPU[v]] - 1, tdvpr=vpr)
                wr_failed = bool(mv.call(wr))
                if wr_failed:
                    mv.error("tdx_vcpu_init: tdh_vp_wr (td_vmcs_write)")
                if where == "after VP.WR":
                    k.vcpu_load(mv, v, int(to))
                mv[k.VINIT[v]] = 1  # tdx->state = VCPU_TD_STATE_INITIALIZED
                if wr_failed:
                    mv.goto("destroy.gmem")  # the VM is dead: every later ioctl fails
            tags = ("",) + tuple(f"{w}:cpu{c}" for w in ("before VP.WR", "after VP.WR")
                                 for c in range(self.cpus)) if self.preempt_init else ("",)
            op(f"vcpu{v}.init", f"tdx_td_vcpu_init: tdh_vp_init(vcpu{v}) on the vCPU's CPU "
               "under mmu_lock; tdx_vcpu_init: td_vmcs_write (TDH.VP.WR); state := "
               "VCPU_TD_STATE_INITIALIZED", vp_init, tags=tags)

        # ---- KVM_TDX_INIT_MEM_REGION: the first GPA, measured --------------------------
        for lv, sp in self.SEPT.items():
            sa = k.act("TDH.MEM.SEPT.ADD", tdr=tdr, gpa=g0, level=lv, page=sp)

            def sept_add(mv: _Move, sp: int = sp, sa: Action = sa) -> None:
                mv.host(k.act("page_alloc", page=sp))  # the MMU's page cache
                st = mv.call(sa, faultable=True)
                if st:
                    mv.error("tdx_sept_link_private_spt: tdh_mem_sept_add",
                             bug=status_class(st) != _BUSY)
                    mv.host(k.act("page_free", page=sp))  # tdp_mmu_free_sp: never linked
                    mv.goto("destroy.gmem")
            op(f"mem.sept_add{lv}", f"kvm_tdp_map_page -> tdx_sept_link_private_spt: "
               f"tdh_mem_sept_add(level {lv})", sept_add, sa)

        m0 = self.POOL[0]
        pa = k.act("TDH.MEM.PAGE.ADD", tdr=tdr, gpa=g0, page=m0)

        def page_add(mv: _Move) -> None:
            mv.host(k.act("page_alloc", page=m0))  # kvm_gmem_populate: the folio
            mv[k.GMEM[0]] = m0
            st = mv.call(pa, faultable=True)
            if st:
                mv.error("tdx_gmem_post_populate: tdh_mem_page_add",
                         bug=status_class(st) != _BUSY)
                mv.goto("destroy.gmem")
                return
            mv[k.MIRROR[0]] = m0
        op("mem.page_add", "tdx_gmem_post_populate: tdh_mem_page_add() while the mirror leaf "
           "is installed", page_add, pa)

        def mr_extend(mv: _Move) -> None:
            if mv.call(k.act("TDH.MR.EXTEND", tdr=tdr, gpa=g0)):
                mv.error("tdx_gmem_post_populate: tdh_mr_extend")
                mv.goto("destroy.gmem")
        op("mem.mr_extend", "tdx_gmem_post_populate: tdh_mr_extend() "
           "(KVM_TDX_MEASURE_MEMORY_REGION)", mr_extend)

        def finalize(mv: _Move) -> None:
            st = mv.call(k.act("TDH.MR.FINALIZE", tdr=tdr))
            if st:
                mv.error("tdx_td_finalize: tdh_mr_finalize", bug=status_class(st) != _BUSY)
                mv.goto("destroy.gmem")
                return
            mv[k.TDS] = TD_STATE_RUNNABLE
            for v in range(k.nvp):
                if mv[k.VINIT[v]]:
                    mv[k.VT[v]] = V_RUN
            mv[k.ZDONE] = 0 if k.config.zaps else 1
        op("finalize", "tdx_td_finalize: tdh_mr_finalize(); state := TD_STATE_RUNNABLE; "
           "the vCPU threads run", finalize)

        def run(mv: _Move) -> None:
            if any(mv[t] == V_RUN for t in k.VT) or not mv[k.ZDONE] or mv[k.ZPC]:
                raise _Disabled
        op("run", "userspace closes the vCPU fds and the VM: kvm_destroy_vm", run)

        # ---- kvm_destroy_vm ------------------------------------------------------------
        def gmem_release() -> None:
            def fn(mv: _Move) -> None:
                if mv[k.ZPC]:
                    raise _Disabled
                g = int(mv.tag[3:]) if mv.tag.startswith("gpa") else -1
                mapped = [i for i in range(k.ngpa) if mv[k.MIRROR[i]]]
                if g >= 0:
                    if g not in mapped or g != mapped[0]:
                        raise _Disabled
                    k.zap_start(mv, g)  # the mmu thread runs the zap; this thread waits
                    mv.stay()
                    return
                if mapped:
                    raise _Disabled
                for i in range(k.ngpa):  # folios never mapped (a failed PAGE.ADD/AUG)
                    if mv[k.GMEM[i]]:
                        mv.host(k.act("page_free", page=mv[k.GMEM[i]]))
                        mv[k.GMEM[i]] = 0
            op("destroy.gmem", "kvm_gmem_release: zap each private leaf while the HKID is "
               "assigned (tdx_sept_remove_private_spte: tdh_mem_range_block), then free the "
               "folios", fn,
               tags=(*(f"gpa{i}" for i in range(self.ngpa)), ""))

        release_first = self.mut("release_hkid_before_gmem_zap")
        if not release_first:
            gmem_release()

        # tdx_mmu_release_hkid (kvm_arch_pre_destroy_vm -> vt_vm_pre_destroy)
        def release_start(mv: _Move) -> str | None:
            return "vcpu_free" if not mv[k.HK] else None

        for v in range(self.nvp):
            def flush_vp(mv: _Move, v: int = v) -> None:
                cpu = mv[k.VCPU[v]] - 1
                if k.mut("flush_vp_wrong_cpu"):
                    cpu = (cpu + 1) % k.cpus
                if mv[k.VINIT[v]]:
                    st = mv.call(k.act("TDH.VP.FLUSH", cpu=cpu, tdvpr=k.VPR[v]))
                    if st and status_class(st) != _NOT_ASSOC:
                        mv.error("tdx_flush_vp: tdh_vp_flush")
                mv[k.VCPU[v]] = 0  # tdx_disassociate_vp: vcpu->cpu = -1

            def flush_skip(mv: _Move, v: int = v) -> str | None:
                if v == 0 and not mv[k.HK]:
                    return "vcpu_free"
                if mv[k.VCPU[v]] == 0 or k.mut("skip_vp_flush_on_release"):
                    return ""  # vcpu->cpu == -1: nothing to flush
                return None
            op("release.start" if v == 0 else f"release.flush{v}",
               f"tdx_mmu_release_hkid: tdx_flush_vp_on_cpu(vcpu{v}) (TDH.VP.FLUSH on "
               "vcpu->cpu)", flush_vp, skip=flush_skip)
        if not self.nvp:
            op("release.start", "tdx_mmu_release_hkid", lambda mv: None, skip=release_start)

        vfd = k.act("TDH.MNG.VPFLUSHDONE", tdr=tdr)
        # the mutation moves tdx_hkid_free() from after FREEID to after VPFLUSHDONE
        free_early = self.mut("hkid_free_before_freeid")

        def vpflushdone(mv: _Move) -> None:
            st = mv.call(vfd, faultable=True)
            if status_class(st) == _FLUSHVP_NOT_DONE and not k.mut("ignore_flushvp_not_done"):
                mv.error("tdx_mmu_release_hkid: tdh_mng_vpflushdone (TDX_FLUSHVP_NOT_DONE)",
                         bug=False)
                mv.goto("vcpu_free")  # goto out: the HKID stays assigned
                return
            if st and status_class(st) != _FLUSHVP_NOT_DONE:
                mv.error("tdx_mmu_release_hkid: tdh_mng_vpflushdone")  # "HKID is leaked"
                mv.goto("vcpu_free")
                return
            if free_early:
                mv.host(k.act("hkid_free", hkid=mv[k.HK]))

        def vfd_skip(mv: _Move) -> str | None:
            return "" if k.mut("skip_vpflushdone") else None
        op("release.vpflushdone", "tdx_mmu_release_hkid: mutex_lock(tdx_lock); "
           "tdh_mng_vpflushdone()", vpflushdone, vfd, skip=vfd_skip)

        for pkg in range(p.packages):
            cpu = pkg * p.cpus_per_package
            sample = k.act("TDH.PHYMEM.CACHE.WB", cpu=cpu, resume=0)

            def cache_wb(mv: _Move, cpu: int = cpu) -> None:
                r = mv[k.CWB]
                st = mv.call(k.act("TDH.PHYMEM.CACHE.WB", cpu=cpu, resume=r), faultable=True)
                cls = status_class(st)
                if cls == _INTERRUPTED:
                    if mv.tag == "":
                        mv[k.CWB] = 1  # resume = !!err: call again on this package
                        mv.stay()
                        return
                    mv.env()  # TDX_SEAMCALL_RETRIES interrupts in a row: the loop ends
                    mv.error("smp_func_do_phymem_cache_wb: tdh_phymem_cache_wb", bug=False)
                elif mv.tag:
                    raise _Disabled
                elif cls not in (0, _NO_HKID_READY):  # NO_HKID_READY: "already done"
                    mv.error("smp_func_do_phymem_cache_wb: tdh_phymem_cache_wb", bug=False)
                mv[k.CWB] = 0

            def cwb_skip(mv: _Move, pkg: int = pkg) -> str | None:
                if k.mut("skip_cache_wb_one_package") and pkg == p.packages - 1:
                    return ""
                return None
            tags = ("", "retries exhausted") if self.faults else ("",)
            op(f"release.cache_wb{pkg}", f"tdx_mmu_release_hkid: smp_func_do_phymem_cache_wb "
               f"on cpu{cpu} (package {pkg}): tdh_phymem_cache_wb(resume) until done",
               cache_wb, sample, skip=cwb_skip, tags=tags)

        fid = k.act("TDH.MNG.KEY.FREEID", tdr=tdr)

        def freeid(mv: _Move) -> None:
            st = mv.call(fid, faultable=True)
            if st:
                mv.error("tdx_mmu_release_hkid: tdh_mng_key_freeid")  # "HKID is leaked"
                if k.mut("free_hkid_on_freeid_failure"):
                    mv.host(k.act("hkid_free", hkid=mv[k.HK]))
                    mv[k.HK] = 0
            else:
                if not free_early:
                    mv.host(k.act("hkid_free", hkid=mv[k.HK]))  # tdx_hkid_free
                mv[k.HK] = 0
        op("release.freeid", "tdx_mmu_release_hkid: tdh_mng_key_freeid(); tdx_hkid_free() "
           "only on success; mutex_unlock(tdx_lock)", freeid, fid)

        if release_first:
            gmem_release()

        def reclaim_control_page(mv: _Move, page: int) -> None:
            """tdx_reclaim_control_page: RECLAIM, tdx_clear_page, __free_page; a page
            whose RECLAIM fails is leaked ("the kernel cannot use it safely anymore")."""
            if k.mut("vcpu_free_without_reclaim") and page in k.VPR + functools.reduce(operator.iadd, k.CX, []):
                mv.host(k.act("page_free", page=page))
                return
            if k.reclaim_page(mv, page):
                mv.error("tdx_reclaim_control_page: tdh_phymem_page_reclaim", bug=False)
                if k.mut("free_page_after_failed_reclaim"):
                    mv.host(k.act("page_free", page=page))
                return
            mv.host(k.act("page_free", page=page))

        def page_op(name: str, label: str, page: int, body: Callable[[_Move, int], None],
                    gate: Callable[[_Move], str | None]) -> None:
            def fn(mv: _Move) -> None:
                body(mv, page)

            def skip(mv: _Move) -> str | None:
                j = gate(mv)
                if j is not None:
                    return j
                return "" if not k.held(mv, page) else None
            op(name, label, fn, skip=skip)

        # kvm_destroy_vcpus -> tdx_vcpu_free
        def vcpu_free_gate(mv: _Move) -> str | None:
            return "sept_free" if mv[k.HK] else None  # HKID assigned: leak them
        first = True
        for v in range(self.nvp):
            for i, cx in enumerate(self.CX[v]):
                page_op("vcpu_free" if first else f"vcpu_free{v}.cx{i}",
                        f"tdx_vcpu_free(vcpu{v}): tdx_reclaim_control_page(TDCX {i})", cx,
                        reclaim_control_page, vcpu_free_gate)
                first = False
            page_op("vcpu_free" if first else f"vcpu_free{v}.vpr",
                    f"tdx_vcpu_free(vcpu{v}): tdx_reclaim_control_page(TDVPR)", self.VPR[v],
                    reclaim_control_page, vcpu_free_gate)
            first = False

        def sept_free_ops() -> None:
            firsts = True
            for lv in sorted(self.SEPT):
                sp = self.SEPT[lv]

                def sept_free(mv: _Move, page: int) -> None:
                    # "If the S-EPT PTE can't be removed for any reason, intentionally
                    # leak the page": goto out skips free_page(sp->external_spt)
                    ok = False
                    if mv[k.HK]:
                        mv.error("tdx_sept_free_private_spt: HKID still assigned")
                    elif k.reclaim_page(mv, page):
                        mv.error("tdx_sept_free_private_spt: tdh_phymem_page_reclaim",
                                 bug=False)
                    else:
                        ok = True
                    # the mutation moves the "out:" label above free_page()
                    if ok or k.mut("free_sept_page_after_failed_reclaim"):
                        mv.host(k.act("page_free", page=page))
                page_op("sept_free" if firsts else f"sept_free{lv}",
                        f"kvm_mmu_uninit_vm -> tdx_sept_free_private_spt(level {lv}): "
                        "RECLAIM, tdx_clear_page, free", sp, sept_free, lambda mv: None)
                firsts = False
            if firsts:
                op("sept_free", "kvm_mmu_uninit_vm", lambda mv: None, skip=lambda mv: "")

        def vm_destroy_ops() -> None:
            def tdcs_gate(mv: _Move) -> str | None:
                return "vm_destroy.end" if mv[k.HK] else None  # leak everything
            tdcs_ops = []
            for i, c in enumerate(self.CS):
                tdcs_ops.append((f"vm_destroy.tdcs{i}",
                                 (f"tdx_vm_destroy -> tdx_reclaim_td_control_pages: "
                                 f"tdx_reclaim_control_page(TDCS {i})"), c))

            def tdr_body(mv: _Move, page: int) -> None:
                if mv.call(k.act("TDH.PHYMEM.PAGE.RECLAIM", page=page)):
                    mv.error("tdx_reclaim_td_control_pages: tdh_phymem_page_reclaim (TDR)",
                             bug=False)
                    mv.goto("vm_destroy.end")  # return: the TDR (and the rest) leak
                    return
                if not k.mut("skip_tdr_global_wbinvd"):
                    a = k.act("TDH.PHYMEM.PAGE.WBINVD", page=page,
                              keyid=k.u.platform.global_keyid)
                    if mv.call(a):
                        mv.error("tdx_reclaim_td_control_pages: tdh_phymem_page_wbinvd_tdr")
                        mv.goto("vm_destroy.end")
                        return
                mv.host(k.act("clear_page", page=page))
                mv.host(k.act("page_free", page=page))
                mv[k.TDS] = TD_STATE_UNINITIALIZED

            tdr_op = ("vm_destroy.tdr", ("tdx_vm_destroy -> tdx_reclaim_td_control_pages: "
                      "RECLAIM(TDR), tdh_phymem_page_wbinvd_tdr (global KeyID), "
                      "tdx_clear_page, free"), tdr)
            order = [tdr_op, *tdcs_ops] if k.mut("reclaim_tdr_before_tdcs") else \
                [*tdcs_ops, tdr_op]
            for j, (name, label, page) in enumerate(order):
                body = tdr_body if page == tdr else reclaim_control_page
                page_op("vm_destroy" if j == 0 else name, label, page, body,
                        tdcs_gate if j == 0 else (lambda mv: None))
            op("vm_destroy.end", "kvm_destroy_vm done", lambda mv: None,
               skip=lambda mv: "end")

        if self.mut("vm_destroy_before_sept_free"):
            vm_destroy_ops()
            sept_free_ops()
        else:
            sept_free_ops()
            vm_destroy_ops()

        def end(mv: _Move) -> None:
            raise _Disabled
        op("end", "kvm_destroy_vm: the VM is gone", end)

    # ------------------------------------------------------------------ vcpu threads
    def _vcpu_program(self, v: int, add: Callable[..., None]) -> None:
        k = self
        vpr = self.VPR[v]
        for c in range(self.cpus):
            def load(mv: _Move, c: int = c) -> None:
                if mv.get("in_guest", v):
                    raise _Disabled
                k.vcpu_load(mv, v, c)
            add(f"vcpu_load(vcpu{v}, cpu{c}) -> tdx_vcpu_load: tdx_flush_vp_on_cpu(old CPU)",
                load, None)

        enter_sample = k.act("TDH.VP.ENTER", cpu=0, tdvpr=vpr)

        def enter(mv: _Move) -> None:
            if (mv.get("in_guest", v) or mv[k.WAIT] or not mv[k.VINIT[v]]
                    or mv[k.TDS] != TD_STATE_RUNNABLE or mv[k.DEAD]):
                raise _Disabled  # wait_for_sept_zap; tdx_vcpu_pre_run; KVM_RUN on a dead VM
            st = mv.call(k.act("TDH.VP.ENTER", cpu=mv[k.VCPU[v]] - 1, tdvpr=vpr),
                         faultable=True)
            if st and status_class(st) == _BUSY:
                return  # EXIT_FASTPATH_EXIT_HANDLED: KVM re-enters later
            if st:
                mv.error("tdx_vcpu_run: tdh_vp_enter", bug=False)  # KVM_EXIT_INTERNAL_ERROR
                mv[k.VT[v]] = V_DONE  # userspace stops the vCPU
        add(f"tdx_vcpu_run(vcpu{v}): tdh_vp_enter() on vcpu->cpu", enter, enter_sample)

        reasons = ("normal", "td_fatal", "vcpu_fatal") if self.faults else ("normal",)
        for reason in reasons:
            def exit_(mv: _Move, reason: str = reason) -> None:
                if not mv.get("in_guest", v):
                    raise _Disabled
                mv.host(k.act("td_exit", vp=v, reason=reason))
                if reason != "normal":
                    mv.env()
            add(f"the guest exits (vcpu{v}, {reason})", exit_, None)

        for g, gpa in enumerate(self.u.gpas):
            def accept(mv: _Move, gpa: int = gpa) -> None:
                e = k.u.entry(gpa, 0)
                if not mv.get("in_guest", v) or \
                        mv.get("sept_state", 0, e) != SeptState.SEPT_PENDING:
                    raise _Disabled
                mv.host(k.act("TDG.MEM.PAGE.ACCEPT", vp=v, gpa=gpa))
            add(f"the guest (vcpu{v}) accepts gpa 0x{gpa:x} (TDG.MEM.PAGE.ACCEPT)", accept,
                None)

            for page in self.POOL:
                aug_sample = k.act("TDH.MEM.PAGE.AUG", tdr=k.TDR, gpa=gpa, page=page,
                                   clflush=not k.mut("skip_clflush_page_aug"))

                def fault_in(mv: _Move, g: int = g, gpa: int = gpa, page: int = page,
                             aug: Action = aug_sample) -> None:
                    if (mv.get("in_guest", v) or mv[k.TDS] != TD_STATE_RUNNABLE
                            or mv[k.DEAD] or mv[k.MIRROR[g]] or mv[k.ZPC] or not mv[k.HK]):
                        raise _Disabled  # mmu_lock: no fault while a zap holds it
                    have = mv[k.GMEM[g]]
                    if have and have != page:
                        raise _Disabled
                    if not have:
                        if mv.get("host", page) != HostPage.KERNEL or any(
                                mv[k.GMEM[i]] == page for i in range(k.ngpa)):
                            raise _Disabled
                        mv.host(k.act("page_alloc", page=page))  # kvm_gmem_get_pfn: a folio
                        mv[k.GMEM[g]] = page
                    st = mv.call(aug, faultable=True)
                    if st and status_class(st) == _BUSY:
                        return  # -EBUSY -> RET_PF_RETRY: the local retry loop tries again
                    if st:
                        mv.error("tdx_mem_page_aug: tdh_mem_page_aug")
                        return
                    mv[k.MIRROR[g]] = page
                add(f"tdx_handle_ept_violation(vcpu{v}, gpa 0x{gpa:x}): guest_memfd folio "
                    f"{self.u.page_name(page)}, tdx_mem_page_aug()", fault_in, aug_sample)

        def close(mv: _Move) -> None:
            if mv.get("in_guest", v):
                raise _Disabled
            mv[k.VT[v]] = V_DONE
        add(f"userspace closes the vcpu{v} fd", close, None)

    # ------------------------------------------------------------------ the zap (mmu)
    def zap_start(self, mv: _Move, g: int) -> None:
        """tdx_sept_remove_private_spte(gpa g), mmu_lock held for write: the first step."""
        mv[self.ZG] = g
        mv[self.ZPAGE] = mv[self.MIRROR[g]]
        if not mv[self.HK]:
            mv.error("tdx_sept_remove_private_spte: HKID not assigned")
            self.zap_abort(mv)
            return
        self._block(mv, retry=False)

    def _block(self, mv: _Move, retry: bool) -> None:
        k = self
        gpa = k.u.gpas[mv[k.ZG]]
        st = mv.call(k.act("TDH.MEM.RANGE.BLOCK", tdr=k.TDR, gpa=gpa, level=0),
                     faultable=True)
        if retry:
            mv[k.WAIT] = 0  # tdx_no_vcpus_enter_stop
        if not retry and st and status_class(st) == _BUSY:
            mv[k.WAIT] = 1  # tdx_no_vcpus_enter_start: block entry, kick everyone out
            k.kick(mv)
            mv[k.ZPC] = Z_BLOCK_RETRY
            return
        if st:
            mv.error("tdx_sept_zap_private_spte: tdh_mem_range_block")
            k.zap_abort(mv)
            return
        mv[k.ZPC] = Z_TRACK

    def zap_abort(self, mv: _Move) -> None:
        """The zap failed (KVM_BUG_ON): the mirror entry is gone; the pinned folio stays
        out of the allocator (leaked); without pinning guest_memfd frees it anyway."""
        g = mv[self.ZG]
        page = mv[self.ZPAGE]
        mv[self.MIRROR[g]] = 0
        mv[self.GMEM[g]] = 0
        if not self.pinning and page:
            mv.host(self.act("page_free", page=page))
        self.zap_done(mv)

    def zap_done(self, mv: _Move) -> None:
        mv[self.ZPC] = Z_IDLE
        mv[self.ZPAGE] = 0
        mv[self.ZG] = 0
        if not mv[self.ZDONE]:  # a runtime zap (not kvm_gmem_release)
            mv[self.ZAPS] += 1
            if mv[self.ZAPS] >= self.config.zaps:
                mv[self.ZDONE] = 1

    def _mmu_program(self, add: Callable[..., None]) -> None:
        k = self
        tdr = self.TDR
        blk = k.act("TDH.MEM.RANGE.BLOCK", tdr=tdr, gpa=self.u.gpas[0], level=0)
        add(Z_BLOCK_RETRY, "tdx_sept_zap_private_spte: retry tdh_mem_range_block with no "
            "vCPU in the guest", lambda mv: k._block(mv, retry=True), blk)

        trk = k.act("TDH.MEM.TRACK", tdr=tdr)

        def track(mv: _Move, retry: bool) -> None:
            if mv[k.TDS] == TD_STATE_RUNNABLE:  # "If TD isn't finalized, ..." return
                if not k.mut("skip_track_before_remove"):
                    st = mv.call(trk, faultable=True)
                    if retry:
                        mv[k.WAIT] = 0
                    if not retry and st and status_class(st) == _BUSY:
                        mv[k.WAIT] = 1
                        k.kick(mv)
                        mv[k.ZPC] = Z_TRACK_RETRY
                        return
                    if st:
                        mv.error("tdx_track: tdh_mem_track")  # KVM_BUG_ON, then go on
                if not k.mut("skip_kick_after_track"):
                    k.kick(mv)  # the previous epoch drains
            mv[k.ZPC] = Z_REMOVE
        add(Z_TRACK, "tdx_track: tdh_mem_track(), then kick every vCPU out of the guest",
            lambda mv: track(mv, False), trk)
        add(Z_TRACK_RETRY, "tdx_track: retry tdh_mem_track() with no vCPU entering, then kick",
            lambda mv: track(mv, True), trk)

        rem = k.act("TDH.MEM.PAGE.REMOVE", tdr=tdr, gpa=self.u.gpas[0], level=0)

        def remove(mv: _Move, retry: bool) -> None:
            gpa = k.u.gpas[mv[k.ZG]]
            st = mv.call(k.act("TDH.MEM.PAGE.REMOVE", tdr=tdr, gpa=gpa, level=0),
                         faultable=True)
            if retry:
                mv[k.WAIT] = 0
            if not retry and st and status_class(st) == _BUSY:
                mv[k.WAIT] = 1
                k.kick(mv)
                mv[k.ZPC] = Z_REMOVE_RETRY
                return
            if st:
                mv.error("tdx_sept_drop_private_spte: tdh_mem_page_remove")
                k.zap_abort(mv)
                return
            mv[k.ZPC] = Z_DROP
        add(Z_REMOVE, "tdx_sept_drop_private_spte: tdh_mem_page_remove()",
            lambda mv: remove(mv, False), rem)
        add(Z_REMOVE_RETRY, "tdx_sept_drop_private_spte: retry tdh_mem_page_remove() with no "
            "vCPU in the guest", lambda mv: remove(mv, True), rem)

        clear_first = self.mut("clear_before_wbinvd")  # moves tdx_clear_page() up a line

        def drop(mv: _Move) -> None:
            page, g = mv[k.ZPAGE], mv[k.ZG]
            clear = k.act("clear_page", page=page)
            if clear_first:
                mv.host(clear)
            if not k.mut("skip_wbinvd_after_remove"):
                a = k.act("TDH.PHYMEM.PAGE.WBINVD", page=page, keyid=mv[k.HK])
                if mv.call(a):
                    mv.error("tdx_sept_drop_private_spte: tdh_phymem_page_wbinvd_hkid")
                    k.zap_abort(mv)  # return without clearing: the page leaks
                    return
            if not clear_first:
                mv.host(clear)  # tdx_clear_page (tdx_quirk_reset_paddr)
            mv.host(k.act("page_free", page=page))  # unpin; guest_memfd frees the folio
            mv[k.MIRROR[g]] = 0
            mv[k.GMEM[g]] = 0
            k.zap_done(mv)
        add(Z_DROP, "tdx_sept_drop_private_spte: tdh_phymem_page_wbinvd_hkid(), "
            "tdx_clear_page(), the folio is freed", drop, None)

    def _zap_thread(self, add: Callable[..., None]) -> None:
        k = self
        for g, gpa in enumerate(self.u.gpas):
            def punch(mv: _Move, g: int = g) -> None:
                if not mv[k.MIRROR[g]]:
                    raise _Disabled
                k.zap_start(mv, g)
            blk = k.act("TDH.MEM.RANGE.BLOCK", tdr=k.TDR, gpa=gpa, level=0)
            add(f"fallocate(PUNCH_HOLE, gpa 0x{gpa:x}) -> tdx_sept_remove_private_spte: "
                "tdh_mem_range_block()", punch, blk)

        def stop(mv: _Move) -> None:
            mv[k.ZDONE] = 1
        add("no more private-memory conversions", stop, None)

    # ------------------------------------------------------------------ Program interface
    def initial(self) -> State:
        h = [0] * len(self.host_cells)
        h[self.ZDONE] = 1
        return self.engine.initial() + tuple(h)

    def _settle(self, mv: _Move) -> None:
        """Advance the vm thread over steps KVM skips here (a jump, not a transition)."""
        k = self
        for _ in range(len(self.ops) + 1):
            op = self.ops[mv[k.VMPC]]
            if op.skip is None:
                break
            target = op.skip(mv)
            if target is None:
                break
            mv[k.VMPC] = mv[k.VMPC] + 1 if target == "" else k.pc_of[target]

    def _run(self, s: State, eid: int, record: bool = False) -> tuple[
            int | None, State, list[Violation], _Move] | None:
        d = self._defs[eid]
        h = list(s[self.n:])
        mv = _Move(self, s[: self.n], h, d.fault, d.tag, record)
        if d.thread == 0:
            mv.pc = d.slot
            h[self.VMPC] = d.slot + 1  # by default the vm thread goes on to its next step
        try:
            d.fn(mv)
        except _Disabled:
            return None
        self._settle(mv)
        if d.fault is not None and mv.m == s[: self.n] and not mv.viol and all(
                x == y for i, (x, y) in enumerate(zip(mv.h, s[self.n:], strict=True))
                if i != self.ENV):
            return None  # a fault KVM absorbs with no trace (VP.ENTER's BUSY): a self-loop
        return mv.status, mv.m + tuple(mv.h), mv.viol, mv

    def _enabled_eids(self, h: Sequence[int]) -> Iterator[int]:
        yield from self._slots.get((0, h[self.VMPC]), ())
        for v in range(self.nvp):
            if h[self.VT[v]] == V_RUN:
                yield from self._slots.get((1 + v, V_RUN), ())
        mmu = 1 + self.nvp
        if h[self.ZPC]:
            yield from self._slots.get((mmu, h[self.ZPC]), ())
        elif not h[self.ZDONE]:
            yield from self._slots.get((mmu + 1, 0), ())

    def successors(self, s: State) -> Iterator[tuple[int, int | None, State, list[Violation]]]:
        for eid in self._enabled_eids(s[self.n:]):
            r = self._run(s, eid)
            if r is None:
                continue
            status, n, viol, _ = r
            if n == s and not viol:
                self.self_loops += 1
                continue
            yield eid, status, n, viol

    def apply_edge(self, s: State, eid: int) -> tuple[int, int | None, State,
                                                        list[Violation]] | None:
        if eid not in set(self._enabled_eids(s[self.n:])):
            return None
        r = self._run(s, eid)
        if r is None:
            return None
        return eid, r[0], r[1], r[2]

    def calls_of(self, s: State, eid: int) -> list[str]:
        """The wrapper calls (with statuses) edge ``eid`` makes from state ``s``."""
        r = self._run(s, eid, record=True)
        return [] if r is None else list(r[3].calls or [])

    def actions_of(self, s: State, eid: int) -> list[tuple[Action, int | None, int | None,
                                                             State]]:
        """The model actions edge ``eid`` runs from state ``s``: (action, fault status,
        status, model state before)."""
        r = self._run(s, eid, record=True)
        return [] if r is None else list(r[3].acts)

    def bounds(self) -> list[int]:
        lay = self.lay
        model = [lay.value_bound(lay.field_of(i)) for i in range(lay.size)]
        host = [b for _, b in self.host_cells]
        host[self.VMPC] = len(self.ops) - 1
        return model + host

    def counter_cells(self) -> list[int]:
        return counter_cells(self.lay)

    # ------------------------------------------------------------------ terminal states
    def terminal(self, s: State) -> bool:
        h = s[self.n:]
        return (self.ops[h[self.VMPC]].name == "end" and h[self.ZPC] == Z_IDLE
                and all(h[t] != V_RUN for t in self.VT))

    def held_at_end(self, s: State) -> tuple[list[str], list[int]]:
        """Pages still allocated to the TDX code or owned by the module, HKIDs not back in
        the pool."""
        lay, u = self.lay, self.u
        pages = [u.page_name(p) for p in range(1, u.n_pages)
                 if s[lay.flat("host", (p,))] != HostPage.KERNEL
                 or s[lay.flat("pt", (p,))] != PageType.PT_NDA]
        hkids = [h for h in range(1, u.platform.hkids) if s[lay.flat("host_hkid", (h,))]]
        return pages, hkids

    def errors_of(self, s: State) -> list[str]:
        mask = s[self.n + self.ERRORS]
        return [site for i, site in enumerate(ERROR_SITES) if mask >> i & 1]

    def state_violations(self, s: State) -> list[Violation]:
        out = self.engine.state_violations(s[: self.n])  # with ablations, state-encoding too
        if self.terminal(s) and not s[self.n + self.ENV]:
            pages, hkids = self.held_at_end(s)
            if pages or hkids:
                errs = self.errors_of(s)
                why = f" (KVM error path: {'; '.join(errs)})" if errs else ""
                out.append(Violation(
                    "no-leak", "kvm_destroy_vm finished with no fault injected, yet "
                    + ", ".join([*(f"page {p}" for p in pages), *(f"HKID {h}" for h in hkids)])
                    + " is still held" + why, 0))
        return out

    def stuck(self, s: State) -> str | None:
        if self.terminal(s):
            return None
        h = s[self.n:]
        return (f"no thread can move: vm at {self.ops[h[self.VMPC]].name!r}, zap_pc "
                f"{h[self.ZPC]}, vCPU threads {[h[t] for t in self.VT]}")

    # ------------------------------------------------------------------ goals
    def goal_ids(self) -> list[str]:
        """``leak[site]``: a terminal state that leaks after KVM's error at ``site`` on a
        path with an environment event; ``error[site]``: KVM's error path ``site`` taken."""
        return ([f"leak[{s}]" for s in ERROR_SITES if s in LEAK_SITES]
                + ["leak[no KVM error]"]
                + [f"error[{s}]" for s in ERROR_SITES])

    def goals(self, s: State) -> list[str]:
        out = [f"error[{site}]" for site in self.errors_of(s)]
        if self.terminal(s) and s[self.n + self.ENV]:
            pages, hkids = self.held_at_end(s)
            if pages or hkids:
                site = s[self.n + self.LEAK]
                out.append(f"leak[{ERROR_SITES[site - 1]}]" if site else "leak[no KVM error]")
        return out

    def label(self, eid: int) -> str:
        e = self.edges[eid]
        return f"{e.label}  [{self.names[e.thread]}]"


_WRAPPER = {
    "TDH.MNG.CREATE": "tdh_mng_create", "TDH.MNG.KEY.CONFIG": "tdh_mng_key_config",
    "TDH.MNG.ADDCX": "tdh_mng_addcx", "TDH.MNG.INIT": "tdh_mng_init",
    "TDH.MNG.RD": "tdh_mng_rd", "TDH.VP.CREATE": "tdh_vp_create",
    "TDH.VP.ADDCX": "tdh_vp_addcx", "TDH.VP.INIT": "tdh_vp_init", "TDH.VP.WR": "tdh_vp_wr",
    "TDH.VP.ENTER": "tdh_vp_enter", "TDH.VP.FLUSH": "tdh_vp_flush",
    "TDH.MNG.VPFLUSHDONE": "tdh_mng_vpflushdone", "TDH.PHYMEM.CACHE.WB": "tdh_phymem_cache_wb",
    "TDH.MNG.KEY.FREEID": "tdh_mng_key_freeid",
    "TDH.PHYMEM.PAGE.RECLAIM": "tdh_phymem_page_reclaim",
    "TDH.MEM.SEPT.ADD": "tdh_mem_sept_add", "TDH.MEM.PAGE.ADD": "tdh_mem_page_add",
    "TDH.MEM.PAGE.AUG": "tdh_mem_page_aug", "TDH.MEM.RANGE.BLOCK": "tdh_mem_range_block",
    "TDH.MEM.TRACK": "tdh_mem_track", "TDH.MEM.PAGE.REMOVE": "tdh_mem_page_remove",
    "TDH.MR.EXTEND": "tdh_mr_extend", "TDH.MR.FINALIZE": "tdh_mr_finalize",
    "TDG.MEM.PAGE.ACCEPT": "guest_accept",
}


# --------------------------------------------------------------------------- running it


@dataclass
class KvmRun:
    """The result of exploring the kvm host: data for the reporters."""

    config: KvmConfig
    prog: KvmHost
    result: Any  # ExploreResult
    faults: bool
    violations: list[dict[str, Any]] = field(default_factory=list)
    leaks: list[dict[str, Any]] = field(default_factory=list)
    errors_reached: dict[str, int | None] = field(default_factory=dict)
    witnesses: dict[str, int | None] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return str(self.result.verdict)

    @property
    def witnesses_missing(self) -> list[str]:
        return [w for w, n in self.witnesses.items() if n is None]


def trace_of(prog: KvmHost, cx: Any) -> list[str]:
    """A counterexample's steps: what KVM did (the kernel function), its thread, and the
    wrapper calls it made with the statuses they returned."""
    out = []
    for (eid, _status), s in zip(cx.path, cx.states, strict=False):
        calls = prog.calls_of(s, eid)
        fault = prog.edges[eid].fault
        head = prog.label(eid) + (f" [fault {fault}]" if fault else "")
        out.append(head + (": " + "; ".join(calls) if calls else ""))
    return out


def run_kvm(config: str | KvmConfig = "tiny", *, faults: bool = False,
            mutant: str | None = None, ablate: Sequence[str] = (), pinning: bool = True,
            limits: Any = None, progress: Callable[[dict[str, float]], None] | None = None,
            preempt_init: bool = False) -> KvmRun:
    """``tdxcheck check --host kvm``: explore every interleaving of KVM's threads (and, with
    ``faults``, every module fault the environment can cause); every invariant is checked.
    Leaks on paths with an environment event are collected as data (``leaks``), one
    shortest path per KVM error site that chose to leak.  ``preempt_init`` lets the
    KVM_TDX_INIT_VCPU thread be preempted and resume on another CPU between TDH.VP.INIT and
    ``tdx->state = VCPU_TD_STATE_INITIALIZED`` (see ``KvmHost``)."""
    from tdxcheck.properties.witnesses import WITNESSES

    from .check import witness_fn
    from .explore import Limits, explore

    cfg = kvm_config(config) if isinstance(config, str) else config
    prog = KvmHost(cfg, faults=faults, ablate=ablate, mutant=mutant, pinning=pinning,
                   preempt_init=preempt_init)
    wids = [w.id for w in WITNESSES if w.possible(prog.u, faults)]
    model_w = witness_fn(prog, wids) if wids else (lambda s: [])

    def goals(s: State) -> list[str]:
        return [*model_w(s), *prog.goals(s)]

    res = explore(prog, limits or Limits(), stop_at_first=False, progress=progress,
                  witnesses=goals, witness_ids=[*wids, *prog.goal_ids()])
    run = KvmRun(cfg, prog, res, faults)
    for cx in res.violations:
        run.violations.append({"invariant": cx.invariant, "message": cx.message,
                               "length": cx.length, "trace": trace_of(prog, cx)})
    for gid, wx in res.witnesses.items():
        if gid.startswith("error["):
            run.errors_reached[gid[6:-1]] = wx.length if wx else None
        elif gid.startswith("leak["):
            if wx is None:
                continue
            pages, hkids = prog.held_at_end(wx.states[-1])
            run.leaks.append({"site": gid[5:-1], "length": wx.length, "pages": pages,
                              "hkids": hkids, "errors": prog.errors_of(wx.states[-1]),
                              "trace": trace_of(prog, wx)})
        else:
            run.witnesses[gid] = wx.length if wx else None
    run.leaks.sort(key=lambda d: (d["length"], d["site"]))
    return run


def kvm_text(run: KvmRun, traces: bool = True) -> str:
    """The verdict, the violations with their traces, and the leaks KVM chose, as text."""
    r = run.result
    out = [f"tdxcheck check: host kvm, config {run.config.describe()}"
           + (", module faults on" if run.faults else "")
           + (", INIT_VCPU preemption window on" if run.prog.preempt_init else "")]
    mut = run.prog.mutant
    if mut:
        out.append(f"mutant: {mut}")
    out.append(f"verdict: {r.verdict}" + (f" ({r.reason})" if r.reason else ""))
    out.append(f"states: {r.states:,}, transitions: {r.transitions:,}, depth: {r.depth}, "
               f"{r.seconds:.2f}s")
    for v in run.violations:
        out.append("")
        out.append(f"[{v['invariant']}] violated after {v['length']} step(s): {v['message']}")
        if traces:
            out += [f"  {i}. {step}" for i, step in enumerate(v["trace"], start=1)]
    if run.leaks:
        out.append("")
        out.append(f"leaks on error paths (KVM's choice, not violations): {len(run.leaks)}")
        for lk in run.leaks:
            held = ", ".join([*lk["pages"], *(f"HKID {h}" for h in lk["hkids"])])
            out.append(f"- after {lk['site']}: {held} (shortest path {lk['length']} steps)")
            if traces:
                out += [f"    {i}. {step}" for i, step in enumerate(lk["trace"], start=1)]
    reached = [s for s, n in run.errors_reached.items() if n is not None]
    out.append("")
    out.append(f"KVM error paths reached: {len(reached)}/{len(run.errors_reached)}"
               + (": " + "; ".join(reached) if reached else ""))
    if run.witnesses:
        got = [w for w, n in run.witnesses.items() if n is not None]
        miss = run.witnesses_missing
        out.append(f"witnesses reached: {len(got)}/{len(run.witnesses)}"
                   + (f"; NOT reached: {', '.join(miss)}" if miss else ""))
    return "\n".join(out)


def kvm_json(run: KvmRun) -> dict[str, Any]:
    r = run.result
    return {
        "host": "kvm",
        "config": run.config.name,
        "faults": run.faults,
        "mutant": run.prog.mutant,
        "preempt_init": run.prog.preempt_init,
        "verdict": r.verdict,
        "reason": r.reason or None,
        "states": r.states,
        "transitions": r.transitions,
        "depth": r.depth,
        "seconds": round(r.seconds, 3),
        "violations": run.violations,
        "leaks": run.leaks,
        "errors_reached": run.errors_reached,
        "witnesses": [{"id": w, "reached": n is not None, "length": n}
                      for w, n in run.witnesses.items()],
    }


# --------------------------------------------------------------------------- trace files


def kvm_tdx(prog: KvmHost, cx: Any, title: str = "") -> str:
    """A counterexample as a replayable scenario (scenario-format.md): every model action of
    every step, typed wrappers with the status each returned (``-> STATUS``) and the fault
    injected (``fault=``); a wrapper KVM called without its CLFLUSH is written in the untyped
    form.  A ``no-leak`` trace ends with ``check_no_leak``."""
    from .traces import _Namer, config_line

    u = prog.u
    namer = _Namer(u)
    lines = [f"# {title or 'tdxcheck counterexample, host kvm'}",
             f"# counterexample to [{cx.invariant}]: {cx.message}",
             f"# {cx.length} KVM step(s) (breadth-first: shortest), config "
             f"{prog.config.name}" + (f", mutant {prog.mutant}" if prog.mutant else ""),
             config_line(u.platform)]
    if prog.engine.ablate:
        lines.insert(3, "# found with module checks removed; reproduce: tdxcheck replay "
                     "THIS_FILE" + "".join(f" --ablate {a}" for a in sorted(prog.engine.ablate)))
    for (eid, _status), s in zip(cx.path, cx.states, strict=False):
        lines.append(f"# {prog.label(eid)}")
        for a, fault, status, before in prog.actions_of(s, eid):
            lines.append(_scenario_line(prog, namer, a, fault, status, before))
    if cx.invariant == "no-leak":
        lines.append("check_no_leak")
    return "\n".join(lines) + "\n"


def _scenario_line(prog: KvmHost, namer: Any, a: Action, fault: int | None,
                   status: int | None, before: State) -> str:
    u = prog.u
    o = a.kwargs
    if a.kind in ("hkid_alloc", "hkid_free"):
        return f"{a.kind} hkid={o['hkid']}"
    if a.kind in ("page_alloc", "page_free", "clflush", "clear_page"):
        return f"{a.kind} page={u.page_name(o['page'])}"
    ldef = LEAVES.get(a.kind)
    if ldef is not None and ldef.hands and not a.clflush and ldef.family != "guest":
        text = raw_seamcall(a, u.page_name)  # no CLFLUSH: the typed wrapper would flush
    else:
        text = namer.step(a, before, prog.lay)
    if fault is not None:
        text += f" fault={status_name(fault)}"
    if status is not None:
        text += f" -> {status_name(status)}"
    return text
