"""``prove --host FILE`` (checker/prove/scenario_bmc.py): BMC to the scenario's length is a proof,
and agrees with the explorer (``check FILE``) on every verdict and shortest length."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tdxcheck.checker.explore.check import run_check
from tdxcheck.checker.explore.replay import replay
from tdxcheck.checker.output.prove_report import scenario_json, scenario_text
from tdxcheck.checker.prove import PROVED, UNKNOWN, VIOLATED
from tdxcheck.checker.prove.scenario_bmc import (
    DEADLOCK,
    EXPECTED,
    prove_scenario,
    write_scenario_traces,
)
from tdxcheck.checker.scenario import parse_file, parse_text

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SETUP = """hkid_alloc hkid=1
page_alloc page=tdr0,cs0,vpr0
tdh_mng_create td=td0 page=tdr0 hkid=1
tdh_mng_key_config td=td0 cpu=0
tdh_mng_addcx td=td0 page=cs0
tdh_mng_init td=td0
tdh_vp_create td=td0 vp=vp0 page=vpr0
tdh_vp_init vp=vp0 cpu=0
tdh_mr_finalize td=td0
"""

#: an interleaving bug: the flush can land while the vCPU runs (expected-status), and a
#: flush + VPFLUSHDONE before the entry leave td_exit waiting for ever (deadlock)
RACE = ("config packages=1 cpus_per_package=2 hkids=2 tdcs_pages=1 tdcx_pages=0 "
        "sept_levels=2\n" + SETUP + """thread run
tdh_vp_enter vp=vp0 cpu=0
td_exit vp=vp0 reason=normal
thread teardown
tdh_vp_flush vp=vp0 cpu=0 -> TDX_SUCCESS
tdh_mng_vpflushdone td=td0 -> TDX_SUCCESS
""")

#: an HKID reused by one thread before the other has released it: no-double-assignment
#: (the allocator hands out a taken KeyID) and keyid-after-vpflushdone
HKID_RACE = """config packages=1 cpus_per_package=1 hkids=2 tdcs_pages=1 tdcx_pages=0 sept_levels=2
hkid_alloc hkid=1
page_alloc page=tdr0,cs0
tdh_mng_create td=td0 page=tdr0 hkid=1 -> TDX_SUCCESS
tdh_mng_key_config td=td0 cpu=0 -> TDX_SUCCESS
tdh_mng_vpflushdone td=td0 -> TDX_SUCCESS
tdh_phymem_cache_wb cpu=0 resume=0 -> TDX_SUCCESS
thread release
tdh_mng_key_freeid td=td0 -> TDX_SUCCESS
hkid_free hkid=1
thread reuse
hkid_alloc hkid=1
page_alloc page=tdr1
tdh_mng_create td=td1 page=tdr1 hkid=1
"""

#: two threads building two TDs from their own pages and KeyIDs: every interleaving holds
HOLDS = """config packages=1 cpus_per_package=2 hkids=3 tdcs_pages=1 tdcx_pages=0 sept_levels=2
thread a
hkid_alloc hkid=1
page_alloc page=tdr0,cs0
tdh_mng_create td=td0 page=tdr0 hkid=1 -> TDX_SUCCESS
tdh_mng_key_config td=td0 cpu=0 -> TDX_SUCCESS
thread b
hkid_alloc hkid=2
page_alloc page=tdr1,cs1
tdh_mng_create td=td1 page=tdr1 hkid=2 -> TDX_SUCCESS
tdh_mng_key_config td=td1 cpu=1 -> TDX_SUCCESS
"""

#: a fault= step (CACHE.WB interrupted, then resumed) racing KEY.FREEID
FAULT = """config packages=1 cpus_per_package=2 hkids=2 tdcs_pages=1 tdcx_pages=0 sept_levels=2
hkid_alloc hkid=1
page_alloc page=tdr0
tdh_mng_create td=td0 page=tdr0 hkid=1 -> TDX_SUCCESS
tdh_mng_key_config td=td0 cpu=0 -> TDX_SUCCESS
tdh_mng_vpflushdone td=td0 -> TDX_SUCCESS
thread wb
tdh_phymem_cache_wb cpu=0 resume=0 fault=TDX_INTERRUPTED_RESUMABLE
tdh_phymem_cache_wb cpu=0 resume=1 -> TDX_SUCCESS
thread free
tdh_mng_key_freeid td=td0 -> TDX_SUCCESS
hkid_free hkid=1
"""

SCENARIOS = {"race": RACE, "hkid-race": HKID_RACE, "holds": HOLDS, "fault": FAULT}


def _compare(sc: Any, **kw: Any) -> Any:
    """The prover and the explorer agree on every verdict and shortest length; every
    violation's trace replays on the model (ScenarioHost) to a state that breaks it."""
    r = prove_scenario(sc, **kw)
    run = run_check(scenario=sc, all_violations=True, **kw)
    assert run.result.verdict in ("holds", "violated")
    ex = {c.invariant: c.length for c in run.result.violations}
    got = {t.invariant: t.counterexample.length for t in r.results if t.status == VIOLATED}
    assert got == ex
    assert all(t.status in (PROVED, VIOLATED) for t in r.results), \
        [(t.invariant, t.status, t.note) for t in r.results]
    assert r.exit_status == (1 if ex else 0)
    prog = r.program()
    for t in r.results:
        cx = t.counterexample
        if cx is None:
            continue
        assert t.counterexample.invariant == t.invariant and cx.message
        s = prog.initial()
        for (eid, status), want in zip(cx.path, cx.states[1:], strict=True):
            step = prog.apply_edge(s, eid)
            assert step is not None and step[1] == status and step[2] == want
            s = step[2]
        if t.invariant == DEADLOCK:
            assert prog.stuck(s) and not list(prog.successors(s))
        elif cx.path:
            last = prog.apply_edge(cx.states[-2], cx.path[-1][0])
            assert last is not None
            assert t.invariant in {v.invariant for v in [*last[3],
                                                         *prog.state_violations(s)]}
    return r


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("faults", [False, True])
def test_agrees_with_the_explorer_on_threads(name: str, faults: bool) -> None:
    sc = parse_text(SCENARIOS[name], f"{name}.tdx")
    assert sc.threads
    _compare(sc, faults=faults)


