"""The Z3 prover (checker/prove/): induction with lemmas, CTIs, BMC, and cross-checks
against the explorer.  The default run uses the tiny configuration (and one full proof of
``default``); the deep runs (the larger configuration, every ablation) are marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import z3
from tdxcheck.checker.explore.bfs import explore
from tdxcheck.checker.explore.engine import Engine
from tdxcheck.checker.explore.programs import AnyHost, make_config
from tdxcheck.checker.explore.replay import replay, universe_of
from tdxcheck.checker.explore.symmetry import Symmetry
from tdxcheck.checker.explore.traces import any_host_tdx, itf
from tdxcheck.checker.output.prove_report import prove_json, prove_text
from tdxcheck.checker.prove import (
    NO_VIOLATION,
    NOT_INDUCTIVE,
    PROVED,
    TYPING,
    UNKNOWN,
    VIOLATED,
    prove,
    write_traces,
)
from tdxcheck.checker.prove.common import _Ctx, read_cells
from tdxcheck.checker.scenario import parse_file
from tdxcheck.model.state import S
from tdxcheck.properties import INVARIANTS, REGISTRY
from tdxcheck.properties.lemmas import LEMMAS

TINY = make_config("tiny", {})
#: tiny with two CPUs: a TRACK or REMOVE can run while a vCPU runs the guest on the other
#: (on one CPU the running vCPU's LP makes no SEAMCALL, and the refcount lemma is not needed)
TINY2 = make_config("tiny", {"cpus_per_package": "2"})
#: the larger configuration of the issue: at least twice default's pages, TDs and HKIDs
LARGER = make_config("default", {"tds": "4", "pages": "8", "hkids": "3"})

MODULE_INVARIANTS = {"no-double-assignment", "keyid-after-vpflushdone", "pamt-owner-live",
                     "chldcnt-matches-pages", "kot-matches-lifecycle", "assoc-count-matches",
                     "keys-configured-all-packages", "tlb-tracked-before-remove",
                     "operand-type-respected"}


@pytest.fixture(scope="module")
def tiny_proof():  # type: ignore[no-untyped-def]
    return prove(TINY)


def statuses(r) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {t.invariant: t.status for t in r.results}


def explorer_shortest(config, ablate):  # type: ignore[no-untyped-def]
    """The explorer's shortest violation length per invariant (symmetry on, every
    invariant), or None when it cannot rebuild a trace (an out-of-range counter)."""
    prog = AnyHost(config.universe(), ablate=ablate)
    try:
        r = explore(prog, stop_at_first=False, canon=Symmetry(prog.engine.layout).canonical)
    except AssertionError:  # explore.rebuild cannot concretize a state-encoding violation
        return None
    return {c.invariant: c.length for c in r.violations}


def replays(prove_result, cx) -> bool:  # type: ignore[no-untyped-def]
    prog = prove_result.program()
    s = prog.initial()
    for (eid, status), nxt in zip(cx.path, cx.states[1:], strict=True):
        r = prog.apply_edge(s, eid)
        if r is None or r[1] != status or r[2] != nxt:
            return False
        s = nxt
    return True


# ------------------------------------------------------------------ the proof
def test_tiny_everything_proved(tiny_proof) -> None:  # type: ignore[no-untyped-def]
    r = tiny_proof
    st = statuses(r)
    # tiny has one TD: no-double-assignment has no module clause there (and is named)
    assert {i for i, _w in r.scope()} == ({inv.id for inv in INVARIANTS} - MODULE_INVARIANTS
                                          | {"no-double-assignment"})
    assert "not proved by this run (--host any):" in prove_text(r)
    assert MODULE_INVARIANTS - {"no-double-assignment"} <= set(st)
    assert {lm.id for lm in LEMMAS} <= set(st) and TYPING in st
    assert set(st.values()) == {PROVED}, {k: v for k, v in st.items() if v != PROVED}
    assert r.ok and r.exit_status == 0 and r.rounds == 1
    assert r.queries > 500 and r.queries_per_second > 0
    assert all(t.queries + t.frame > 0 for t in r.results)
    # every query was answered, and frame-discharged pairs are counted, not queried
    assert {q.answer for q in r.records} == {"unsat"}
    assert sum(t.frame for t in r.results) > 0


def test_default_everything_proved() -> None:
    """Issue item 3: every invariant of properties/ with a module clause, on default."""
    r = prove(make_config("default", {}))
    st = statuses(r)
    assert MODULE_INVARIANTS <= set(st)
    assert set(st.values()) == {PROVED}, {k: v for k, v in st.items() if v != PROVED}


@pytest.mark.slow  # 30 s here; the frame rule's soundness is also checked per transition
@pytest.mark.parametrize("faults", [False, True])
def test_frame_rule_changes_no_verdict(monkeypatch, faults: bool) -> None:  # type: ignore[no-untyped-def]
    """Every (hypothesis, transition) pair the frame rule discharges (the transition writes
    no cell the clause reads; step clauses are always asked) is unsat when asked: with
    the rule off, every clause of every target is a goal of every transition."""
    import tdxcheck.checker.prove.induction as zp

    with_frame = prove(TINY, faults=faults)
    monkeypatch.setattr(zp, "FRAME_RULE", False)
    r = prove(TINY, faults=faults)
    assert statuses(r) == statuses(with_frame) and r.ok
    # only a target without state clauses (a step invariant) has transitions with no goal
    ctx = r._ctx
    no_state = {t.id for t in ctx.targets if not t.clauses and t.kind != "typing"}
    assert all(t.frame == 0 for t in r.results if t.invariant not in no_state)
    assert all(t.queries + t.frame == r.transitions for t in r.results)
    assert r.queries > with_frame.queries
    assert {q.answer for q in r.records} == {"unsat"}


def test_every_module_invariant_is_a_target() -> None:
    ctx = _Ctx(make_config("default", {}), False, (), None, None)
    ids = {t.id for t in ctx.targets if t.kind == "invariant"}
    with_module = {inv.id for inv in INVARIANTS if ctx._has_module_clauses(inv)}
    assert ids == with_module == MODULE_INVARIANTS


def test_one_invariant_is_proved_with_every_other_hypothesis() -> None:
    """``--invariant X`` reports X only, but each query still assumes every invariant,
    lemma and state-encoding: alone, keyid-after-vpflushdone is not inductive."""
    r = prove(TINY, invariants=["keyid-after-vpflushdone"])
    assert statuses(r) == {"keyid-after-vpflushdone": PROVED} and r.exit_status == 0
    assert "proved together with every other" in prove_text(r)
    assert prove_json(r)["not_proved_here"] == []
    alone = prove(TINY, invariants=["keyid-after-vpflushdone"], lemmas=[], confirm_depth=0)
    assert statuses(alone)["keyid-after-vpflushdone"] == NOT_INDUCTIVE


def test_what_the_any_host_does_not_prove_is_named() -> None:
    """The host obligations are not the module's to keep: a full run names them (text and
    JSON), and asking for one is a usage error that says why, not an empty "all proved"."""
    ctx = _Ctx(make_config("default", {}), False, (), None, None)
    host_only = {inv.id for inv in INVARIANTS} - MODULE_INVARIANTS
    assert set(ctx.not_covered) == host_only
    with pytest.raises(ValueError, match="no-leak is not proved for --host any: no clause"):
        prove(TINY, invariants=["no-leak"])
    with pytest.raises(ValueError, match="unknown invariant"):
        prove(TINY, invariants=["no-such"])


def test_faults_proved() -> None:
    r = prove(TINY, faults=True)
    assert r.ok, statuses(r)
    assert r.transitions > len(_Ctx(TINY, False, (), None, None).trans)


def test_transitions_are_the_any_hosts_edges() -> None:
    for faults in (False, True):
        ctx = _Ctx(TINY, faults, (), None, None)
        prog = ctx.program()  # asserts labels, faults and the initial state agree
        assert len(ctx.trans) == len(prog.edges)
        assert [t.eid for t in ctx.trans] == list(range(len(prog.edges)))


def _reachable(prog, cap: int) -> list:  # type: ignore[no-untyped-def]
    """States of ``prog`` in breadth-first order (at most ``cap``)."""
    s0 = prog.initial()
    seen = {s0}
    order = [s0]
    i = 0
    while i < len(order) and len(order) < cap:
        for _e, _st, n, _v in prog.successors(order[i]):
            if n not in seen:
                seen.add(n)
                order.append(n)
        i += 1
    return order


def explorer_gate_gaps(ctx) -> set[int]:  # type: ignore[no-untyped-def]
    """Edges whose first non-constant check (the explorer's *gate*,
    ``AnyHost._build_gates``) has ``fail_effects``: an explorer that counts a failed gate
    as a self-loop never takes such an edge's failing exit (CACHE.WB(resume=0) with no
    HKID FLUSHED, which resets the package's interrupted run).  The prover keeps them (it
    over-approximates the explorer there); an explorer that runs the failure effects
    agrees exactly."""
    from tdxcheck.model.actions import rule_of
    from tdxcheck.model.expr import Const
    from tdxcheck.model.rule import Check, Ctx, Fault

    out = set()
    for tr in ctx.trans:
        k = 0
        for step in rule_of(tr.action, Ctx(ctx.u, ctx.layout, tr.action.cpu)).steps:
            if isinstance(step, Fault):
                if tr.fault == k:
                    break
                k += 1
            elif isinstance(step, Check) and not isinstance(step.ok, Const):
                if step.fail_effects:
                    out.add(tr.eid)
                break
    return out


@pytest.mark.parametrize("faults", [False, True])
def test_transitions_equal_the_explorers_on_reachable_states(faults: bool) -> None:
    """The prover's transition relation (guard, enabled, next state) is the any host's,
    programmatically: on reachable tiny states, for every edge, the Z3 transition is
    enabled exactly when ``AnyHost.apply_edge`` takes it and gives the same next state,
    and the edges that change the state are exactly ``AnyHost.successors``'s (up to the
    explorer's gate gap, see ``explorer_gate_gaps``)."""
    import random

    from tdxcheck.checker.prove.encode import enabled_term

    ctx = _Ctx(TINY, faults, (), None, None)
    prog = ctx.program()
    enc = ctx.enc
    pre = enc.fresh_state("s")
    sym = []
    for tr in ctx.trans:
        _st, post, where = enc.action(ctx.engine, tr.action, pre, tr.fault)
        cond = [enabled_term(where)]
        if tr.guard is not None:
            cond.append(enc.cond(tr.guard, pre))
        sym.append((z3.And(*cond), [(i, post[i]) for i in range(len(post))
                                    if not z3.eq(post[i], pre[i])]))
    states = _reachable(prog, 60_000)
    rng = random.Random(5)
    sample = [states[0], *rng.sample(states, 30), *states[-10:]]
    gaps = explorer_gate_gaps(ctx)
    for s in sample:
        sol = z3.Solver()
        sol.add(*(p == enc.const(v) for p, v in zip(pre, s, strict=True)))
        assert sol.check() == z3.sat
        m = sol.model()
        want = {e: n for e, _st, n, _v in prog.successors(s)}
        got = {}
        for tr, (cond, changed) in zip(ctx.trans, sym, strict=True):
            enabled = z3.is_true(m.eval(cond, model_completion=True))
            r = prog.apply_edge(s, tr.eid)
            assert enabled == (r is not None), (tr.text, s)
            if r is None:
                continue
            n = list(s)
            for i, term in changed:
                n[i] = m.eval(term, model_completion=True).as_long()
            assert tuple(n) == r[2], (tr.text, s)
            if r[2] != s or r[3]:
                got[tr.eid] = r[2]
        extra = set(got) - set(want)
        assert extra <= gaps, [ctx.trans[e].text for e in extra - gaps]
        assert {e: got[e] for e in want} == want


