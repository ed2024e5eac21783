"""Actions: one wrapper call, host action or guest action, with concrete operands.

An ``Action`` names what to build (a leaf of ``LEAVES`` or a host/guest action), with its
builder operands as ints and the CPU it runs on.  ``rule_of`` builds its ``Rule`` from the
one definition; ``wrapper_pre`` is the typed wrapper's own work before the SEAMCALL (the
CLFLUSH of every page it hands to the module, ``tdx_clflush_page`` in LH ``tdx.c``).

``actions_for_step`` maps a scenario step (scenario-format.md §2) to actions: typed
wrappers resolve ``td``/``vp`` to their bound pages, as the Linux wrappers read
``td->tdr_page``; the raw ``seamcall`` form maps registers to the leaf's operands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import host, mem, mng, phymem, vp  # noqa: F401  (registers every leaf in LEAVES)
from .checks import keyid_lines, lp_in_seam_root
from .expr import And, AndNot
from .rule import LEAVES, Ctx, Effect, Rule, set_
from .state import S, Universe
from .steps import STEP_BY_NAME, hidden_object

#: host and guest actions that are not SEAMCALLs: builder per step name
HOST_ACTIONS: dict[str, Callable[..., Rule]] = {
    "hkid_alloc": host.hkid_alloc,
    "hkid_free": host.hkid_free,
    "page_alloc": host.page_alloc,
    "page_free": host.page_free,
    "host_write": host.host_write,
    "clflush": host.clflush,
    "clear_page": host.clear_page,
    "td_exit": vp.td_exit,
    "check_no_leak": host.check_no_leak,
}


@dataclass(frozen=True)
class Action:
    """One atomic step of the model."""

    step: str  # the scenario step name (``tdh_mng_create``, ``page_alloc``, ``seamcall``)
    kind: str  # a leaf spec name (``TDH.MNG.CREATE``) or a host action name
    args: tuple[tuple[str, Any], ...]
    cpu: int = 0
    clflush: tuple[int, ...] = ()  # pages the wrapper CLFLUSHes before the SEAMCALL

    @property
    def is_seamcall(self) -> bool:
        return self.kind in LEAVES and LEAVES[self.kind].family != "guest"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)

    def arg(self, name: str, default: Any = None) -> Any:
        return self.kwargs.get(name, default)


def rule_of(action: Action, ctx: Ctx) -> Rule:
    """Build the action's rule from its single definition.

    A SEAMCALL is enabled only on a logical CPU that is not running a guest
    (``checks.lp_in_seam_root``): one guard for every leaf, read by every engine."""
    ctx.cpu = action.cpu
    if action.kind in LEAVES:
        rule = LEAVES[action.kind].build(ctx, **action.kwargs)
        if action.is_seamcall:
            rule = replace(rule, enabled=And(lp_in_seam_root(action.cpu, len(ctx.u.vps)),
                                             rule.enabled))
        return rule
    return HOST_ACTIONS[action.kind](ctx, **action.kwargs)


def wrapper_pre(action: Action, u: Universe) -> tuple[Effect, ...]:
    """The typed wrapper's CLFLUSH of each page it hands to the module (KeyID-0 lines)."""
    mask = keyid_lines(u.platform.packages, 0)
    return tuple(set_(S.dirty[p], AndNot(S.dirty[p], mask)) for p in action.clflush)


def describe(action: Action, u: Universe) -> str:
    """``tdh_mng_key_config(tdr=tdr0, cpu=1)`` for traces: named operands, and the CPU of
    every SEAMCALL (and of a ``host_write``), which decides where it runs."""
    parts = []
    for k, v in action.args:
        if k in ("tdr", "page", "tdvpr"):
            parts.append(f"{k}={u.page_name(v)}")
        elif k == "td":
            parts.append(f"td={u.tds[v]}")
        elif k == "vp":
            parts.append(f"vp={u.vps[v]}")
        elif k == "gpa":
            parts.append(f"gpa=0x{v:x}")
        else:
            parts.append(f"{k}={v}")
    if action.is_seamcall or action.kind == "host_write":
        parts.append(f"cpu={action.cpu}")
    name = action.step if action.step != "seamcall" else f"seamcall {action.kind}"
    return f"{name}({', '.join(parts)})"


class StepError(ValueError):
    """A step that names something the model cannot give a meaning to."""


