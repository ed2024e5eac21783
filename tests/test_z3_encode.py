"""The Z3 reading of the rules (checker/prove/encode.py) against the concrete one (the compiled
Python of model/compile.py, through Engine): same status, same ``where``, same next state
cell by cell, same invariant clause values, on states reached by seeded random walks."""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import z3
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hs
from tdxcheck.checker.explore.engine import Engine
from tdxcheck.checker.explore.programs import any_host_actions
from tdxcheck.checker.prove.encode import (
    STATUS_BITS,
    WHERE_BITS,
    Z3Encoder,
    enabled_term,
    status_value,
    where_value,
)
from tdxcheck.model.actions import HOST_ACTIONS, Action, actions_for_step
from tdxcheck.model.compile import (
    NOT_ENABLED,
    compile_functions,
    new_gen,
    predicate_source,
)
from tdxcheck.model.enums import TdLifecycle
from tdxcheck.model.expr import Const, Expr
from tdxcheck.model.rule import LEAVES
from tdxcheck.model.state import FIELDS, Platform, Universe
from tdxcheck.model.status import Status

ROOT = Path(__file__).parent.parent

PLATFORM = Platform(tdcs_pages=2, tdcx_pages=1, sept_levels=2)
PAGES = ("tdr0", "cs0", "cs1", "vpr0", "cx0", "sept0", "d0", "d1")
U = Universe(PLATFORM, ("td0",), ("vp0",), PAGES, (0x0, 0x1000))
TD_TDR = {"td0": "tdr0"}
VP_TDVPR = {"vp0": "vpr0"}


def block_tracked(gpa: int, level: int) -> list[tuple[str, dict[str, object], int]]:
    return [("tdh_mem_range_block", {"td": "td0", "gpa": gpa, "level": level}, 0),
            ("tdh_mem_track", {"td": "td0"}, 0)]


def give_back(page: str) -> list[tuple[str, dict[str, object], int]]:
    """A page removed from the TD goes back to the kernel (LK tdx_reclaim_page order)."""
    return [("tdh_phymem_page_wbinvd_hkid", {"hkid": 1, "page": page}, 0),
            ("clear_page", {"page": page}, 0), ("page_free", {"page": [page]}, 0)]