def test_hypotheses_hold_initially_in_both_readings() -> None:
    ctx = _Ctx(make_config("default", {}), False, (), None, None)
    init = ctx.enc.const_state(ctx.initial)
    assert z3.is_true(z3.simplify(ctx.enc.typing(init, members=True)))
    for t in ctx.targets:
        assert ctx.concrete_violation(t, None, ctx.initial, None) is None, t.id
        for term in ctx.enc.clauses([c.ok for c in t.clauses], init):
            assert z3.is_true(z3.simplify(term)), t.id


def test_lemmas_are_separate_named_and_documented() -> None:
    ids = [lm.id for lm in LEMMAS]
    assert len(ids) == len(set(ids)) >= 10
    assert not set(ids) & set(REGISTRY)
    assert not set(ids) & {inv.id for inv in INVARIANTS}
    u = make_config("default", {}).universe()
    for lm in LEMMAS:
        assert lm.guarantee == "module" and lm.state is not None and lm.step is None
        doc = lm.state.__doc__ or ""
        assert len(doc.split()) >= 20, f"{lm.id}: say the rule in words and why it holds"
        assert lm.state_clauses(u, "module"), lm.id
        assert all(c.message for c in lm.state_clauses(u))


def test_concrete_typing_is_the_z3_typing() -> None:
    """``state-encoding`` in the concrete reading (confirmations, BMC traces) is
    ``Z3Encoder.typing(members=True)``: bounds, enum members, the NULL page's cells."""
    ctx = _Ctx(TINY, False, (), None, None)
    lay = ctx.layout
    assert ctx.typing_violation(ctx.initial) is None
    cases = {lay.flat("chldcnt", (0,)): ctx.bounds[lay.flat("chldcnt", (0,))] + 1,
             lay.flat("pt", (1,)): 2,  # below the enum's largest, not a member
             lay.flat("pt", (0,)): 0}  # the NULL page is PT_RSVD
    for i, v in cases.items():
        s = list(ctx.initial)
        s[i] = v
        z = z3.simplify(ctx.enc.typing(ctx.enc.const_state(s), members=True))
        assert ctx.typing_violation(tuple(s)) is not None and z3.is_false(z), lay.label(i)
    # and on random cell values, the two readings agree both ways
    import random

    rnd = random.Random(5)
    for _ in range(300):
        s = list(ctx.initial)
        for i in rnd.sample(range(lay.size), 3):
            s[i] = rnd.randrange(0, ctx.bounds[i] + 2)
        z = z3.simplify(ctx.enc.typing(ctx.enc.const_state(s), members=True))
        assert (ctx.typing_violation(tuple(s)) is None) == z3.is_true(z), s


