"""Seeded KVM bugs: every mutant is killed, by the invariant its description names, with a
trace that replays; the suggested mutations the model cannot kill are provably equivalent."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import pytest
from tdxcheck.checker.analyses.mutants import (
    EQUIVALENT,
    MUTANTS,
    equivalence_evidence,
    mutants_json,
    mutants_table,
    run_mutant,
    run_mutants,
)
from tdxcheck.checker.explore.bfs import explore
from tdxcheck.checker.explore.replay import replay
from tdxcheck.checker.kvm import FIXES, SWITCHES, KvmHost, kvm_config, kvm_tdx
from tdxcheck.checker.scenario import parse_text


def kvm_package_source() -> str:
    from tdxcheck.checker import kvm

    return "".join(inspect.getsource(importlib.import_module(f"{kvm.__name__}.{m.name}"))
                   for m in pkgutil.iter_modules(kvm.__path__))


def test_at_least_twelve_named_mutants_each_one_switch_read_once() -> None:
    assert len(MUTANTS) >= 12
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    src = kvm_package_source()  # every switch is read once in the whole package
    for name in SWITCHES:
        assert src.count(f'mut("{name}")') == 1, name
    for m in MUTANTS:
        assert m.invariant in m.description
    # the candidate fixes of the KVM_TDX_INIT_VCPU window are kept apart from the mutants
    assert not set(FIXES) & set(SWITCHES)
    for name in FIXES:
        assert src.count(f'fixed("{name}")') == 1, name


@pytest.mark.parametrize("m", MUTANTS, ids=lambda m: m.name)
def test_mutant_killed_by_its_invariant_and_trace_replays(m) -> None:  # type: ignore[no-untyped-def]
    row = run_mutant(m, "tiny")
    assert row["killed"], row
    assert row["invariant"] == m.invariant, row
    assert row["length"] and row["trace"]
    # the reference kvm host does not break it: the mutation is what kills it
    prog = KvmHost(kvm_config("tiny"), faults=m.faults, mutant=m.name)
    r = explore(prog, stop_at_first=False)
    cx = next(c for c in r.violations if c.invariant == m.invariant)
    sc = parse_text(kvm_tdx(prog, cx), f"{m.name}.tdx")
    rr = replay(sc)
    assert not rr.mismatches, [x.message for x in rr.mismatches]
    assert m.invariant in {v.invariant for _, v in rr.violations}


def test_reference_is_not_killed() -> None:
    for faults in (False, True):
        r = explore(KvmHost(kvm_config("tiny"), faults=faults), stop_at_first=False)
        assert r.verdict == "holds"


def test_equivalent_mutations_change_nothing_any_run_breaks() -> None:
    ev = equivalence_evidence("tiny")
    assert [e["name"] for e in ev] == [e[0] for e in EQUIVALENT] * 2
    for e in ev:
        assert not e["killed"], e
        if not e["preempt"]:
            assert not e["site_reached"], e  # unreachable without the preemption window
    by = {(e["name"], e["preempt"]): e for e in ev}
    # with the INIT_VCPU preemption window KVM does reach TDX_FLUSHVP_NOT_DONE; ignoring it
    # is harmless only because KEY.FREEID refuses a TD that VPFLUSHDONE did not block
    ign = by["ignore_flushvp_not_done", True]
    assert ign["site_reached"] and ign["guard"] == "mng.key_freeid.blocked"
    assert ign["killed_without_guard"]
    # control pages are reclaimed only after a successful FREEID: RECLAIM cannot fail
    assert not by["free_page_after_failed_reclaim", True]["site_reached"]


def test_free_after_failed_reclaim_is_killed_where_kvm_can_fail_to_reclaim() -> None:
    """The suggested "free a page whose RECLAIM failed" at the S-EPT page, whose free is
    reached after a failed FREEID (HKID still assigned): the allocator gets a PT_EPT page."""
    m = next(m for m in MUTANTS if m.name == "free_sept_page_after_failed_reclaim")
    row = run_mutant(m, "tiny")
    assert row["killed"] and row["invariant"] == "no-double-assignment"
    assert any("HKID still assigned" in step and "page_free(page=sept1)" in step
               for step in row["trace"])


def test_table_and_json() -> None:
    rows = run_mutants("tiny", names=["skip_wbinvd_after_remove", "skip_clear_after_reclaim"])
    text = mutants_table(rows)
    assert "2/2 mutants killed" in text and "flush-before-reclaim" in text
    d = json.loads(json.dumps(mutants_json(rows)))
    assert [set(x) for x in d["mutants"]] == [
        {"name", "description", "killed", "invariant", "length"}] * 2
    assert d["mutants"][1]["invariant"] == "clear-before-reuse"
    with pytest.raises(ValueError, match="unknown mutant"):
        run_mutants("tiny", names=["nope"])


@pytest.mark.slow
def test_all_mutants_killed_on_default() -> None:
    rows = run_mutants("default")
    assert all(r["killed"] and r["invariant"] == r["expected"] for r in rows), \
        mutants_table(rows)
