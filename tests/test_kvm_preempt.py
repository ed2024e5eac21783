"""The kvm host's preemption mode (issue 17): the KVM_TDX_INIT_VCPU window's outcomes, each
with a shortest run that replays on both engines; the candidate fixes; ``init_vcpu`` as a
subset of ``all``; the reference host untouched (its counts are in test_kvm.py)."""

from __future__ import annotations

from collections import deque

import pytest
from tdxcheck.checker.explore.replay import replay
from tdxcheck.checker.kvm import FIXES, KvmHost, kvm_config, kvm_tdx, run_kvm
from tdxcheck.checker.output.kvm_report import kvm_json, kvm_text
from tdxcheck.checker.scenario import parse_text

BEFORE = "migrated before or between the VMCS writes"
AFTER = "migrated after the VMCS writes"
NO_SEPT = "leaks, no S-EPT page"
IN_INIT = "VM bugged in KVM_TDX_INIT_VCPU (tdh_vp_wr_failed)"
AT_ROOT = "VM bugged at the vCPU's first root load (tdx_load_mmu_pgd)"
FLUSHVP_NOT_DONE = "tdx_mmu_release_hkid: tdh_mng_vpflushdone (TDX_FLUSHVP_NOT_DONE)"


def reached(run):  # type: ignore[no-untyped-def]
    return {(o["outcome"], o["where"], o["leak"]): o for o in run.outcomes
            if o["length"] is not None}


def reachable(prog: KvmHost) -> set[tuple[int, ...]]:
    init = prog.initial()
    seen = {init}
    q = deque([init])
    while q:
        s = q.popleft()
        for _eid, _st, n, _v in prog.successors(s):
            if n not in seen:
                seen.add(n)
                q.append(n)
    return seen


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return run_kvm("tiny", preempt="all")


def test_window_outcomes_on_tiny(tiny) -> None:  # type: ignore[no-untyped-def]
    """Every outcome class of the window the kernel can show on tiny, and no other."""
    run = tiny
    assert run.verdict == "violated"
    # KVM's own assertions fire and it leaks, with no fault injected; nothing else breaks
    assert {v["invariant"] for v in run.violations} == {"no-leak", "vm-bugged"}
    got = reached(run)
    assert set(got) == {
        (IN_INIT, BEFORE, NO_SEPT),  # the next VMCS write fails on the new CPU
        (IN_INIT, BEFORE, "nothing leaked"),  # ... and the thread comes back before teardown
        (AT_ROOT, AFTER, NO_SEPT),  # KVM_TDX_INIT_MEM_REGION's root load on the new CPU
        ("silent leak", AFTER, NO_SEPT),  # userspace closes the VM before INIT_MEM_REGION
        ("healed", BEFORE, "nothing leaked"),  # reloaded on the original CPU
        ("healed", AFTER, "nothing leaked"),
    }
    # the loud class (an error returned or logged without KVM_BUG_ON) is not reachable: every
    # VP SEAMCALL that can first run off the original CPU is a TDH.VP.WR (KVM_BUG_ON)
    assert not any(c == "loud failure" for c, _w, _l in got)
    silent = got["silent leak", AFTER, NO_SEPT]
    assert silent["errors"] == [FLUSHVP_NOT_DONE]  # no message, no WARN
    assert silent["pages"] == ["tdr", "cs0", "vpr0"] and silent["hkids"] == [1]
    assert any("INIT_VCPU window P4" in step for step in silent["trace"])
    assert any("TDX_VCPU_NOT_ASSOCIATED" in step for step in silent["trace"])
    # the bugged run before the VMCS writes: the write fails with TDX_VCPU_ASSOCIATED
    bug = got[IN_INIT, BEFORE, NO_SEPT]
    assert any("TDX_VCPU_ASSOCIATED" in step for step in bug["trace"])
    healed = got["healed", AFTER, "nothing leaked"]
    assert healed["pages"] is None  # stops where the books agree again
    assert kvm_json(run)["preempt"] == "all"
    assert "silent leak" in kvm_text(run)


def test_every_outcome_run_replays_on_both_engines(tiny) -> None:  # type: ignore[no-untyped-def]
    for (cls, _where, leak), o in sorted(reached(tiny).items()):
        sc = parse_text(kvm_tdx(tiny.prog, o["cx"]), "outcome.tdx")
        rr = replay(sc, run="both")  # the model and the executor in lockstep
        assert not rr.mismatches, [m.message for m in rr.mismatches]
        assert not rr.disagreements
        broken = {v.invariant for _, v in rr.violations}
        assert broken == ({"no-leak"} if leak != "nothing leaked" else set()), (cls, broken)
        if cls == "silent leak":
            kinds = {c.kind for c in rr.consequences}
            assert {"leaked-page", "leaked-hkid"} <= kinds


@pytest.mark.parametrize("fix", [f for f in FIXES if f != "flush_if_created"])
def test_fixes_hold_on_tiny_and_default(fix: str) -> None:
    for cfg in ("tiny", "default"):
        run = run_kvm(cfg, preempt="all", fix=fix)
        assert run.verdict == "holds", kvm_text(run, traces=False)
        assert not run.witnesses_missing and not reached(run)


