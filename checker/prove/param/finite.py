"""A bounded parametric instance and a finite ``Universe``, cell for cell.

``Mapping`` pairs the elements of a bounded ``Vocab`` (every sort an enumeration) with the
objects of a finite universe: page ``i`` is element ``i`` (0 is ``NULL``), TD and vCPU
slot ``i`` element ``i`` (0 is ``TD0``/``VP0``), KeyID ``k`` element ``k`` (0 ``ZERO``,
the last the global KeyID), package ``q`` element ``q``, CPU ``c`` element ``c + 1`` (0 is
``NOLP``), and the S-EPT entries of each level in the universe's order.  It reads every
cell of the finite layout as an Int term of a parametric state (``cell_terms``), and
binds a finite action to a parametric transition's operands (``bind``).

``Mapping.of_universe`` builds the pairing for a given universe (the cross-checks of
``tests/test_param.py``: the structure pinned by ``facts()``); ``Mapping.of_model`` builds
the universe a bounded model describes (a counterexample to induction: CPUs grouped by
the model's ``cpu_pkg``, padded to equal counts per package, S-EPT entries placed by the
model's ``parent``, each with an inert chain below it down to level 0; padding objects
have no element and read as 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import z3
from tdxcheck.model.actions import Action
from tdxcheck.model.state import FIELDS, Layout, Platform, State, Universe

from .logic import DIM_SORTS, PState, Vocab, field_type, fkey
from .sym import SymGpa
from .transitions import PTransition


class Mapping:
    def __init__(self, vocab: Vocab, u: Universe, cpu_el: list[Any | None],
                 entry_el: list[Any | None]) -> None:
        assert vocab.sizes is not None, "a mapping pairs a bounded vocabulary"
        self.v, self.u = vocab, u
        self.layout = Layout(u)
        e = vocab.elems
        self.pages, self.tds, self.vps = e["page"], e["td"], e["vp"]
        self.hkids, self.pkgs = e["hkid"], e["pkg"]
        self.config: Any = None  # of_model: the CTI's configuration
        self.cpu_el = cpu_el  # finite CPU slot -> element (None: padding)
        self.entry_el = entry_el  # finite entry index -> element (None: padding)
        assert len(self.pages) == u.n_pages and len(self.tds) == len(u.tds)
        assert len(self.vps) == len(u.vps) and len(self.hkids) == u.platform.hkids + 1
        assert len(self.pkgs) == u.platform.packages

    # ---- constructors --------------------------------------------------------------
    @staticmethod
    def sizes_of(u: Universe) -> dict[str, int]:
        p = u.platform
        sizes = {"page": u.n_pages, "td": len(u.tds), "vp": len(u.vps), "hkid": p.hkids + 1,
                 "pkg": p.packages, "cpu": p.cpus + 1}
        for lv in range(p.sept_levels):
            sizes[f"entry{lv}"] = sum(1 for x, _r in u.entries if x == lv)
        return sizes

    @classmethod
    def of_universe(cls, vocab: Vocab, u: Universe) -> Mapping:
        cpus = vocab.elems["cpu"][1:]
        seen: dict[int, int] = {}
        ents = []
        for lv, _r in u.entries:
            k = seen.get(lv, 0)
            seen[lv] = k + 1
            ents.append(vocab.elems[f"entry{lv}"][k])
        return cls(vocab, u, list(cpus), ents)

    def facts(self) -> list[Any]:
        """The universe's structure: each CPU's package, each entry's parent."""
        v, u = self.v, self.u
        out = [v.cpu_pkg(c) == self.pkgs[u.platform.pkg(i)]
               for i, c in enumerate(self.cpu_el) if c is not None]
        for i, (lv, r) in enumerate(u.entries):
            if lv + 1 < u.platform.sept_levels and self.entry_el[i] is not None:
                parent = self.entry_el[u.entries.index((lv + 1, r >> 9))]
                out.append(v.parent[lv](self.entry_el[i]) == parent)
        return out

    @classmethod
    def of_model(cls, vocab: Vocab, model: Any, fixed: Platform) -> Mapping:
        from tdxcheck.checker.explore.programs import Config

        v = vocab

        def ev(t: Any) -> Any:
            return model.eval(t, model_completion=True)

        def idx(elems: list[Any], t: Any) -> int:
            val = ev(t)
            return next(i for i, x in enumerate(elems) if z3.eq(x, val))

        pkgs = v.elems["pkg"]
        by_pkg: dict[int, list[Any]] = {i: [] for i in range(len(pkgs))}
        for c in v.elems["cpu"][1:]:
            by_pkg[idx(pkgs, v.cpu_pkg(c))].append(c)
        cpp = max(1, *(len(x) for x in by_pkg.values()))
        cpu_el: list[Any | None] = []
        for p in range(len(pkgs)):
            cs = by_pkg[p]
            cpu_el += cs + [None] * (cpp - len(cs))
        levels = v.levels
        region: dict[tuple[int, int], int] = {}  # (level, element index) -> region
        top = levels - 1
        for i, _e in enumerate(v.elems[f"entry{top}"]):
            region[(top, i)] = i
        for lv in range(top - 1, -1, -1):
            count: dict[int, int] = {}
            for i, e in enumerate(v.elems[f"entry{lv}"]):
                parent = region[(lv + 1, idx(v.elems[f"entry{lv + 1}"], v.parent[lv](e)))]
                k = count.get(parent, 0)
                count[parent] = k + 1
                region[(lv, i)] = parent * 512 + k
        gpas = tuple(sorted({r << (12 + 9 * lv) for (lv, _i), r in region.items()}))
        p = fixed
        plat = Platform(packages=len(pkgs), cpus_per_package=cpp, hkids=len(v.elems["hkid"]) - 1,
                        tdcs_pages=p.tdcs_pages, tdcx_pages=p.tdcx_pages,
                        max_vcpus=p.max_vcpus, sept_levels=p.sept_levels,
                        clflush_before_alloc=p.clflush_before_alloc,
                        clear_before_reuse=p.clear_before_reuse,
                        wrapper_clflush=p.wrapper_clflush)
        config = Config("cti", plat, len(v.elems["td"]), len(v.elems["vp"]),
                        len(v.elems["page"]) - 1, gpas)
        u = config.universe()
        by_region = {(lv, r): v.elems[f"entry{lv}"][i] for (lv, i), r in region.items()}
        m = cls(v, u, cpu_el, [by_region.get(key) for key in u.entries])
        m.config = config
        return m

    # ---- cells ---------------------------------------------------------------------
    def cell_terms(self, state: PState) -> list[Any]:
        """Every cell of the finite layout as an Int term of ``state``: an enum's value, a
        flag 0/1, an object's index, a bitmap's bits summed; a padding entry's cells 0."""
        lay, u = self.layout, self.u
        out: list[Any] = []
        for f in FIELDS:
            ty = field_type(f)
            for idx in lay._indices(lay.shape[f.name]):
                idx = () if f.dim == "one" else idx
                args, level, inert = [], None, False
                for i, k in zip(idx, DIM_SORTS[f.dim], strict=True):
                    if k == "entry":
                        level = u.entries[i][0]
                        el = self.entry_el[i]
                        inert = inert or el is None
                        args.append(el)
                    else:
                        args.append(self.elem(k, i))
                if inert:
                    out.append(z3.IntVal(0))
                    continue
                key = fkey(f.name, level)
                if ty[0] == "set":
                    bits = self._bits(str(f.kind))
                    out.append(z3.Sum([z3.If(state.get(key, args, b), 1 << n, 0)
                                       for n, b in bits]))
                else:
                    out.append(self._as_int(state.get(key, args), ty))
        return out

    def elem(self, kind: str, i: int) -> Any:
        return {"page": self.pages, "td": self.tds, "vp": self.vps, "hkid": self.hkids,
                "pkg": self.pkgs}[kind][i]

    def _bits(self, kind: str) -> list[tuple[int, tuple[Any, ...]]]:
        P = len(self.pkgs)
        if kind == "bitmap_pkg":
            return [(q, (self.pkgs[q],)) for q in range(P)]
        if kind == "bitmap_hkid":
            return [(h, (self.hkids[h],)) for h in range(len(self.hkids) - 1)]
        return [(k * P + q, (self.hkids[k], self.pkgs[q]))
                for k in range(len(self.hkids)) for q in range(P)]

    def _as_int(self, t: Any, ty: Any) -> Any:
        v = self.v
        if ty == ("int",):
            return t
        if ty == ("bool",):
            return z3.If(t, 1, 0)
        if ty[0] == "enum":
            out: Any = z3.IntVal(-1)
            for val, c in v.enums[ty[1]][1].items():
                out = z3.If(t == c, val, out)
            return out
        if ty[1] == "cpu":
            out = z3.IntVal(0)  # NOLP
            for slot, c in enumerate(self.cpu_el):
                if c is not None:
                    out = z3.If(t == c, slot + 1, out)
            return out
        elems = {"page": self.pages, "td": self.tds, "vp": self.vps, "hkid": self.hkids}[ty[1]]
        out = z3.IntVal(len(elems))
        for i in range(len(elems) - 1, -1, -1):
            out = z3.If(t == elems[i], i, out)
        return out

    @staticmethod
    def values(model: Any, terms: Sequence[Any]) -> State:
        return tuple(model.eval(t, model_completion=True).as_long() for t in terms)

    # ---- actions -------------------------------------------------------------------
    def bind(self, tr: PTransition, binds: dict[str, Any], a: Action) -> list[Any]:
        """Constraints that make the transition's operands the finite action's objects."""
        out = []
        args = dict(a.args)
        for k, x in tr.args:
            if isinstance(x, SymGpa):
                e = self.entry_el[self.u.entry(args[k], x.level)]
                out.append(binds[x.entry.name][0] == e)
            elif getattr(x, "kind", None) in ("page", "td", "vp", "hkid"):
                out.append(binds[x.name][0] == self.elem(x.kind, args[k]))
        if tr.cpu.name in binds:
            out.append(binds[tr.cpu.name][0] == self.cpu_el[a.cpu])
        return out

    def action(self, tr: PTransition, binds: dict[str, Any], model: Any) -> Action:
        """The finite action the model's operands name."""
        def index(elems: Sequence[Any], t: Any) -> int:
            val = model.eval(t, model_completion=True)
            return next(i for i, x in enumerate(elems) if x is not None and z3.eq(x, val))

        args = []
        for k, x in tr.args:
            if isinstance(x, SymGpa):
                i = index(self.entry_el, binds[x.entry.name][0])
                lv, region = self.u.entries[i]
                args.append((k, region << (12 + 9 * lv)))
            elif getattr(x, "name", None) == "global_keyid":
                args.append((k, len(self.hkids) - 1))
            elif getattr(x, "kind", None) in ("page", "td", "vp", "hkid"):
                elems = {"page": self.pages, "td": self.tds, "vp": self.vps,
                         "hkid": self.hkids}[x.kind]
                args.append((k, index(elems, binds[x.name][0])))
            else:
                args.append((k, x))
        return Action(tr.step, tr.kind, tuple(args), index(self.cpu_el, binds["cpu"][0]))