#: one TD's whole life through the typed wrappers (their CLFLUSH included): the spine the
#: random walks branch from, so they reach the deep states (RUNNABLE, BLOCKED, TEARDOWN)
LIFECYCLE: list[tuple[str, dict[str, object], int]] = [
    ("hkid_alloc", {"hkid": 1}, 0),
    ("page_alloc", {"page": list(PAGES)}, 0),
    ("tdh_mng_create", {"td": "td0", "page": "tdr0", "hkid": 1}, 0),
    ("tdh_mng_key_config", {"td": "td0"}, 0),
    ("tdh_mng_key_config", {"td": "td0"}, 2),
    ("tdh_mng_addcx", {"td": "td0", "page": "cs0"}, 0),
    ("tdh_mng_addcx", {"td": "td0", "page": "cs1"}, 0),
    ("tdh_mng_init", {"td": "td0"}, 0),
    ("tdh_vp_create", {"td": "td0", "vp": "vp0", "page": "vpr0"}, 0),
    ("tdh_vp_addcx", {"vp": "vp0", "page": "cx0"}, 0),
    ("tdh_vp_init", {"vp": "vp0"}, 1),
    ("tdh_mem_sept_add", {"td": "td0", "gpa": 0, "level": 1, "page": "sept0"}, 0),
    ("tdh_mem_page_add", {"td": "td0", "gpa": 0, "page": "d0"}, 0),
    ("tdh_mr_extend", {"td": "td0", "gpa": 0}, 0),
    ("tdh_mr_finalize", {"td": "td0"}, 0),
    ("tdh_vp_enter", {"vp": "vp0"}, 1),
    ("td_exit", {"vp": "vp0"}, 0),
    ("tdh_mem_page_aug", {"td": "td0", "gpa": 0x1000, "page": "d1"}, 0),
    ("tdh_vp_enter", {"vp": "vp0"}, 1),
    ("guest_accept", {"vp": "vp0", "gpa": 0x1000}, 0),
    ("td_exit", {"vp": "vp0"}, 0),
    *block_tracked(0x1000, 0),
    ("tdh_mem_range_unblock", {"td": "td0", "gpa": 0x1000, "level": 0}, 0),
    *block_tracked(0x1000, 0),
    ("tdh_mem_page_remove", {"td": "td0", "gpa": 0x1000, "level": 0}, 0),
    *give_back("d1"),
    *block_tracked(0x0, 0),
    ("tdh_mem_page_remove", {"td": "td0", "gpa": 0x0, "level": 0}, 0),
    *give_back("d0"),
    *block_tracked(0x0, 1),
    ("tdh_mem_sept_remove", {"td": "td0", "gpa": 0x0, "level": 1}, 0),
    *give_back("sept0"),
    ("tdh_vp_flush", {"vp": "vp0"}, 1),
    ("tdh_mng_vpflushdone", {"td": "td0"}, 0),
    ("tdh_phymem_cache_wb", {"resume": 0}, 0),
    ("tdh_phymem_cache_wb", {"resume": 0}, 2),
    ("tdh_mng_key_freeid", {"td": "td0"}, 0),
    ("hkid_free", {"hkid": 1}, 0),
    *[x for pg in ("cs0", "cs1", "cx0", "vpr0")
      for x in [("tdh_phymem_page_reclaim", {"page": pg}, 0), ("clear_page", {"page": pg}, 0),
                ("page_free", {"page": [pg]}, 0)]],
    ("tdh_phymem_page_reclaim", {"page": "tdr0"}, 0),
    ("tdh_phymem_page_wbinvd_tdr", {"td": "td0"}, 0),
    ("clear_page", {"page": "tdr0"}, 0),
    ("page_free", {"page": ["tdr0"]}, 0),
    ("check_no_leak", {}, 0),
]


def lifecycle_actions() -> list[Action]:
    return [a for name, o, cpu in LIFECYCLE
            for a in actions_for_step(U, name, o, cpu, TD_TDR, VP_TDVPR)]


def action_pool(u: Universe) -> tuple[list[Action], dict[Action, Expr]]:
    """Every leaf with every operand (raw, and as the typed wrapper with its CLFLUSH), every
    host and guest action, and a few operands the builders reject with a constant check;
    with the host-side guards of ``any_host_actions`` (a TD or vCPU slot is free before
    CREATE puts a new one in it)."""
    p = u.platform
    pool: list[Action] = []
    guards: dict[Action, Expr] = {}
    for a, guard in any_host_actions(u):
        hands = LEAVES[a.kind].hands if a.kind in LEAVES else ()
        variants = [a]
        if hands:
            variants.append(Action(a.step, a.kind, a.args, a.cpu,
                                   tuple(a.arg(h) for h in hands)))
        pool += variants
        if guard is not None:
            guards.update(dict.fromkeys(variants, guard))
    pages = range(1, u.n_pages)
    for h in range(1, p.hkids):
        pool += [Action(n, n, (("hkid", h),)) for n in ("hkid_alloc", "hkid_free")]
    for pg in pages:
        pool += [Action(n, n, (("page", pg),)) for n in
                 ("page_alloc", "page_free", "clflush", "clear_page")]
        pool += [Action("host_write", "host_write", (("page", pg),), c) for c in range(p.cpus)]
    pool.append(Action("check_no_leak", "check_no_leak", ()))
    pool += [
        Action("seamcall", "TDH.PHYMEM.CACHE.WB", (("resume", 2),), 1),
        Action("seamcall", "TDH.MNG.CREATE", (("td", 0), ("tdr", 1), ("hkid", 0))),
        Action("seamcall", "TDH.MNG.CREATE", (("td", 0), ("tdr", 1), ("hkid", p.hkids))),
        Action("seamcall", "TDH.PHYMEM.PAGE.RECLAIM", (("page", 0),)),
        Action("seamcall", "TDH.PHYMEM.PAGE.WBINVD", (("page", 0), ("keyid", 0))),
        Action("seamcall", "TDH.MEM.RANGE.BLOCK",
               (("tdr", 1), ("gpa", 0), ("level", p.sept_levels))),
    ]
    return pool, guards


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(U)


