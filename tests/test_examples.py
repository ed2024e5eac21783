"""Every example scenario replays with the result its `# expect:` comment states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tdxcheck.checker.explore.replay import replay
from tdxcheck.checker.scenario import parse_file

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.tdx"))


def _expectation(path: Path) -> str:
    m = re.search(r"^# expect: (.+)$", path.read_text(), re.MULTILINE)
    assert m, f"{path.name} has no '# expect:' comment"
    return m.group(1).strip()


def test_there_are_a_correct_lifecycle_and_eight_buggy_variants() -> None:
    kinds = [_expectation(p) for p in EXAMPLES]
    assert kinds.count("ok") >= 2
    assert sum(k.startswith("violation") for k in kinds) >= 8


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_replays_as_its_comment_says(path: Path) -> None:
    want = _expectation(path)
    r = replay(parse_file(path))
    broken = {v.invariant for _, v in r.violations}
    if want == "ok":
        assert r.ok, (broken, [m.message for m in r.mismatches])
    elif want == "mismatch":
        assert r.mismatches and not broken
    else:
        kind, inv = want.split()
        assert kind == "violation"
        assert inv in broken, broken
        assert not r.mismatches, [m.message for m in r.mismatches]
        # the violation is reported at the step that caused it, by line
        first = next(st for st, v in r.violations if v.invariant == inv)
        assert first.line > 0


def test_lifecycle_visits_every_lifecycle_state_and_ends_clean() -> None:
    r = replay(parse_file(Path(__file__).parent.parent / "examples" / "kvm-lifecycle.tdx"))
    assert r.ok
    seen = {c.new for st in r.steps for c in st.changes if c.label == "td0.lifecycle"}
    assert {"TD_KEYS_CONFIGURED", "TD_BLOCKED", "TD_TEARDOWN"} <= seen
    assert all(st.status in (None, 0) for st in r.steps)


def test_weakened_rule_is_caught_by_replay() -> None:
    """With FREEID's CACHE.WB check removed, a host that skips CACHE.WB frees an HKID whose
    lines are still dirty: keyid-after-vpflushdone catches it."""
    from tdxcheck.checker.explore.engine import Engine
    from tdxcheck.checker.explore.replay import universe_of

    sc = parse_file(Path(__file__).parent.parent / "examples" / "bug-freeid-without-cache-wb.tdx")
    r = replay(sc, Engine(universe_of(sc), ablate={"mng.key_freeid.wbinvd_done"}))
    assert not r.mismatches
    assert "keyid-after-vpflushdone" in {v.invariant for _, v in r.violations}
