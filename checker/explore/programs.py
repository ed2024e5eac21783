"""Host programs the explorer runs: ``--host any`` and scenario files with threads.

``AnyHost`` calls every SEAMCALL wrapper with every operand of a configuration, in any
order (the untyped form: raw pages for every page operand), and lets the guest exit and
accept pages whenever a vCPU runs.  It leaves out the host's own bookkeeping (allocator,
HKID pool, CLFLUSH, clearing): every page counts as allocated to the TDX code and every
HKID as taken, and only the invariant clauses the *module* guarantees are checked.  So a
violation found here is a hole in the module's rules (or in the model), never a host bug.

``ScenarioHost`` runs a scenario's common prefix, then every interleaving of its threads
(scenario-format.md §5), with every invariant plus ``expected-status``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tdxcheck.checker.scenario import InputError, config_values
from tdxcheck.model.actions import Action, describe
from tdxcheck.model.compile import (
    NOT_ENABLED,
    compile_functions,
    new_gen,
    predicate_source,
)
from tdxcheck.model.enums import HostPage
from tdxcheck.model.expr import Expr
from tdxcheck.model.rule import LEAVES
from tdxcheck.model.state import Layout, Platform, State, Universe
from tdxcheck.model.status import status_matches, status_name
from tdxcheck.model.steps import TD_EXIT_REASONS
from tdxcheck.properties import INVARIANTS, Invariant

from .bfs import Edge
from .engine import Engine, Violation


# ------------------------------------------------------------------ configurations
@dataclass(frozen=True)
class Config:
    """A named configuration for ``--host any``: the platform and how many of each object."""

    name: str
    platform: Platform
    tds: int
    vps: int
    pages: int
    gpas: tuple[int, ...]

    def universe(self) -> Universe:
        return Universe(
            self.platform,
            tuple(f"td{i}" for i in range(self.tds)),
            tuple(f"vp{i}" for i in range(self.vps)),
            tuple(f"p{i}" for i in range(self.pages)),
            self.gpas,
        )

    def describe(self) -> str:
        p = self.platform
        return (f"{self.name}: {self.tds} TD(s), {self.vps} vCPU(s), {self.pages} pages, "
                f"{p.hkids - 1} private HKID(s), {p.packages} package(s) x "
                f"{p.cpus_per_package} CPU(s), "
                f"{'GPAs ' + ', '.join(hex(g) for g in self.gpas) if self.gpas else 'no GPA'}, "
                f"S-EPT depth {p.sept_levels}, TDCS {p.tdcs_pages}, TDCX {p.tdcx_pages}")


CONFIGS: dict[str, Config] = {
    "tiny": Config("tiny", Platform(packages=1, cpus_per_package=1, hkids=2, tdcs_pages=1,
                                    tdcx_pages=0, max_vcpus=1, sept_levels=2),
                   tds=1, vps=1, pages=3, gpas=(0x0,)),
    "default": Config("default", Platform(packages=2, cpus_per_package=1, hkids=2,
                                          tdcs_pages=1, tdcx_pages=0, max_vcpus=1,
                                          sept_levels=2),
                      tds=2, vps=1, pages=4, gpas=(0x0,)),
    "large": Config("large", Platform(packages=2, cpus_per_package=1, hkids=3, tdcs_pages=1,
                                      tdcx_pages=0, max_vcpus=1, sept_levels=2),
                    tds=2, vps=2, pages=6, gpas=(0x0, 0x1000)),
}
#: what each named configuration reaches (README "Named configurations"; a test checks it)
CONFIG_COVERS: dict[str, str] = {
    "tiny": "one TD, one vCPU, one CPU, 3 pages (TDR, TDCS, TDVPR): create, key config, "
            "TDCS, vCPU init, enter/exit, flush, teardown, reclaim, an S-EPT page (SEPT.ADD "
            "and SEPT.REMOVE); never a guest page (PAGE.ADD, AUG and REMOVE never succeed)",
    "default": "two TDs contending for 4 pages and one private HKID on two packages: HKID "
               "reuse, CACHE.WB per package, a guest page (PAGE.ADD, AUG, BLOCK, TRACK and "
               "REMOVE succeed; a guest's ACCEPT needs a fifth page and never does), two "
               "CPUs (a host call next to a running vCPU)",
    "large": "two TDs, two vCPUs, two private HKIDs, 6 pages, two GPAs: two vCPUs of one TD "
             "and two guest pages; its exploration does not finish on a 2-core, 24 GB "
             "machine (projected 5 x 10^8 states or more: give --max-states or --time-limit); "
             "'tdxcheck prove --config large' proves its invariants by induction",
}

CONFIG_KEYS = ("tds", "vps", "pages", "gpas")
#: the object counts ``--host any`` takes as ``key=value`` besides the platform's keys, with
#: their limits (a TD is needed to check anything; past the maxima no exploration finishes)
OBJECT_LIMITS: dict[str, tuple[int, int | None]] = {
    "tds": (1, 8), "vps": (0, 8), "pages": (1, 32), "gpas": (0, 16)}


def make_config(name: str, overrides: Mapping[str, str] | Sequence[tuple[str, str]]
                ) -> Config:
    """A named configuration with ``key=value`` overrides (scenario config keys, plus
    ``tds``, ``vps``, ``pages`` and ``gpas`` (a count: GPAs 0, 0x1000, ...)), validated as a
    scenario's ``config`` line is (``scenario.config_values``: known keys, no key twice,
    integers within the limits)."""
    pairs = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides)
    values = config_values(pairs, OBJECT_LIMITS)
    c = CONFIGS.get(name) or config_of_file(name)
    plat = dict(c.platform.__dict__)
    objs: dict[str, Any] = {"tds": c.tds, "vps": c.vps, "pages": c.pages, "gpas": c.gpas}
    for k, n in values.items():
        if k in plat:
            plat[k] = n
        elif k == "gpas":
            objs["gpas"] = tuple(i * 0x1000 for i in range(n))
        else:
            objs[k] = n
    return Config(name if not pairs else f"{name}+" + ",".join(
        f"{k}={v}" for k, v in pairs), Platform(**plat), **objs)


def config_of_file(path: str) -> Config:
    """``--config FILE``: a scenario's ``config`` line as the platform, and as many TDs,
    vCPUs, pages and GPAs as the file names (at least one TD and one page)."""
    import os

    from tdxcheck.checker.scenario import parse_file

    if not (path.endswith(".tdx") or os.sep in path) or not os.path.exists(path):
        raise InputError(f"unknown configuration {path!r} (have: {', '.join(CONFIGS)}, or a "
                         "scenario FILE.tdx whose config line to use)")
    sc = parse_file(path)
    gpas = tuple(sorted({g & ~0xFFF for g in sc.gpas}))
    return Config(path, Platform(**sc.config.as_dict()), tds=max(len(sc.tds), 1),
                  vps=len(sc.vps), pages=max(len(sc.pages), 1), gpas=gpas)


def counter_cells(lay: Layout) -> list[int]:
    """Cells of counter fields: rules compute them, so only they can leave their range."""
    return [i for i in range(lay.size) if lay.field_of(i).kind == "int"]


# ------------------------------------------------------------------ any host
def any_host_guard(kind: str, slot: Any) -> Expr | None:
    """The any host's own condition for an action (None: none): it creates a TD (a vCPU)
    only in a free slot, as a host keeps one ``struct tdx_td`` per TD (``slot``: the ``td``
    or ``vp`` operand; an int, or a term in the parametric reading)."""
    from tdxcheck.model.state import S

    if kind == "TDH.MNG.CREATE":
        return S.tdr[slot] == 0
    if kind == "TDH.VP.CREATE":
        return S.tdvpr[slot] == 0
    return None


def any_host_actions(u: Universe) -> list[tuple[Action, Expr | None]]:
    """Every SEAMCALL with every operand of the universe, plus the guest's own steps, each
    with its host-side guard (a struct must be free before TDH.MNG.CREATE/VP.CREATE)."""
    p = u.platform
    pages = range(1, u.n_pages)
    cpus = range(p.cpus)
    out: list[tuple[Action, Expr | None]] = []

    def add(step: str, kind: str, guard: Expr | None = None, cpu: int = 0, **args: Any) -> None:
        order = {k: i for i, k in enumerate(LEAVES[kind].operands)} if kind in LEAVES else {}
        items = tuple(sorted(args.items(), key=lambda kv: order.get(kv[0], 0)))
        out.append((Action(step, kind, items, cpu), guard))

    for t in range(len(u.tds)):
        for pg in pages:
            for h in range(1, p.hkids):
                add("tdh_mng_create", "TDH.MNG.CREATE", any_host_guard("TDH.MNG.CREATE", t),
                    td=t, tdr=pg, hkid=h)
    for pg in pages:
        for c in cpus:
            add("tdh_mng_key_config", "TDH.MNG.KEY.CONFIG", cpu=c, tdr=pg)
        for q in pages:
            add("tdh_mng_addcx", "TDH.MNG.ADDCX", page=q, tdr=pg)
        for step, kind in (("tdh_mng_init", "TDH.MNG.INIT"), ("tdh_mng_rd", "TDH.MNG.RD"),
                           ("tdh_mng_wr", "TDH.MNG.WR"),
                           ("tdh_mng_vpflushdone", "TDH.MNG.VPFLUSHDONE"),
                           ("tdh_mng_key_freeid", "TDH.MNG.KEY.FREEID"),
                           ("tdh_mem_track", "TDH.MEM.TRACK"),
                           ("tdh_mr_finalize", "TDH.MR.FINALIZE")):
            add(step, kind, tdr=pg)
    for v in range(len(u.vps)):
        for q in pages:
            for pg in pages:
                add("tdh_vp_create", "TDH.VP.CREATE", any_host_guard("TDH.VP.CREATE", v),
                    vp=v, tdvpr=q, tdr=pg)
    for pg in pages:
        for q in pages:
            add("tdh_vp_addcx", "TDH.VP.ADDCX", page=q, tdvpr=pg)
        for c in cpus:
            for step, kind in (("tdh_vp_init", "TDH.VP.INIT"), ("tdh_vp_enter", "TDH.VP.ENTER"),
                               ("tdh_vp_flush", "TDH.VP.FLUSH"), ("tdh_vp_rd", "TDH.VP.RD"),
                               ("tdh_vp_wr", "TDH.VP.WR")):
                add(step, kind, cpu=c, tdvpr=pg)
    for c in cpus:
        for r in (0, 1):
            add("tdh_phymem_cache_wb", "TDH.PHYMEM.CACHE.WB", cpu=c, resume=r)
    for pg in pages:
        add("tdh_phymem_page_reclaim", "TDH.PHYMEM.PAGE.RECLAIM", page=pg)
        for k in range(1, p.hkids + 1):
            step = "tdh_phymem_page_wbinvd_tdr" if k == p.global_keyid else \
                "tdh_phymem_page_wbinvd_hkid"
            add(step, "TDH.PHYMEM.PAGE.WBINVD", page=pg, keyid=k)
    for pg in pages:
        for g in u.gpas:
            for lv in range(p.sept_levels):
                if g % (4096 << 9 * lv):
                    continue
                if lv >= 1:
                    for q in pages:
                        add("tdh_mem_sept_add", "TDH.MEM.SEPT.ADD", tdr=pg, gpa=g, level=lv,
                            page=q)
                    add("tdh_mem_sept_remove", "TDH.MEM.SEPT.REMOVE", tdr=pg, gpa=g, level=lv)
                add("tdh_mem_range_block", "TDH.MEM.RANGE.BLOCK", tdr=pg, gpa=g, level=lv)
                add("tdh_mem_range_unblock", "TDH.MEM.RANGE.UNBLOCK", tdr=pg, gpa=g, level=lv)
                if lv == 0:
                    add("tdh_mem_page_remove", "TDH.MEM.PAGE.REMOVE", tdr=pg, gpa=g, level=lv)
            for q in pages:
                add("tdh_mem_page_add", "TDH.MEM.PAGE.ADD", tdr=pg, gpa=g, page=q)
                add("tdh_mem_page_aug", "TDH.MEM.PAGE.AUG", tdr=pg, gpa=g, page=q)
            add("tdh_mr_extend", "TDH.MR.EXTEND", tdr=pg, gpa=g)
    for v in range(len(u.vps)):
        for reason in TD_EXIT_REASONS:
            out.append((Action("td_exit", "td_exit", (("vp", v), ("reason", reason))), None))
        for g in u.gpas:
            add("guest_accept", "TDG.MEM.PAGE.ACCEPT", vp=v, gpa=g)
    return out


def has_clauses(inv: Invariant, u: Universe, who: str,
                acts: Sequence[tuple[Action, Expr | None]] | None = None) -> bool:
    """Whether ``inv`` has a state or step clause kept by ``who`` ("module" or "host")
    in ``u`` (step clauses over the any host's actions, or ``acts``)."""
    if inv.state_clauses(u, who):
        return True
    return any(inv.step_clauses(u, a, who) for a, _g in (acts or any_host_actions(u)))


def not_covered(u: Universe) -> dict[str, str]:
    """The invariants ``--host any`` does not check in ``u``, each with why: no clause of
    it is the module's (``Invariant.guarantee``/``Clause.by``) here, so it is the host's
    obligation and the any host makes SEAMCALLs only; or no clause applies here.  An
    invariant with both kinds of clause is checked for its module clauses
    (``partly_covered``)."""
    acts = any_host_actions(u)
    out: dict[str, str] = {}
    for inv in INVARIANTS:
        if has_clauses(inv, u, "module", acts):
            continue
        if inv.guarantee == "host":
            out[inv.id] = ("no clause is the module's in this configuration: the host's "
                           "obligation (the any host makes SEAMCALLs only); check a host "
                           "with 'prove --host FILE' or 'check --host kvm'")
        else:
            out[inv.id] = "no clause applies in this configuration"
    return out


def partly_covered(u: Universe) -> list[str]:
    """Invariants checked for their module clauses only under ``--host any``: their host
    clauses are the host's obligation (``prove --host FILE``, ``check``)."""
    acts = any_host_actions(u)
    return [inv.id for inv in INVARIANTS
            if has_clauses(inv, u, "module", acts) and has_clauses(inv, u, "host", acts)]


def _compile_guards(layout: Layout, guards: Sequence[Expr | None]) -> list[Any]:
    gen = new_gen(layout)
    srcs, names = [], []
    for i, g in enumerate(guards):
        if g is None:
            names.append(None)
            continue
        srcs.append(predicate_source(f"g{i}", [g], layout, gen, two_state=False))
        names.append(f"g{i}")
    ns = compile_functions(srcs, gen) if srcs else {}
    return [ns[n] if n else None for n in names]


class AnyHost:
    """``--host any``: every wrapper, every operand, any order (see the module docstring)."""

    extra_bound = 0

    def __init__(self, u: Universe, faults: bool = False, ablate: Sequence[str] = (),
                 coverage: bool = False,
                 actions: Sequence[tuple[Action, Expr | None]] | None = None,
                 engine: Engine | None = None,
                 accepted_only: frozenset[str] = frozenset()) -> None:
        self.u = u
        self.coverage = coverage
        # step invariants checked only where the module accepts the call (the API lab's
        # mistakes: a refusal it finds by itself, once)
        self.accepted_only = accepted_only
        # another client's actions (with their guards) and engine: the API lab's moves
        self.engine = engine if engine is not None else Engine(u, ablate=ablate,
                                                               only="module")
        acts = list(actions) if actions is not None else any_host_actions(u)
        self.actions = [a for a, _ in acts]
        self.guards = _compile_guards(self.engine.layout, [g for _, g in acts])
        self._guard_expr = {id(fn): g for fn, (_, g) in zip(self.guards, acts, strict=True)
                            if fn is not None}
        self.edges: list[Edge] = []
        self._table: list[tuple[Any, Any, int, int]] = []  # (fn, guard, fault, edge id)
        for a, guard in zip(self.actions, self.guards, strict=True):
            ca = self.engine.compiled(a)
            self._table.append((ca, guard, -1, len(self.edges)))
            self.edges.append(Edge(describe(a, u)))
            if faults:
                for k, f in enumerate(ca.rule.faults):
                    self._table.append((ca, guard, k, len(self.edges)))
                    self.edges.append(Edge(describe(a, u), fault=status_name(f.status)))
        self.edge_action = []
        for a in self.actions:
            self.edge_action.append(a)
            if faults:
                self.edge_action.extend([a] * len(self.engine.compiled(a).rule.faults))
        self._build_gates()
        self.state_violations = self.engine.state_violations  # type: ignore[method-assign]
        self.self_loops = 0  # transitions that failed at their gate (counted, not yielded)

    def _build_gates(self) -> None:
        """Group the table by each action's first check (its *gate*).

        Most actions fail their first check in most states (the page is not a TDR, ...):
        such a transition changes nothing and returns a known status.  The fused successor
        function tests every distinct gate once per state; only the actions whose gate
        passes run their other checks.  A failed gate is the same outcome the rule would
        give (the check is the rule's own first step, read from the rule: a self-loop, or
        the check's failure effects), so this changes no verdict: it only avoids running
        the rest of the rule.  Actions with step invariants are not
        gated (a step invariant might speak about a self-loop): they run their whole chain,
        with the invariant's clauses checked on every outcome.
        """
        from tdxcheck.model.expr import Const
        from tdxcheck.model.rule import Check, Fault

        gen = new_gen(self.engine.layout)
        srcs: dict[str, int] = {}
        groups: list[list[tuple[Any, Any, int, int]]] = []
        always: list[tuple[Any, Any, int, int]] = []
        self._gate_index: dict[int, int] = {}  # edge id -> index of its gate in rule.steps
        for entry in self._table:
            ca, _guard, fault, _eid = entry
            gate = None
            if not ca.step_invs and isinstance(ca.rule.enabled, Const):
                k = 0
                for si, step in enumerate(ca.rule.steps):
                    if isinstance(step, Fault):
                        if fault == k:
                            break
                        k += 1
                        continue
                    if isinstance(step, Check) and not isinstance(step.ok, Const):
                        gate = step.ok
                        self._gate_index[_eid] = si
                        break
                    if isinstance(step, Check) and not step.ok.value:
                        break
            if gate is None:
                always.append(entry)
                continue
            src = gen.ex(gate)
            if src not in srcs:
                srcs[src] = len(groups)
                groups.append([])
            groups[srcs[src]].append(entry)
        self._gate_srcs = srcs
        self._groups = groups
        # successors' order: the gated groups, then the ungated actions without step
        # invariants, then those with (each part in table order)
        self._always = [e for e in always if not e[0].step_invs] + \
            [e for e in always if e[0].step_invs]
        self._fused = self._build_fused()
        self._keyed: dict[Any, Any] = {}

    def _build_fused(self, key: Any = None) -> Any:
        """One generated function for every action: each group under its gate, each action
        an if/elif chain of its own checks (``compile.chain_arms``), consecutive actions'
        shared checks tested once (``compile.merged_chains``).

        ``fused(s)`` returns ``(out, loops)``: ``out`` the transitions that change the state
        or break a step invariant, as ``(edge id, status, next state, violations)``,
        ``loops`` how many self-loops there were besides.  With ``key`` (a
        ``compile.KeySpec``) it is ``fused(s, K, seen)`` with ``K`` the packed key of ``s``,
        and returns ``(out, transitions)``: ``out`` holds the transitions to states whose key
        is not in ``seen`` or that break a step invariant, as ``(edge id, status, key, next
        state as a list, violations, how many transitions of s come before it)``, and
        ``transitions`` is how many transitions ``s`` has in all."""
        from tdxcheck.model.compile import (
            StepCheck,
            chain_arms,
            merged_chains,
            on_self_loop,
            outcome_source,
            predicate_source,
        )
        from tdxcheck.model.expr import Const

        # chain_arms reads the rule alone: it has no wrapper CLFLUSH before the SEAMCALL
        assert all(not ca.action.clflush for ca, _g, _f, _e in self._table)
        lay = self.engine.layout
        gen = new_gen(lay)
        # coverage counters: per edge, one per outcome (success, then each rule step)
        self.cov_base: list[int] = []
        total = 0
        for ca, _g, _f, _e in self._table:
            self.cov_base.append(total)
            total += len(ca.rule.steps) + 1
        if not hasattr(self, "cov_counts"):
            self.cov_counts = [0] * total
        cov = self.coverage
        extra: dict[str, Any] = {}
        preds: list[str] = []

        def step_checks(ca: Any, eid: int) -> list[Any]:
            out = []
            for j, (inv, msgs, _fn) in enumerate(ca.step_invs):
                clauses = inv.step_clauses(self.u, ca.action, self.engine.only)
                name = f"_si{eid}_{j}"
                preds.append(predicate_source(name, [c.ok for c in clauses], lay, gen,
                                              two_state=True))
                extra[f"_sv{eid}_{j}"] = (lambda k, inv=inv, msgs=msgs:
                                          Violation(inv.id, msgs[k], k))
                out.append(StepCheck(name, f"_sv{eid}_{j}", not all(
                    isinstance(on_self_loop(c.ok), Const) and on_self_loop(c.ok).value
                    for c in clauses)))
            return out

        # every gate is tested once per state, first: a check of a chain that is some
        # gate's condition reads that test's result
        gate_var = {src: f"g{gi}" for src, gi in self._gate_srcs.items()}

        def cached(cond: str) -> str:
            if cond in gate_var:
                return gate_var[cond]
            if cond.startswith("not ") and cond[4:] in gate_var:
                return f"not {gate_var[cond[4:]]}"
            return cond

        # each entry's place in the function (the order of ``out``)
        order = [e for g in self._gate_srcs.values() for e in self._groups[g]] + self._always
        rank = {e[3]: r for r, e in enumerate(order)}

        def arms(entry: Any, skip_first: bool) -> Any:
            ca, guard, fault, eid = entry
            sinv = step_checks(ca, eid)
            refused = [sc for sc, (inv, _m, _f) in zip(sinv, ca.step_invs, strict=True)
                       if inv.id not in self.accepted_only]
            a, els = chain_arms(ca.rule, fault, gen, eid, ca.action.kind in LEAVES,
                                skip_first=skip_first, cov=self.cov_base[eid] if cov else None,
                                key=key, sinv=sinv,
                                guard=self._guard_expr.get(id(guard)), rank=rank[eid],
                                sinv_refused=refused)
            return [(cached(c), body) for c, body in a], els

        # every table entry is one transition unless its guard fails or it is not enabled
        # (``dis``): a self-loop unless it appended to ``out``
        lines = ["def fused(s, K=None, seen=()):", "    out = []", "    dis = 0"]
        lines += [f"    {v} = {src}" for src, v in gate_var.items()]
        for src, gi in self._gate_srcs.items():
            group = self._groups[gi]
            lines.append(f"    if {gate_var[src]}:")
            lines += merged_chains([arms(e, True) for e in group], "        ")
            lines.append("    else:")
            # the gate failed: each action's own failure at its gate (a self-loop, unless
            # the check has failure effects)
            fails = []
            for ca, guard, _fault, eid in group:
                step = ca.rule.steps[self._gate_index[eid]]
                c = self.cov_base[eid] + self._gate_index[eid] + 1
                g = self._guard_expr.get(id(guard))
                fails.append(([(f"not {gen.ex(g)}", ["dis += 1"])] if g is not None else [],
                              ([f"C[{c}] += 1"] if cov else []) + outcome_source(
                                  gen, step.fail_effects,
                                  step.status if ca.action.kind in LEAVES else None, eid,
                                  key, rank=rank[eid])))
            lines += merged_chains(fails, "        ")
        lines += merged_chains([arms(e, False) for e in self._always], "    ")
        lines.append(f"    return out, {len(self._table)} - dis" +
                     ("" if key is not None else " - len(out)"))
        ns = compile_functions(["\n".join(lines), *preds], gen)
        ns.update(extra)
        ns["C"] = self.cov_counts
        return ns["fused"]

    def keyed_successors(self, key: Any) -> Any:
        """The fused successor function that computes each successor's packed key and
        leaves out the successors already seen (see ``_build_fused``), for the packing
        ``key`` (a ``compile.KeySpec``); None with coverage on (the walk counts through
        ``successors``)."""
        if self.coverage:
            return None
        fn = self._keyed.get(key)
        if fn is None:
            fn = self._keyed[key] = self._build_fused(key)
        return fn

    def initial(self) -> State:
        lay = self.engine.layout
        s = list(lay.initial())
        for pg in range(1, self.u.n_pages):
            s[lay.flat("host", (pg,))] = int(HostPage.TDX)
        for h in range(1, self.u.platform.hkids):
            s[lay.flat("host_hkid", (h,))] = 1
        return tuple(s)

    def successors(self, s: State) -> Iterator[tuple[int, int | None, State, list[Violation]]]:
        """Every transition that can change the state or break a step invariant; the
        self-loops are only counted (``self_loops``)."""
        out, loops = self._fused(s)
        self.self_loops += loops
        return iter(out)

    def _run(self, s: State, entries: list[tuple[Any, Any, int, int]],
             out: list[tuple[int, int | None, State, list[Violation]]]) -> int:
        """Append the transitions that change the state or break a step invariant; return
        how many self-loops there were besides (the table entries one by one, through the
        per-action compiled rules: the reference reading of what ``fused`` does)."""
        loops = 0
        for ca, guard, fault, eid in entries:
            if guard is not None and guard(s) >= 0:
                continue
            status, n, where = ca.fn(s, fault)
            if status == NOT_ENABLED:
                continue
            if self.coverage:
                self.cov_counts[self.cov_base[eid] + where + 1] += 1
            viol = []
            for inv, msgs, fn in ca.step_invs:
                k = fn(s, n)
                if k >= 0:
                    viol.append(Violation(inv.id, msgs[k], k))
            if n == s and not viol:
                loops += 1
                continue
            out.append((eid, (status if ca.action.kind in LEAVES else None), n, viol))
        return loops

    def apply_edge(self, s: State, eid: int) -> tuple[int, int | None, State,
                                                        list[Violation]] | None:
        ca, guard, fault, _ = self._table[eid]
        if guard is not None and guard(s) >= 0:
            return None
        r = self.engine.step(s, ca.action, fault)
        if r.status == NOT_ENABLED:
            return None
        return eid, r.status, r.state, list(r.step_violations)

    def bounds(self) -> list[int]:
        lay = self.engine.layout
        return [lay.value_bound(lay.field_of(i)) for i in range(lay.size)]

    def counter_cells(self) -> list[int]:
        return counter_cells(self.engine.layout)

    def state_violations(self, s: State) -> list[Violation]:
        return self.engine.state_violations(s)

    def stuck(self, s: State) -> str | None:
        return None

    def action_of(self, eid: int) -> Action:
        return self.edge_action[eid]


# ------------------------------------------------------------------ scenario threads
class ScenarioHost:
    """The prefix (thread 0), then every interleaving of the threads' steps.

    The explorer's state is the model state followed by one program counter per thread.
    A step that cannot happen yet (a ``td_exit`` of a vCPU not in the guest) waits.
    """

    def __init__(self, sc: Any, faults: bool = False, ablate: Sequence[str] = ()) -> None:
        from .replay import plan_step, universe_of

        self.sc = sc
        self.u = universe_of(sc)
        self.engine = Engine(self.u, ablate=ablate)
        prefix = [s for s in sc.steps if s.thread is None]
        self.threads: list[list[Any]] = [prefix] + [
            [s for s in sc.steps if s.thread == t] for t in sc.threads]
        self.names = ["(prefix)", *sc.threads]
        self.extra_bound = max(len(t) for t in self.threads)
        self.edges: list[Edge] = []
        # per thread, per pc: list of (edge id, actions, fault indices per action or None)
        self.moves: list[list[list[tuple[int, list[Action], list[int]]]]] = []
        for ti, steps in enumerate(self.threads):
            per_pc = []
            for st in steps:
                plan = plan_step(sc, self.engine, st)
                acts = list(plan.actions)
                variants: list[list[int]] = []
                if st.fault:
                    variants.append(list(plan.faults))
                else:
                    variants.append([-1] * len(acts))
                    if faults and len(acts) == 1 and acts[0].is_seamcall:
                        for k in range(len(self.engine.compiled(acts[0]).rule.faults)):
                            variants.append([k])
                opts = []
                for fv in variants:
                    fault = None
                    if fv[0] >= 0:
                        fault = status_name(self.engine.compiled(acts[0]).rule.faults[fv[0]].status)
                    opts.append((len(self.edges), acts, fv))
                    self.edges.append(Edge(st.text, ti, fault))
                per_pc.append(opts)
            self.moves.append(per_pc)
        self.step_of_edge: list[Any] = []
        self.edge_move: list[tuple[int, int, list[Action], list[int]]] = []
        for ti, steps in enumerate(self.threads):
            for pc, st in enumerate(steps):
                self.step_of_edge.extend([st] * len(self.moves[ti][pc]))
                for _eid, acts, fv in self.moves[ti][pc]:
                    self.edge_move.append((ti, pc, acts, fv))
        self._n = self.engine.layout.size

    def initial(self) -> State:
        return self.engine.initial() + (0,) * len(self.threads)

    def successors(self, s: State) -> Iterator[tuple[int, int | None, State, list[Violation]]]:
        n = self._n
        model, pcs = s[:n], s[n:]
        runnable = [0] if pcs[0] < len(self.threads[0]) else range(1, len(self.threads))
        for ti in runnable:
            pc = pcs[ti]
            if pc >= len(self.threads[ti]):
                continue
            for eid, acts, fv in self.moves[ti][pc]:
                r = self._run(model, pcs, ti, pc, acts, fv)
                if r is not None:
                    yield (eid, *r)

    def _run(self, model: State, pcs: State, ti: int, pc: int, acts: list[Action],
             fv: list[int]) -> tuple[int | None, State, list[Violation]] | None:
        st = self.threads[ti][pc]
        cur = model
        viol: list[Violation] = []
        status: int | None = None
        for a, fault in zip(acts, fv, strict=True):
            r = self.engine.step(cur, a, fault)
            if r.status == NOT_ENABLED:
                return None
            status = r.status
            viol.extend(r.step_violations)
            cur = r.state
        if st.expected is not None and (
                status is None or not status_matches(status, st.expected, st.expected_has_opid)):
            got = status_name(status) if status is not None else "-"
            viol.append(Violation("expected-status", f"line {st.line}: {st.text}: expected "
                                  f"{st.expected_text}, got {got}", 0))
        return status, cur + pcs[:ti] + (pc + 1,) + pcs[ti + 1:], viol

    def apply_edge(self, s: State, eid: int) -> tuple[int, int | None, State,
                                                        list[Violation]] | None:
        ti, pc, acts, fv = self.edge_move[eid]
        pcs = s[self._n:]
        if pcs[ti] != pc or (ti > 0 and pcs[0] < len(self.threads[0])):
            return None
        r = self._run(s[: self._n], pcs, ti, pc, acts, fv)
        return None if r is None else (eid, *r)

    def bounds(self) -> list[int]:
        lay = self.engine.layout
        return [lay.value_bound(lay.field_of(i)) for i in range(lay.size)] + [
            len(t) for t in self.threads]

    def counter_cells(self) -> list[int]:
        return counter_cells(self.engine.layout)

    def state_violations(self, s: State) -> list[Violation]:
        return self.engine.state_violations(s[: self._n])

    def stuck(self, s: State) -> str | None:
        pcs = s[self._n:]
        waiting = [f"{self.names[i]} at line {self.threads[i][pc].line}"
                   for i, pc in enumerate(pcs) if pc < len(self.threads[i])]
        if not waiting:
            return None
        return "no step can run: " + "; ".join(waiting)