def test_a_created_test_must_wait_for_the_tdcx_pages() -> None:
    """tdx_flush_vp flushing once TDH.VP.CREATE succeeded is not enough: a migration between
    VP.CREATE and the last VP.ADDCX gets TDX_TDCX_NUM_INCORRECT (tdh_vp_flush.c: map_tdvps
    fails) and TDX_BUG_ON bugs the VM; tiny has no TDCX page, so there it holds."""
    assert run_kvm("tiny", preempt="all", fix="flush_if_created").verdict == "holds"
    run = run_kvm("default", preempt="all", fix="flush_if_created")
    assert [v["invariant"] for v in run.violations] == ["vm-bugged"]
    trace = run.violations[0]["trace"]
    assert any("before vcpu0.addcx0" in s and "TDX_TDCX_NUM_INCORRECT" in s for s in trace)


def test_init_vcpu_mode_is_a_subset_of_all() -> None:
    sub, full = (KvmHost(kvm_config("tiny"), preempt=m) for m in ("init_vcpu", "all"))
    assert {e.label for e in sub.edges} < {e.label for e in full.edges}
    assert reachable(sub) < reachable(full)
    a, b = run_kvm("tiny", preempt="init_vcpu"), run_kvm("tiny", preempt="all")
    assert {v["invariant"] for v in a.violations} <= {v["invariant"] for v in b.violations}
    assert set(reached(a)) <= set(reached(b))


def test_preemption_edges_only_where_a_vcpu_is_loaded() -> None:
    prog = KvmHost(kvm_config("default"), preempt="all")
    ref = KvmHost(kvm_config("default"))
    extra = [e.label for e in prog.edges if e.label not in {x.label for x in ref.edges}]
    # vm-thread migrations (INIT_VCPU from VP.CREATE on, INIT_MEM_REGION), the VCMS writes
    # split, the root loads, and userspace closing the VM before INIT_MEM_REGION
    assert all(("kvm_sched_in" in lb) or ("tdh_vp" in lb) or ("load_mmu_pgd" in lb)
               or ("closes the VM" in lb) or ("tdx->state" in lb) for lb in extra), extra
    assert not any("kvm_sched_in" in e.label and "window" in e.label
                   for e in KvmHost(kvm_config("default"), preempt="all",
                                    fix="init_vcpu_preempt_off").edges)
    with pytest.raises(ValueError, match="unknown fix"):
        KvmHost(kvm_config("tiny"), fix="nope")
    with pytest.raises(ValueError, match="unknown preemption mode"):
        KvmHost(kvm_config("tiny"), preempt="some")


@pytest.mark.slow
def test_large_window_outcomes_and_fixes() -> None:
    """With two vCPUs the second one's window stays open across KVM_TDX_INIT_MEM_REGION
    (done on vcpu0): teardown then finds S-EPT pages with the HKID still assigned."""
    run = run_kvm("large", preempt="all")
    got = reached(run)
    sept = got["VM bugged at teardown (tdx_sept_free_private_spt)", AFTER,
               "leaks, S-EPT pages too"]
    # the S-EPT page leaks with the control pages; the guest's private pages do not:
    # kvm_gmem_release zapped them while the HKID was still assigned
    assert "sept1" in sept["pages"] and not {"m0", "m1"} & set(sept["pages"])
    assert not any(lk == "leaks, S-EPT pages too" and c == "silent leak" for c, _w, lk in got)
    for fix in ("state_under_mmu_lock", "init_vcpu_preempt_off", "flush_if_tdvps_complete"):
        r = run_kvm("large", preempt="all", fix=fix)
        assert r.verdict == "holds", kvm_text(r, traces=False)


@pytest.mark.slow
@pytest.mark.parametrize("fix", ["state_under_mmu_lock", "init_vcpu_preempt_off",
                                 "flush_if_tdvps_complete"])
def test_fixes_hold_on_default_with_faults(fix: str) -> None:
    run = run_kvm("default", faults=True, preempt="all", fix=fix)
    assert run.verdict == "holds", kvm_text(run, traces=False)
    assert not run.witnesses_missing


def test_the_findings_reproducers_are_what_the_checker_writes_and_replay() -> None:
    """reports/findings/*.tdx: the checker's shortest runs (default, --preempt) as written
    today, replaying on both engines to the leak, with the executor's consequences."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "reports" / "findings"
    files = sorted(root.glob("kvm-tdx-init-vcpu-preemption*.tdx"))
    assert len(files) == 2
    run = run_kvm("default", preempt="all")
    by_id = {f"outcome[{o['outcome']}; {o['where']}; {o['leak']}]": o for o in run.outcomes}
    for f in files:
        lines = f.read_text().splitlines()
        oid = lines[1].removeprefix("# a run showing ")
        body = kvm_tdx(run.prog, by_id[oid]["cx"]).splitlines()
        assert lines[1:] == body[1:], f.name
        rr = replay(parse_text(f.read_text(), f.name), run="both")
        assert not rr.mismatches and not rr.disagreements
        assert {v.invariant for _, v in rr.violations} == {"no-leak"}
        assert {"leaked-page", "leaked-hkid"} <= {c.kind for c in rr.consequences}
