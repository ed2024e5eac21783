"""The model's state: a flat tuple of small integers, laid out from a fixed list of fields.

State is immutable and compact: one ``tuple[int, ...]`` (hashable, cheap to copy, directly a
vector of Z3 terms).  ``Layout`` names every cell; rules read cells through ``S`` (pre-state)
and invariants through ``S`` and ``POST``.

What is modelled, per object (tdx-reference.md §11 "Suggested state"):

* page (index 0 is a NULL page, always ``PT_RSVD``, so "no page" can be read like a page):
  PAMT ``pt``/``owner``, ``bepoch_age`` (see below), the TDVPR's vCPU slot, the kernel
  allocator's state ``host``, ``uncleared`` (left the module and not yet MOVDIR64B-cleared),
  and ``dirty``: a bitmap of cache lines that may be dirty, bit ``keyid * packages + pkg``
  where keyid 0 is the host's, 1..hkids-1 the private HKIDs and ``hkids`` the module's
  global KeyID (scenario-format.md §3).
* hkid 1..hkids-1: KOT ``kot_state``/``kot_wbinvd`` (bitmap of packages) and the host pool
  bit ``host_hkid``.
* package: CACHE.WB progress ``wbt_intr`` (an interrupted run's progress is saved) and its
  START snapshot ``wbt_snap`` (bitmap of HKIDs).
* TD slot: TDR fields (``tdr`` page, ``lifecycle``, ``fatal``, ``hkid``, ``pkg_config``,
  ``num_tdcx``, ``chldcnt``), TDCS fields (``op_state``, ``num_vcpus``, ``num_assoc``,
  ``epoch`` parity, ``refcount0/1``) and per S-EPT entry ``sept_state``/``sept_page``.
* vCPU slot: ``tdvpr`` page, TDVPS ``state``, ``in_guest``, ``assoc`` (LP + 1, 0 = NO_LP),
  ``vepoch`` parity, ``num_pages`` (TDVPS pages).

Epochs are kept finite without losing precision: every running vCPU entered at ``E`` or
``E-1`` (TRACK needs the ``E-1`` refcount to be 0), so only the parity of ``td_epoch`` and
``vcpu_epoch`` matters for refcounts; and ``is_tlb_tracked(b)`` (helpers.h) only asks whether
``E-b`` is 0, 1 or >= 2, so a blocked page keeps ``bepoch_age = min(E - bepoch, 2)``.
A slot whose TDR (TDVPR) has been reclaimed is reset to zeros: the module never reads a
reclaimed control page again, and the reset keeps dead data out of the state space.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from .enums import (
    HostPage,
    KotState,
    OpState,
    PageType,
    SeptState,
    TdLifecycle,
    VcpuState,
)
from .expr import Expr, Operand, Read, lift

State = tuple[int, ...]


@dataclass(frozen=True)
class Platform:
    """Scenario ``config`` keys (scenario-format.md §1) with their defaults."""

    packages: int = 2
    cpus_per_package: int = 2
    hkids: int = 4
    tdcs_pages: int = 6
    tdcx_pages: int = 5
    max_vcpus: int = 8
    sept_levels: int = 4
    clflush_before_alloc: int = 1
    clear_before_reuse: int = 1
    wrapper_clflush: int = 1

    @property
    def cpus(self) -> int:
        return self.packages * self.cpus_per_package

    @property
    def global_keyid(self) -> int:
        """The module's own KeyID, after the private range (KOT HKID_RESERVED)."""
        return self.hkids

    @property
    def all_packages(self) -> int:
        """The module's global ``pkg_config_bitmap``: every package configured."""
        return (1 << self.packages) - 1

    @property
    def tdvps_pages(self) -> int:
        """TDVPS pages a vCPU needs: the TDVPR plus ``tdcx_pages`` (tdx_tdvps.h)."""
        return 1 + self.tdcx_pages

    def pkg(self, cpu: int) -> int:
        return cpu // self.cpus_per_package


