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
    KVM_CONFIGS,
    LEAK_SITES,
    SWITCHES,
    KvmConfig,
    kvm_config,
)
from .host import KvmHost
from .run import KvmRun, kvm_tdx, run_kvm, trace_of

__all__ = ["ERROR_SITES", "KVM_CONFIGS", "LEAK_SITES", "SWITCHES", "KvmConfig", "KvmHost",
           "KvmRun", "kvm_config", "kvm_tdx", "run_kvm", "trace_of"]