class Conformance:
    """A parametric transition evaluated on a finite state (``step``): the bounded
    instance of a universe's sizes, its pre-state pinned to the state and its operands to
    the action's; what the parametric reading says happens, as the finite engine would
    return it.  The tests compare it with ``Engine.step``."""

    def __init__(self, u: Universe, faults: bool = True, ablate: Sequence[str] = ()) -> None:
        from .houdini import Context

        self.u = u
        self.ctx = Context(u.platform, faults, tuple(ablate), sizes=Mapping.sizes_of(u))
        self.m = Mapping.of_universe(self.ctx.vocab, u)
        self.sol = z3.Solver()
        self.sol.add(*self.m.facts())
        self._pre = self.m.cell_terms(self.ctx.pre)
        self._terms: dict[int, tuple[list[Any], list[Any], list[Any]]] = {}
        # the parametric cells a finite state has none of (the global KeyID's KOT entry,
        # its host-pool bit and its bit in CACHE.WB's snapshot): zero, as never written
        v, g = self.ctx.vocab, self.ctx.vocab.GLOBAL
        self.sol.add(self.ctx.pre.get("kot_state", [g]) == v.enums[_kot()][1][0],
                     z3.Not(self.ctx.pre.get("host_hkid", [g])),
                     *(z3.Not(self.ctx.pre.get("kot_wbinvd", [g], [q])) for q in self.m.pkgs),
                     *(z3.Not(self.ctx.pre.get("wbt_snap", [q], [g])) for q in self.m.pkgs))

    def step(self, s: State, a: Action, fault: int = -1
             ) -> tuple[bool, bool, int, int, State]:
        """(guard holds, enabled, status, where, post-state) by the parametric reading."""
        from .transitions import instance_of

        ctx, sol, m = self.ctx, self.sol, self.m
        tr = instance_of(a, self.u, ctx.trans, fault)
        st, binds, _facts = ctx.step(tr)
        sol.push()
        sol.add(*(t == x for t, x in zip(self._pre, s, strict=True)))
        sol.add(*m.bind(tr, binds, a))
        # each value a constant the solver defines (it expands the quantifiers the
        # closures hold over the finite sorts itself)
        hit = self._terms.get(tr.eid)
        if hit is None:
            terms = [st.facts[0], st.status, st.where, *m.cell_terms(st.post)]
            if tr.guard is not None:
                from .logic import Env

                terms.append(ctx.enc.truth(tr.guard, Env(ctx.pre, None, dict(binds))))
            defs = [z3.Const(f"val.{tr.eid}.{i}", t.sort()) for i, t in enumerate(terms)]
            hit = self._terms[tr.eid] = (terms, defs,
                                         [d == t for d, t in zip(defs, terms, strict=True)])
        terms, defs, eqs = hit
        sol.add(*eqs)
        r = sol.check()
        assert r == z3.sat, f"the pinned state is not a model ({r}): {a}"
        model = sol.model()
        vals = [model.eval(d, model_completion=True) for d in defs]
        sol.pop()
        guard = z3.is_true(vals[-1]) if tr.guard is not None else True
        n_post = len(terms) - 3 - (tr.guard is not None)
        return (guard, z3.is_true(vals[0]), vals[1].as_long(), vals[2].as_long(),
                tuple(x.as_long() for x in vals[3:3 + n_post]))


def clause_truths(conf: Conformance, s: State) -> dict[str, bool]:
    """Each target's ∀-clauses (counting clauses exact) on the finite state ``s``, by the
    parametric reading."""
    ctx, sol = conf.ctx, conf.sol
    if not hasattr(conf, "_truth_defs"):
        defs = []
        for t in ctx.targets:
            if t.kind == "typing":
                continue
            d = z3.Bool(f"holds.{t.id}")
            defs.append((t.id, d, d == z3.And(*ctx.hypotheses(t))))
        conf._truth_defs = defs  # type: ignore[attr-defined]
    defs = conf._truth_defs  # type: ignore[attr-defined]
    sol.push()
    sol.add(*(t == x for t, x in zip(conf._pre, s, strict=True)))
    sol.add(*(eq for _i, _d, eq in defs))
    assert sol.check() == z3.sat
    model = sol.model()
    out = {i: z3.is_true(model.eval(d, model_completion=True)) for i, d, _e in defs}
    sol.pop()
    return out


def _kot() -> type:
    from tdxcheck.model.enums import KotState

    return KotState