@pytest.fixture(scope="module")
def enc(engine: Engine) -> Z3Encoder:
    return Z3Encoder(engine.layout)


@pytest.fixture(scope="module")
def pool() -> list[Action]:
    return action_pool(U)[0]


def spine_states(engine: Engine) -> list[tuple[int, ...]]:
    s = engine.initial()
    spine = [s]
    for a in lifecycle_actions():
        s = engine.step(s, a).state
        spine.append(s)
    return spine


@pytest.fixture(scope="module")
def walks(engine: Engine, pool: list[Action]) -> list[tuple[int, ...]]:
    """States reached by seeded random walks of ``Engine.step`` (failing steps and fault
    points included), branching off the lifecycle spine; an action whose host-side guard
    does not hold is not taken."""
    rng = random.Random(20261126)
    guard_exprs = action_pool(U)[1]
    keys = list(dict.fromkeys(id(g) for g in guard_exprs.values()))
    by_id = {id(g): g for g in guard_exprs.values()}
    fns = dict(zip(keys, python_clauses(engine, [by_id[k] for k in keys], False), strict=True))
    spine = spine_states(engine)
    seen = dict.fromkeys(spine)
    for _walk in range(60):
        s = rng.choice(spine)
        for _step in range(12):
            # try a few random actions and prefer one that succeeds and changes the state
            r = None
            for _try in range(25):
                a = rng.choice(pool)
                g = guard_exprs.get(a)
                if g is not None and fns[id(g)](s) != -1:
                    continue
                faults = engine.compiled(a).rule.faults
                fault = rng.randrange(len(faults)) if faults and rng.random() < 0.15 else -1
                r = engine.step(s, a, fault)
                if r.where == -1 and r.state != s:
                    break
            if r is not None:
                s = r.state
            seen[s] = None
    return list(seen)


Case = tuple[tuple[int, ...], Action, int]


@pytest.fixture(scope="module")
def cases(engine: Engine, pool: list[Action], walks: list[tuple[int, ...]]) -> list[Case]:
    """(state, action, fault) triples: every action kind on several states, then random
    ones; a fault index is sometimes a real fault point, sometimes one past the last."""
    rng = random.Random(7)
    by_kind: dict[str, list[Action]] = {}
    for a in pool:
        by_kind.setdefault(a.kind, []).append(a)

    def fault_for(a: Action) -> int:
        n = len(engine.compiled(a).rule.faults)
        x = rng.random()
        if n and x < 0.2:
            return rng.randrange(n)
        return n if n and x < 0.25 else -1

    out: list[Case] = []
    for kind in sorted(by_kind):
        for _ in range(12):
            a = rng.choice(by_kind[kind])
            out.append((rng.choice(walks), a, fault_for(a)))
    # random operands mostly fail an early check: add successful steps, rarest kind first
    won: Counter[str] = Counter()
    for s in rng.sample(walks, min(len(walks), 500)):
        ok = [a for a in rng.sample(pool, 200) if engine.compiled(a).fn(s, -1)[2] == -1]
        if ok:
            a = min(ok, key=lambda a: (won[a.kind], rng.random()))
            won[a.kind] += 1
            n = len(engine.compiled(a).rule.faults)
            # where the checks pass, a chosen fault point (if its cond holds) fires
            out.append((s, a, rng.randrange(n) if n and rng.random() < 0.3 else -1))
    while len(out) < 2200:
        a = rng.choice(pool)
        out.append((rng.choice(walks), a, fault_for(a)))
    return out


# ------------------------------------------------------------------ helpers
def pack(terms: list[z3.ExprRef]) -> z3.BitVecRef:
    return z3.Concat(*terms) if len(terms) > 1 else terms[0]


