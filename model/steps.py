"""The scenario steps a host program is written in: names, operands, and what each binds.

This is the host-facing API of ``../shared/scenario-format.md`` §2 as data: the SEAMCALL
wrappers named as the Linux wrappers are (LH ``arch/x86/virt/vmx/tdx/tdx.c``), the untyped
``seamcall`` form, and the host and guest actions that are not SEAMCALLs.  The parser, the
model's action builder and the concrete executor all read this table; no step name or
operand list is written anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    """What an operand names."""

    TD = "td"  # a struct tdx_td, named on first use
    VP = "vp"  # a struct tdx_vp, named on first use
    PAGE = "page"  # a physical 4 KiB page, named on first use
    PAGES = "pages"  # a comma list of pages (page_alloc / page_free)
    HKID = "hkid"  # a private KeyID, 1..hkids-1
    GPA = "gpa"  # a guest physical address, hex or decimal, 4 KiB aligned
    LEVEL = "level"  # an S-EPT level (0 = 4K leaf)
    CPU = "cpu"  # the logical CPU that executes the step
    RESUME = "resume"  # 0 start, 1 resume (TDH.PHYMEM.CACHE.WB)
    REASON = "reason"  # td_exit reason
    RAW = "raw"  # seamcall register: a page name or an integer


@dataclass(frozen=True)
class StepSig:
    """One step: its name, operands in order, and the module leaf it calls (if any).

    ``binds`` names the host-side binding the wrapper makes (``td.tdr = page``); ``hands``
    names the operands that are pages handed to the module (the wrapper CLFLUSHes them first
    when ``wrapper_clflush=1``, as ``tdx_clflush_page`` does in LH ``tdx.c``).
    """

    name: str
    operands: tuple[Kind, ...]
    leaf: str | None = None  # spec name of the SEAMCALL, None for host/guest actions
    binds: str = ""
    hands: tuple[str, ...] = ()
    optional: tuple[Kind, ...] = (Kind.CPU,)  # operands with a default

    @property
    def is_seamcall(self) -> bool:
        return self.leaf is not None


_K = Kind

#: every step of scenario-format.md §2, in the contract's order
STEPS: tuple[StepSig, ...] = (
    StepSig("tdh_mng_create", (_K.TD, _K.PAGE, _K.HKID), "TDH.MNG.CREATE", "td.tdr = page", ("page",)),
    StepSig("tdh_mng_key_config", (_K.TD, _K.CPU), "TDH.MNG.KEY.CONFIG"),
    StepSig("tdh_mng_addcx", (_K.TD, _K.PAGE), "TDH.MNG.ADDCX", "td.tdcs += page", ("page",)),
    StepSig("tdh_mng_init", (_K.TD,), "TDH.MNG.INIT"),
    StepSig("tdh_mng_rd", (_K.TD,), "TDH.MNG.RD"),
    StepSig("tdh_mng_wr", (_K.TD,), "TDH.MNG.WR"),
    StepSig("tdh_vp_create", (_K.TD, _K.VP, _K.PAGE), "TDH.VP.CREATE", "vp.tdvpr = page", ("page",)),
    StepSig("tdh_vp_addcx", (_K.VP, _K.PAGE), "TDH.VP.ADDCX", "vp.tdcx += page", ("page",)),
    StepSig("tdh_vp_init", (_K.VP, _K.CPU), "TDH.VP.INIT"),
    StepSig("tdh_vp_rd", (_K.VP, _K.CPU), "TDH.VP.RD"),
    StepSig("tdh_vp_wr", (_K.VP, _K.CPU), "TDH.VP.WR"),
    StepSig("tdh_vp_enter", (_K.VP, _K.CPU), "TDH.VP.ENTER"),
    StepSig("tdh_vp_flush", (_K.VP, _K.CPU), "TDH.VP.FLUSH"),
    StepSig("tdh_mng_vpflushdone", (_K.TD,), "TDH.MNG.VPFLUSHDONE"),
    StepSig("tdh_phymem_cache_wb", (_K.CPU, _K.RESUME), "TDH.PHYMEM.CACHE.WB"),
    StepSig("tdh_mng_key_freeid", (_K.TD,), "TDH.MNG.KEY.FREEID"),
    StepSig("tdh_phymem_page_reclaim", (_K.PAGE,), "TDH.PHYMEM.PAGE.RECLAIM"),
    StepSig("tdh_phymem_page_wbinvd_tdr", (_K.TD,), "TDH.PHYMEM.PAGE.WBINVD"),
    StepSig("tdh_phymem_page_wbinvd_hkid", (_K.HKID, _K.PAGE), "TDH.PHYMEM.PAGE.WBINVD"),
    StepSig("tdh_mem_sept_add", (_K.TD, _K.GPA, _K.LEVEL, _K.PAGE), "TDH.MEM.SEPT.ADD", "", ("page",)),
    StepSig("tdh_mem_page_add", (_K.TD, _K.GPA, _K.PAGE), "TDH.MEM.PAGE.ADD", "", ("page",)),
    StepSig("tdh_mem_page_aug", (_K.TD, _K.GPA, _K.PAGE), "TDH.MEM.PAGE.AUG", "", ("page",)),
    StepSig("tdh_mem_range_block", (_K.TD, _K.GPA, _K.LEVEL), "TDH.MEM.RANGE.BLOCK"),
    StepSig("tdh_mem_track", (_K.TD,), "TDH.MEM.TRACK"),
    StepSig("tdh_mem_page_remove", (_K.TD, _K.GPA, _K.LEVEL), "TDH.MEM.PAGE.REMOVE"),
    StepSig("tdh_mem_range_unblock", (_K.TD, _K.GPA, _K.LEVEL), "TDH.MEM.RANGE.UNBLOCK"),
    StepSig("tdh_mem_sept_remove", (_K.TD, _K.GPA, _K.LEVEL), "TDH.MEM.SEPT.REMOVE"),
    StepSig("tdh_mr_extend", (_K.TD, _K.GPA), "TDH.MR.EXTEND"),
    StepSig("tdh_mr_finalize", (_K.TD,), "TDH.MR.FINALIZE"),
    # host and guest actions that are not SEAMCALLs
    StepSig("hkid_alloc", (_K.HKID,), optional=()),
    StepSig("hkid_free", (_K.HKID,), optional=()),
    StepSig("page_alloc", (_K.PAGES,), optional=()),
    StepSig("page_free", (_K.PAGES,), optional=()),
    StepSig("host_write", (_K.PAGE, _K.CPU)),
    StepSig("clflush", (_K.PAGE,), optional=()),
    StepSig("clear_page", (_K.PAGE,), optional=()),
    StepSig("td_exit", (_K.VP, _K.REASON), optional=(_K.REASON,)),
    StepSig("guest_accept", (_K.VP, _K.GPA), optional=()),
    StepSig("check_no_leak", (), optional=()),
)

STEP_BY_NAME: dict[str, StepSig] = {s.name: s for s in STEPS}

#: the untyped form: ``seamcall LEAF rcx=... rdx=... r8=... cpu=N``
SEAMCALL_REGISTERS: tuple[str, ...] = ("rcx", "rdx", "r8")

def hidden_object(rcx: str | int) -> str:
    """The name of the struct a raw ``seamcall TDH.MNG.CREATE`` / ``TDH.VP.CREATE`` makes for
    its RCX page: ``@P`` for page ``P``, ``@0`` for the NULL page (RCX 0 or absent).  ``@``
    cannot start a user's name and a page name cannot be ``0``: no clash with anything."""
    return f"@{rcx}"


#: td_exit reasons (scenario-format.md §2) and the TD-exit status each stands for
#: (tdx-reference.md §6.8, td_exit.c)
TD_EXIT_REASONS: tuple[str, ...] = ("normal", "vcpu_fatal", "td_fatal")
