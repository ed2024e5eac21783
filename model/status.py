"""TDX module completion statuses and operand ids, with the module's values.

Source: intel/tdx-module tdx_1.5 ``include/auto_gen/tdx_error_codes_defs.h`` (status values and
``OPERAND_ID_*``), ``include/tdx_api_defs.h`` (``api_error_with_operand_id(err, id)`` returns
``err + id``).  Bit 63 = error, 62 = non-recoverable, 61 = fatal, bits 47:40 class, low 32 bits
the operand id / detail, which Linux masks off with ``TDX_SEAMCALL_STATUS_MASK`` (LK
``arch/x86/kvm/vmx/tdx_errno.h``).
"""

from __future__ import annotations

import difflib
from enum import IntEnum

TDX_SEAMCALL_STATUS_MASK = 0xFFFFFFFF00000000


class Status(IntEnum):
    """Completion status classes (detail bits zero)."""

    TDX_SUCCESS = 0x0000000000000000
    TDX_NON_RECOVERABLE_VCPU = 0x4000000100000000
    TDX_NON_RECOVERABLE_TD = 0x6000000200000000
    TDX_INTERRUPTED_RESUMABLE = 0x8000000300000000
    TDX_INTERRUPTED_RESTARTABLE = 0x8000000400000000
    TDX_OPERAND_INVALID = 0xC000010000000000
    TDX_OPERAND_ADDR_RANGE_ERROR = 0xC000010100000000
    TDX_OPERAND_BUSY = 0x8000020000000000
    TDX_PREVIOUS_TLB_EPOCH_BUSY = 0x8000020100000000
    TDX_SYS_BUSY = 0x8000020200000000
    TDX_RND_NO_ENTROPY = 0x8000020300000000
    TDX_OPERAND_BUSY_HOST_PRIORITY = 0x8000020400000000
    TDX_PAGE_METADATA_INCORRECT = 0xC000030000000000
    TDX_TD_ASSOCIATED_PAGES_EXIST = 0xC000040000000000
    TDX_SYS_NOT_READY = 0xC000050500000000
    TDX_SYS_SHUTDOWN = 0xC000050600000000
    TDX_TD_FATAL = 0xE000060400000000
    TDX_TDCS_NOT_ALLOCATED = 0xC000060600000000
    TDX_LIFECYCLE_STATE_INCORRECT = 0xC000060700000000
    TDX_OP_STATE_INCORRECT = 0xC000060800000000
    TDX_NO_VCPUS = 0xC000060900000000
    TDX_TDCX_NUM_INCORRECT = 0xC000061000000000
    TDX_VCPU_STATE_INCORRECT = 0xC000070000000000
    TDX_VCPU_ASSOCIATED = 0x8000070100000000
    TDX_VCPU_NOT_ASSOCIATED = 0x8000070200000000
    TDX_MAX_VCPUS_EXCEEDED = 0xC000070500000000
    TDX_TSC_ROLLBACK = 0xC000070600000000
    TDX_KEY_GENERATION_FAILED = 0x8000080000000000
    TDX_TD_KEYS_NOT_CONFIGURED = 0x8000081000000000
    TDX_KEY_STATE_INCORRECT = 0xC000081100000000
    TDX_KEY_CONFIGURED = 0x0000081500000000
    TDX_WBCACHE_NOT_COMPLETE = 0x8000081700000000
    TDX_HKID_NOT_FREE = 0xC000082000000000
    TDX_NO_HKID_READY_TO_WBCACHE = 0x0000082100000000
    TDX_WBCACHE_RESUME_ERROR = 0xC000082300000000
    TDX_FLUSHVP_NOT_DONE = 0x8000082400000000
    TDX_LIMIT_CPUID_MAXVAL_SET = 0xC000090100000000
    TDX_INCONSISTENT_MSR = 0xC000092000000000
    TDX_INCORRECT_MSR_VALUE = 0xC000092100000000
    TDX_EPT_WALK_FAILED = 0xC0000B0000000000
    TDX_EPT_ENTRY_FREE = 0xC0000B0100000000
    TDX_EPT_ENTRY_NOT_FREE = 0xC0000B0200000000
    TDX_EPT_ENTRY_NOT_PRESENT = 0xC0000B0300000000
    TDX_GPA_RANGE_NOT_BLOCKED = 0xC0000B0600000000
    TDX_GPA_RANGE_ALREADY_BLOCKED = 0x00000B0700000000
    TDX_TLB_TRACKING_NOT_DONE = 0xC0000B0800000000
    TDX_EPT_INVALID_PROMOTE_CONDITIONS = 0xC0000B0900000000
    TDX_EPT_ENTRY_STATE_INCORRECT = 0xC0000B0D00000000
    TDX_EPT_PAGE_NOT_FREE = 0xC0000B0E00000000
    TDX_METADATA_FIELD_NOT_READABLE = 0xC0000C0200000000
    TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT = 0x00000C0B00000000