def actions_for_step(
    u: Universe,
    name: str,
    operands: Mapping[str, Any],
    cpu: int,
    td_tdr: Mapping[str, str],
    vp_tdvpr: Mapping[str, str],
) -> list[Action]:
    """The model actions of one scenario step (page lists give one action per page)."""
    pg = u.page_index
    wrapper_clflush = bool(u.platform.wrapper_clflush)

    def tdr_of(td: str) -> int:
        return pg(td_tdr[td])

    def tdvpr_of(v: str) -> int:
        return pg(vp_tdvpr[v])

    if name == "seamcall":
        return [_raw_seamcall(u, operands, cpu)]
    sig = STEP_BY_NAME[name]
    o = operands
    if not sig.is_seamcall and name != "guest_accept":
        if name in ("page_alloc", "page_free"):
            pages = o["page"] if isinstance(o["page"], list | tuple) else [o["page"]]
            return [Action(name, name, (("page", pg(p)),), cpu) for p in pages]
        args: list[tuple[str, Any]] = []
        if "hkid" in o:
            args.append(("hkid", int(o["hkid"])))
        if "page" in o:
            args.append(("page", pg(o["page"])))
        if "vp" in o:
            args.append(("vp", u.vps.index(o["vp"])))
        if name == "td_exit":
            args.append(("reason", o.get("reason", "normal")))
        return [Action(name, name, tuple(args), cpu)]

    leaf = sig.leaf if name != "guest_accept" else "TDG.MEM.PAGE.ACCEPT"
    a: dict[str, Any]
    if name == "tdh_mng_create":
        a = {"td": u.tds.index(o["td"]), "tdr": pg(o["page"]), "hkid": int(o["hkid"])}
    elif name == "tdh_mng_addcx":
        a = {"page": pg(o["page"]), "tdr": tdr_of(o["td"])}
    elif name == "tdh_vp_create":
        a = {"vp": u.vps.index(o["vp"]), "tdvpr": pg(o["page"]), "tdr": tdr_of(o["td"])}
    elif name == "tdh_vp_addcx":
        a = {"page": pg(o["page"]), "tdvpr": tdvpr_of(o["vp"])}
    elif name == "tdh_phymem_cache_wb":
        a = {"resume": int(o["resume"])}
    elif name == "tdh_phymem_page_reclaim":
        a = {"page": pg(o["page"])}
    elif name == "tdh_phymem_page_wbinvd_tdr":
        a = {"page": tdr_of(o["td"]), "keyid": u.platform.global_keyid}
    elif name == "tdh_phymem_page_wbinvd_hkid":
        a = {"page": pg(o["page"]), "keyid": int(o["hkid"])}
    elif name == "guest_accept":
        a = {"vp": u.vps.index(o["vp"]), "gpa": int(o["gpa"])}
    elif "vp" in o:
        a = {"tdvpr": tdvpr_of(o["vp"])}
    else:
        a = {"tdr": tdr_of(o["td"])}
        if "gpa" in o:
            a["gpa"] = int(o["gpa"])
        if "level" in o:
            a["level"] = int(o["level"])
        if "page" in o:
            a["page"] = pg(o["page"])
    assert leaf is not None
    ldef = LEAVES[leaf]
    order = {k: i for i, k in enumerate(ldef.operands)}
    args_t = tuple(sorted(a.items(), key=lambda kv: order[kv[0]]))
    handed = tuple(a[h] for h in ldef.hands) if wrapper_clflush else ()
    return [Action(name, leaf, args_t, cpu, handed)]


#: builder operands that are pages (a raw register for one takes a page name or 0)
PAGE_OPERANDS = ("tdr", "page", "tdvpr")


def raw_register(leaf: str, reg: str) -> str | None:
    """What leaf ``leaf`` reads in register ``reg`` of the raw form: ``"page"`` (a physical
    page: a page name, or 0 for the NULL page), ``"int"`` (a GPA | level, an HKID, a flag:
    any 64-bit value), or None (the leaf does not read it)."""
    operand = dict(LEAVES[leaf].regs).get(reg) if leaf in LEAVES else None
    if operand is None:
        return None
    return "page" if operand in PAGE_OPERANDS else "int"


def raw_gpas(leaf: str, o: Mapping[str, Any]) -> list[int]:
    """The GPAs a raw ``seamcall`` step names (a register read as GPA | level, 0 if absent):
    the universe needs their S-EPT entries."""
    ldef = LEAVES.get(leaf)
    if ldef is None:
        return []
    return [int(o.get(reg, 0)) & ~0xFFF for reg, operand in ldef.regs if operand == "gpa"]


def _raw_seamcall(u: Universe, o: Mapping[str, Any], cpu: int) -> Action:
    """``seamcall LEAF rcx=.. rdx=.. r8=..``: registers to operands; no wrapper CLFLUSH."""
    leaf = o["leaf"]
    if leaf not in LEAVES or LEAVES[leaf].family == "guest":
        raise StepError(f"the model has no host leaf {leaf}")
    ldef = LEAVES[leaf]
    regs = dict(ldef.regs)
    a: dict[str, Any] = {}
    for reg in ("rcx", "rdx", "r8"):
        operand = regs.get(reg)
        if operand is None:
            continue
        raw = o.get(reg, 0)
        if operand in PAGE_OPERANDS:
            if isinstance(raw, str):
                a[operand] = u.page_index(raw)
            elif raw == 0:
                a[operand] = 0  # the NULL page
            else:
                raise StepError(f"{reg}={raw} is not a page this scenario names")
        elif operand == "gpa":
            if isinstance(raw, str):
                raise StepError(f"{reg}={raw} must be a GPA | level integer")
            if leaf == "TDH.MR.EXTEND":  # a plain GPA (a 256-byte chunk)
                a["gpa"] = raw
            else:  # EPT mapping information: GPA bits 51:12, level bits 2:0
                a["gpa"], a["level"] = raw & ~0xFFF, raw & 0x7
        else:
            if isinstance(raw, str):
                raise StepError(f"{reg}={raw} must be an integer for {leaf}")
            a[operand] = raw
    if leaf == "TDH.MNG.CREATE":
        a["td"] = u.tds.index(hidden_object(o.get("rcx", 0)))
    if leaf == "TDH.VP.CREATE":
        a["vp"] = u.vps.index(hidden_object(o.get("rcx", 0)))
    if leaf == "TDH.PHYMEM.PAGE.WBINVD":
        a["keyid"] = 0
    if leaf in ("TDH.MEM.PAGE.ADD", "TDH.MEM.PAGE.AUG") and not a.get("level"):
        a.pop("level", None)  # 4K: the wrapper's call, with no extra operand
    missing = [k for k in ldef.operands if k not in a]
    if missing:
        raise StepError(f"{leaf} needs {', '.join(missing)}")
    order = {k: i for i, k in enumerate((*ldef.operands, "level"))}
    return Action("seamcall", leaf, tuple(sorted(a.items(), key=lambda kv: order[kv[0]])), cpu)


def universe_gpas(values: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))
