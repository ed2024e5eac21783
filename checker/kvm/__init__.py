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

The state is checked at the end of every run with no environment event for ``no-leak``,
``vm-bugged`` (no KVM_BUG_ON/TDX_BUG_ON fired: KVM's own assertions hold) and
``loud-failure`` (no other KVM error path taken).

The preemption mode (``preempt="all"``, ``check --host kvm --preempt``) models a
CONFIG_PREEMPTION kernel: a thread that has a vCPU loaded (``vcpu_load`` .. ``vcpu_put``, the
preempt notifier registered) may be preempted wherever the kernel can reschedule (after each
SEAMCALL wrapper's ``preempt_enable()``, after ``write_unlock(&kvm->mmu_lock)``; never inside
an mmu_lock write section or a ``get_cpu()`` region) and resume on another CPU, where
``kvm_sched_in`` runs ``tdx_vcpu_load``.  The vCPU threads already move between CPUs at
every step (their ``vcpu_load`` edges); the mode adds it to the ``vm`` thread's vCPU ioctls
(KVM_TDX_INIT_VCPU, KVM_TDX_INIT_MEM_REGION), models ``tdx_load_mmu_pgd``'s TDH.VP.WR at a
vCPU's first root load, and lets userspace close the VM between the build-time ioctls.  It
finds the KVM_TDX_INIT_VCPU window: between TDH.VP.INIT (which associates the vCPU with this
CPU) and ``tdx->state = VCPU_TD_STATE_INITIALIZED`` a migration makes ``tdx_flush_vp`` skip
TDH.VP.FLUSH yet move ``vcpu->cpu``, and KVM's books disagree with the module (a finding
about KVM, kvm-x86 @09c6f74e: ``reports/findings/kvm-tdx-init-vcpu-preemption.md``).  The
window's outcomes are collected as goals (``outcome[...]``); ``preempt="init_vcpu"`` keeps
only the reschedule points inside the window (a subset).  ``fix=`` applies one of the
candidate fixes (``FIXES``).

A mutant (``checker/analyses/mutants.py``) is this program with one named switch flipped;
each switch is read in exactly one place in this package (``k.mut(...)``).

Where things are: ``config.py`` (configurations, error sites, switches), ``move.py`` (one
atomic step), ``host.py`` (the Program: cells, threads, scheduling, fault injection),
``td_init.py``, ``vcpu.py``, ``memory.py``, ``zap.py``, ``teardown.py`` (one file per
kernel path, each step citing its kernel function), ``run.py`` (``run_kvm``, ``kvm_tdx``).
Imports: this package uses ``explore/`` and ``model/``; ``analyses/`` and ``output/``
use it.
"""

from __future__ import annotations

from .config import (
    ERROR_SITES,
    FIXES,
    KVM_CONFIGS,
    LEAK_SITES,
    PREEMPT_MODES,
    SWITCHES,
    KvmConfig,
    kvm_config,
)
from .host import OUTCOME_CLASSES, KvmHost
from .run import KvmRun, kvm_tdx, run_kvm, trace_of

__all__ = ["ERROR_SITES", "FIXES", "KVM_CONFIGS", "LEAK_SITES", "OUTCOME_CLASSES",
           "PREEMPT_MODES", "SWITCHES", "KvmConfig", "KvmHost", "KvmRun", "kvm_config",
           "kvm_tdx", "run_kvm", "trace_of"]