class OperandId(IntEnum):
    """``OPERAND_ID_*`` values added to a status (``tdx_error_codes_defs.h``)."""

    RAX = 0
    RCX = 1
    RDX = 2
    R8 = 8
    R9 = 9
    R10 = 10
    R11 = 11
    TDR = 128
    TDCX = 129
    TDVPR = 130
    TDCS = 144
    TDVPS = 145
    SEPT_TREE = 146
    SEPT_ENTRY = 147
    TD_EPOCH = 169
    OP_STATE = 172
    KOT = 186
    KET = 187
    WBCACHE = 188


#: statuses a leaf can return because of something outside the host program
#: (scenario-format.md §5); only these are accepted in ``fault=``
NONDETERMINISTIC = (
    Status.TDX_RND_NO_ENTROPY,
    Status.TDX_KEY_GENERATION_FAILED,
    Status.TDX_INTERRUPTED_RESUMABLE,
    Status.TDX_OPERAND_BUSY,
)


def is_error(code: int) -> bool:
    """Bit 63 set: the leaf failed (``TDX_KEY_CONFIGURED`` and friends have it clear)."""
    return bool(code >> 63)


def status_class(code: int) -> int:
    """The status without its operand id / detail, as Linux masks it."""
    return code & TDX_SEAMCALL_STATUS_MASK


def status_name(code: int) -> str:
    """``TDX_OPERAND_BUSY|KOT`` for 0x80000200000000BA; unknown values print in hex."""
    try:
        base = Status(status_class(code)).name
    except ValueError:
        return f"0x{code:016X}"
    detail = code & 0xFFFFFFFF
    if not detail:
        return base
    try:
        return f"{base}|{OperandId(detail).name}"
    except ValueError:
        return f"{base}|0x{detail:X}"


class StatusSyntaxError(ValueError):
    """A status name that is not the module's; the message carries a suggestion."""


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def status_hex(code: int) -> str:
    """The 64-bit value as ``0x`` and 16 hex digits (what dmesg and the module print)."""
    return f"0x{code:016X}"


def parse_status(text: str) -> tuple[int, bool]:
    """Parse ``NAME``, ``NAME|OPID`` or a 64-bit value as ``0x...`` (pasted from dmesg: it
    has an operand id when its low 32 bits are not 0); return (code, has_operand_id)."""
    if text[:2].lower() == "0x":
        try:
            code = int(text, 16)
        except ValueError:
            raise StatusSyntaxError(f"bad status value {text!r} (write 0x and hex digits)"
                                    ) from None
        if not 0 <= code < 1 << 64:
            raise StatusSyntaxError(f"status value {text} does not fit in 64 bits")
        try:
            Status(status_class(code))
        except ValueError:
            raise StatusSyntaxError(f"{text} is no status the module returns") from None
        return code, bool(code & 0xFFFFFFFF)
    name, sep, opid = text.partition("|")
    if name not in Status.__members__:
        raise StatusSyntaxError(f"unknown status {name!r}{_suggest(name, list(Status.__members__))}")
    code = int(Status[name])
    if not sep:
        return code, False
    if opid in OperandId.__members__:
        return code + int(OperandId[opid]), True
    try:
        return code + int(opid, 0), True
    except ValueError:
        raise StatusSyntaxError(
            f"unknown operand id {opid!r}{_suggest(opid, list(OperandId.__members__))}"
        ) from None


def status_matches(actual: int, expected: int, has_operand_id: bool) -> bool:
    """Without an operand id, a status matches its class whatever the detail (as Linux masks)."""
    if has_operand_id:
        return actual == expected
    return status_class(actual) == status_class(expected)