def unpack(value: int, widths: list[int]) -> list[int]:
    out = []
    for w in reversed(widths):
        out.append(value & ((1 << w) - 1))
        value >>= w
    return out[::-1]


class Evaluator:
    """Symbolic encodings cached per (action, fault), evaluated on a concrete pre-state by
    substituting its values and simplifying (one packed term per encoding)."""

    def __init__(self, engine: Engine, enc: Z3Encoder) -> None:
        self.engine, self.enc = engine, enc
        self.pre = enc.fresh_state("s")
        self.post = enc.fresh_state("n")
        self._steps: dict[tuple[Action, int], z3.BitVecRef] = {}
        self._clauses: dict[object, tuple[z3.BitVecRef | None, int]] = {}
        self.encodings = 0

    def _subst(self, term: z3.ExprRef, s: tuple[int, ...],
               n: tuple[int, ...] | None = None) -> int:
        pairs = list(zip(self.pre, self.enc.const_state(s), strict=True))
        if n is not None:
            pairs += list(zip(self.post, self.enc.const_state(n), strict=True))
        v = z3.simplify(z3.substitute(term, *pairs))
        assert z3.is_bv_value(v), v
        return v.as_long()

    def step(self, s: tuple[int, ...], a: Action, fault: int) -> tuple[int, int, tuple[int, ...]]:
        key = (a, fault)
        term = self._steps.get(key)
        if term is None:
            st, nx, w = self.enc.action(self.engine, a, self.pre, fault)
            term = self._steps[key] = pack([st, w, *nx])
            self.encodings += 1
        widths = [STATUS_BITS, WHERE_BITS] + [self.enc.width] * len(self.pre)
        st_v, w_v, *cells = unpack(self._subst(term, s), widths)
        status = NOT_ENABLED if st_v == (1 << STATUS_BITS) - 1 else st_v
        where = w_v - (1 << WHERE_BITS) if w_v >> (WHERE_BITS - 1) else w_v
        return status, where, tuple(cells)

    def clause_bits(self, exprs: list, s: tuple[int, ...], n: tuple[int, ...] | None,
                    key: object) -> list[bool]:
        hit = self._clauses.get(key)
        if hit is None:
            terms = self.enc.clauses(exprs, self.pre, self.post if n is not None else None)
            bits = [z3.If(t, z3.BitVecVal(1, 1), z3.BitVecVal(0, 1)) for t in terms]
            hit = self._clauses[key] = (pack(bits) if bits else None, len(bits))
        term, k = hit
        if term is None:
            return []
        return [bool(b) for b in unpack(self._subst(term, s, n), [1] * k)]


def python_clauses(engine: Engine, exprs: list, two_state: bool) -> list:
    """Each clause compiled on its own by compile.py: fn(...) == -1 when it holds."""
    gen = new_gen(engine.layout)
    srcs = [predicate_source(f"c{i}", [e], engine.layout, gen, two_state)
            for i, e in enumerate(exprs)]
    ns = compile_functions(srcs, gen) if srcs else {}
    return [ns[f"c{i}"] for i in range(len(exprs))]


@pytest.fixture(scope="module")
def ev(engine: Engine, enc: Z3Encoder) -> Evaluator:
    return Evaluator(engine, enc)


# ------------------------------------------------------------------ transitions
def test_walks_reach_deep_states(engine: Engine, walks: list[tuple[int, ...]]) -> None:
    lay = engine.layout
    lifecycles = {s[lay.flat("lifecycle", (0,))] for s in walks if s[lay.flat("tdr", (0,))]}
    assert len(walks) >= 300
    assert lifecycles == set(TdLifecycle)  # every TD lifecycle state is visited


