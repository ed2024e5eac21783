"""``KvmHost``: the kvm host as a Program for the explorer: its state cells (the model's,
then KVM's own), the threads and their edges, the scheduling of one edge (``_run``,
``_settle``, ``_enabled_eids``), fault injection (which module fault points the environment
can fire, and when: ``fault_allowed``, ``env_gate``), terminal states, leaks and goals.
The kernel paths are in ``td_init.py``, ``vcpu.py``, ``memory.py``, ``zap.py`` and
``teardown.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tdxcheck.checker.explore.bfs import Edge
from tdxcheck.checker.explore.engine import Engine, Violation
from tdxcheck.checker.explore.programs import counter_cells
from tdxcheck.model.actions import Action
from tdxcheck.model.enums import HostPage, PageType
from tdxcheck.model.rule import LEAVES, Fault
from tdxcheck.model.state import State, Universe

from .config import (
    _WRAPPER,
    ERROR_SITES,
    FIXES,
    LEAK_SITES,
    PREEMPT_MODES,
    SILENT_SITES,
    SWITCHES,
    V_DONE,
    V_RUN,
    W_AFTER,
    W_BEFORE,
    W_HEALED_AFTER,
    W_HEALED_BEFORE,
    W_NONE,
    Z_DROP,
    Z_IDLE,
    Z_TRACK,
    Z_TRACK_RETRY,
    KvmConfig,
)
from .memory import init_mem_region
from .move import _Disabled, _EdgeDef, _Move, _Op
from .td_init import finalize, init_vm
from .teardown import destroy_vm
from .vcpu import init_vcpus, vcpu_load, vcpu_thread
from .zap import mmu_thread, zap_thread

#: the outcome classes of a migration inside the KVM_TDX_INIT_VCPU window, as the kernel
#: shows them (``KvmHost.goals`` in the preemption mode)
OUTCOME_CLASSES: tuple[str, ...] = (
    "VM bugged in KVM_TDX_INIT_VCPU (tdh_vp_wr_failed)",
    "VM bugged at the vCPU's first root load (tdx_load_mmu_pgd)",
    "VM bugged at teardown (tdx_sept_free_private_spt)",
    "VM bugged elsewhere",
    "loud failure", "silent leak", "healed", "no visible effect")
#: the KVM_BUG_ON sites that name the "VM bugged" outcomes, in the order a run reaches them
_BUG_AT = (("tdx_vcpu_init: tdh_vp_wr (td_vmcs_write)", OUTCOME_CLASSES[0]),
           ("tdx_load_mmu_pgd: tdh_vp_wr (td_vmcs_write64 SHARED_EPT_POINTER)",
            OUTCOME_CLASSES[1]),
           ("tdx_sept_free_private_spt: HKID still assigned", OUTCOME_CLASSES[2]))
_WHERE = {W_BEFORE: "migrated before or between the VMCS writes",
          W_AFTER: "migrated after the VMCS writes"}
_LEAKS = ("nothing leaked", "leaks, no S-EPT page", "leaks, S-EPT pages too")
_POINT_TEXT = {"P1": "after tdh_vp_init() (mmu_lock dropped)",
               "P2": "after the first TDH.VP.WR (POSTED_INTR_NV)",
               "P3": "after the second TDH.VP.WR (POSTED_INTR_DESC_ADDR)",
               "P4": "after the third TDH.VP.WR (PIN_BASED_VM_EXEC_CONTROL), before "
                     "tdx->state = VCPU_TD_STATE_INITIALIZED"}


class KvmHost:
    """``--host kvm`` (see the package docstring).  A Program for ``explore``."""

    def __init__(self, config: KvmConfig | Universe, faults: bool = False,
                 ablate: Sequence[str] = (), mutant: str | None = None,
                 pinning: bool = True, gpas_zapped: Sequence[int] | None = None,
                 preempt: str | None = None, fix: str | None = None) -> None:
        if isinstance(config, Universe):
            raise TypeError("KvmHost takes a KvmConfig (its universe names KVM's pages)")
        if mutant is not None and mutant not in SWITCHES:
            raise ValueError(f"unknown mutation switch {mutant!r}")
        if preempt is not None and preempt not in PREEMPT_MODES:
            raise ValueError(f"unknown preemption mode {preempt!r} (have: "
                             f"{', '.join(PREEMPT_MODES)})")
        if fix is not None and fix not in FIXES:
            raise ValueError(f"unknown fix {fix!r} (have: {', '.join(FIXES)})")
        self.config = config
        self.u = config.universe()
        self.faults = faults
        self.mutant = mutant
        self.pinning = pinning
        self.preempt = preempt
        self.fix = fix
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
        if self.preempt:
            # vcpu->arch.mmu->root.hpa is valid (kvm_mmu_load ran: tdx_load_mmu_pgd's VP.WR);
            # what a migration inside the INIT_VCPU window did (W_*)
            for v in range(self.nvp):
                cells += [(f"vcpu{v}.root", 1), (f"vcpu{v}.window", W_HEALED_AFTER)]
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
        self.ROOT = [idx[f"vcpu{v}.root"] for v in range(self.nvp)] if self.preempt else []
        self.WIN = [idx[f"vcpu{v}.window"] for v in range(self.nvp)] if self.preempt else []

    # ------------------------------------------------------------------ helpers
    def mut(self, name: str) -> bool:
        """The mutation switch ``name`` is flipped (one read per switch: see SWITCHES)."""
        assert name in SWITCHES, name
        return self.mutant == name

    def fixed(self, name: str) -> bool:
        """The candidate fix ``name`` is applied (one read per fix: see FIXES)."""
        assert name in FIXES, name
        return self.fix == name

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
            self._preemption_edges(pc, op, add)
        for v in range(self.nvp):
            vcpu_thread(self, v, lambda *a, v=v: add(1 + v, V_RUN, *a))
        mmu = 1 + self.nvp
        mmu_thread(self, lambda zpc, *a: add(mmu, zpc, *a))
        zap_thread(self, lambda *a: add(mmu + 1, 0, *a))

    def _preemption_edges(self, pc: int, op: _Op, add: Callable[..., None]) -> None:
        """The preemption mode's extra edges of the ``vm`` thread at ``pc``.

        A thread that has a vCPU loaded (``vcpu_load``: the preempt notifier registered) and
        is preemptible here (CONFIG_PREEMPTION: after a SEAMCALL wrapper's
        ``preempt_enable()``, after ``write_unlock(&kvm->mmu_lock)``; never inside an
        mmu_lock write section or a ``get_cpu()`` region) may be scheduled out and resume on
        any other CPU: ``kvm_sched_in`` -> ``kvm_arch_vcpu_load`` -> ``tdx_vcpu_load`` on
        the new CPU (virt/kvm/kvm_main.c kvm_sched_in, linux-next @564aa69a).  Userspace may
        also close the VM instead of issuing the next ioctl (killed by a signal, or giving up:
        ``op.abandon``).

        Only the ``vm`` thread gets these edges: the vCPU threads already move to any CPU
        between any two of their steps (their ``vcpu_load`` edges); the zap runs with
        mmu_lock held for write (not preemptible); KVM_TDX_INIT_VM, FINALIZE and
        kvm_destroy_vm hold no vCPU, so moving them only changes which CPU issues a
        TD-scoped SEAMCALL (the per-CPU ones are IPIs to a named CPU)."""
        if not self.preempt:
            return
        v = op.loaded
        window = bool(op.point)
        if v is not None and not (window and self.fixed("init_vcpu_preempt_off")) and (
                window or self.preempt == "all"):
            where = (W_AFTER if op.point == "P4" else W_BEFORE) if window else W_NONE
            at = (f"INIT_VCPU window {op.point}, {_POINT_TEXT[op.point]}" if window
                  else f"before {op.name}")
            for c in range(self.cpus):
                def migrate(mv: _Move, v: int = v, c: int = c, where: int = where) -> None:
                    vcpu_load(self, mv, v, c, where)
                    mv.stay()
                add(0, pc, f"preempted ({at}), resumes on cpu{c}: kvm_sched_in -> "
                    f"kvm_arch_vcpu_load -> tdx_vcpu_load(vcpu{v}, cpu{c})", migrate, None)
        if op.abandon:
            def close(mv: _Move) -> None:
                mv.goto("destroy.gmem")
            add(0, pc, f"userspace closes the VM instead of {op.abandon} (e.g. killed by a "
                "signal): kvm_destroy_vm", close, None)

    # ------------------------------------------------------------------ vm thread
    def _vm_program(self) -> None:
        """The ``vm`` thread in KVM's order, one file per kernel path."""
        ops = self.ops

        def op(name: str, label: str, fn: Callable[[_Move], None],
               sample: Action | None = None,
               skip: Callable[[_Move], str | None] | None = None,
               tags: tuple[str, ...] = ("",), loaded: int | None = None, point: str = "",
               abandon: str = "") -> None:
            ops.append(_Op(name, label, fn, sample, skip, tags, loaded, point, abandon))

        init_vm(self, op)  # td_init.py: KVM_TDX_INIT_VM
        init_vcpus(self, op)  # vcpu.py: KVM_CREATE_VCPU, KVM_TDX_INIT_VCPU
        init_mem_region(self, op)  # memory.py: KVM_TDX_INIT_MEM_REGION
        finalize(self, op)  # td_init.py: KVM_TDX_FINALIZE_VM
        destroy_vm(self, op)  # teardown.py: kvm_destroy_vm

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
        for w in self.WIN:  # "healed" marks the one state where the books agree again
            if h[w] >= W_HEALED_BEFORE:
                h[w] = W_NONE
        base = tuple(h)
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
                x == y for i, (x, y) in enumerate(zip(mv.h, base, strict=True))
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
        """The engine's invariants, and at the end of a run with no environment event (no
        module fault, no guest fatal exit): ``no-leak`` (everything is given back),
        ``vm-bugged`` (no KVM_BUG_ON/TDX_BUG_ON fired: KVM's own assertions), and
        ``loud-failure`` (no other KVM error path was taken: an error returned to userspace or
        logged).  Checked at the end so that a run goes on to its teardown and shows what
        it leaks."""
        out = self.engine.state_violations(s[: self.n])  # with ablations, state-encoding too
        if self.terminal(s) and not s[self.n + self.ENV]:
            errs = self.errors_of(s)
            why = f" (KVM error path: {'; '.join(errs)})" if errs else ""
            pages, hkids = self.held_at_end(s)
            if pages or hkids:
                out.append(Violation(
                    "no-leak", "kvm_destroy_vm finished with no fault injected, yet "
                    + ", ".join([*(f"page {p}" for p in pages), *(f"HKID {h}" for h in hkids)])
                    + " is still held" + why, 0))
            if s[self.n + self.DEAD]:
                out.append(Violation(
                    "vm-bugged", "KVM_BUG_ON/TDX_BUG_ON fired on a run with no fault injected: "
                    "a WARN, the VM is bugged and every later ioctl fails with -EIO" + why, 0))
            elif set(errs) - SILENT_SITES:
                out.append(Violation(
                    "loud-failure", "KVM returned or logged an error on a run with no fault "
                    "injected" + why, 0))
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
        path with an environment event; ``error[site]``: KVM's error path ``site`` taken;
        in the preemption mode ``outcome[class; where; leak]``: what a migration inside the
        KVM_TDX_INIT_VCPU window led to on a run with no environment event."""
        out = ([f"leak[{s}]" for s in ERROR_SITES if s in LEAK_SITES]
               + ["leak[no KVM error]"]
               + [f"error[{s}]" for s in ERROR_SITES])
        if self.preempt:
            out += [f"outcome[{c}; {w}; {lk}]" for c in OUTCOME_CLASSES
                    for w in _WHERE.values() for lk in _LEAKS]
        return out

    def goals(self, s: State) -> list[str]:
        out = [f"error[{site}]" for site in self.errors_of(s)]
        h = s[self.n:]
        if self.terminal(s) and h[self.ENV]:
            pages, hkids = self.held_at_end(s)
            if pages or hkids:
                site = h[self.LEAK]
                out.append(f"leak[{ERROR_SITES[site - 1]}]" if site else "leak[no KVM error]")
        if self.WIN and not h[self.ENV]:
            out += self._outcomes(s)
        return out

    def _outcomes(self, s: State) -> list[str]:
        """The window outcome(s) ``s`` shows (preemption mode, no environment event): at the
        end of a run in which KVM's books never agreed with the module again, the kernel's
        view of it (the VM bugged, an error returned or logged, a silent leak), with what is
        leaked; "healed" in the state where they agree again (from there on the run is one
        without a desync, which the same exploration covers).  Only runs in which one
        vCPU's window stays open are classified."""
        h = s[self.n:]
        marks = [h[w] for w in self.WIN]
        out = []
        for m in marks:
            if m in (W_HEALED_BEFORE, W_HEALED_AFTER):
                where = _WHERE[W_BEFORE if m == W_HEALED_BEFORE else W_AFTER]
                out.append(f"outcome[healed; {where}; nothing leaked]")
        # a run in which two vCPUs' windows both stay open shows their joint effect: it is
        # still checked (no-leak, vm-bugged), but it is no outcome of one window
        wheres = [m for m in marks if m in (W_BEFORE, W_AFTER)]
        if len(wheres) == 1 and self.terminal(s):
            pages, hkids = self.held_at_end(s)
            errs = set(self.errors_of(s))
            cls = ("loud failure" if errs - SILENT_SITES else "silent leak"
                   if pages or hkids else "")
            if h[self.DEAD]:
                cls = next((c for site, c in _BUG_AT if site in errs), OUTCOME_CLASSES[3])
            if not cls:  # not expected: an unhealed desync leaks at teardown
                cls = "no visible effect"
            sept = {self.u.page_name(p) for p in self.SEPT.values()}
            leak = (_LEAKS[2] if sept & set(pages) else _LEAKS[1] if pages or hkids
                    else _LEAKS[0])
            out += [f"outcome[{cls}; {_WHERE[w]}; {leak}]" for w in wheres]
        return out

    def label(self, eid: int) -> str:
        e = self.edges[eid]
        return f"{e.label}  [{self.names[e.thread]}]"
