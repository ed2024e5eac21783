"""Counterexamples as files: replayable ``.tdx`` scenarios and ITF JSON traces.

A ``.tdx`` trace is a scenario (scenario-format.md) whose steps are the run's wrapper
calls, each with the status it returned as its expectation, so ``tdxcheck replay`` re-runs
the same path and shows the same violation.  ITF is the Apalache/Quint trace format (ADR-015):
one JSON object per state with the action that led to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tdxcheck.model.actions import Action
from tdxcheck.model.rule import LEAVES
from tdxcheck.model.state import FIELDS, FieldSpec, Layout, Platform, State, Universe
from tdxcheck.model.status import status_name

from .bfs import Counterexample

_SIMPLE = {
    "TDH.MNG.KEY.CONFIG": "tdh_mng_key_config", "TDH.MNG.INIT": "tdh_mng_init",
    "TDH.MNG.RD": "tdh_mng_rd", "TDH.MNG.WR": "tdh_mng_wr",
    "TDH.MNG.VPFLUSHDONE": "tdh_mng_vpflushdone", "TDH.MNG.KEY.FREEID": "tdh_mng_key_freeid",
    "TDH.MEM.TRACK": "tdh_mem_track", "TDH.MR.FINALIZE": "tdh_mr_finalize",
}
_VP = {"TDH.VP.INIT": "tdh_vp_init", "TDH.VP.ENTER": "tdh_vp_enter",
       "TDH.VP.FLUSH": "tdh_vp_flush", "TDH.VP.RD": "tdh_vp_rd", "TDH.VP.WR": "tdh_vp_wr"}
_MEM = {"TDH.MEM.SEPT.ADD": "tdh_mem_sept_add", "TDH.MEM.PAGE.ADD": "tdh_mem_page_add",
        "TDH.MEM.PAGE.AUG": "tdh_mem_page_aug", "TDH.MEM.RANGE.BLOCK": "tdh_mem_range_block",
        "TDH.MEM.PAGE.REMOVE": "tdh_mem_page_remove",
        "TDH.MEM.RANGE.UNBLOCK": "tdh_mem_range_unblock",
        "TDH.MEM.SEPT.REMOVE": "tdh_mem_sept_remove", "TDH.MR.EXTEND": "tdh_mr_extend"}


def config_line(p: Platform) -> str:
    keys = ("packages", "cpus_per_package", "hkids", "tdcs_pages", "tdcx_pages", "max_vcpus",
            "sept_levels", "clflush_before_alloc", "clear_before_reuse", "wrapper_clflush")
    return "config " + " ".join(f"{k}={getattr(p, k)}" for k in keys)


class _Namer:
    """Names the TD and vCPU structs of an any-host run as a scenario would."""

    def __init__(self, u: Universe) -> None:
        self.u = u
        self.td_of_page: dict[int, str] = {}
        self.vp_of_page: dict[int, str] = {}

    def page(self, i: int) -> str:
        return self.u.page_name(i)

    def step(self, a: Action, s: State, lay: Layout) -> str:
        """The scenario line of one action taken in state ``s`` (before the action)."""
        u, o = self.u, a.kwargs
        pg = self.page
        if a.kind == "TDH.MNG.CREATE":
            name = self.td_of_page.setdefault(o["tdr"], f"td{len(self.td_of_page)}")
            return f"tdh_mng_create td={name} page={pg(o['tdr'])} hkid={o['hkid']}"
        if a.kind == "TDH.VP.CREATE" and o["tdr"] in self.td_of_page:
            name = self.vp_of_page.setdefault(o["tdvpr"], f"vp{len(self.vp_of_page)}")
            return (f"tdh_vp_create td={self.td_of_page[o['tdr']]} vp={name} "
                    f"page={pg(o['tdvpr'])}")
        if a.kind == "TDH.PHYMEM.CACHE.WB":
            return f"tdh_phymem_cache_wb cpu={a.cpu} resume={o['resume']}"
        if a.kind == "TDH.PHYMEM.PAGE.RECLAIM":
            return f"tdh_phymem_page_reclaim page={pg(o['page'])}"
        if a.kind == "TDH.PHYMEM.PAGE.WBINVD":
            if o["keyid"] == u.platform.global_keyid and o["page"] in self.td_of_page:
                return f"tdh_phymem_page_wbinvd_tdr td={self.td_of_page[o['page']]}"
            if 1 <= o["keyid"] < u.platform.global_keyid:
                return f"tdh_phymem_page_wbinvd_hkid hkid={o['keyid']} page={pg(o['page'])}"
        td = self.td_of_page.get(o.get("tdr", -1))
        cpu = f" cpu={a.cpu}"
        if a.kind in _SIMPLE and td:
            return f"{_SIMPLE[a.kind]} td={td}" + (cpu if a.kind == "TDH.MNG.KEY.CONFIG" else "")
        if a.kind == "TDH.MNG.ADDCX" and td:
            return f"tdh_mng_addcx td={td} page={pg(o['page'])}"
        vp = self.vp_of_page.get(o.get("tdvpr", -1))
        if a.kind in _VP and vp:
            return f"{_VP[a.kind]} vp={vp}{cpu}"
        if a.kind == "TDH.VP.ADDCX" and vp:
            return f"tdh_vp_addcx vp={vp} page={pg(o['page'])}"
        if a.kind in _MEM and td:
            parts = [f"{_MEM[a.kind]} td={td} gpa=0x{o['gpa']:x}"]
            if "level" in o and a.kind not in ("TDH.MEM.PAGE.ADD", "TDH.MEM.PAGE.AUG"):
                parts.append(f"level={o['level']}")
            if "page" in o:
                parts.append(f"page={pg(o['page'])}")
            return " ".join(parts)
        if a.kind in ("td_exit", "TDG.MEM.PAGE.ACCEPT"):
            v = o["vp"]
            page = s[lay.flat("tdvpr", (v,))]
            name = self.vp_of_page.get(page, f"vp{v}")
            if a.kind == "td_exit":
                return f"td_exit vp={name} reason={o['reason']}"
            return f"guest_accept vp={name} gpa=0x{o['gpa']:x}"
        if a.kind in LEAVES:  # the untyped form for what no bound struct can express
            handed = [pg(o[h]) for h in LEAVES[a.kind].hands if o.get(h)]
            pre = "".join(f"clflush page={h}\n" for h in handed)
            return pre + raw_seamcall(a, pg)
        raise ValueError(f"cannot write {a.kind} as a scenario step")


def raw_seamcall(a: Action, page_name: Callable[[int], str]) -> str:
    """``a`` in the untyped form: ``seamcall LEAF rcx=... rdx=... cpu=N`` (its registers as
    ``LEAVES[a.kind].regs`` lists them; no CLFLUSH of the pages it hands over)."""
    o = a.kwargs
    regs = []
    for reg, operand in LEAVES[a.kind].regs:
        v = o.get(operand, 0)
        if operand in ("tdr", "page", "tdvpr"):
            regs.append(f"{reg}={page_name(v) if v else 0}")
        elif operand == "gpa":
            regs.append(f"{reg}=0x{o['gpa'] | o.get('level', 0):x}")
        else:
            regs.append(f"{reg}={v}")
    return f"seamcall {a.kind} {' '.join(regs)} cpu={a.cpu}"


def _ablated(prog: Any) -> str:
    abl = sorted(prog.engine.ablate)
    return ("# found with module checks removed; reproduce: tdxcheck replay THIS_FILE"
            + "".join(f" --ablate {a}" for a in abl)) if abl else ""


def any_host_tdx(prog: Any, cx: Counterexample, title: str) -> str:
    """A replayable scenario of an any-host counterexample."""
    u: Universe = prog.u
    lay = prog.engine.layout
    namer = _Namer(u)
    lines = [f"# {title}", f"# counterexample to [{cx.invariant}]: {cx.message}",
             f"# {cx.length} step(s), found by tdxcheck check --host any (breadth-first: "
             "shortest)", config_line(u.platform)]
    if _ablated(prog):
        lines.insert(3, _ablated(prog))
    # the any host starts with every HKID taken and every page handed to the TDX code
    lines.append("hkid_alloc hkid=" + "\nhkid_alloc hkid=".join(
        str(h) for h in range(1, u.platform.hkids)))
    lines.append("page_alloc page=" + ",".join(u.pages))
    lines += [f"clflush page={p}" for p in u.pages]
    for (eid, status), s in zip(cx.path, cx.states, strict=False):
        a = prog.action_of(eid)
        text = namer.step(a, s, lay)
        edge = prog.edges[eid]
        if edge.fault:
            text += f" fault={edge.fault}"
        if status is not None:
            text += f" -> {status_name(status)}"
        lines.append(text)
    return "\n".join(lines) + "\n"


def scenario_tdx(prog: Any, cx: Counterexample, title: str) -> str:
    """A replayable scenario of one interleaving of a scenario's threads."""
    lines = [f"# {title}", f"# counterexample to [{cx.invariant}]: {cx.message}",
             f"# {cx.length} step(s): one interleaving of {prog.sc.file}, threads flattened",
             config_line(prog.u.platform)]
    if _ablated(prog):
        lines.insert(3, _ablated(prog))
    for eid, _status in cx.path:
        st = prog.step_of_edge[eid]
        edge = prog.edges[eid]
        text = st.text
        if edge.fault and "fault=" not in text:
            text = text.split("->")[0].rstrip() + f" fault={edge.fault}" + (
                f" -> {st.expected_text}" if st.expected_text else "")
        thread = prog.names[edge.thread]
        lines.append(f"{text:<60} # {thread}, line {st.line}")
    return "\n".join(lines) + "\n"