@dataclass(frozen=True)
class Universe:
    """The named objects one run works on: a platform plus TD, vCPU, page and GPA names."""

    platform: Platform
    tds: tuple[str, ...]
    vps: tuple[str, ...]
    pages: tuple[str, ...]  # page index i+1 is pages[i]; index 0 is the NULL page
    gpas: tuple[int, ...]
    entries: tuple[tuple[int, int], ...] = field(init=False)  # (level, gpa >> (12 + 9*level))

    def __post_init__(self) -> None:
        keys = sorted(
            {(lv, g >> (12 + 9 * lv)) for g in self.gpas for lv in range(self.platform.sept_levels)},
            key=lambda k: (-k[0], k[1]),
        )
        object.__setattr__(self, "entries", tuple(keys))

    @property
    def n_pages(self) -> int:
        return len(self.pages) + 1

    def page_index(self, name: str) -> int:
        return self.pages.index(name) + 1

    def page_name(self, index: int) -> str:
        return "NULL" if index == 0 else self.pages[index - 1]

    def domain(self, kind: str) -> range:
        """Every object of a kind, as the rules and clauses loop over it: page (the pages
        but NULL), td, vp, hkid (the private HKIDs), pkg, entry (every S-EPT entry)."""
        p = self.platform
        return {"page": range(1, self.n_pages), "td": range(len(self.tds)),
                "vp": range(len(self.vps)), "hkid": range(1, p.hkids),
                "pkg": range(p.packages), "entry": range(len(self.entries))}[kind]

    def entry(self, gpa: int, level: int) -> int:
        """Index of the S-EPT entry at ``level`` that maps ``gpa``."""
        return self.entries.index((level, gpa >> (12 + 9 * level)))

    def children(self, gpa: int, level: int) -> list[int]:
        """Entries of the S-EPT page that the entry (gpa, level) points to (known ones)."""
        region = gpa >> (12 + 9 * level)
        return [
            i for i, (lv, r) in enumerate(self.entries) if lv == level - 1 and r >> 9 == region
        ]

    def entry_label(self, e: int) -> str:
        lv, region = self.entries[e]
        return f"gpa=0x{region << (12 + 9 * lv):x},L{lv}"


