"""State enumerations with the TDX module's own values (tdx_1.5, tdx-reference.md §2)."""

from __future__ import annotations

from enum import IntEnum


class PageType(IntEnum):
    """PAMT page type, ``src/common/memory_handlers/pamt_manager.h`` ``page_type_t``."""

    PT_NDA = 0
    PT_RSVD = 1
    PT_REG = 3
    PT_TDR = 4
    PT_TDCX = 5  # TDCS pages and TDVPS extension pages alike (M15 has no PT_TDVPX)
    PT_TDVPR = 6
    PT_EPT = 8


class TdLifecycle(IntEnum):
    """TDR lifecycle, ``src/common/data_structures/td_control_structures.h``."""

    TD_HKID_ASSIGNED = 0
    TD_KEYS_CONFIGURED = 1
    TD_BLOCKED = 2
    TD_TEARDOWN = 3


class OpState(IntEnum):
    """TDCS op state, ``include/auto_gen/op_state_lookup.h`` ``op_state_e``."""

    OP_STATE_UNINITIALIZED = 0
    OP_STATE_INITIALIZED = 1
    OP_STATE_RUNNABLE = 2
    OP_STATE_LIVE_EXPORT = 3
    OP_STATE_PAUSED_EXPORT = 4
    OP_STATE_POST_EXPORT = 5
    OP_STATE_MEMORY_IMPORT = 6
    OP_STATE_STATE_IMPORT = 7
    OP_STATE_POST_IMPORT = 8
    OP_STATE_LIVE_IMPORT = 9
    OP_STATE_FAILED_IMPORT = 10


class KotState(IntEnum):
    """KOT entry state, ``src/common/data_structures/tdx_global_data.h``."""

    KOT_STATE_HKID_FREE = 0
    KOT_STATE_HKID_ASSIGNED = 1
    KOT_STATE_HKID_FLUSHED = 2
    KOT_STATE_HKID_RESERVED = 3


class VcpuState(IntEnum):
    """TDVPS state, ``src/common/data_structures/tdx_tdvps.h``."""

    VCPU_UNINITIALIZED = 0x0
    VCPU_READY = 0x2
    VCPU_ACTIVE = 0x4
    VCPU_DISABLED = 0x8
    VCPU_IMPORT = 0x10


class SeptState(IntEnum):
    """S-EPT entry state as the column index of ``include/auto_gen/sept_state_lookup.c``.

    Only the states a non-migrating host reaches are listed (tdx-reference.md §2.7, §7.4).
    """

    SEPT_FREE = 0
    SEPT_NL_MAPPED = 2
    SEPT_NL_BLOCKED = 3
    SEPT_MAPPED = 4
    SEPT_BLOCKED = 5
    SEPT_PENDING = 10
    SEPT_PENDING_BLOCKED = 11


class HostPage(IntEnum):
    """Kernel allocator state of a page (host side; not module state)."""

    KERNEL = 0  # free in, or used by, the kernel allocator
    TDX = 1  # handed to the TDX code by page_alloc


#: S-EPT states that are leaves (PS bit set), any-blocked, and need TLB tracking
#: (``sept_state_lookup.c`` flags, tdx-reference.md §2.7)
SEPT_LEAF = frozenset(
    {SeptState.SEPT_MAPPED, SeptState.SEPT_BLOCKED, SeptState.SEPT_PENDING, SeptState.SEPT_PENDING_BLOCKED}
)
SEPT_ANY_BLOCKED = frozenset(
    {SeptState.SEPT_NL_BLOCKED, SeptState.SEPT_BLOCKED, SeptState.SEPT_PENDING_BLOCKED}
)
#: op states whose ``tlb_tracking_required`` flag is 1 (``op_state_lookup.c``)
OP_TLB_TRACKING = frozenset(
    {OpState.OP_STATE_RUNNABLE, OpState.OP_STATE_LIVE_EXPORT, OpState.OP_STATE_LIVE_IMPORT}
)