def test_race_verdicts() -> None:
    r = _compare(parse_text(RACE, "race.tdx"))
    st = {t.invariant: t for t in r.results}
    # the flush waits while cpu0 runs the guest; it can land before the entry, and then the
    # re-entered vCPU makes VPFLUSHDONE fail: prefix, flush, enter, exit, flushdone
    assert st[EXPECTED].status == VIOLATED and st[EXPECTED].counterexample.length == 9 + 4
    assert st[DEADLOCK].status == VIOLATED and st[DEADLOCK].counterexample.length == 12
    assert st["no-double-assignment"].status == PROVED
    assert r.depth == 13  # every run: the prefix and both threads


def test_holds_is_proved() -> None:
    r = _compare(parse_text(HOLDS, "holds.tdx"))
    assert r.ok and r.exit_status == 0
    assert {t.status for t in r.results} == {PROVED}


def test_hkid_race_is_an_interleaving_bug() -> None:
    sc = parse_text(HKID_RACE, "hkid.tdx")
    assert replay(sc).ok  # the file order is fine; another interleaving is not
    r = _compare(sc)
    st = {t.invariant: t for t in r.results}
    assert st["no-double-assignment"].status == VIOLATED
    assert st["no-double-assignment"].counterexample.length == 7


@pytest.mark.parametrize("name", ["bug-hkid-double-alloc.tdx", "bug-raw-seamcall-no-clflush.tdx",
                                  "bug-free-page-module-owns.tdx"])
def test_agrees_on_examples_without_threads(name: str) -> None:
    _compare(parse_file(EXAMPLES / name))


@pytest.mark.parametrize("check,want", [
    # TDH.VP.ENTER without its keys-configured check: the late entry runs, no deadlock
    ("vp.enter.keys_configured", {EXPECTED: 13}),
    # TDH.VP.FLUSH without the TDVPR lock: nothing changes here, the flush and the running
    # vCPU share cpu0, which makes no SEAMCALL while it runs the guest
    ("vp.flush.tdvpr.lock", {DEADLOCK: 12, EXPECTED: 13}),
])
def test_ablation_agrees(check: str, want: dict[str, int]) -> None:
    r = _compare(parse_text(RACE, "race.tdx"), ablate=(check,))
    assert {t.invariant: t.counterexample.length for t in r.results
            if t.counterexample is not None} == want


def test_traces_text_json_and_replay(tmp_path: Path) -> None:
    sc = parse_text(HKID_RACE, "hkid.tdx")
    r = prove_scenario(sc)
    text = scenario_text(r, verbose=True)
    assert "no-double-assignment" in text and "VIOLATED" in text
    js = json.loads(json.dumps(scenario_json(r, queries=True)))
    rows = {x["invariant"]: x for x in js["results"]}
    assert rows["no-double-assignment"]["status"] == VIOLATED
    assert rows["no-double-assignment"]["counterexample"]["length"] == 7
    assert set(rows[EXPECTED]) >= {"invariant", "status", "seconds"}
    files = write_scenario_traces(r, tmp_path)
    assert files
    for tdx, itf in files:
        inv = Path(tdx).stem
        rep = replay(parse_file(tdx))
        got = {v.invariant for _s, v in rep.violations}
        assert inv in got or (inv == EXPECTED and rep.mismatches)
        assert json.loads(Path(itf).read_text())["#meta"]["invariant"] == inv


def test_invariant_filter_and_unknown_ids() -> None:
    sc = parse_text(RACE, "race.tdx")
    r = prove_scenario(sc, invariants=["no-leak", EXPECTED])
    assert [t.invariant for t in r.results] == ["no-leak", EXPECTED]
    assert [t.status for t in r.results] == [PROVED, VIOLATED]
    with pytest.raises(ValueError, match="unknown invariant"):
        prove_scenario(sc, invariants=["no-such-thing"])


def test_timeout_is_never_proved() -> None:
    # a 1 ms budget: whatever the solver does not settle is unknown, and nothing that
    # needed a query it did not answer is proved
    r = prove_scenario(parse_text(HOLDS, "holds.tdx"), timeout_ms=1)
    for t in r.results:
        assert t.status in (PROVED, UNKNOWN)
        if t.status == UNKNOWN:
            assert t.note
    if any(t.status == UNKNOWN for t in r.results):
        assert r.exit_status == 3