@dataclass(frozen=True)
class FieldSpec:
    """A field: its dimension (the object kind it is kept per) and value type."""

    name: str
    dim: str  # "one", "pkg", "hkid", "page", "td", "vp", "td_entry"
    kind: type[IntEnum] | str  # an IntEnum, "int", "bool", "bitmap_pkg", "bitmap_hkid", "dirty", "page", "td", "vp", "cpu1"
    doc: str


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("leak_armed", "one", "bool", "check_no_leak was executed"),
    FieldSpec("wbt_intr", "pkg", "bool", "CACHE.WB progress saved (intr_point != 0)"),
    FieldSpec("wbt_snap", "pkg", "bitmap_hkid", "CACHE.WB START snapshot of FLUSHED HKIDs"),
    FieldSpec("kot_state", "hkid", KotState, "KOT entry state"),
    FieldSpec("kot_wbinvd", "hkid", "bitmap_pkg", "KOT wbinvd_bitmap"),
    FieldSpec("host_hkid", "hkid", "bool", "the host took this HKID from its pool"),
    FieldSpec("pt", "page", PageType, "PAMT page type"),
    FieldSpec("owner", "page", "td", "PAMT owner (the TD whose TDR owns the page)"),
    FieldSpec("vpslot", "page", "vp", "the vCPU whose TDVPR this page is"),
    FieldSpec("bepoch_age", "page", "int", "min(td_epoch - PAMT bepoch, 2)"),
    FieldSpec("host", "page", HostPage, "kernel allocator state"),
    FieldSpec("uncleared", "page", "bool", "left the module, not cleared since"),
    FieldSpec("dirty", "page", "dirty", "cache lines that may be dirty, per (KeyID, package)"),
    FieldSpec("tdr", "td", "page", "TDR page (0 = no TD in this slot)"),
    FieldSpec("lifecycle", "td", TdLifecycle, "TDR lifecycle state"),
    FieldSpec("fatal", "td", "bool", "TDR.fatal"),
    FieldSpec("hkid", "td", "int", "TDR.hkid"),
    FieldSpec("pkg_config", "td", "bitmap_pkg", "TDR.pkg_config_bitmap"),
    FieldSpec("num_tdcx", "td", "int", "TDR.num_tdcx"),
    FieldSpec("chldcnt", "td", "int", "TDR.chldcnt"),
    FieldSpec("op_state", "td", OpState, "TDCS.op_state"),
    FieldSpec("num_vcpus", "td", "int", "TDCS.num_vcpus"),
    FieldSpec("num_assoc", "td", "int", "TDCS.num_assoc_vcpus"),
    FieldSpec("epoch", "td", "int", "TDCS.td_epoch parity"),
    FieldSpec("refcount0", "td", "int", "TDCS.refcount[0]"),
    FieldSpec("refcount1", "td", "int", "TDCS.refcount[1]"),
    FieldSpec("sept_state", "td_entry", SeptState, "S-EPT entry state"),
    FieldSpec("sept_page", "td_entry", "page", "page the S-EPT entry maps or points to"),
    FieldSpec("tdvpr", "vp", "page", "TDVPR page (0 = no vCPU in this slot)"),
    FieldSpec("state", "vp", VcpuState, "TDVPS.state"),
    FieldSpec("in_guest", "vp", "bool", "running in the guest (TDR, TDVPR locks held shared)"),
    FieldSpec("assoc", "vp", "cpu1", "associated LP + 1 (0 = VCPU_NO_LP)"),
    FieldSpec("vepoch", "vp", "int", "TDVPS.vcpu_epoch parity"),
    FieldSpec("num_pages", "vp", "int", "TDVPS.num_tdvps_pages"),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}

#: fields of a TD slot and a vCPU slot (reset together when the slot dies)
TD_FIELDS = tuple(f.name for f in FIELDS if f.dim == "td")
TD_ENTRY_FIELDS = tuple(f.name for f in FIELDS if f.dim == "td_entry")
VP_FIELDS = tuple(f.name for f in FIELDS if f.dim == "vp")


@functools.cache
def _members(kind: type) -> frozenset[int]:
    return frozenset(int(m) for m in kind)  # type: ignore[attr-defined]