def itf(prog: Any, cx: Counterexample, labels: list[str]) -> dict[str, Any]:
    """A counterexample as typed ITF (Apalache ADR-015, the format Apalache and Quint read):
    one variable per model field (its name, an identifier), whose value is the field of every
    object as a ``#map`` keyed by the object's name (or a plain value for a platform-wide
    field); enums are their names, bitmaps ``#set``s, the dirty lines a ``#set`` of
    ``{keyid, pkg}`` records, integers past 2**53 ``#bigint``.  ``action`` and ``status`` are
    in every state (``init`` and ``none`` in state 0); ``#meta`` says what broke."""
    lay: Layout = prog.engine.layout
    states = []
    for k, s in enumerate(cx.states):
        st: dict[str, Any] = {"#meta": {"index": k}}
        if k:
            _eid, status = cx.path[k - 1]
            st["action"] = labels[k - 1]
            st["status"] = status_name(status) if status is not None else "none"
        else:
            st["action"], st["status"] = "init", "none"
        for f in FIELDS:
            st[f.name] = _itf_field(lay, f, s)
        states.append(st)
    return {
        "#meta": {"format": "ITF", "format-description": "https://apalache-mc.org/docs/adr/"
                  "015adr-trace.html", "source": "tdxcheck", "invariant": cx.invariant,
                  "description": cx.message},
        "vars": ["action", "status", *(f.name for f in FIELDS)],
        "states": states,
    }