def test_transitions_agree_on_random_reachable_pairs(
        engine: Engine, ev: Evaluator, cases: list[Case]) -> None:
    """Status, where and next state, cell by cell, for >= 2,000 (state, action) pairs."""
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    success: set[str] = set()
    for s, a, fault in cases:
        ca = engine.compiled(a)
        status, n, where = ca.fn(s, fault)
        r = engine.step(s, a, fault)
        assert (r.state, r.where) == (n, where)
        z_status, z_where, z_next = ev.step(s, a, fault)
        assert (z_status, z_where) == (status, where), (a, fault, s)
        if z_next != n:
            diff = [(engine.layout.label(i), x, y) for i, (x, y) in
                    enumerate(zip(n, z_next, strict=True)) if x != y]
            pytest.fail(f"{a} fault={fault}: next states differ at {diff}")
        kinds[a.kind] += 1
        if where == -1:
            success.add(a.kind)
        outcomes["not enabled" if where == -2 else "success" if where == -1 else
                  "fault" if engine.is_fault(a, where) else "check"] += 1
    assert len(cases) >= 2000
    assert set(LEAVES) | set(HOST_ACTIONS) <= set(kinds)
    assert all(outcomes[k] > 0 for k in ("not enabled", "success", "fault", "check")), outcomes
    assert len(success & set(LEAVES)) >= len(LEAVES) - 3, sorted(set(LEAVES) - success)


def test_every_leaf_succeeds_somewhere(engine: Engine, ev: Evaluator,
                                       walks: list[tuple[int, ...]],
                                       pool: list[Action]) -> None:
    """For each leaf, some walk state and operands where it succeeds, in both readings."""
    rng = random.Random(3)
    states = spine_states(engine) + rng.sample(walks, min(len(walks), 150))
    by_leaf: dict[str, list[Action]] = {}
    for a in pool:
        if a.kind in LEAVES:
            by_leaf.setdefault(a.kind, []).append(a)
    missing = []
    for leaf, acts in sorted(by_leaf.items()):
        found = None
        for s in states:
            for a in acts:
                if engine.compiled(a).fn(s, -1)[2] == -1:
                    found = (s, a)
                    break
            if found:
                break
        if not found:
            missing.append(leaf)
            continue
        s, a = found
        status, n, _w = engine.compiled(a).fn(s, -1)
        assert ev.step(s, a, -1) == (status, -1, n)
    assert missing == [], missing


def test_lifecycle_direct_on_constant_states(engine: Engine, enc: Z3Encoder) -> None:
    """Encoding straight on a constant pre-state (no substitution) and simplifying."""
    s = engine.initial()
    for a in lifecycle_actions():
        status, n, where = engine.compiled(a).fn(s, -1)
        z_status, z_next, z_where = enc.action(engine, a, enc.const_state(s))
        assert status_value(z_status) == status
        assert where_value(z_where) == where
        assert enc.values(z_next) == n
        assert where == -1, a  # the spine really runs: every step succeeds
        s = n


def test_solver_with_fixed_pre_state(engine: Engine, enc: Z3Encoder,
                                     cases: list[Case]) -> None:
    """Solve with the pre-state fixed: the model's status/where/next state are the concrete
    ones, and no other status is possible (the transition is a function)."""
    pre = enc.fresh_state("p")
    rng = random.Random(11)
    for s, a, fault in rng.sample(cases, 40):
        status, n, where = engine.compiled(a).fn(s, fault)
        st, nx, w = enc.action(engine, a, pre, fault)
        sol = z3.Solver()
        sol.add([x == v for x, v in zip(pre, enc.const_state(s), strict=True)])
        assert sol.check() == z3.sat
        m = sol.model()
        assert status_value(m.eval(st, model_completion=True)) == status
        assert where_value(m.eval(w, model_completion=True)) == where
        assert enc.values(nx, m) == n
        sol.add(z3.Or(st != z3.BitVecVal(status % (1 << STATUS_BITS), STATUS_BITS),
                      *(x != v for x, v in zip(nx, enc.const_state(n), strict=True))))
        assert sol.check() == z3.unsat