class Layout:
    """Flat offsets of every field cell for one universe."""

    def __init__(self, u: Universe) -> None:
        self.u = u
        p = u.platform
        self.dims: dict[str, tuple[int, ...]] = {
            "one": (1,),
            "pkg": (p.packages,),
            "hkid": (p.hkids,),
            "page": (u.n_pages,),
            "td": (len(u.tds),),
            "vp": (len(u.vps),),
            "td_entry": (len(u.tds), len(u.entries)),
        }
        self.base: dict[str, int] = {}
        self.shape: dict[str, tuple[int, ...]] = {}
        off = 0
        for f in FIELDS:
            shape = self.dims[f.dim]
            self.base[f.name] = off
            self.shape[f.name] = shape
            n = 1
            for d in shape:
                n *= d
            off += n
        self.size = off
        self._labels: list[tuple[str, FieldSpec, tuple[int, ...]]] = [("", FIELDS[0], ())] * off
        for f in FIELDS:
            for idx in self._indices(self.shape[f.name]):
                self._labels[self.flat(f.name, idx)] = (self._label(f, idx), f, idx)

    @staticmethod
    def _indices(shape: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        if len(shape) == 1:
            for i in range(shape[0]):
                yield (i,)
        else:
            for i in range(shape[0]):
                for j in range(shape[1]):
                    yield (i, j)

    def flat(self, name: str, idx: Sequence[int]) -> int:
        shape = self.shape[name]
        if len(shape) == 1:
            return self.base[name] + idx[0]
        return self.base[name] + idx[0] * shape[1] + idx[1]

    def cells(self, name: str) -> range:
        shape = self.shape[name]
        n = shape[0] * (shape[1] if len(shape) > 1 else 1)
        return range(self.base[name], self.base[name] + n)

    def value_bound(self, f: FieldSpec) -> int:
        """Largest value a cell of ``f`` can hold (Z3 typing constraints use it)."""
        p, u = self.u.platform, self.u
        if isinstance(f.kind, type):
            return max(int(m) for m in f.kind)
        if f.kind == "int":
            return self._int_bound(f.name)
        return {
            "bool": 1,
            "bitmap_pkg": (1 << p.packages) - 1,
            "bitmap_hkid": (1 << p.hkids) - 1,
            "dirty": (1 << ((p.hkids + 1) * p.packages)) - 1,
            "page": u.n_pages - 1,
            "td": max(len(u.tds) - 1, 0),
            "vp": max(len(u.vps) - 1, 0),
            "cpu1": p.cpus,
        }[f.kind]

    def _int_bound(self, name: str) -> int:
        p, u = self.u.platform, self.u
        return {
            "bepoch_age": 2,
            "hkid": p.hkids - 1,
            "num_tdcx": p.tdcs_pages + 3,
            "chldcnt": u.n_pages,
            "num_vcpus": p.max_vcpus,
            "num_assoc": len(u.vps),
            "epoch": 1,
            "refcount0": len(u.vps),
            "refcount1": len(u.vps),
            "vepoch": 1,
            "num_pages": p.tdvps_pages + 9,
        }[name]

    # ---- names for people -------------------------------------------------------------
    def _label(self, f: FieldSpec, idx: tuple[int, ...]) -> str:
        u = self.u
        if f.dim == "one":
            return f.name
        if f.dim == "pkg":
            return f"pkg{idx[0]}.{f.name}"
        if f.dim == "hkid":
            return f"hkid{idx[0]}.{f.name}"
        if f.dim == "page":
            return f"page {u.page_name(idx[0])}.{f.name}"
        if f.dim == "td":
            return f"{u.tds[idx[0]]}.{f.name}"
        if f.dim == "vp":
            return f"{u.vps[idx[0]]}.{f.name}"
        return f"{u.tds[idx[0]]}.sept[{u.entry_label(idx[1])}].{f.name.removeprefix('sept_')}"

    def label(self, flat_index: int) -> str:
        return self._labels[flat_index][0]

    def field_of(self, flat_index: int) -> FieldSpec:
        return self._labels[flat_index][1]

    def show(self, flat_index: int, value: int) -> str:
        """A cell's value in the module's words (enum names, page names, bit lists)."""
        f = self._labels[flat_index][1]
        u, p = self.u, self.u.platform
        if isinstance(f.kind, type):
            try:
                return f.kind(value).name
            except ValueError:
                return str(value)
        if f.kind == "page":
            return u.page_name(value) if value else "-"
        if f.kind == "cpu1":
            return f"cpu{value - 1}" if value else "NO_LP"
        if f.kind == "bitmap_pkg":
            return "{" + ",".join(f"pkg{i}" for i in range(p.packages) if value >> i & 1) + "}"
        if f.kind == "bitmap_hkid":
            return "{" + ",".join(str(h) for h in range(p.hkids) if value >> h & 1) + "}"
        if f.kind == "dirty":
            parts = []
            for k in range(p.hkids + 1):
                pk = [str(i) for i in range(p.packages) if value >> (k * p.packages + i) & 1]
                if pk:
                    key = "keyid0" if k == 0 else ("global" if k == p.hkids else f"hkid{k}")
                    parts.append(f"{key}@pkg{','.join(pk)}")
            return "{" + " ".join(parts) + "}"
        if f.kind == "td":
            return u.tds[value] if value < len(u.tds) else str(value)
        if f.kind == "vp":
            return u.vps[value] if value < len(u.vps) else str(value)
        return str(value)

    def initial(self) -> State:
        """The platform after TDX module init: every page PT_NDA in the kernel, KOT free."""
        s = [0] * self.size
        s[self.flat("pt", (0,))] = int(PageType.PT_RSVD)  # the NULL page
        return tuple(s)

    @functools.cached_property
    def bounds(self) -> tuple[int, ...]:
        """``value_bound`` of every cell, in cell order."""
        return tuple(self.value_bound(self.field_of(i)) for i in range(self.size))

    @functools.cached_property
    def fixed_cells(self) -> tuple[tuple[int, int], ...]:
        """(cell, value) pairs no rule may change: the NULL page's non-zero cells
        (``pt == PT_RSVD``).  Page 0 stands for "no page" in every page operand."""
        init = self.initial()
        return tuple((i, init[i]) for i in range(self.size)
                     if self._labels[i][1].dim == "page" and self._labels[i][2] == (0,)
                     and init[i] != 0)

    @functools.cached_property
    def _gaps(self) -> tuple[tuple[int, frozenset[int]], ...]:
        """Enum cells whose enum has unused values below its largest: the range check
        alone does not rule those out."""
        out = []
        for i in range(self.size):
            kind = self._labels[i][1].kind
            if isinstance(kind, type) and len(_members(kind)) != max(_members(kind)) + 1:
                out.append((i, _members(kind)))
        return tuple(out)

    def encoding_violation(self, s: Sequence[int]) -> str | None:
        """Why ``s`` (its model cells) is not a state of this layout, or None: the
        ``state-encoding`` target.  Every cell lies in ``0..bounds``, an enum cell holds
        a member of its enum, and the ``fixed_cells`` keep their values.  The Z3 reading
        (``Z3Encoder.typing(members=True)``) states the same thing over bit-vectors."""
        # the common case (a state in its encoding) at C speed; the loop below says why not
        if (min(s, default=0) >= 0 and all(map(operator.le, s, self.bounds))
                and all(s[i] in m for i, m in self._gaps) and
                all(s[i] == v for i, v in self.fixed_cells)):
            return None
        for i, (v, b) in enumerate(zip(s, self.bounds, strict=True)):
            if not 0 <= v <= b:
                return f"{self.label(i)} = {v} is outside its declared range (0..{b})"
            kind = self._labels[i][1].kind
            if isinstance(kind, type) and v not in _members(kind):
                return f"{self.label(i)} = {v} is not a value of {kind.__name__}"
        for i, v in self.fixed_cells:
            if s[i] != v:
                return f"{self.label(i)} = {s[i]} but the NULL page keeps {v}"
        return None

    def diff(self, a: State, b: State) -> list[tuple[int, int, int]]:
        return [(i, x, y) for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


class _FieldView:
    __slots__ = ("_name", "_post")

    def __init__(self, name: str, post: bool) -> None:
        self._name, self._post = name, post

    def __getitem__(self, idx: Operand | tuple[Operand, ...]) -> Expr:
        if not isinstance(idx, tuple):
            idx = (idx,)
        return Read(self._name, tuple(lift(i) for i in idx), self._post)


class _StateView:
    """``S.pt[p]`` builds a Read of the pre-state; ``POST.pt[p]`` of the post-state."""

    def __init__(self, post: bool) -> None:
        self._post = post
        for f in FIELDS:
            setattr(self, f.name, _FieldView(f.name, post))

    def __getattr__(self, name: str) -> _FieldView:  # pragma: no cover - typo guard
        raise AttributeError(f"no state field {name!r}")


S: _StateView = _StateView(False)
POST: _StateView = _StateView(True)