def test_cores_name_the_lemmas_used() -> None:
    r = prove(TINY2, cores=True)
    assert r.ok
    uses = {t.invariant: t.uses for t in r.results}
    assert all(u is not None for u in uses.values())
    assert "epoch-refcounts" in uses["tlb-tracked-before-remove"]
    assert "uses: " in prove_text(r)
    assert all("uses" in x for x in prove_json(r)["results"])


def test_read_cells() -> None:
    lay = Engine(TINY.universe()).layout
    assert read_cells(S.pt[1] == 0, lay) == {lay.flat("pt", (1,))}
    cells = read_cells(S.pt[S.tdr[0]] == 0, lay)
    assert lay.flat("tdr", (0,)) in cells
    assert set(lay.cells("pt")) <= cells


# ------------------------------------------------------------------ failures
def test_ablation_violated_with_shortest_replayable_trace(tmp_path: Path) -> None:
    """KEY.FREEID without its wbinvd check: violated, by the explorer's 5-step trace,
    which replays on the engine and as a written .tdx scenario."""
    abl = "mng.key_freeid.wbinvd_done"
    r = prove(TINY, ablate=[abl])
    st = statuses(r)
    assert st["keyid-after-vpflushdone"] == VIOLATED
    assert r.exit_status == 1 and not r.ok
    t = next(x for x in r.results if x.invariant == "keyid-after-vpflushdone")
    cx = t.counterexample
    assert cx is not None and cx.length == 5 == explorer_shortest(TINY, [abl])[t.invariant]
    assert replays(r, cx)
    assert t.cti is not None and t.cti.replayed and t.cti.confirmed
    # the reporters and trace writers of the explorer take it as it is
    text = any_host_tdx(r.program(), cx, "tdxcheck prove")
    assert "tdh_mng_key_freeid" in text
    files = write_traces(r, tmp_path)
    assert [Path(f).name for f in files[0]] == [f"{t.invariant}.tdx", f"{t.invariant}.itf.json"]
    sc = parse_file(files[0][0])
    rr = replay(sc, Engine(universe_of(sc), ablate=[abl]))
    assert not rr.mismatches and t.invariant in {v.invariant for _, v in rr.violations}
    data = itf(r.program(), cx, r.labels(cx))
    assert len(data["states"]) == cx.length + 1
    out = prove_text(r)
    assert "violated" in out and "NOT PROVED" in out and "tdh_mng_key_freeid" in out
    js = prove_json(r)
    row = next(x for x in js["results"] if x["invariant"] == t.invariant)
    assert row["status"] == VIOLATED and row["counterexample"]["length"] == 5
    json.dumps(js)


