"""``ApiHost``: the most general client of one wrapper API (``variants.py``).

Every entry of the API with every operand its C types allow, in any order, plus the host
actions the API leaves to its caller (page allocation, free and clear, the HKID pool), and
the guest's own steps (a vCPU exits, accepts a page).  Every invariant is checked, the
host's obligations included (as for a scenario file).  An entry's body is a list of model
actions (the steps of ``model/``, run by the one ``Engine``) with its on-failure policy
(return, retry once after a kick, continue), written once as a small state machine
(``Body``).  A combined helper's body runs atomically by default; with ``interleave``
(``tdxcheck apis --interleave``) it runs one step per move, and between two steps only the
guest / vCPU thread moves (a vCPU exits, accepts a page, enters) may run, so races inside a
helper show (``ApiHost._interleave``).

Operand domains come from the variant's C types (``variants.py``).  Two choices keep the
state space the caller's, not the caller's scratch variables':

* a handle whose page field the caller may assign is not state: a call through it may
  carry any value of the field's type, as if assigned just before the call (the
  assignment and the call are one move; a sealed, type-state handle is the TD's own TDR);
* a caller's CLFLUSH is not a move of its own: where the wrapper does not CLFLUSH, each
  call that hands a page over comes in two forms, with the caller's CLFLUSH of that page
  just before it and without.  A CLFLUSH only clears KeyID-0 lines, and only the module's
  taking a page reads them (``flush-before-alloc``), so a CLFLUSH earlier than that adds
  nothing a run could observe.

The state is the model's state alone (no cells of the host's own), so the explorer's
symmetry reduction applies unchanged; an interleaved run adds the helper-in-flight cells
after the model's and runs without the symmetry reduction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tdxcheck.checker.explore.engine import Engine, Violation
from tdxcheck.checker.explore.programs import any_host_actions
from tdxcheck.model.actions import Action
from tdxcheck.model.compile import NOT_ENABLED, compile_functions, new_gen, predicate_source
from tdxcheck.model.enums import HostPage, OpState, PageType, TdLifecycle, VcpuState
from tdxcheck.model.expr import And, Expr, Not
from tdxcheck.model.rule import LEAVES, Fault, Rule
from tdxcheck.model.state import S, State, Universe
from tdxcheck.model.steps import TD_EXIT_REASONS
from tdxcheck.properties.base import Clause, Invariant

from .variants import INTEGER_TYPES, Variant

#: an HKID read as a page address names no page of any TDMR: the model's NULL page
NULL = 0
#: a page address read as an HKID: no KeyID the module has (beyond every configuration's
#: KeyID range, whose maximum is 256 HKIDs; the value stands for any such address)
PA_AS_HKID = 512
#: the locals a helper body keeps between its steps (``Body``, ``Run.loc``)
N_LOCALS = 2

_LC, _OS, _VS = TdLifecycle, OpState, VcpuState
_MODULE_OWNED = (PageType.PT_REG, PageType.PT_TDR, PageType.PT_TDCX, PageType.PT_TDVPR,
                 PageType.PT_EPT)


class Disabled(Exception):
    """The move cannot happen in this state (or its fault does not fire on its path)."""


@dataclass(frozen=True)
class Rec:
    """One model action a move ran: its status (None for a host or guest action), the
    index of the failing check or fault (-1 success), and the states around it."""

    action: Action
    status: int | None
    where: int
    pre: State
    post: State
    viol: tuple[Violation, ...]

    @property
    def accepted(self) -> bool:
        return not self.status


@dataclass
class Move:
    """One thing the caller (or the guest) can do: an entry with its operands."""

    entry: str  # the C entry: a wrapper, a helper, a host or guest action
    label: str  # the entry with its operands
    action: Action | None = None  # a move that is one model action
    body: Body | None = None  # a move of several actions (a helper)
    guard: Expr | None = None  # the move exists only where this holds
    marks: frozenset[str] = frozenset()  # "swap", "caller_clflush"
    via_handle: bool = False  # through a live sealed handle (never a stale one)
    leaves: tuple[str, ...] = ()  # the leaves a body may call (its fault points)
    guest: bool = False
    calls: tuple[Action, ...] = ()  # the SEAMCALLs known before it runs (hand-overs)

    @property
    def statics(self) -> frozenset[str]:
        """What the move can do whatever the state: ``swap`` (an HKID and a page address
        traded places), ``unflushed`` (a page handed over without a CLFLUSH)."""
        out = set(self.marks & {"swap"})
        for a in (self.action,) if self.action is not None else self.calls:
            if a is not None and a.kind in LEAVES and any(
                    a.arg(x) and a.arg(x) not in a.clflush for x in LEAVES[a.kind].hands):
                out.add("unflushed")
        return frozenset(out)


@dataclass
class Run:
    """One move in progress: the state, the fault to fire (if any), what ran."""

    host: ApiHost
    m: State
    fault: str | None = None
    fired: bool = False
    recs: list[Rec] = field(default_factory=list)
    #: a helper body's locals (``Body``): what a later step needs of an earlier one
    loc: list[int] = field(default_factory=lambda: [0] * N_LOCALS)

    def get(self, name: str, *idx: int) -> int:
        return self.m[self.host.lay.flat(name, idx)]

    def call(self, a: Action) -> int:
        """A SEAMCALL; its status (0 success).  The move's fault fires at the first call
        that has that fault point; a call that is not enabled disables the move."""
        h = self.host
        ca = h.engine.compiled(a)
        fidx = -1
        if self.fault is not None and not self.fired:
            k = h.fault_index(a, self.fault)
            if k is not None:
                fidx = k
        status, n, where = ca.fn(self.m, fidx)
        if status == NOT_ENABLED:
            raise Disabled
        if fidx >= 0:
            if not (where >= 0 and isinstance(ca.rule.steps[where], Fault)
                    and ca.rule.steps[where].name == self.fault):
                raise Disabled  # the fault point is not on this path
            self.fired = True
        self._record(a, status, where, n)
        return status

    def host_step(self, a: Action) -> None:
        """A host or guest action that is not a SEAMCALL."""
        ca = self.host.engine.compiled(a)
        status, n, where = ca.fn(self.m, -1)
        if status == NOT_ENABLED:
            raise Disabled
        self._record(a, status if a.kind in LEAVES else None, where, n)

    def _record(self, a: Action, status: int | None, where: int, n: State) -> None:
        ca = self.host.engine.compiled(a)
        viol = tuple(Violation(inv.id, msgs[k], k) for inv, msgs, fn in ca.step_invs
                     if not inv.id.startswith("class:") and
                     (k := fn(self.m, n)) >= 0)  # type: ignore[operator]
        self.recs.append(Rec(a, status, where, self.m, n, viol))
        self.m = n

    def kick(self, t: int) -> None:
        """Every vCPU of TD slot ``t`` in the guest exits (KVM_REQ_OUTSIDE_GUEST_MODE)."""
        for v in range(len(self.host.u.vps)):
            page = self.get("tdvpr", v)
            if page and self.get("in_guest", v) and self.get("owner", page) == t:
                self.host_step(self.host.act("td_exit", vp=v, reason="normal"))


class ApiHost:
    """The most general client of ``variant`` over universe ``u`` (see the module
    docstring).

    Its one-action moves run in the explorer's fused successor code (an ``AnyHost`` over
    these moves, with a wrapper's CLFLUSH folded into the leaf's rule: ``preflushed``);
    each class of ``classes`` is a step clause there too (``class:<id>``), so a transition
    that makes a mistake is reported even when the module refuses it.  Helper bodies run
    through ``run_edge``.  Edges: the fused part's, in its order, then each body move with
    each fault it may fire."""

    def __init__(self, variant: Variant, u: Universe, faults: bool = False,
                 classes: Sequence[Any] = (), interleave: bool = False) -> None:
        from tdxcheck.checker.explore.programs import AnyHost
        from tdxcheck.properties import INVARIANTS

        self.variant = variant
        self.u = u
        self.faults = faults
        via = variant.has("typestate_handles")
        self.class_ids = [c.id for c in classes if c.expr is not None]
        pseudo = [_class_invariant(c, via) for c in classes if c.expr is not None]
        # every invariant, the host's obligations too; then the mistakes, as step clauses
        self.engine = Engine(u, invariants=(*INVARIANTS, *pseudo))
        self.lay = self.engine.layout
        self._acts: dict[Any, Action] = {}
        self._fault_idx: dict[tuple[Action, str], int | None] = {}
        self._loop_check: dict[Action, bool] = {}
        self.moves: list[Move] = []
        _Builder(self).build()
        self._guards = _compile_guards(self.lay, [mv.guard for mv in self.moves])
        # the one-action moves, fused
        fused: list[tuple[Action, Expr | None]] = []
        single: list[int] = []
        for i, mv in enumerate(self.moves):
            a = mv.action
            if a is None:
                continue
            if a.clflush:  # the CLFLUSH folded into the rule, under a name of its own
                twin = Action(a.step + "+clflush", a.kind, a.args, a.cpu)
                rule = self.engine.compiled(a).rule
                self.engine.compile_as(twin, preflushed(rule, a.clflush, u))
                a = twin
            single.append(i)
            fused.append((a, mv.guard))
        self.fused = AnyHost(u, faults=faults, actions=fused, engine=self.engine,
                             accepted_only=frozenset(f"class:{c}" for c in self.class_ids))
        # edges: (move index, fault index in its rule | fault name | None)
        self.edges: list[tuple[int, int | str | None]] = []
        for i, (a, _g) in zip(single, fused, strict=True):
            self.edges.append((i, None))
            if faults:
                self.edges += [(i, k) for k in range(len(self.engine.compiled(a).rule.faults))]
        assert len(self.edges) == len(self.fused.edges)
        self.n_fused = len(self.edges)
        self.leaf_faults = _leaf_faults(u) if faults else {}
        for i, mv in enumerate(self.moves):
            if mv.action is not None:
                continue
            self.edges.append((i, None))
            if faults:
                self.edges += [(i, f) for f in self._body_faults(mv)]
        self.n_start = len(self.edges)
        self._interleave(interleave)

    def _body_faults(self, mv: Move) -> list[str]:
        names: list[str] = []
        if self.faults:
            for leaf in mv.leaves:
                names += [f for f in self.leaf_faults.get(leaf, ()) if f not in names]
        return names

    # ------------------------------------------------------------------ interleaving
    def _interleave(self, on: bool) -> None:
        """With ``on``, each host helper whose body has more than one step runs one step
        per move, and between two steps only the guest / vCPU thread moves (``thread``)
        may run: the host is one thread, busy in its helper.  The helper in flight is
        state: ``extra`` cells after the model's (``N``): which helper (0: none; else 1 +
        its index in ``bodies``), the step to resume at, and the body's locals.  A vCPU
        thread's own moves (a guest step, ``tdh_vp_enter`` with its ``vcpu_load``) run
        as one move each.  Edges ``n_start``.. are the continuations, one per helper (and
        per fault it may fire at its next step); ``cont[j]`` lists helper j's.

        With ``faults``, each step's move may fire a fault of its own (an atomic helper
        meets at most one per call): the environment does not wait for a helper to end.

        These cells name pages, TDs and HKIDs (the helper's operands and locals), which
        the explorer's symmetry reduction does not rename: ``run.explore_variant`` turns
        symmetry off when ``extra`` is set."""
        self.N = self.lay.size
        self.thread = [mv.guest or mv.entry == "tdh_vp_enter" for mv in self.moves]
        self.bodies = [i for i, mv in enumerate(self.moves) if on and mv.body is not None
                       and len(mv.body.steps) > 1 and not self.thread[i]]
        self.extra = 2 + N_LOCALS if self.bodies else 0
        self._body_no = {i: j for j, i in enumerate(self.bodies)}
        self.cont: list[list[int]] = []
        for i in self.bodies:
            eids = []
            for f in [None, *self._body_faults(self.moves[i])]:
                eids.append(len(self.edges))
                self.edges.append((i, f))
            self.cont.append(eids)
        self.thread_edges = [e for e in range(self.n_start) if self.thread[self.edges[e][0]]]
        self._thread_edge = frozenset(self.thread_edges)
        p = self.u.platform
        steps = [len(b.steps) for i in self.bodies if (b := self.moves[i].body) is not None]
        # which helper; its next step; the locals (pages, TDs, HKIDs, the destroy's cursor)
        self._cell_bounds = [len(self.bodies), max(steps, default=1) - 1,
                             *[max(4 * self.u.n_pages, len(self.u.tds), p.hkids)] * N_LOCALS]

    def in_flight(self, s: State) -> bool:
        """A host helper is between two of its steps in ``s``."""
        return bool(self.extra) and s[self.N] != 0

    def host_may(self, s: State, eid: int) -> bool:
        """Edge ``eid`` (a start or one-action move) may run in ``s``: no helper in
        flight, or a move of the guest / vCPU thread."""
        return not self.in_flight(s) or eid in self._thread_edge

    def slow_edges(self, s: State) -> Sequence[int]:
        """The edges from ``s`` that ``fused_successors`` does not run: the helpers'
        starts; with a helper in flight, its continuations and the thread's moves."""
        if self.in_flight(s):
            return self.thread_edges + self.cont[s[self.N] - 1]
        return range(self.n_fused, self.n_start)

    def counter_cells(self) -> list[int]:
        """The cells the packing checks against their bounds: the model's counters and the
        helper-in-flight cells (a bound too small must fail, not alias two states)."""
        from tdxcheck.checker.explore.programs import counter_cells

        return counter_cells(self.lay) + list(range(self.N, self.N + self.extra))

    # ------------------------------------------------------------------ helpers
    def act(self, kind: str, cpu: int = 0, clflush: tuple[int, ...] = (), step: str = "",
            **kw: Any) -> Action:
        """An action with its operands in the leaf's order (cached)."""
        key = (kind, cpu, clflush, step, tuple(sorted(kw.items())))
        a = self._acts.get(key)
        if a is None:
            if kind in LEAVES:
                order: dict[str, int] = {}
                for j, o in enumerate((*LEAVES[kind].operands, "level")):
                    order.setdefault(o, j)  # level last only where the leaf lacks it
                args = tuple(sorted(kw.items(), key=lambda kv: order[kv[0]]))
            else:
                args = tuple(kw.items())
            a = self._acts[key] = Action(step or kind, kind, args, cpu, clflush)
        return a

    def fault_index(self, a: Action, name: str) -> int | None:
        key = (a, name)
        if key not in self._fault_idx:
            faults = self.engine.compiled(a).rule.faults
            self._fault_idx[key] = next((k for k, f in enumerate(faults) if f.name == name),
                                        None)
        return self._fault_idx[key]

    def real_violations(self, viol: Sequence[Violation]) -> list[Violation]:
        return [v for v in viol if not v.invariant.startswith("class:")]

    # ------------------------------------------------------------------ running
    def initial(self) -> State:
        return self.engine.initial() + (0,) * self.extra

    def fused_successors(self, s: State) -> tuple[list[tuple[int, int | None, State,
                                                             list[Violation]]], int]:
        """The one-action moves from ``s``: the transitions that change the state, break a
        step invariant or make a mistake the module accepts (``class:<id>`` among the
        violations), and how many transitions there were in all.  A mistake the module
        refuses is not reported here (``refusals`` finds those)."""
        if self.in_flight(s):
            return [], 0  # the host is busy in a helper: ``slow_edges`` has the thread's
        out, loops = self.fused._fused(s)
        return out, loops + len(out)

    def refusals(self, classes: Sequence[Any], clf: Any) -> dict[int, list[tuple[Any, ...]]]:
        """Per class (index into ``classes``), the one-action moves that can make that
        mistake: (edge, guard, step function, the class's predicate)."""
        out: dict[int, list[tuple[Any, ...]]] = {}
        for eid in range(self.n_fused):
            i, fault = self.edges[eid]
            if fault is not None:
                continue  # a refusal by a fault is the environment's, not the module's
            mv = self.moves[i]
            assert mv.action is not None
            fn = self.engine.compiled(mv.action).fn
            for ci, cf in clf.fns(mv.action, mv.via_handle):
                out.setdefault(ci, []).append((eid, self._guards[i], fn, cf))
        return out

    def run_edge(self, s: State, eid: int) -> Run | None:
        """Edge ``eid`` from ``s``: the finished move, or None if it cannot happen."""
        i, fault = self.edges[eid]
        j = -1  # the helper in flight this move starts or goes on with (-1: atomic)
        if self.extra:
            busy = s[self.N]
            if eid >= self.n_start:  # a continuation: of the helper in flight only
                if busy != self._body_no[i] + 1:
                    return None
                j = busy - 1
            elif busy and not self.thread[i]:
                return None  # the host is in a helper
            else:
                j = self._body_no.get(i, -1)
        if eid < self.n_start:  # a helper's guard is its start's (its first step's)
            g = self._guards[i]
            if g is not None and g(s) >= 0:
                return None
        mv = self.moves[i]
        run = Run(self, s, fault if isinstance(fault, str) else None)
        try:
            if mv.action is not None:
                a = mv.action
                ca = self.engine.compiled(a)
                k = fault if isinstance(fault, int) else -1
                status, n, where = ca.fn(s, k)
                if status == NOT_ENABLED:
                    return None
                run._record(a, status if a.kind in LEAVES else None, where, n)
            elif j < 0:
                assert mv.body is not None
                mv.body(run)
                if fault is not None and not run.fired:
                    return None
            else:  # one step of a helper (its first, or the one the state says)
                assert mv.body is not None
                N = self.N
                k = 0
                if eid >= self.n_start:
                    k = s[N + 1]
                    run.loc[:] = s[N + 2:N + 2 + N_LOCALS]
                nk = mv.body.advance(run, k)
                if fault is not None and not run.fired:
                    return None
                run.m = run.m[:N] + ((0,) * self.extra if nk is None else
                                     (j + 1, nk, *run.loc))
        except Disabled:
            return None
        return run

    def transitions(self, s: State) -> Iterator[tuple[int, Run]]:
        """Every edge that can happen from ``s``, one by one (self-loops included: the
        reference reading of what the explorer does with ``fused_successors``)."""
        for eid in range(len(self.edges)):
            r = self.run_edge(s, eid)
            if r is not None:
                yield eid, r

    def state_violations(self, s: State) -> list[Violation]:
        return self.engine.state_violations(s[:self.N] if self.extra else s)

    def label(self, eid: int) -> str:
        i, fault = self.edges[eid]
        if isinstance(fault, int):
            a = self.moves[i].action
            assert a is not None
            fault = self.engine.compiled(a).rule.faults[fault].name
        step = " [next step]" if eid >= self.n_start else (
            " [first step]" if i in self._body_no else "")
        return self.moves[i].label + step + (f" [fault {fault}]" if fault else "")

    def bounds(self) -> list[int]:
        lay = self.lay
        return [lay.value_bound(lay.field_of(i)) for i in range(lay.size)] + \
            self._cell_bounds[:self.extra]

    # ------------------------------------------------------------------ writability
    def writable(self, s: State, a: Action) -> bool:
        """Whether some one-action move of this API makes exactly ``a`` in state ``s``
        (the CPU ignored for leaves that do not read it): a step another host program
        took can be written against this API."""
        idx = self._by_action().get(_norm_cpu(a), ())
        return any(self._guards[i] is None or self._guards[i](s) < 0 for i in idx)

    def _by_action(self) -> dict[Any, list[int]]:
        if not hasattr(self, "_action_index"):
            out: dict[Any, list[int]] = {}
            for i, mv in enumerate(self.moves):
                if mv.action is not None:
                    out.setdefault(_norm_cpu(mv.action), []).append(i)
            self._action_index = out
        return self._action_index


def _class_invariant(c: Any, via: bool) -> Invariant:
    """Class ``c`` as a step clause that fails where the step is the mistake."""
    def step(u: Universe, a: Action) -> list[Clause]:
        e = c.expr(u, a, via)
        return [] if e is None else [Clause(Not(e), f"{a.step}: {c.title}")]
    return Invariant(id=f"class:{c.id}", summary=c.title, guarantee="module",
                     source="checker/analyses/apis/classes.py", step=step)


def _compile_guards(lay: Any, guards: Sequence[Expr | None]) -> list[Any]:
    gen = new_gen(lay)
    srcs, names = [], []
    for i, g in enumerate(guards):
        if g is None:
            names.append(None)
        else:
            srcs.append(predicate_source(f"g{i}", [g], lay, gen, two_state=False))
            names.append(f"g{i}")
    ns = compile_functions(srcs, gen) if srcs else {}
    return [ns[n] if n else None for n in names]


def preflushed(rule: Rule, pages: Sequence[int], u: Universe) -> Rule:
    """``rule`` with the wrapper's CLFLUSH of ``pages`` folded in (what ``wrapper_pre`` does
    before the SEAMCALL): the KeyID-0 lines of those pages are gone on every outcome, and
    the effects read the flushed lines.  No check reads a page's lines (the module cannot
    see caches), so the checks are the leaf's own."""
    from dataclasses import replace

    from tdxcheck.model.checks import keyid_lines
    from tdxcheck.model.expr import AndNot, Bin, BoolOp, Const, In, Ite, NotE, Read
    from tdxcheck.model.rule import Assign, Check, When, set_

    k0 = keyid_lines(u.platform.packages, 0)
    flushed = {p for p in pages}

    def sub(e: Expr) -> Expr:
        if isinstance(e, Const):
            return e
        if isinstance(e, Read):
            if e.field == "dirty" and not e.post:
                (i,) = e.index
                assert isinstance(i, Const), "a computed index into the dirty lines"
                r = Read(e.field, e.index, False)
                return AndNot(r, k0) if i.value in flushed else r
            return Read(e.field, tuple(sub(x) for x in e.index), e.post)
        if isinstance(e, Bin):
            return Bin(e.op, sub(e.a), sub(e.b))
        if isinstance(e, BoolOp):
            return BoolOp(e.op, tuple(sub(x) for x in e.args))
        if isinstance(e, NotE):
            return NotE(sub(e.a))
        if isinstance(e, Ite):
            return Ite(sub(e.c), sub(e.a), sub(e.b))
        if isinstance(e, In):
            return In(sub(e.a), e.values)
        raise TypeError(e)

    def eff(x: Any) -> Any:
        if isinstance(x, Assign):
            return Assign(x.field, tuple(sub(i) for i in x.index), sub(x.value))
        return When(sub(x.cond), tuple(eff(y) for y in x.effects))

    flush = tuple(set_(S.dirty[p], AndNot(S.dirty[p], k0)) for p in sorted(flushed))
    steps = []
    for st in rule.steps:
        if isinstance(st, Check):
            assert sub(st.ok) is st.ok or "dirty" not in repr(st.ok), st.name
            steps.append(replace(st, fail_effects=flush + tuple(eff(e) for e in
                                                                st.fail_effects)))
        else:
            steps.append(replace(st, effects=flush + tuple(eff(e) for e in st.effects)))
    return replace(rule, steps=tuple(steps), effects=flush + tuple(eff(e) for e in rule.effects))


_CPU_LEAVES = frozenset({"TDH.MNG.KEY.CONFIG", "TDH.VP.INIT", "TDH.VP.ENTER", "TDH.VP.FLUSH",
                         "TDH.VP.RD", "TDH.VP.WR", "TDH.PHYMEM.CACHE.WB"})


def _norm_cpu(a: Action) -> tuple[Any, ...]:
    cpu = a.cpu if a.kind in _CPU_LEAVES else 0
    return (a.kind, a.args, cpu, a.clflush)


def _leaf_faults(u: Universe) -> dict[str, tuple[str, ...]]:
    """Each leaf's fault point names (over every any-host action of ``u``)."""
    from tdxcheck.model.actions import rule_of
    from tdxcheck.model.rule import Ctx
    from tdxcheck.model.state import Layout

    lay = Layout(u)
    out: dict[str, list[str]] = {}
    for a, _g in any_host_actions(u):
        if a.kind not in LEAVES:
            continue
        names = out.setdefault(a.kind, [])
        for f in rule_of(a, Ctx(u, lay, a.cpu)).faults:
            if f.name not in names:
                names.append(f.name)
    return {k: tuple(v) for k, v in out.items()}


# ---------------------------------------------------------------------- the moves
class _Builder:
    """Generates the moves of ``host.variant`` (the caller's C code, every operand its
    types allow)."""

    def __init__(self, host: ApiHost) -> None:
        self.h = host
        self.v = host.variant
        u = host.u
        self.u = u
        self.p = u.platform
        self.pages = list(range(1, u.n_pages))
        self.hkids = list(range(1, self.p.hkids))
        self.cpus = list(range(self.p.cpus))
        self.tds = list(range(len(u.tds)))
        self.vps = list(range(len(u.vps)))

    # ---- operand domains
    def page_domain(self, ctype: str) -> list[int]:
        """The pages a parameter of ``ctype`` can name (NULL for an integer)."""
        return ([NULL] if ctype in INTEGER_TYPES else []) + self.pages

    def td_operands(self, life: Callable[[int], Expr] | None) -> list[tuple[int, Expr | None,
                                                                          bool]]:
        """(TDR page, guard, via a sealed handle) for a TD operand."""
        if self.v.has("typestate_handles"):
            return [(p, And(S.tdr[t] == p, life(t) if life else S.tdr[t] != 0), True)
                    for t in self.tds for p in self.pages]
        return [(p, None, False) for p in self.page_domain(self.v.td_field_type())]

    def vp_operands(self, life: Callable[[int], Expr] | None) -> list[tuple[int, Expr | None,
                                                                          bool]]:
        if self.v.has("typestate_handles"):
            return [(p, And(S.tdvpr[v] == p, life(v) if life else S.tdvpr[v] != 0), True)
                    for v in self.vps for p in self.pages]
        return [(p, None, False) for p in self.page_domain(self.v.td_field_type())]

    def clflush_forms(self, page: int) -> list[tuple[tuple[int, ...], frozenset[str]]]:
        """The CLFLUSH of a page handed over: the wrapper's, or the caller's (or none)."""
        if self.v.has("wrapper_clflush"):
            return [((page,), frozenset())]
        if page == NULL:
            return [((), frozenset())]
        return [((), frozenset()), ((page,), frozenset({"caller_clflush"}))]

    def add(self, mv: Move) -> None:
        self.h.moves.append(mv)

    def single(self, entry: str, a: Action, guard: Expr | None = None,
               marks: frozenset[str] = frozenset(), via: bool = False,
               label: str = "") -> None:
        self.add(Move(entry, label or _describe(a, self.u, entry), action=a, guard=guard,
                      marks=marks, via_handle=via))

    # ---- lifecycles a sealed handle's type names
    @staticmethod
    def life(*states: TdLifecycle, op: tuple[OpState, ...] = ()) -> Callable[[int], Expr]:
        def f(t: int) -> Expr:
            c = And(S.tdr[t] != 0, S.lifecycle[t].isin(states))
            return And(c, S.op_state[t].isin(op)) if op else c
        return f

    @staticmethod
    def vlife(*states: VcpuState) -> Callable[[int], Expr]:
        return lambda v: And(S.tdvpr[v] != 0, S.state[v].isin(states))

    # ---- everything
    def build(self) -> None:
        self.create()
        self.td_ops()
        self.vp_create_and_ops()
        self.memory()
        self.release()
        self.reclaim()
        self.host_actions()
        self.guest()

    # ------------------------------------------------------------------ TD creation
    def create(self) -> None:
        v, h = self.v, self.h
        alloc_page = v.page_type("tdh_mng_create") is None
        alloc_hkid = v.hkid_type("tdh_mng_create") is None
        pages = self.pages if alloc_page else self.page_domain(v.td_field_type())
        hkids = self.hkids
        for t in self.tds:
            free = S.tdr[t] == 0
            for p in pages:
                for h_ in hkids:
                    for cl, marks in self.clflush_forms(p):
                        a = h.act("TDH.MNG.CREATE", td=t, tdr=p, hkid=h_, clflush=cl,
                                  step="tdh_mng_create")
                        if not alloc_page and not alloc_hkid:
                            self.single("tdh_mng_create", a, free, marks)
                            continue
                        guard = [free]
                        if alloc_page:
                            guard.append(S.host[p] == HostPage.KERNEL)
                        if alloc_hkid:
                            guard.append(S.host_hkid[h_] == 0)
                        self.add(Move("tdx_td_create", f"tdx_td_create(td{t}) "
                                      f"[TDR {self.u.page_name(p)}, HKID {h_}]",
                                      body=_create_body(h, a, p if alloc_page else None,
                                                        h_ if alloc_hkid else None),
                                      guard=And(*guard), marks=marks,
                                      leaves=("TDH.MNG.CREATE",), calls=(a,)))
            if v.swappable("tdh_mng_create"):
                a = h.act("TDH.MNG.CREATE", td=t, tdr=NULL, hkid=PA_AS_HKID,
                          step="tdh_mng_create")
                self.single("tdh_mng_create", a, free, frozenset({"swap"}),
                            label=f"tdh_mng_create(td{t}: tdr=<an HKID>, hkid=<a page "
                                  "address>)")

    # ------------------------------------------------------------------ TD operations
    def td_ops(self) -> None:
        h, life = self.h, self.life
        keyed = _LC.TD_KEYS_CONFIGURED
        for p, g, via in self.td_operands(life(_LC.TD_HKID_ASSIGNED)):
            for c in self.cpus:
                self.single("tdh_mng_key_config",
                            h.act("TDH.MNG.KEY.CONFIG", cpu=c, tdr=p,
                                  step="tdh_mng_key_config"), g, via=via)
        build = life(keyed, op=(_OS.OP_STATE_UNINITIALIZED,))
        for p, g, via in self.td_operands(build):
            self.handover("tdh_mng_addcx", "TDH.MNG.ADDCX", g, via, tdr=p)
            self.single("tdh_mng_init", h.act("TDH.MNG.INIT", tdr=p, step="tdh_mng_init"),
                        g, via=via)
        inited = life(keyed, op=(_OS.OP_STATE_INITIALIZED, _OS.OP_STATE_RUNNABLE))
        for p, g, via in self.td_operands(inited):
            self.single("tdh_mng_rd", h.act("TDH.MNG.RD", tdr=p, step="tdh_mng_rd"), g,
                        via=via)
            if not self.v.has("handles"):  # no upstream wrapper: the raw seamcall only
                self.single("tdh_mng_wr", h.act("TDH.MNG.WR", tdr=p, step="tdh_mng_wr"), g)

    def handover(self, entry: str, kind: str, guard: Expr | None, via: bool,
                 **kw: Any) -> None:
        """A wrapper that hands a page over: the caller's page (its type's domain, each
        CLFLUSH form), or a page the API allocates (``helper_alloc``)."""
        h, v = self.h, self.v
        ptype = v.page_type(entry)
        if ptype is None:
            for p in self.pages:
                for cl, marks in self.clflush_forms(p):
                    a = h.act(kind, page=p, clflush=cl, step=entry, **kw)
                    g = S.host[p] == HostPage.KERNEL
                    self.add(Move(f"{entry} (allocating)", _describe(a, self.u, entry)
                                  + " [page from the allocator]",
                                  body=_alloc_body(h, a, p),
                                  guard=g if guard is None else And(guard, g), marks=marks,
                                  via_handle=via, leaves=(kind,), calls=(a,)))
            return
        for p in self.page_domain(ptype):
            for cl, marks in self.clflush_forms(p):
                self.single(entry, h.act(kind, page=p, clflush=cl, step=entry, **kw), guard,
                            marks, via)

    # ------------------------------------------------------------------ vCPUs
    def vp_create_and_ops(self) -> None:
        h, v = self.h, self.v
        inited = self.life(_LC.TD_KEYS_CONFIGURED, op=(_OS.OP_STATE_INITIALIZED,))
        for vp in self.vps:
            free = S.tdvpr[vp] == 0
            for p, g, via in self.td_operands(inited):
                guard = free if g is None else And(free, g)
                ptype = v.page_type("tdh_vp_create")
                if ptype is None:
                    for q in self.pages:
                        for cl, marks in self.clflush_forms(q):
                            a = h.act("TDH.VP.CREATE", vp=vp, tdvpr=q, tdr=p, clflush=cl,
                                      step="tdh_vp_create")
                            self.add(Move("tdh_vp_create (allocating)",
                                          _describe(a, self.u, "tdh_vp_create")
                                          + " [page from the allocator]",
                                          body=_alloc_body(h, a, q),
                                          guard=And(guard, S.host[q] == HostPage.KERNEL),
                                          marks=marks, via_handle=via,
                                          leaves=("TDH.VP.CREATE",), calls=(a,)))
                    continue
                for q in self.page_domain(ptype):
                    for cl, marks in self.clflush_forms(q):
                        self.single("tdh_vp_create",
                                    h.act("TDH.VP.CREATE", vp=vp, tdvpr=q, tdr=p, clflush=cl,
                                          step="tdh_vp_create"), guard, marks, via)
        vl = self.vlife
        for p, g, via in self.vp_operands(vl(_VS.VCPU_UNINITIALIZED)):
            self.handover("tdh_vp_addcx", "TDH.VP.ADDCX", g, via, tdvpr=p)
            for c in self.cpus:
                self.single("tdh_vp_init", h.act("TDH.VP.INIT", cpu=c, tdvpr=p,
                                                 step="tdh_vp_init"), g, via=via)
        load = v.has("helper_vcpu_load")
        ready = vl(_VS.VCPU_READY)
        used = vl(_VS.VCPU_READY, _VS.VCPU_ACTIVE, _VS.VCPU_DISABLED)
        for kind, entry, lf in (("TDH.VP.ENTER", "tdh_vp_enter", ready),
                                ("TDH.VP.RD", "tdh_vp_rd", used),
                                ("TDH.VP.WR", "tdh_vp_wr", ready)):
            for p, g, via in self.vp_operands(lf):
                for c in self.cpus:
                    a = h.act(kind, cpu=c, tdvpr=p, step=entry)
                    if load:
                        self.add(Move(entry, _describe(a, self.u, entry) + " [vcpu_load]",
                                      body=_load_body(h, a, p, c), guard=g, via_handle=via,
                                      leaves=("TDH.VP.FLUSH", kind)))
                    else:
                        self.single(entry, a, g, via=via)
        for p, g, via in self.vp_operands(used):
            if load:
                a = h.act("TDH.VP.FLUSH", cpu=0, tdvpr=p, step="tdh_vp_flush")
                self.add(Move("tdh_vp_flush", f"tdh_vp_flush(vp {self.u.page_name(p)}) "
                              "[on its CPU]", body=_flush_body(h, p), guard=g,
                              via_handle=via, leaves=("TDH.VP.FLUSH",)))
                continue
            for c in self.cpus:
                self.single("tdh_vp_flush", h.act("TDH.VP.FLUSH", cpu=c, tdvpr=p,
                                                  step="tdh_vp_flush"), g, via=via)

    # ------------------------------------------------------------------ private memory
    def memory(self) -> None:
        h, v, u = self.h, self.v, self.u
        keyed = _LC.TD_KEYS_CONFIGURED
        build = self.life(keyed, op=(_OS.OP_STATE_INITIALIZED,))
        live = self.life(keyed, op=(_OS.OP_STATE_INITIALIZED, _OS.OP_STATE_RUNNABLE))
        run = self.life(keyed, op=(_OS.OP_STATE_RUNNABLE,))
        levels = range(self.p.sept_levels)
        for p, g, via in self.td_operands(live):
            for gpa in u.gpas:
                for lv in levels:
                    if lv >= 1 and gpa % (4096 << 9 * lv) == 0:
                        self.handover("tdh_mem_sept_add", "TDH.MEM.SEPT.ADD", g, via, tdr=p,
                                      gpa=gpa, level=lv)
        for p, g, via in self.td_operands(build):
            for gpa in u.gpas:
                self.handover("tdh_mem_page_add", "TDH.MEM.PAGE.ADD", g, via, tdr=p, gpa=gpa)
                self.single("tdh_mr_extend", h.act("TDH.MR.EXTEND", tdr=p, gpa=gpa,
                                                   step="tdh_mr_extend"), g, via=via)
            self.single("tdh_mr_finalize", h.act("TDH.MR.FINALIZE", tdr=p,
                                                 step="tdh_mr_finalize"), g, via=via)
        for p, g, via in self.td_operands(run):
            for gpa in u.gpas:
                self.handover("tdh_mem_page_aug", "TDH.MEM.PAGE.AUG", g, via, tdr=p, gpa=gpa)
        for p, g, via in self.td_operands(live):
            if v.has("helper_zap"):
                for gpa in u.gpas:
                    self.add(Move("tdx_zap_private_page",
                                  f"tdx_zap_private_page(td {u.page_name(p)}, gpa 0x{gpa:x})",
                                  body=_zap_body(h, p, gpa), guard=g, via_handle=via,
                                  leaves=("TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK",
                                          "TDH.MEM.PAGE.REMOVE", "TDH.PHYMEM.PAGE.WBINVD")))
                continue
            self.single("tdh_mem_track", h.act("TDH.MEM.TRACK", tdr=p, step="tdh_mem_track"),
                        g, via=via)
            for gpa in u.gpas:
                for lv in levels:
                    if gpa % (4096 << 9 * lv):
                        continue
                    for kind, entry in (("TDH.MEM.RANGE.BLOCK", "tdh_mem_range_block"),
                                        ("TDH.MEM.PAGE.REMOVE", "tdh_mem_page_remove"),
                                        ("TDH.MEM.RANGE.UNBLOCK", "tdh_mem_range_unblock"),
                                        ("TDH.MEM.SEPT.REMOVE", "tdh_mem_sept_remove")):
                        if kind in ("TDH.MEM.RANGE.UNBLOCK", "TDH.MEM.SEPT.REMOVE") and \
                                v.has("handles"):
                            continue  # no upstream wrapper: the raw seamcall only
                        if kind == "TDH.MEM.PAGE.REMOVE" and lv != 0:
                            continue
                        if kind == "TDH.MEM.SEPT.REMOVE" and lv == 0:
                            continue
                        self.single(entry, h.act(kind, tdr=p, gpa=gpa, level=lv, step=entry),
                                    g, via=via)

    # ------------------------------------------------------------------ HKID release
    def release(self) -> None:
        h, u = self.h, self.u
        holds = self.life(_LC.TD_HKID_ASSIGNED, _LC.TD_KEYS_CONFIGURED)
        if self.v.has("helper_release_hkid"):
            for p, g, via in self.td_operands(holds):
                self.add(Move("tdx_td_release_hkid",
                              f"tdx_td_release_hkid(td {u.page_name(p)})",
                              body=_release_body(h, p), guard=g, via_handle=via,
                              leaves=("TDH.VP.FLUSH", "TDH.MNG.VPFLUSHDONE",
                                      "TDH.PHYMEM.CACHE.WB", "TDH.MNG.KEY.FREEID")))
            return
        for p, g, via in self.td_operands(holds):
            self.single("tdh_mng_vpflushdone", h.act("TDH.MNG.VPFLUSHDONE", tdr=p,
                                                     step="tdh_mng_vpflushdone"), g, via=via)
        for p, g, via in self.td_operands(self.life(_LC.TD_BLOCKED)):
            self.single("tdh_mng_key_freeid", h.act("TDH.MNG.KEY.FREEID", tdr=p,
                                                    step="tdh_mng_key_freeid"), g, via=via)
        for c in self.cpus:
            for r in (0, 1):
                self.single("tdh_phymem_cache_wb", h.act("TDH.PHYMEM.CACHE.WB", cpu=c,
                                                         resume=r,
                                                         step="tdh_phymem_cache_wb"))

    # ------------------------------------------------------------------ pages back
    def reclaim(self) -> None:
        h, v, u = self.h, self.v, self.u
        g_keyid = self.p.global_keyid
        helper = v.has("helper_reclaim")
        if v.has("typestate_handles"):
            for t in self.tds:
                for p in self.pages:
                    g = And(S.tdr[t] == p, S.lifecycle[t] == _LC.TD_TEARDOWN)
                    self.add(Move("tdx_td_destroy", f"tdx_td_destroy(td{t})"
                                  + (" [reclaim + WBINVD + clear + free]" if helper else
                                     " [reclaim only]"),
                                  body=_destroy_body(h, t, p, helper), guard=g,
                                  via_handle=True,
                                  leaves=("TDH.PHYMEM.PAGE.RECLAIM", "TDH.PHYMEM.PAGE.WBINVD")))
        else:
            ptype = v.page_type("tdh_phymem_page_reclaim")
            assert ptype is not None
            for p in self.page_domain(ptype):
                a = h.act("TDH.PHYMEM.PAGE.RECLAIM", page=p, step="tdh_phymem_page_reclaim")
                if helper:
                    self.add(Move("tdx_reclaim_page", f"tdx_reclaim_page({u.page_name(p)})",
                                  body=_reclaim_body(h, p, clear_free=True),
                                  leaves=("TDH.PHYMEM.PAGE.RECLAIM",
                                          "TDH.PHYMEM.PAGE.WBINVD")))
                else:
                    self.single("tdh_phymem_page_reclaim", a)
        if helper and v.has("helper_zap"):
            return  # every WBINVD is inside a helper
        if v.has("hidden_global_keyid"):
            # _tdr(td): through the td (after teardown under type-state, the page the
            # destroy returned)
            if v.has("typestate_handles"):
                tdr_pages = [(p, None, False) for p in self.page_domain(
                    v.page_type("tdh_phymem_page_wbinvd_hkid") or "struct page *")]
            else:
                tdr_pages = self.td_operands(None)
            for p, g, via in tdr_pages:
                self.single("tdh_phymem_page_wbinvd_tdr",
                            h.act("TDH.PHYMEM.PAGE.WBINVD", page=p, keyid=g_keyid,
                                  step="tdh_phymem_page_wbinvd_tdr"), g, via=via)
            ptype = v.page_type("tdh_phymem_page_wbinvd_hkid") or "struct page *"
            for p in self.page_domain(ptype):
                for k in self.hkids:
                    self.single("tdh_phymem_page_wbinvd_hkid",
                                h.act("TDH.PHYMEM.PAGE.WBINVD", page=p, keyid=k,
                                      step="tdh_phymem_page_wbinvd_hkid"))
            if v.swappable("tdh_phymem_page_wbinvd_hkid"):
                self.single("tdh_phymem_page_wbinvd_hkid",
                            h.act("TDH.PHYMEM.PAGE.WBINVD", page=NULL, keyid=PA_AS_HKID,
                                  step="tdh_phymem_page_wbinvd_hkid"), None,
                            frozenset({"swap"}),
                            label="tdh_phymem_page_wbinvd_hkid(hkid=<a page address>, "
                                  "page=<an HKID>)")
            return
        ptype = v.page_type("tdh_phymem_page_wbinvd") or "u64"
        for p in self.page_domain(ptype):
            for k in [*self.hkids, g_keyid]:
                self.single("tdh_phymem_page_wbinvd",
                            h.act("TDH.PHYMEM.PAGE.WBINVD", page=p, keyid=k,
                                  step="tdh_phymem_page_wbinvd"))

    # ------------------------------------------------------------------ the caller's own
    def host_actions(self) -> None:
        h, v = self.h, self.v
        owns_all = v.has("helper_alloc") and v.has("helper_reclaim") and v.has("helper_zap")
        for p in self.pages:
            if not v.has("helper_alloc"):
                self.single("page_alloc", h.act("page_alloc", page=p),
                            S.host[p] == HostPage.KERNEL)
            if not owns_all:
                self.single("page_free", h.act("page_free", page=p),
                            S.host[p] == HostPage.TDX)
            if not (v.has("helper_reclaim") and v.has("helper_zap")):
                self.single("clear_page", h.act("clear_page", page=p),
                            S.host[p] == HostPage.TDX)
        if not v.has("helper_release_hkid"):
            for k in self.hkids:
                self.single("hkid_alloc", h.act("hkid_alloc", hkid=k), S.host_hkid[k] == 0)
                self.single("hkid_free", h.act("hkid_free", hkid=k), S.host_hkid[k] == 1)
        self.single("check_no_leak", h.act("check_no_leak"))

    def guest(self) -> None:
        h = self.h
        for vp in self.vps:
            for reason in TD_EXIT_REASONS:
                a = h.act("td_exit", vp=vp, reason=reason)
                self.add(Move("td_exit", _describe(a, self.u, "td_exit"), action=a,
                              guest=True))
            for gpa in self.u.gpas:
                a = h.act("TDG.MEM.PAGE.ACCEPT", vp=vp, gpa=gpa, step="guest_accept")
                self.add(Move("guest_accept", _describe(a, self.u, "guest_accept"), action=a,
                              guest=True))


def _describe(a: Action, u: Universe, entry: str) -> str:
    from tdxcheck.model.actions import describe

    text = describe(a, u)
    if a.clflush and entry and a.kind in LEAVES:
        text += " [CLFLUSH " + ",".join(u.page_name(p) for p in a.clflush) + "]"
    if a.cpu and a.kind in _CPU_LEAVES:
        text += f" [cpu{a.cpu}]"
    return text


# ---------------------------------------------------------------------- helper bodies
#: a step of a helper's body: runs its model action(s) on the move in progress and returns
#: the step to go on with (None: the body is done)
Step = Callable[[Run], "int | None"]


@dataclass(frozen=True)
class Body:
    """A combined helper's body, written once as a small state machine: step k runs its
    model action(s) (a SEAMCALL, a host action, a kick) and, from the statuses it saw,
    returns the next step (None: return).  What a later step needs of an earlier one (a
    page read before the REMOVE, the HKID before the FREEID, a loop's cursor) lives in
    ``Run.loc``: ``N_LOCALS`` bounded ints.

    Atomic (the default) runs every step in one move (``__call__``).  Interleaved
    (``ApiHost(interleave=True)``) runs one step per move (``advance``) and keeps the step
    to resume at and the locals in the state, so a guest or vCPU move may come between
    two steps."""

    steps: tuple[Step, ...]

    def __call__(self, r: Run) -> None:
        k: int | None = 0
        while k is not None:
            k = self.steps[k](r)

    def advance(self, r: Run, k: int) -> int | None:
        """From step ``k``, up to and including the first step that runs a model action
        (a step that decides only where to go runs on); the step to resume at."""
        n = len(r.recs)
        nk: int | None = k
        while nk is not None:
            nk = self.steps[nk](r)
            if len(r.recs) > n:
                break
        return nk


def _create_body(h: ApiHost, a: Action, page: int | None, hkid: int | None) -> Body:
    """Allocate what the API owns (the HKID, the TDR page), create; undo on failure
    (``__tdx_td_init``'s error path)."""
    def alloc_hkid(r: Run) -> int | None:
        if hkid is not None:
            r.host_step(h.act("hkid_alloc", hkid=hkid))
        return 1

    def alloc_page(r: Run) -> int | None:
        if page is not None:
            r.host_step(h.act("page_alloc", page=page))
        return 2

    def create(r: Run) -> int | None:
        return 3 if r.call(a) else None

    def free_page(r: Run) -> int | None:
        if page is not None:
            r.host_step(h.act("page_free", page=page))
        return 4

    def free_hkid(r: Run) -> int | None:
        if hkid is not None:
            r.host_step(h.act("hkid_free", hkid=hkid))
        return None
    return Body((alloc_hkid, alloc_page, create, free_page, free_hkid))


def _alloc_body(h: ApiHost, a: Action, page: int) -> Body:
    """``tdx_alloc_control_page`` + the wrapper: allocate, hand over, free on failure."""
    def alloc(r: Run) -> int | None:
        r.host_step(h.act("page_alloc", page=page))
        return 1

    def hand_over(r: Run) -> int | None:
        return 2 if r.call(a) else None

    def free(r: Run) -> int | None:
        r.host_step(h.act("page_free", page=page))
        return None
    return Body((alloc, hand_over, free))


def _load_body(h: ApiHost, a: Action, tdvpr: int, cpu: int) -> Body:
    """``tdx_vcpu_load``: a vCPU associated with another CPU is flushed there first."""
    def flush(r: Run) -> int | None:
        if r.get("pt", tdvpr) == PageType.PT_TDVPR:
            assoc = r.get("assoc", r.get("vpslot", tdvpr))
            if assoc and assoc != cpu + 1 and r.call(
                    h.act("TDH.VP.FLUSH", cpu=assoc - 1, tdvpr=tdvpr, step="tdh_vp_flush")):
                return None
        return 1

    def call(r: Run) -> int | None:
        r.call(a)
        return None
    return Body((flush, call))


def _flush_body(h: ApiHost, tdvpr: int) -> Body:
    """``tdx_flush_vp_on_cpu``: flush on the CPU the vCPU is associated with (none: no
    call)."""
    def flush(r: Run) -> int | None:
        assoc = r.get("assoc", r.get("vpslot", tdvpr)) if \
            r.get("pt", tdvpr) == PageType.PT_TDVPR else 0
        if not assoc:
            raise Disabled
        r.call(h.act("TDH.VP.FLUSH", cpu=assoc - 1, tdvpr=tdvpr, step="tdh_vp_flush"))
        return None
    return Body((flush,))


def _zap_body(h: ApiHost, tdr: int, gpa: int) -> Body:
    """``tdx_sept_remove_private_spte`` as one call: BLOCK, TRACK (a BUSY: kick, retry
    once), kick, REMOVE, WBINVD with the TD's HKID, clear, free; stop at a failure (the
    page stays with the module or the API: KVM's TDX_BUG_ON leak).  Locals: the TD, and
    the page the entry maps (read before the BLOCK: the REMOVE unmaps it)."""
    from tdxcheck.model.status import Status, status_class

    busy = int(Status.TDX_OPERAND_BUSY)
    track = h.act("TDH.MEM.TRACK", tdr=tdr, step="tdh_mem_track")
    block = h.act("TDH.MEM.RANGE.BLOCK", tdr=tdr, gpa=gpa, level=0, step="tdh_mem_range_block")

    def block_(r: Run) -> int | None:
        if r.get("pt", tdr) != PageType.PT_TDR:
            r.call(block)
            return None
        t = r.get("owner", tdr)
        r.loc[:] = [t, r.get("sept_page", t, h.u.entry(gpa, 0))]
        return None if r.call(block) else 1

    def track_(r: Run) -> int | None:
        st = r.call(track)
        if st and status_class(st) == busy:
            return 2
        return None if st else 4

    def kick_retry(r: Run) -> int | None:
        r.kick(r.loc[0])
        return 3

    def retrack(r: Run) -> int | None:
        return None if r.call(track) else 4

    def kick(r: Run) -> int | None:
        r.kick(r.loc[0])
        return 5

    def remove(r: Run) -> int | None:
        return None if r.call(h.act("TDH.MEM.PAGE.REMOVE", tdr=tdr, gpa=gpa, level=0,
                                    step="tdh_mem_page_remove")) else 6

    def wbinvd(r: Run) -> int | None:
        return None if r.call(h.act("TDH.PHYMEM.PAGE.WBINVD", page=r.loc[1],
                                    keyid=r.get("hkid", r.loc[0]),
                                    step="tdh_phymem_page_wbinvd_hkid")) else 7

    def clear(r: Run) -> int | None:
        r.host_step(h.act("clear_page", page=r.loc[1]))
        return 8

    def free(r: Run) -> int | None:
        r.host_step(h.act("page_free", page=r.loc[1]))
        return None
    return Body((block_, track_, kick_retry, retrack, kick, remove, wbinvd, clear, free))


def _release_body(h: ApiHost, tdr: int) -> Body:
    """``tdx_mmu_release_hkid`` as one call: kick and flush every vCPU on its CPU,
    VPFLUSHDONE, CACHE.WB on a CPU of every package (an interrupted one resumed once),
    FREEID, and the HKID back to the pool; stop at a failure (KVM leaks the HKID).  Locals:
    the TD and its HKID (read before the FREEID frees it)."""
    from tdxcheck.model.status import Status

    intr = int(Status.TDX_INTERRUPTED_RESUMABLE)
    p = h.u.platform
    nv = len(h.u.vps)
    done = 1 + nv  # the VPFLUSHDONE step; then two steps per package, FREEID, the pool
    freeid = done + 1 + 2 * p.packages

    def kick(r: Run) -> int | None:
        if r.get("pt", tdr) != PageType.PT_TDR:
            r.loc[:] = [0, 0]
            return done
        t = r.get("owner", tdr)
        r.loc[:] = [t, r.get("hkid", t)]
        r.kick(t)
        return 1

    def flush(v: int) -> Step:
        def step(r: Run) -> int | None:
            page = r.get("tdvpr", v)
            if page and r.get("owner", page) == r.loc[0] and r.get("assoc", v):
                r.call(h.act("TDH.VP.FLUSH", cpu=r.get("assoc", v) - 1, tdvpr=page,
                             step="tdh_vp_flush"))
            return v + 2
        return step

    def vpflushdone(r: Run) -> int | None:
        return None if r.call(h.act("TDH.MNG.VPFLUSHDONE", tdr=tdr,
                                    step="tdh_mng_vpflushdone")) else done + 1

    def cache_wb(pkg: int, resume: int) -> Step:
        cpu = pkg * p.cpus_per_package
        nxt = done + 1 + 2 * (pkg + 1)

        def step(r: Run) -> int | None:
            st = r.call(h.act("TDH.PHYMEM.CACHE.WB", cpu=cpu, resume=resume,
                              step="tdh_phymem_cache_wb"))
            if st == intr and not resume:
                return nxt - 1
            return None if st else nxt
        return step

    def key_freeid(r: Run) -> int | None:
        return None if r.call(h.act("TDH.MNG.KEY.FREEID", tdr=tdr,
                                    step="tdh_mng_key_freeid")) else freeid + 1

    def hkid_free(r: Run) -> int | None:
        r.host_step(h.act("hkid_free", hkid=r.loc[1]))
        return None
    steps: list[Step] = [kick, *(flush(v) for v in range(nv)), vpflushdone]
    for pkg in range(p.packages):
        steps += [cache_wb(pkg, 0), cache_wb(pkg, 1)]
    return Body((*steps, key_freeid, hkid_free))


def _reclaim_steps(h: ApiHost, base: int, page_of: Callable[[Run], int], clear_free: bool,
                   then: Callable[[Run], int | None]) -> list[Step]:
    """``tdx_reclaim_page`` as steps ``base``..``base``+3: RECLAIM; a TDR's global-KeyID
    lines written back; then clear and free (``clear_free``); stop at a failure (the page
    leaks); else go on with ``then``.  Local 1: whether the page was a TDR."""
    def reclaim(r: Run) -> int | None:
        page = page_of(r)
        r.loc[1] = int(r.get("pt", page) == PageType.PT_TDR)
        if r.call(h.act("TDH.PHYMEM.PAGE.RECLAIM", page=page, step="tdh_phymem_page_reclaim")):
            return None
        return base + 1 if clear_free else then(r)

    def wbinvd(r: Run) -> int | None:
        if r.loc[1] and r.call(h.act("TDH.PHYMEM.PAGE.WBINVD", page=page_of(r),
                                     keyid=h.u.platform.global_keyid,
                                     step="tdh_phymem_page_wbinvd_tdr")):
            return None
        return base + 2

    def clear(r: Run) -> int | None:
        r.host_step(h.act("clear_page", page=page_of(r)))
        return base + 3

    def free(r: Run) -> int | None:
        r.host_step(h.act("page_free", page=page_of(r)))
        return then(r)
    return [reclaim, wbinvd, clear, free]


def _reclaim_body(h: ApiHost, page: int, clear_free: bool) -> Body:
    """``tdx_reclaim_page``: RECLAIM; a TDR's global-KeyID lines written back; then clear
    and free (``clear_free``); stop at a failure (the page leaks)."""
    return Body(tuple(_reclaim_steps(h, 0, lambda r: page, clear_free, lambda r: None)))


_ORDER = (PageType.PT_REG, PageType.PT_EPT, PageType.PT_TDCX, PageType.PT_TDVPR)


def _destroy_body(h: ApiHost, t: int, tdr: int, helper: bool) -> Body:
    """``tdx_td_destroy``: every page the TD owns reclaimed (guest pages, S-EPT pages, the
    vCPUs' and the TD's control pages), the TDR last; with ``helper`` each page also
    written back (the TDR under the global KeyID), cleared and freed.  Local 0: the loop's
    cursor, a position in (type in ``_ORDER``) x (page), the TDR after the last."""
    seq = [(pt, q) for pt in _ORDER for q in range(1, h.u.n_pages)]
    last = len(seq)

    def scan(r: Run) -> int | None:
        pos = r.loc[0]
        while pos < last and not (r.get("pt", seq[pos][1]) == seq[pos][0]
                                  and r.get("owner", seq[pos][1]) == t):
            pos += 1
        r.loc[0] = pos
        return steps[1](r)  # the scan is no move of its own: straight on to the RECLAIM

    def page_of(r: Run) -> int:
        return tdr if r.loc[0] == last else seq[r.loc[0]][1]

    def then(r: Run) -> int | None:
        if r.loc[0] == last:
            return None
        r.loc[0] += 1
        return 0
    steps = [scan, *_reclaim_steps(h, 1, page_of, helper, then)]
    return Body(tuple(steps))