def test_symbolic_fault_choice(engine: Engine, enc: Z3Encoder, ev: Evaluator,
                               walks: list[tuple[int, ...]], pool: list[Action]) -> None:
    """A fault given as a bit-vector term: each value gives the int fault's transition."""
    rng = random.Random(5)
    f = z3.BitVec("fault", 8)
    with_faults = [a for a in pool if engine.compiled(a).rule.faults]
    for a in rng.sample(with_faults, 25):
        st, nx, w = enc.action(engine, a, ev.pre, f)
        term = pack([st, w, *nx])
        k = len(engine.compiled(a).rule.faults)
        for s in rng.sample(walks, 3):
            for fault in range(-1, k + 1):
                sub = z3.substitute(term, (f, z3.BitVecVal(fault % 256, 8)))
                got = ev._subst(sub, s)
                status, n, where = engine.compiled(a).fn(s, fault)
                st2, w2, n2 = ev.step(s, a, fault)
                assert (st2, w2, n2) == (status, where, n)
                widths = [STATUS_BITS, WHERE_BITS] + [enc.width] * len(s)
                assert unpack(got, widths)[2:] == list(n)


@settings(derandomize=True, max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
@given(data=hs.data())
def test_transitions_agree_on_typed_states(engine: Engine, ev: Evaluator, pool: list[Action],
                                           walks: list[tuple[int, ...]],
                                           data: hs.DataObject) -> None:
    """Typed states that need not be reachable (a walk state with a few cells changed
    within their bounds, or every cell drawn), any action, any fault index: the readings
    agree wherever the Python values stay unsigned (z3_encode's docstring: ``x - 1`` at 0
    is -1 in Python)."""

    enc = ev.enc
    if data.draw(hs.booleans(), label="from a walk state"):
        cells = list(data.draw(hs.sampled_from(walks), label="walk state"))
        for _ in range(data.draw(hs.integers(1, 6), label="cells changed")):
            i = data.draw(hs.integers(0, len(cells) - 1), label="cell")
            cells[i] = data.draw(hs.integers(0, enc.bounds[i]), label="value")
    else:
        cells = [data.draw(hs.integers(0, b)) for b in enc.bounds]
    for i, v in enc.fixed:
        cells[i] = v
    s = tuple(cells)
    a = data.draw(hs.sampled_from(pool), label="action")
    k = len(engine.compiled(a).rule.faults)
    fault = data.draw(hs.integers(-1, k), label="fault")
    status, n, where = engine.compiled(a).fn(s, fault)
    assume(all(0 <= x < (1 << enc.width) for x in n))
    assert ev.step(s, a, fault) == (status, where, n)


# ------------------------------------------------------------------ invariants
def test_state_clauses_agree(engine: Engine, ev: Evaluator,
                             walks: list[tuple[int, ...]]) -> None:
    """Every state clause of every invariant, clause by clause, on every walk state."""
    exprs, owners = [], []
    for inv in engine.invariants:
        for c in inv.state_clauses(U):
            exprs.append(c.ok)
            owners.append(inv.id)
    assert len(exprs) > 20
    fns = python_clauses(engine, exprs, two_state=False)
    broken: Counter[str] = Counter()
    for s in walks:
        got = ev.clause_bits(exprs, s, None, "state")
        want = [fn(s) == -1 for fn in fns]
        assert got == want, [owners[i] for i, (x, y) in enumerate(zip(got, want)) if x != y]
        broken.update(owners[i] for i, ok in enumerate(want) if not ok)
        first = [v.invariant for v in engine.state_violations(s)]
        assert sorted(first) == sorted({owners[i] for i, ok in enumerate(want) if not ok})
    assert broken  # the walks break host obligations, so both truth values are compared


def test_step_clauses_agree(engine: Engine, ev: Evaluator, cases: list[Case]) -> None:
    """Every step clause of every invariant on the walk pairs (pre, action, post)."""
    checked = 0
    values: Counter[bool] = Counter()
    fns_cache: dict[Action, tuple[list, list]] = {}
    for s, a, fault in cases:
        if a not in fns_cache:
            exprs = [c.ok for inv in engine.invariants for c in inv.step_clauses(U, a)]
            fns_cache[a] = (exprs, python_clauses(engine, exprs, two_state=True))
        exprs, fns = fns_cache[a]
        if not exprs:
            continue
        n = engine.compiled(a).fn(s, fault)[1]
        got = ev.clause_bits(exprs, s, n, ("step", a))
        want = [fn(s, n) == -1 for fn in fns]
        assert got == want, a
        checked += len(exprs)
        values.update(want)
    assert checked >= 1000 and values[True] and values[False], (checked, values)


# ------------------------------------------------------------------ ablation
def test_ablated_check_changes_both_readings_alike(enc: Z3Encoder) -> None:
    """Dropping mng.key_freeid.wbinvd_done: on the state after VPFLUSHDONE (wbinvd bitmap
    still set) both readings turn WBCACHE_NOT_COMPLETE into SUCCESS; and symbolically the
    two Z3 transitions differ exactly where that check fails."""
    name = "mng.key_freeid.wbinvd_done"
    full, ablated = Engine(U), Engine(U, ablate={name})
    freeid = next(a for a in lifecycle_actions() if a.kind == "TDH.MNG.KEY.FREEID")
    rule_full = full.compiled(freeid).rule
    idx = next(i for i, st in enumerate(rule_full.steps) if st.name == name)
    assert [st.name for st in ablated.compiled(freeid).rule.steps] == \
        [st.name for i, st in enumerate(rule_full.steps) if i != idx]

    s = full.initial()
    for a in lifecycle_actions():
        if a.step == "tdh_phymem_cache_wb":
            break
        s = full.step(s, a).state
    c_full, c_abl = full.compiled(freeid).fn(s, -1), ablated.compiled(freeid).fn(s, -1)
    assert c_full[0] == int(Status.TDX_WBCACHE_NOT_COMPLETE) and c_full[2] == idx
    assert c_abl[0] == int(Status.TDX_SUCCESS) and c_abl[1] != s
    for eng, want in ((full, c_full), (ablated, c_abl)):
        st, nx, w = enc.action(eng, freeid, enc.const_state(s))
        assert (status_value(st), enc.values(nx), where_value(w)) == want

    pre = enc.fresh_state("s")
    st1, n1, w1 = enc.action(full, freeid, pre)
    st2, n2, w2 = enc.action(ablated, freeid, pre)
    wbinvd_fails = z3.Not(enc.cond(rule_full.steps[idx].ok, pre))
    differ = z3.Or(st1 != st2, *(x != y for x, y in zip(n1, n2, strict=True)))
    reached = z3.And(w1 == z3.BitVecVal(idx, WHERE_BITS))
    sol = z3.Solver()
    sol.add(enc.typing(pre))
    sol.push()
    sol.add(differ)
    assert sol.check() == z3.sat
    sol.pop()
    # they differ iff the full rule stops at the ablated check; then the ablated one succeeds
    sol.add(z3.Not(differ == reached))
    assert sol.check() == z3.unsat
    sol2 = z3.Solver()
    sol2.add(enc.typing(pre), reached,
             z3.Not(z3.And(wbinvd_fails, w2 == z3.BitVecVal(-1, WHERE_BITS),
                           st1 == int(Status.TDX_WBCACHE_NOT_COMPLETE), st2 == 0)))
    assert sol2.check() == z3.unsat


# ------------------------------------------------------------------ typing, width, API
def test_typing(engine: Engine, enc: Z3Encoder, ev: Evaluator,
                walks: list[tuple[int, ...]]) -> None:
    ty = z3.If(enc.typing(ev.pre, members=True), z3.BitVecVal(1, 1), z3.BitVecVal(0, 1))
    for s in walks:
        assert ev._subst(ty, s) == 1
    assert z3.is_true(z3.simplify(enc.typing(enc.const_state(engine.initial()))))
    lay = engine.layout
    null_pt = lay.flat("pt", (0,))
    bad = list(engine.initial())
    bad[null_pt] = 0
    assert z3.is_false(z3.simplify(enc.typing(enc.const_state(bad))))
    i = lay.flat("kot_state", (1,))
    bad = list(engine.initial())
    bad[i] = enc.bounds[i] + 1
    assert z3.is_false(z3.simplify(enc.typing(enc.const_state(bad))))
    # an enum value below the largest member that is no member: typed, but not a member
    pt1 = lay.flat("pt", (1,))
    odd = list(engine.initial())
    odd[pt1] = 2
    assert z3.is_true(z3.simplify(enc.typing(enc.const_state(odd))))
    assert z3.is_false(z3.simplify(enc.typing(enc.const_state(odd), members=True)))


def test_width_and_constants(engine: Engine) -> None:
    enc = Z3Encoder(engine.layout)
    need = max(enc.bounds).bit_length()
    assert enc.width == max(8, need + 1)
    assert all(z3.is_bv(t) and t.size() == enc.width for t in enc.fresh_state("x"))
    assert Z3Encoder(engine.layout, width=need).width == need
    with pytest.raises(ValueError):
        Z3Encoder(engine.layout, width=need - 1)
    with pytest.raises(ValueError):
        enc.expr(Const(1 << enc.width), enc.fresh_state("x"))
    with pytest.raises(ValueError):
        enc.expr(Const(-1), enc.fresh_state("x"))
    small = Universe(Platform(packages=1, cpus_per_package=1, hkids=2, tdcs_pages=1,
                              tdcx_pages=0, max_vcpus=1, sept_levels=2),
                     ("t",), ("v",), ("p",), (0,))
    assert Z3Encoder(Engine(small).layout).width == 8


def test_not_enabled_and_where(engine: Engine, enc: Z3Encoder) -> None:
    """A guest step while no vCPU runs: status -1, where -2, state unchanged."""
    s = engine.initial()
    a = Action("td_exit", "td_exit", (("vp", 0), ("reason", "normal")))
    st, nx, w = enc.action(engine, a, enc.const_state(s))
    assert (status_value(st), enc.values(nx), where_value(w)) == engine.compiled(a).fn(s)
    assert status_value(st) == NOT_ENABLED
    assert z3.is_false(z3.simplify(enabled_term(w)))


def test_post_read_needs_post_state(enc: Z3Encoder) -> None:
    from tdxcheck.model.state import POST

    with pytest.raises(ValueError):
        enc.expr(POST.pt[1] == 0, enc.fresh_state("x"))


def test_encoder_names_no_field_leaf_or_status() -> None:
    """The encoder reads rules generically: no string in it is a field, leaf, host action,
    check or status name, and no module outside checker/prove/ imports z3."""
    src = (ROOT / "checker" / "prove" / "encode.py").read_text()
    strings = {n.value for n in ast.walk(ast.parse(src))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    names = {f.name for f in FIELDS} | set(LEAVES) | set(HOST_ACTIONS) | \
        {s.name for s in Status}
    assert strings & names == set()
    for word in ("TDH.", "TDX_", "PT_", "TD_", "KOT_", "SEPT_"):
        assert word not in "".join(s for s in strings if len(s) < 40), word
    importers = []
    for path in list((ROOT / "model").glob("*.py")) + list((ROOT / "checker").rglob("*.py")) \
            + list((ROOT / "properties").glob("*.py")):
        if ROOT / "checker" / "prove" in path.parents:  # the Z3 back end and prove/param/
            continue
        if re.search(r"^\s*(import z3|from z3\b)", path.read_text(), re.MULTILINE):
            importers.append(str(path.relative_to(ROOT)))
    assert importers == []


@pytest.mark.slow
def test_every_action_on_every_spine_state(engine: Engine, ev: Evaluator,
                                           pool: list[Action]) -> None:
    """Exhaustive over the lifecycle spine: every pool action, no fault, on every state."""
    spine = spine_states(engine)
    for a in pool:
        fn = engine.compiled(a).fn
        for s in spine:
            status, n, where = fn(s, -1)
            assert ev.step(s, a, -1) == (status, where, n), a