def test_missing_lemma_gives_a_minimised_confirmed_cti() -> None:
    """Without the refcount lemma the tlb invariant and the counters are not inductive:
    the CTI is a confirmed step from a state where every remaining hypothesis holds.  A
    refcount can then leave its range (state-encoding is not inductive), and every query
    assumes the cells in range, so nothing else may be reported proved."""
    lemmas = [lm.id for lm in LEMMAS if lm.id != "epoch-refcounts"]
    r = prove(TINY2, lemmas=lemmas, confirm_depth=4)
    st = statuses(r)
    bad = {k for k, v in st.items() if v != PROVED}
    assert st[TYPING] == NOT_INDUCTIVE and st["tlb-tracked-before-remove"] == NOT_INDUCTIVE
    assert bad == set(st) and {st[k] for k in bad} == {NOT_INDUCTIVE, UNKNOWN}, st
    assert all("assumes state-encoding" in t.note for t in r.results if t.status == UNKNOWN)
    assert r.exit_status == 1
    for t in r.results:
        if t.status != NOT_INDUCTIVE:
            continue
        c = t.cti
        assert c is not None and c.replayed and c.confirmed, t.invariant
        assert c.clauses and c.transition
        assert len(c.context) + len(c.changes) <= 25, (t.invariant, c.context)
        assert "lemma is missing" in t.note or "left the hypotheses" in t.note
    text = prove_text(r)
    assert "not inductive: counterexample to induction" in text
    row = next(x for x in prove_json(r)["results"] if x["status"] == NOT_INDUCTIVE)
    assert {"transition", "changes", "pre_state", "violated_clauses"} <= set(row["cti"])


