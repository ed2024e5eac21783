"""Coverage: the fused code's counters against a reference that steps every action through
the engine; statuses from the rule definitions; symmetry keeps "never" exact; baselines
catch a removed check; the repository's baseline for ``default`` is guarded."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from tdxcheck.checker.analyses.coverage import (
    Coverage,
    collect,
    compare,
    coverage_of,
    coverage_text,
    dumps,
    load,
    wrapper_of,
)
from tdxcheck.checker.explore.check import run_check
from tdxcheck.checker.explore.programs import AnyHost, make_config
from tdxcheck.model.compile import NOT_ENABLED
from tdxcheck.model.status import status_name

ROOT = Path(__file__).parent.parent
BASELINE = ROOT / "reports" / "coverage-default.json"
SMALL = {"tds": "2", "pages": "2"}
REMOVED = "mng.key_freeid.wbinvd_done"  # the guard KEY.FREEID must not lose


def reference_counts(config: Any) -> dict[str, Any]:
    """Every reachable state (no symmetry), every action stepped through its compiled
    rule: how often each wrapper was enabled and fired, each status and check decided."""
    prog = AnyHost(config.universe())
    init = prog.initial()
    seen = {init}
    q = deque([init])
    enabled: dict[str, int] = {}
    fired: dict[str, int] = {}
    status: dict[tuple[str, str], int] = {}
    checks: dict[tuple[str, str], int] = {}
    while q:
        s = q.popleft()
        if prog.state_violations(s):
            continue
        for a, guard in zip(prog.actions, prog.guards, strict=True):
            if guard is not None and guard(s) >= 0:
                continue
            ca = prog.engine.compiled(a)
            st, n, where = ca.fn(s, -1)
            if st == NOT_ENABLED:
                continue
            w = wrapper_of(a)
            enabled[w] = enabled.get(w, 0) + 1
            if where < 0:
                fired[w] = fired.get(w, 0) + 1
            else:
                k = (w, ca.rule.steps[where].name)
                checks[k] = checks.get(k, 0) + 1
            k2 = (w, status_name(st))
            status[k2] = status.get(k2, 0) + 1
            if n not in seen:
                seen.add(n)
                q.append(n)
    return {"enabled": enabled, "fired": fired, "status": status, "checks": checks,
            "states": len(seen)}


def flat(cov: Coverage) -> dict[str, Any]:
    return {
        "enabled": {w.wrapper: w.enabled for w in cov.wrappers if w.enabled},
        "fired": {w.wrapper: w.fired for w in cov.wrappers if w.fired},
        "status": {(w.wrapper, c.status): c.count for w in cov.wrappers for c in w.statuses
                   if c.count},
        "checks": {(w.wrapper, k): n for w in cov.wrappers for k, n in w.checks.items() if n},
        "states": cov.states,
    }


@pytest.fixture(scope="module")
def tiny_cov() -> tuple[Coverage, Any]:
    return collect(make_config("tiny", {}))


def test_counters_match_engine_reference() -> None:
    config = make_config("tiny", SMALL)
    cov, walk = collect(config, symmetry=False)
    assert flat(cov) == reference_counts(config)
    check = run_check(config=config, symmetry=False, all_violations=True)
    assert (cov.states, cov.transitions) == (check.result.states, check.result.transitions)
    assert sum(w.enabled for w in cov.wrappers) == cov.transitions == walk.transitions
    # the same breadth-first order as the explorer: the same first edge into every state
    news = {w.wrapper: w.new_states for w in cov.wrappers}
    assert sum(news.values()) == cov.states - 1
    want: dict[str, int] = {}
    for eid, n in enumerate(check.result.new_states_by_edge):
        name = wrapper_of(check.prog.action_of(eid))
        want[name] = want.get(name, 0) + n
    assert news == want


def test_walk_matches_check_with_symmetry_and_ablation() -> None:
    config = make_config("tiny", {})
    cov, _ = collect(config, ablate=[REMOVED])
    check = run_check(config=config, ablate=[REMOVED], all_violations=True)
    assert (cov.states, cov.transitions, cov.verdict) == (
        check.result.states, check.result.transitions, "violated")
    assert {w: v for w, v in cov.witnesses.items() if v is not None} == {
        w: cx is not None for w, cx in check.result.witnesses.items()}


def test_statuses_come_from_the_rules(tiny_cov: tuple[Coverage, Any]) -> None:
    cov, walk = tiny_cov
    prog = walk.prog
    for w in cov.wrappers:
        rules = [e[0].rule for e in prog._table if wrapper_of(e[0].action) == w.wrapper]
        want = {status_name(r.success) for r in rules} | {
            status_name(s.status) for r in rules for s in r.steps}
        assert {c.status for c in w.statuses} == want, w.wrapper
        assert w.statuses[0].status == "TDX_SUCCESS"
    # one TD in tiny: no other TD can hold the HKID, so this status is listed, never reached
    create = next(w for w in cov.wrappers if w.wrapper == "tdh_mng_create")
    cell = create.cell("TDX_HKID_NOT_FREE")
    assert cell is not None and cell.count == 0 and cell.hole
    assert cell.checks == ["mng.create.hkid_free"]
    # fault points are listed, explained, and not holes without --faults
    faults = [c for w in cov.wrappers for c in w.statuses if "fault" in c.sources]
    assert faults and all(not c.hole for c in faults if c.count == 0)
    assert set(cov.witnesses) >= {"td-teardown", "vcpu-in-guest"}
    assert cov.witnesses["td-teardown"] is True and cov.witnesses["hkid-reused"] is None


def test_symmetry_keeps_never_exact() -> None:
    config = make_config("tiny", SMALL)
    plain, _ = collect(config, symmetry=False)
    sym, _ = collect(config)
    assert sym.states < plain.states
    assert set(flat(sym)["status"]) == set(flat(plain)["status"])
    assert set(flat(sym)["checks"]) == set(flat(plain)["checks"])


def test_with_faults_fault_statuses_are_reached() -> None:
    cov, _ = collect(make_config("tiny", SMALL), faults=True)
    key_config = next(w for w in cov.wrappers if w.wrapper == "tdh_mng_key_config")
    cell = key_config.cell("TDX_KEY_GENERATION_FAILED")
    assert cell is not None and cell.count > 0 and "fault" in cell.sources


def test_removed_guard_is_a_coverage_regression(tiny_cov: tuple[Coverage, Any]) -> None:
    base = json.loads(dumps(tiny_cov[0]))
    assert compare(base, tiny_cov[0]).ok
    ablated, _ = collect(make_config("tiny", {}), ablate=[REMOVED])
    cmp = compare(base, ablated)
    assert not cmp.ok
    assert any(r.startswith(f"tdh_mng_key_freeid: check {REMOVED}: no longer reached")
               for r in cmp.regressions), cmp.regressions
    assert any(r.startswith("tdh_mng_key_freeid -> TDX_WBCACHE_NOT_COMPLETE: no longer")
               for r in cmp.regressions), cmp.regressions
    assert any("ablate" in n for n in cmp.notes)


def test_text_table_marks_never(tiny_cov: tuple[Coverage, Any]) -> None:
    text = coverage_text(tiny_cov[0])
    assert "canonical state" in text.splitlines()[1]
    line = next(ln for ln in text.splitlines() if "TDX_HKID_NOT_FREE" in ln)
    assert "NEVER" in line and "mng.create.hkid_free" in line
    assert "never (fault point: needs --faults)" in text
    assert "witnesses reached: 2/2" in text


def test_file_is_deterministic(tiny_cov: tuple[Coverage, Any]) -> None:
    again, _ = collect(make_config("tiny", {}))
    assert dumps(again) == dumps(tiny_cov[0])
    assert "seconds" not in dumps(again)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tdxcheck.checker", "coverage", "-q", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_save_baseline_and_regression(tmp_path: Path) -> None:
    f = tmp_path / "cov.json"
    p = run("--config", "tiny", "--save", str(f))
    assert p.returncode == 0, p.stderr
    assert "tdh_mng_create" in p.stdout and "NEVER" in p.stdout
    p = run("--config", "tiny", "--baseline", str(f))
    assert p.returncode == 0, p.stderr
    assert "everything it covered is still reached" in p.stdout
    p = run("--config", "tiny", "--baseline", str(f), "--ablate", REMOVED)
    assert p.returncode == 1
    assert f"check {REMOVED}: no longer reached" in p.stdout
    p = run("--config", "tiny", "--baseline", str(f), "--ablate", REMOVED, "--json")
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert out["baseline"]["regressions"] and out["wrappers"]["tdh_mng_create"]["enabled"] > 0


@pytest.mark.parametrize("content,needle", [
    (None, "cannot read"),
    ("{", "not JSON"),
    ('{"tool": "x"}', "not a tdxcheck coverage file"),
])
def test_cli_bad_baseline_exit_2(tmp_path: Path, content: str | None, needle: str) -> None:
    f = tmp_path / "b.json"
    if content is not None:
        f.write_text(content)
    p = run("--config", "tiny", "--baseline", str(f))
    assert p.returncode == 2
    assert needle in p.stderr and str(f) in p.stderr and "Traceback" not in p.stderr


def test_cli_bad_argument_exit_2() -> None:
    p = run("--config", "tiny", "somefile.tdx")
    assert p.returncode == 2 and "expected key=value" in p.stderr


# ------------------------------------------------------------------ the repository's baseline
def test_repository_baseline_matches_the_rules() -> None:
    """The saved baseline for ``default`` lists exactly the wrappers, statuses and checks
    the rules have now: change a rule and this says to regenerate it with
    ``tdxcheck coverage --config default --save reports/coverage-default.json``."""
    base = load(BASELINE)
    assert (base["config"]["name"], base["symmetry"], base["faults"], base["ablate"]) == (
        "default", True, False, [])
    assert base["verdict"] == "holds"
    config = make_config("default", {})
    prog = AnyHost(config.universe(), coverage=True)
    empty = coverage_of(prog, [], config="default", description="", symmetry=True,
                        faults=False, ablate=[], verdict="", states=0, transitions=0,
                        witnesses={}).to_json()
    assert set(base["wrappers"]) == set(empty["wrappers"])
    for w, row in empty["wrappers"].items():
        assert set(base["wrappers"][w]["statuses"]) == set(row["statuses"]), w
        assert set(base["wrappers"][w]["checks"]) == set(row["checks"]), w
        assert base["wrappers"][w]["actions"] == row["actions"], w
    assert all(v is not False for v in base["witnesses"].values())
    assert compare(base, base).ok


@pytest.mark.slow
def test_repository_baseline_is_current() -> None:
    """Exploring ``default`` again gives the saved file, byte for byte (about 2 minutes)."""
    config = make_config("default", {})
    cov, _ = collect(config)
    assert compare(load(BASELINE), cov).ok
    assert dumps(cov, config) == BASELINE.read_text()  # as ``coverage --save`` writes it


def test_named_configurations_cover_what_they_say() -> None:
    """tiny never maps a guest page (README, CONFIG_COVERS); default does (its coverage is
    the one the repository keeps in reports/, regenerated with the report)."""
    import json

    from tdxcheck.checker.analyses.coverage import collect
    from tdxcheck.checker.explore.programs import CONFIG_COVERS, CONFIGS

    assert set(CONFIG_COVERS) == set(CONFIGS)
    cov, _w = collect(make_config("tiny", {}))
    ok = {w.wrapper: {c.status: c.count for c in w.statuses} for w in cov.wrappers}
    for wrapper in ("tdh_mem_page_add", "tdh_mem_page_aug", "tdh_mem_page_remove"):
        assert ok[wrapper]["TDX_SUCCESS"] == 0, wrapper
    assert ok["tdh_mem_sept_add"]["TDX_SUCCESS"] > 0
    assert "never a guest page" in CONFIG_COVERS["tiny"]
    saved = json.loads((Path(__file__).resolve().parent.parent / "reports"
                        / "coverage-default.json").read_text())
    for wrapper in ("tdh_mem_page_add", "tdh_mem_page_aug", "tdh_mem_page_remove"):
        assert saved["wrappers"][wrapper]["statuses"]["TDX_SUCCESS"]["count"] > 0, wrapper
    assert saved["wrappers"]["guest_accept"]["statuses"]["TDX_SUCCESS"]["count"] == 0
    assert "ACCEPT needs a fifth page and never does" in CONFIG_COVERS["default"]
