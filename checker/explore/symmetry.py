"""Symmetry reduction: one canonical state per orbit of interchangeable objects.

For ``--host any`` every TD slot, vCPU slot, page and private HKID is interchangeable: the
host program names none of them apart, so renaming them maps runs to runs and invariants
to invariants.  ``canonical(s)`` returns the least state (as a tuple) of ``s``'s orbit
under all such renamings, so it is exact: two states get the same canonical form iff one
is a renaming of the other (tested against brute force over every permutation).

How the minimum is found without trying every page permutation: in the flat layout the
page-indexed fields come before every field that *refers* to a page, so for fixed TD,
vCPU and HKID permutations the least vector sorts the pages by their row of page fields;
only pages with identical rows that something refers to need their order tried.
Packages and CPUs are not permuted (a package's CPUs are named by the host's steps).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import permutations, product

from tdxcheck.model.enums import PageType
from tdxcheck.model.state import Layout, State

_OWNED = frozenset(int(t) for t in (PageType.PT_REG, PageType.PT_TDR, PageType.PT_TDCX,
                                    PageType.PT_TDVPR, PageType.PT_EPT))
_TDVPR = int(PageType.PT_TDVPR)
_PAGE_FIELDS = ("pt", "owner", "vpslot", "bepoch_age", "host", "uncleared", "dirty")


class Symmetry:
    """Canonicalisation over TD, vCPU, page and private-HKID renamings."""

    def __init__(self, layout: Layout) -> None:
        self.L = layout
        u = layout.u
        p = u.platform
        self.n_pages = u.n_pages
        self.n_tds, self.n_vps = len(u.tds), len(u.vps)
        self.hkids = p.hkids
        self.packages = p.packages
        self.page_cols = [layout.base[f] for f in _PAGE_FIELDS]
        self.size = layout.size
        b = layout.base
        self.b = b
        self.td_fields = [f.name for f in _fields(layout, "td")]
        self.vp_fields = [f.name for f in _fields(layout, "vp")]
        self.entry_fields = [f.name for f in _fields(layout, "td_entry")]
        self.n_entries = len(u.entries)
        self.td_perms = list(permutations(range(self.n_tds)))
        self.vp_perms = list(permutations(range(self.n_vps)))
        self.hk_perms = [(0, *q) for q in permutations(range(1, self.hkids))]
        self.group_order = (len(self.td_perms) * len(self.vp_perms) * len(self.hk_perms)
                            * _fact(self.n_pages - 1))

    # -------------------------------------------------------------- applying a renaming
    def _dirty(self, d: int, hk: Sequence[int]) -> int:
        if not d:
            return d
        P = self.packages
        m = (1 << P) - 1
        out = d & m  # KeyID 0
        out |= d & (m << (self.hkids * P))  # the global KeyID
        for h in range(1, self.hkids):
            g = (d >> (h * P)) & m
            if g:
                out |= g << (hk[h] * P)
        return out

    def _bits(self, x: int, hk: Sequence[int]) -> int:
        out = 0
        for h in range(1, self.hkids):
            if x >> h & 1:
                out |= 1 << hk[h]
        return out

    def apply(self, s: State, tp: Sequence[int], vp: Sequence[int], hk: Sequence[int],
              pp: Sequence[int]) -> list[int]:
        """``s`` with TD slot t renamed tp[t], vCPU v vp[v], HKID h hk[h], page p pp[p]."""
        L, b = self.L, self.b
        out = list(s)
        for pkg in range(self.packages):
            i = b["wbt_snap"] + pkg
            out[i] = self._bits(s[i], hk)
        for f in ("kot_state", "kot_wbinvd", "host_hkid"):
            base = b[f]
            for h in range(1, self.hkids):
                out[base + hk[h]] = s[base + h]
        bpt, bown, bvps = b["pt"], b["owner"], b["vpslot"]
        for f in _PAGE_FIELDS:
            base = b[f]
            for p in range(1, self.n_pages):
                out[base + pp[p]] = s[base + p]
        for p in range(1, self.n_pages):
            q = pp[p]
            pt = s[bpt + p]
            if pt in _OWNED:
                out[bown + q] = tp[s[bown + p]]
            if pt == _TDVPR:
                out[bvps + q] = vp[s[bvps + p]]
            out[b["dirty"] + q] = self._dirty(s[b["dirty"] + p], hk)
        btdr, bhk = b["tdr"], b["hkid"]
        for f in self.td_fields:
            base = b[f]
            for t in range(self.n_tds):
                out[base + tp[t]] = s[base + t]
        for t in range(self.n_tds):
            if s[btdr + t]:
                out[btdr + tp[t]] = pp[s[btdr + t]]
                out[bhk + tp[t]] = hk[s[bhk + t]]
        ne = self.n_entries
        for f in self.entry_fields:
            base = b[f]
            for t in range(self.n_tds):
                for e in range(ne):
                    v = s[base + t * ne + e]
                    if f == "sept_page" and v:
                        v = pp[v]
                    out[base + tp[t] * ne + e] = v
        for f in self.vp_fields:
            base = b[f]
            for v in range(self.n_vps):
                x = s[base + v]
                if f == "tdvpr" and x:
                    x = pp[x]
                out[base + vp[v]] = x
        _ = L
        return out

    # -------------------------------------------------------------- canonical form
    def canonical(self, s: State) -> State:
        """The least state of ``s``'s orbit (see the module docstring)."""
        if self._outer is None:
            self._build_fast()
        best: list[int] | None = None
        for outer in self._outer:  # type: ignore[union-attr]
            r = outer(s)
            for cand in self._sorted_pages(r):
                if best is None or cand < best:
                    best = cand
        assert best is not None
        return tuple(best)

    def _sorted_pages(self, r: list[int]) -> Iterator[list[int]]:
        """Candidates with pages sorted by their row; ties that matter tried both ways."""
        n = self.n_pages
        rows = list(zip(*(r[c + 1:c + n] for c in self.page_cols), strict=True))
        order = sorted(range(n - 1), key=rows.__getitem__)
        groups: list[list[int]] = []
        for i in order:
            if groups and rows[groups[-1][0] - 1] == rows[i]:
                groups[-1].append(i + 1)
            else:
                groups.append([i + 1])
        if all(len(g) == 1 for g in groups):
            seq = [g[0] for g in groups]
            pp = [0] * n
            for new, old in enumerate(seq, start=1):
                pp[old] = new
            yield self._pages(r, pp)
            return
        referenced = self._referenced(r)
        choices = [list(permutations(g)) if len(g) > 1 and referenced.intersection(g)
                   else [tuple(g)] for g in groups]
        for combo in product(*choices):
            pp = [0] * n
            new = 1
            for g in combo:
                for old in g:
                    pp[old] = new
                    new += 1
            yield self._pages(r, pp)

    # -------------------------------------------------------------- generated fast paths
    _outer: list | None = None  # type: ignore[type-arg]

    def _build_fast(self) -> None:
        """Generate straight-line code for each TD/vCPU/HKID renaming and for a page
        renaming; they compute exactly what ``apply`` computes (tested)."""
        from tdxcheck.model.state import State as _S  # noqa: F401

        fns = []
        ns: dict[str, object] = {"OWNED": _OWNED, "TDVPR": _TDVPR}
        src = []
        k = 0
        for tp in self.td_perms:
            for vp in self.vp_perms:
                for hk in self.hk_perms:
                    src.append(self._outer_src(f"o{k}", tp, vp, hk))
                    k += 1
        src.append(self._pages_src())
        exec(compile("\n\n".join(src), "<symmetry>", "exec"), ns)  # noqa: S102
        for i in range(k):
            fns.append(ns[f"o{i}"])
        self._outer = fns
        self._pages = ns["pages"]  # type: ignore[assignment]

    def _outer_src(self, name: str, tp: Sequence[int], vp: Sequence[int],
                   hk: Sequence[int]) -> str:
        b, P, H = self.b, self.packages, self.hkids
        ident = list(hk) == list(range(H))
        expr: list[str] = [f"s[{i}]" for i in range(self.size)]
        if not ident:
            m = (1 << P) - 1
            for pkg in range(P):
                i = b["wbt_snap"] + pkg
                expr[i] = "(" + " | ".join(
                    [f"((s[{i}] >> {h} & 1) << {hk[h]})" for h in range(1, H)] or ["0"]) + ")"
            for f in ("kot_state", "kot_wbinvd", "host_hkid"):
                for h in range(1, H):
                    expr[b[f] + hk[h]] = f"s[{b[f] + h}]"
            for p in range(1, self.n_pages):
                i = b["dirty"] + p
                parts = [f"(s[{i}] & {m | (m << (H * P))})"]
                parts += [f"(((s[{i}] >> {h * P}) & {m}) << {hk[h] * P})" for h in range(1, H)]
                expr[i] = "(" + " | ".join(parts) + ")"
        # tuple literals (``()`` when a kind has no object: vps=0)
        tmap, vmap, hmap = repr(tuple(tp)), repr(tuple(vp)), repr(tuple(hk))
        for p in range(1, self.n_pages):
            pt, o, v = b["pt"] + p, b["owner"] + p, b["vpslot"] + p
            expr[o] = f"({tmap}[s[{o}]] if s[{pt}] in OWNED else s[{o}])"
            expr[v] = f"({vmap}[s[{v}]] if s[{pt}] == TDVPR else s[{v}])"
        for f in self.td_fields:
            for t in range(self.n_tds):
                src = f"s[{b[f] + t}]"
                if f == "hkid" and not ident:
                    src = f"({hmap}[{src}] if s[{b['tdr'] + t}] else {src})"
                expr[b[f] + tp[t]] = src
        ne = self.n_entries
        for f in self.entry_fields:
            for t in range(self.n_tds):
                for e in range(ne):
                    expr[b[f] + tp[t] * ne + e] = f"s[{b[f] + t * ne + e}]"
        for f in self.vp_fields:
            for v_ in range(self.n_vps):
                expr[b[f] + vp[v_]] = f"s[{b[f] + v_}]"
        return f"def {name}(s):\n    return [" + ", ".join(expr) + "]"

    def _pages_src(self) -> str:
        b, n = self.b, self.n_pages
        lines = ["def pages(r, pp):", "    out = r[:]"]
        for f in _PAGE_FIELDS:
            for p in range(1, n):
                lines.append(f"    out[{b[f]} + pp[{p}]] = r[{b[f] + p}]")
        refs = [b["tdr"] + t for t in range(self.n_tds)]
        refs += [b["sept_page"] + i for i in range(self.n_tds * self.n_entries)]
        refs += [b["tdvpr"] + v for v in range(self.n_vps)]
        for i in refs:
            lines.append(f"    if r[{i}]: out[{i}] = pp[r[{i}]]")
        lines.append("    return out")
        return "\n".join(lines)

    def _referenced(self, r: list[int]) -> set[int]:
        b = self.b
        refs = {r[b["tdr"] + t] for t in range(self.n_tds)}
        refs |= {r[b["tdvpr"] + v] for v in range(self.n_vps)}
        ne = self.n_entries
        base = b["sept_page"]
        refs |= {r[base + i] for i in range(self.n_tds * ne)}
        refs.discard(0)
        return refs

    def brute_canonical(self, s: State) -> State:
        """The least renaming of ``s`` over every permutation (tests only: slow)."""
        best = None
        for tp in self.td_perms:
            for vp in self.vp_perms:
                for hk in self.hk_perms:
                    for q in permutations(range(1, self.n_pages)):
                        cand = self.apply(s, tp, vp, hk, (0, *q))
                        if best is None or cand < best:
                            best = cand
        assert best is not None
        return tuple(best)


def _fields(layout: Layout, dim: str) -> list:  # type: ignore[type-arg]
    from tdxcheck.model.state import FIELDS

    return [f for f in FIELDS if f.dim == dim]


def _fact(n: int) -> int:
    out = 1
    for i in range(2, n + 1):
        out *= i
    return out