def test_timeout_is_never_proved() -> None:
    r = prove(TINY, timeout_ms=1, confirm_depth=0)
    timed_out = {q.target for q in r.records if q.answer == "unknown"}
    st = statuses(r)
    assert timed_out, "1 ms should time some query out"
    assert all(st[t] != PROVED for t in timed_out)
    assert UNKNOWN in st.values() and not r.ok and r.exit_status != 0
    assert all(x["status"] in (PROVED, VIOLATED, NOT_INDUCTIVE, UNKNOWN)
               for x in prove_json(r)["results"])


# ------------------------------------------------------------------ BMC
def test_bmc_no_violation_when_unablated() -> None:
    r = prove(TINY, mode="bmc", depth=5)
    assert set(statuses(r).values()) == {NO_VIOLATION} and r.ok and r.depth == 5
    assert "not a proof" in prove_text(r)


def ablation_mismatches(check: str, broken: dict[str, int], bmc: bool = True,
                        partial: bool = False) -> list[str]:
    """Issue §4 for one ablated module check, against the explorer's ablation row
    (``run_ablation(host="any", config_name="tiny")``: invariant -> shortest length,
    ``state-encoding`` included):

    * prove (induction) does not prove what the explorer breaks: the run is not ok
      (exit status 1), some hypothesis is ``violated`` or ``not-inductive``, and no
      invariant the explorer breaks is ``proved``;
    * BMC to the deepest of those lengths, over every invariant, finds exactly the
      explorer's invariants with the explorer's shortest lengths, each trace replaying on
      the model.

    ``partial``: the explorer's run was cut by a limit; breadth-first, what it found has its
    shortest length, but BMC may find more within that depth."""
    out = []
    r = prove(TINY, ablate=[check], confirm_depth=0)
    st = statuses(r)
    if r.ok or r.exit_status != 1:
        out.append(f"prove: ok={r.ok}, exit {r.exit_status}")
    if not {VIOLATED, NOT_INDUCTIVE} & set(st.values()):
        out.append(f"prove: nothing violated or not inductive: {st}")
    out += [f"prove: {inv} proved, the explorer breaks it in {n} steps"
            for inv, n in broken.items() if st.get(inv) == PROVED]
    if bmc and broken:
        b = prove(TINY, mode="bmc", depth=max(broken.values()), ablate=[check])
        got = {t.invariant: t.counterexample.length for t in b.results
               if t.status == VIOLATED and t.counterexample is not None}
        if (got != broken) if not partial else any(got.get(i) != n for i, n in broken.items()):
            out.append(f"bmc {got} != explorer {broken} "
                       f"({ {t.invariant: t.note for t in b.results if t.note} })")
        out += [f"bmc: the {t.invariant} trace does not replay" for t in b.results
                if t.counterexample is not None and not replays(b, t.counterexample)]
    return [f"{check}: {m}" for m in out]