def _itf_int(v: int) -> Any:
    return v if -(1 << 53) < v < (1 << 53) else {"#bigint": str(v)}


def _itf_value(lay: Layout, f: FieldSpec, v: int) -> Any:
    """One cell as a typed ITF value (every cell of a field has the same type)."""
    u, p = lay.u, lay.u.platform
    if isinstance(f.kind, type):
        try:
            return f.kind(v).name
        except ValueError:
            return str(v)
    if f.kind == "bool":
        return bool(v)
    if f.kind == "int":
        return _itf_int(v)
    if f.kind == "page":
        return u.page_name(v)  # "NULL" for none
    if f.kind == "td":
        return u.tds[v] if v < len(u.tds) else str(v)
    if f.kind == "vp":
        return u.vps[v] if v < len(u.vps) else str(v)
    if f.kind == "cpu1":
        return f"cpu{v - 1}" if v else "NO_LP"
    if f.kind == "bitmap_pkg":
        return {"#set": [i for i in range(p.packages) if v >> i & 1]}
    if f.kind == "bitmap_hkid":
        return {"#set": [h for h in range(p.hkids) if v >> h & 1]}
    if f.kind == "dirty":
        out = []
        for key in range(p.hkids + 1):
            name = "keyid0" if key == 0 else "global" if key == p.hkids else f"hkid{key}"
            out += [{"keyid": name, "pkg": i} for i in range(p.packages)
                    if v >> (key * p.packages + i) & 1]
        return {"#set": out}
    return _itf_int(v)


def _itf_field(lay: Layout, f: FieldSpec, s: State) -> Any:
    u = lay.u
    cells = lay.cells(f.name)
    if f.dim == "one":
        return _itf_value(lay, f, s[cells[0]])
    keys: list[Any]
    if f.dim == "page":
        keys = [u.page_name(i) for i in range(u.n_pages)]
    elif f.dim == "td":
        keys = list(u.tds)
    elif f.dim == "vp":
        keys = list(u.vps)
    elif f.dim in ("pkg", "hkid"):
        keys = list(range(len(cells)))
    else:  # td_entry: (td, entry) pairs
        keys = [{"#tup": [td, u.entry_label(e)]} for td in u.tds for e in range(len(u.entries))]
    return {"#map": [[key, _itf_value(lay, f, s[i])] for key, i in zip(keys, cells, strict=True)]}


def dumps_itf(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=1)
