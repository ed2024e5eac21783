"""Symmetry reduction: one canonical state per orbit of interchangeable objects.

For ``--host any`` every TD slot, vCPU slot, page and private HKID is interchangeable: the
host program names none of them apart, so renaming them maps runs to runs and invariants
to invariants.  ``canonical(s)`` returns the least state (as a tuple) of ``s``'s orbit
under all such renamings, so it is exact: two states get the same canonical form iff one
is a renaming of the other (tested against brute force over every permutation, and
against ``reference_canonical``, the enumerating canonicaliser it replaced).

How the least state is found at the cost of a sort (issue 16).  The flat layout holds, in
order, the HKID cells, then the page cells column by column (``pt``, ``owner``, ...), then
the TD, S-EPT entry and vCPU cells; page numbers appear only in the later cells ``tdr``,
``sept_page`` and ``tdvpr``.  Call a TD, vCPU and HKID renaming together an *outer*
renaming.  Then:

* For a fixed outer renaming, the least arrangement of the page columns sorts the pages
  by their row of (renamed) page cells, and among pages with equal rows (which nothing
  but page numbers tells apart) the least state numbers them in the order the renamed
  state first names them: each such place takes the least number still free.  So each
  row carries the rank of its page's first reference and one ``sorted`` does both
  (``rows``): no page permutation is ever enumerated.
* Outer renamings are filtered by signatures before any is tried.  HKID renamings must
  give the least HKID cells.  The ``owner`` column (the first one a TD renaming changes)
  is least exactly when the new TD order lists TDs by their count of owned pages of each
  type, more first, type by type (``tdsig``); likewise the ``vpslot`` column orders
  vCPUs by their TDVPR pages' new owners (``vpsig``).  Only renamings that sort these
  signatures remain, so distinct signatures leave one; ties are enumerated.  Renamings
  that differ only on unused objects (all cells zero, named by nothing) give one state,
  so one of them is tried (``used``).
* Of the remaining outer renamings the one with the least page columns wins, ties by the
  least rest of the state.

Everything is generated straight-line code per layout, as before.  ``canonical_key``
gives the canonical state's packed encoding without building it, and says whether the
state is *settled* (one candidate renaming), which lets the explorer skip canonicalising
a settled state's successors that changed no cell the renamings are chosen by.
Packages and CPUs are not permuted (a package's CPUs are named by the host's steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import permutations, product
from typing import Any

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
        fn = self._canon
        if fn is None:
            drive = self._build()
            fn = self._canon = lambda s: drive(s, 2)[0]
        return fn(s)

    _canon: Callable[[State], State] | None = None  # generated on first use

    def canonical_key(self, spec: Any) -> tuple[Callable[[State], tuple[int, bool]], int]:
        """For the explorer's packing ``spec`` (``compile.KeySpec``: a state's encoding is
        ``sum(s[i] << spec.offsets[i])``): ``fn(s)`` gives the encoding of ``s``'s canonical
        state, computed without building that state, and whether ``s`` is *settled*; and
        ``mask``, the bits of the cells that choose the renaming.

        A settled state has one candidate renaming with the least page columns.  So when
        ``s`` is canonical and settled, a state that differs from it only outside ``mask``
        (a TD or vCPU cell that names no page) is canonical and settled too: it has
        ``s``'s candidates with ``s``'s page columns, so the same one wins, the identity
        (which gives ``s``), and the identity changes nothing."""
        b = self.b
        widths = [max(x, 1).bit_length() for x in spec.bounds]
        cells = [*range(b["tdr"]), *self._refs(range(self.n_tds), range(self.n_vps))]
        mask = 0
        for i in cells:
            mask |= ((1 << widths[i]) - 1) << spec.offsets[i]
        drive = self._build(spec)
        return (lambda s: drive(s, 3)), mask  # type: ignore[return-value]

    def _build(self, spec: Any = None) -> Callable[[State, int], tuple[Any, bool]]:
        """Generate the canonicaliser for this layout (see the module docstring).

        Per HKID renaming ``pre{k}`` (the cells before the pages); per outer renaming ``j``
        (TD, vCPU and HKID renamings together) ``rows{j}`` (the sorted page rows),
        ``tail{j}`` (the cells after the pages for a page order) and ``whole{j}`` (the
        renamed state); ``tdsig`` (the TD signatures).  The driver keeps the HKID renamings
        with the least prefix, the TD renamings that sort the signatures, and of those
        outer renamings the one with the least page columns, then the least tail."""
        b, n, P = self.b, self.n_pages, self.packages
        pb, tb = b["pt"], b["tdr"]
        # the layout this relies on: the HKID cells, then the page columns, then the rest
        assert [b[f] for f in _PAGE_FIELDS] == [pb + k * n for k in range(len(_PAGE_FIELDS))]
        assert tb == pb + len(_PAGE_FIELDS) * n and b["wbt_snap"] + P <= b["kot_state"] < pb
        hks, tps, vps = self.hk_perms, self.td_perms, self.vp_perms
        nh, nt, nv = len(hks), len(tps), len(vps)
        src = [self._tdsig_src(), self._used_src()]
        for k, hk in enumerate(hks):
            src.append(f"def pre{k}(s):\n    return ({''.join(e + ', ' for e in self._pre(hk))})")
        for ti, tp in enumerate(tps):
            for vi, vp in enumerate(vps):
                for k, hk in enumerate(hks):
                    j = (ti * nv + vi) * nh + k
                    src += [self._rows_src(f"rows{j}", tp, vp, hk),
                            self._tail_src(f"tail{j}", tp, vp, hk, whole=False),
                            self._tail_src(f"whole{j}", tp, vp, hk, whole=True)]
                    if spec is not None:
                        src.append(self._tail_src(f"wkey{j}", tp, vp, hk, whole=True,
                                                  spec=spec))
        ns: dict[str, Any] = {"OWNED": _OWNED, "TDVPR": _TDVPR}
        exec(compile("\n\n".join(src), "<symmetry>", "exec"), ns)  # noqa: S102 - from the layout
        pres = [ns[f"pre{k}"] for k in range(nh)]
        outer = {(ti, vi, k): (ns[f"rows{j}"], ns[f"tail{j}"], ns[f"whole{j}"],
                               ns.get(f"wkey{j}"))
                 for ti in range(nt) for vi in range(nv) for k in range(nh)
                 for j in [(ti * nv + vi) * nh + k]}
        tdsig = ns["tdsig"]
        ncols = len(_PAGE_FIELDS)
        orders = [_inverse(tp) for tp in tps]  # TD renaming ti puts old slot orders[ti][i] at i
        cache: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}

        vorders = [_inverse(vp) for vp in vps]
        T, V, B = self.n_tds, self.n_vps, n

        def sorts(sig: Sequence[int], order: Sequence[int]) -> bool:
            return all(sig[order[i]] <= sig[order[i + 1]] for i in range(len(order) - 1))

        def outers(ks: tuple[int, ...], sig: tuple[int, ...],
                   vsig: int) -> list[tuple[Any, ...]]:
            # vCPU v's TDVPR pages per old TD o: c[v][o] (``vpsig``)
            c = [[vsig // B ** (v * T + o) % B for o in range(T)] for v in range(V)]
            out = []
            for k in ks:
                for ti, o in enumerate(orders):
                    if not sorts(sig, o):
                        continue
                    # the vpslot column is least when the new vCPU order sorts minus the
                    # vCPU's TDVPR pages per new owner, the new owners in order
                    tp = tps[ti]
                    vs = [-sum(c[v][x] * B ** (T - 1 - tp[x]) for x in range(T))
                          for v in range(V)]
                    out += [outer[ti, vi, k] for vi, vo in enumerate(vorders) if sorts(vs, vo)]
            return out

        used = ns["used"]
        perm_of = {o: (tps[ti], vps[vi], hks[k]) for (ti, vi, k), o in outer.items()}

        def distinct(outs: list[tuple[Any, ...]], u: tuple[int, int, int]
                     ) -> list[tuple[Any, ...]]:
            kept: dict[tuple[Any, ...], list[Any]] = {}
            for o in outs:
                key = tuple(tuple(x for i, x in enumerate(perm) if m >> i & 1)
                            for perm, m in zip(perm_of[o], u, strict=True))
                kept.setdefault(key, []).append(o)
            # each kept with how many it stands for
            return [(*os[0], len(os)) for os in kept.values()]

        def drive(s: State, w: int) -> tuple[Any, bool]:
            """(outer[w] of the least renaming: 2 the state, 3 its encoding; settled)"""
            if nh == 1:
                ck: tuple[Any, ...] = tdsig(s)
                outs = cache.get(ck)
                if outs is None:
                    outs = cache[ck] = outers((0,), ck[:-1], ck[-1])
            else:
                pre = None
                for k, fn in enumerate(pres):
                    x = fn(s)
                    if pre is None or x < pre:
                        pre, ks = x, [k]
                    elif x == pre:
                        ks.append(k)
                sig = tdsig(s)
                ck = (*ks, -1, *sig)
                outs = cache.get(ck)
                if outs is None:
                    outs = cache[ck] = outers(tuple(ks), sig[:-1], sig[-1])
            if len(outs) == 1:
                o = outs[0]
                return o[w](s, tuple(zip(*o[0](s)))), True
            # several: of those that differ only on unused objects, one (they give one state)
            ck = (ck, used(s))
            outs = cache.get(ck)
            if outs is None:
                outs = cache[ck] = distinct(cache[ck[0]], ck[1])
            best = None
            for o in outs:
                cols = tuple(zip(*o[0](s)))
                key = cols[:ncols]
                if best is None or key < best:
                    best, cands = key, [(cols, o)]
                elif key == best:
                    cands.append((cols, o))
            if len(cands) > 1:
                cands.sort(key=lambda c: c[1][1](s, c[0][-1]))
                cols, o = cands[0]
                return o[w](s, cols), False
            cols, o = cands[0]
            # settled: one renaming alone has the least page columns
            return o[w](s, cols), o[4] == 1

        return drive

    def _tdsig_src(self) -> str:
        """``tdsig(s)``: per TD slot, minus its count of owned pages of each owned page type,
        the types in ascending order, as one number (base: pages + 1).  The owner column
        of the sorted page rows is least exactly when the new TD order sorts these.  Then
        (``vpsig``) the count of TDVPR pages per vCPU slot and owner, as one number."""
        b, n = self.b, self.n_pages
        owned = sorted(_OWNED)
        w = [0] * (max(owned) + 1)
        for r, pt in enumerate(owned):
            w[pt] = n ** (len(owned) - 1 - r)
        T = self.n_tds
        lines = ["def tdsig(s):", f"    c = [0] * {T}", "    v = 0"]
        lines += [f"    c[s[{b['owner'] + p}]] -= {tuple(w)}[s[{b['pt'] + p}]]"
                  for p in range(1, n)]
        if self.n_vps > 1:
            # and last, vpsig: the TDVPR pages per (vCPU slot, owner), one number
            for p in range(1, n):
                pt, o, vs = b["pt"] + p, b["owner"] + p, b["vpslot"] + p
                lines.append(f"    if s[{pt}] == TDVPR: v += {n} ** (s[{vs}] * {T} + s[{o}])")
        lines.append("    return (*c, v)")
        return "\n".join(lines)

    def _used_src(self) -> str:
        """``used(s)``: bitmaps of the TD slots, vCPU slots and HKIDs in use.  An object not
        in use has only zero cells and nothing names it (no owned page's owner, no TDVPR
        page's vCPU slot; no dirty line of the HKID, no live TD's HKID), so renamings that
        differ only on unused objects give one renamed state."""
        b, n, H, P = self.b, self.n_pages, self.hkids, self.packages
        ne = self.n_entries
        lines = ["def used(s):", "    ut = uv = uh = 0"]
        for t in range(self.n_tds):
            cells = [b[f] + t for f in self.td_fields]
            cells += [b[f] + t * ne + e for f in self.entry_fields for e in range(ne)]
            lines.append(f"    if {' or '.join(f's[{i}]' for i in cells)}: ut |= {1 << t}")
            lines.append(f"    if s[{b['tdr'] + t}]: uh |= 1 << s[{b['hkid'] + t}]")
        for v in range(self.n_vps):
            cells = [b[f] + v for f in self.vp_fields]
            lines.append(f"    if {' or '.join(f's[{i}]' for i in cells)}: uv |= {1 << v}")
        lines.append("    d = 0")
        for p in range(1, n):
            pt = b["pt"] + p
            lines.append(f"    if s[{pt}] in OWNED: ut |= 1 << s[{b['owner'] + p}]")
            lines.append(f"    if s[{pt}] == TDVPR: uv |= 1 << s[{b['vpslot'] + p}]")
            lines.append(f"    d |= s[{b['dirty'] + p}]")
        m = (1 << P) - 1
        for h in range(1, H):
            lines.append(f"    if d >> {h * P} & {m}: uh |= {1 << h}")
        lines.append("    return ut, uv, uh")
        return "\n".join(lines)

    def _pre(self, hk: Sequence[int]) -> list[str]:
        """The cells before the pages (packages' snapshots, KOT, pool) under HKID renaming
        ``hk`` (as ``apply``)."""
        b, H, P = self.b, self.hkids, self.packages
        expr = [f"s[{i}]" for i in range(b["pt"])]
        if list(hk) != list(range(H)):
            for pkg in range(P):
                i = b["wbt_snap"] + pkg
                expr[i] = "(" + " | ".join(
                    [f"((s[{i}] >> {h} & 1) << {hk[h]})" for h in range(1, H)] or ["0"]) + ")"
            for f in ("kot_state", "kot_wbinvd", "host_hkid"):
                for h in range(1, H):
                    expr[b[f] + hk[h]] = f"s[{b[f] + h}]"
        return expr

    def _refs(self, tp: Sequence[int], vp: Sequence[int]) -> list[int]:
        """The cells that hold a page number, in the order they come in the renamed state
        (TD slots renamed by ``tp``, vCPU slots by ``vp``)."""
        b, ne = self.b, self.n_entries
        tinv, vinv = _inverse(tp), _inverse(vp)
        refs = [b["tdr"] + tinv[t] for t in range(self.n_tds)]
        refs += [b["sept_page"] + tinv[t] * ne + e for t in range(self.n_tds) for e in range(ne)]
        refs += [b["tdvpr"] + vinv[v] for v in range(self.n_vps)]
        return refs

    def _rows_src(self, name: str, tp: Sequence[int], vp: Sequence[int],
                  hk: Sequence[int]) -> str:
        """``name(s)``: the rows of pages 1.. under the outer renaming, sorted; each row is
        the page's cells (as ``apply``), then the rank of the page's first reference in
        the renamed state, then the page."""
        b, n, H, P = self.b, self.n_pages, self.hkids, self.packages
        m = (1 << P) - 1
        tid, vid = list(tp) == list(range(self.n_tds)), list(vp) == list(range(self.n_vps))
        hid = list(hk) == list(range(H))
        tmap, vmap = repr(tuple(tp)), repr(tuple(vp))  # ``()`` when there is no vCPU
        refs = self._refs(tp, vp)
        lines = [f"def {name}(s):", f"    r = [{len(refs)}] * {n}"]
        # the first reference wins: assign from the last one back
        lines += [f"    r[s[{i}]] = {k}" for k, i in reversed(list(enumerate(refs)))]
        rows = []
        for p in range(1, n):
            pt, o, v, d = (b[f] + p for f in ("pt", "owner", "vpslot", "dirty"))
            own = f"s[{o}]" if tid else f"({tmap}[s[{o}]] if s[{pt}] in OWNED else s[{o}])"
            vps = f"s[{v}]" if vid else f"({vmap}[s[{v}]] if s[{pt}] == TDVPR else s[{v}])"
            if hid:
                dirty = f"s[{d}]"
            else:
                parts = [f"(s[{d}] & {m | (m << (H * P))})"]
                parts += [f"(((s[{d}] >> {h * P}) & {m}) << {hk[h] * P})" for h in range(1, H)]
                dirty = "(" + " | ".join(parts) + ")"
            cells = [f"s[{pt}]", own, vps, f"s[{b['bepoch_age'] + p}]", f"s[{b['host'] + p}]",
                     f"s[{b['uncleared'] + p}]", dirty, f"r[{p}]", str(p)]
            rows.append("(" + ", ".join(cells) + ")")
        lines.append("    return sorted([" + ", ".join(rows) + "])")
        return "\n".join(lines)

    def _tail_src(self, name: str, tp: Sequence[int], vp: Sequence[int],
                  hk: Sequence[int], whole: bool, spec: Any = None) -> str:
        """``name(s, c)`` with ``c`` the columns of ``rows``: the cells after the pages with
        TD, vCPU and HKID renamed and page ``c[-1][j]`` renamed ``j + 1``; with ``whole``,
        the whole renamed state (the cells before the pages and the page columns first);
        with ``spec`` too, that state's encoding (``canonical_key``)."""
        b, n, H = self.b, self.n_pages, self.hkids
        hid = list(hk) == list(range(H))
        hmap = repr(tuple(hk))
        tinv, vinv = _inverse(tp), _inverse(vp)
        lines = [f"def {name}(s, c):"]
        lines.append("    inv = c[-1]" if whole else "    inv = c")
        if spec is not None:
            lines += [f"    {', '.join(f'c{ci}_{p}' for p in range(n - 1))}, = c[{ci}]"
                      for ci in range(len(_PAGE_FIELDS))]
        lines.append(f"    pp = [0] * {n}")
        lines += [f"    pp[inv[{j}]] = {j + 1}" for j in range(n - 1)]
        out = []
        if whole:
            out += self._pre(hk)
            for ci, f in enumerate(_PAGE_FIELDS):
                if spec is None:
                    out += [f"s[{b[f]}]", f"*c[{ci}]"]
                else:
                    out += [f"s[{b[f]}]"] + [f"c{ci}_{p}" for p in range(n - 1)]
        ne = self.n_entries
        for f in self.td_fields:
            for t in range(self.n_tds):
                x = f"s[{b[f] + tinv[t]}]"
                if f == "tdr":
                    x = f"pp[{x}]"
                elif f == "hkid" and not hid:
                    x = f"({hmap}[{x}] if s[{b['tdr'] + tinv[t]}] else {x})"
                out.append(x)
        for f in self.entry_fields:
            for t in range(self.n_tds):
                for e in range(ne):
                    x = f"s[{b[f] + tinv[t] * ne + e}]"
                    out.append(f"pp[{x}]" if f == "sept_page" else x)
        for f in self.vp_fields:
            for v in range(self.n_vps):
                x = f"s[{b[f] + vinv[v]}]"
                out.append(f"pp[{x}]" if f == "tdvpr" else x)
        if spec is None:
            lines.append("    return (" + "".join(x + ", " for x in out) + ")")
            return "\n".join(lines)
        assert len(out) == self.size
        # the encoding as the explorer's packing computes it: 30-bit words of small ints
        words: dict[int, list[str]] = {}
        for i, x in enumerate(out):
            off = spec.offsets[i]
            k = off // 30
            words.setdefault(k, []).append(f"({x} << {off - 30 * k})" if off > 30 * k else x)
        parts = [("(" + " | ".join(ws) + ")") + (f" << {30 * k}" if k else "")
                 for k, ws in sorted(words.items())]
        lines.append("    return " + " | ".join(f"({p})" for p in parts))
        return "\n".join(lines)

    # -------------------------------------------------------------- the previous reading
    def reference_canonical(self, s: State) -> State:
        """The least state of ``s``'s orbit, computed as before issue 16 (tests only): every
        TD/vCPU/HKID renaming in full, pages sorted by row, every order of tied referenced
        pages tried.  ``canonical`` must agree with it (and with ``brute_canonical``)."""
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


def _inverse(p: Sequence[int]) -> list[int]:
    inv = [0] * len(p)
    for i, x in enumerate(p):
        inv[x] = i
    return inv


def _fields(layout: Layout, dim: str) -> list:  # type: ignore[type-arg]
    from tdxcheck.model.state import FIELDS

    return [f for f in FIELDS if f.dim == dim]


def _fact(n: int) -> int:
    out = 1
    for i in range(2, n + 1):
        out *= i
    return out