@pytest.mark.parametrize("check", ["mng.key_config.hkid_assigned", "mng.addcx.page.pt"])
def test_ablation_caught_and_bmc_agrees_with_the_explorer(check: str) -> None:
    """The quick subset of the full cross-check (slow: every check of tiny)."""
    from tdxcheck.checker.analyses.ablation import run_ablation

    row = run_ablation(host="any", config_name="tiny", checks=[check])[0]
    assert row["broken"] and row["verdict"] != "holds", row
    assert ablation_mismatches(check, row["broken"]) == []


@pytest.mark.slow
def test_type_confusion_ablation_violates_operand_type_respected() -> None:
    """KEY.CONFIG without its TDR type check configures the key of the TD a TDCS page
    belongs to: ``operand-type-respected`` is violated in one step, by prove and BMC as by
    the explorer."""
    assert ablation_mismatches("mng.key_config.tdr.pt", {"operand-type-respected": 1}) == []


def test_bmc_finds_an_out_of_range_counter() -> None:
    """VP.FLUSH without its association check decrements num_assoc_vcpus below 0: BMC
    reports state-encoding with a replayed trace (the explorer stops at that state)."""
    r = prove(TINY, mode="bmc", depth=7, ablate=["vp.flush.associated_here"],
              invariants=["assoc-count-matches"])
    t = next(x for x in r.results if x.invariant == TYPING)
    assert t.status == VIOLATED and t.counterexample is not None
    assert replays(r, t.counterexample)
    assert "outside its declared range" in t.counterexample.message


# ------------------------------------------------------------------ slow
@pytest.mark.slow
def test_larger_config_proved() -> None:
    r = prove(LARGER)
    assert r.ok, {k: v for k, v in statuses(r).items() if v != PROVED}


@pytest.mark.slow
def test_every_breaking_ablation_is_caught_and_bmc_agrees() -> None:
    """Issue §4 on tiny: every module check whose removal lets the explorer break an
    invariant (``run_ablation(host="any", config_name="tiny")``, tiny explored
    exhaustively) is caught by prove as violated or not-inductive, no invariant the
    explorer breaks is proved, and BMC finds the explorer's invariants and shortest
    lengths (``ablation_mismatches``)."""
    from tdxcheck.checker.analyses.ablation import run_ablation
    from tdxcheck.checker.explore.bfs import Limits

    # one ablation (RECLAIM without its TD_TEARDOWN check) has a very large state space:
    # a time limit keeps it bounded, and its row is compared as partial
    rows = [r for r in run_ablation(host="any", config_name="tiny",
                                    limits=Limits(time_limit=60)) if r["broken"]]
    assert len(rows) >= 20
    mismatches = [m for r in rows for m in ablation_mismatches(
        r["check"], r["broken"], partial=bool(r["limit"]))]
    assert mismatches == []
