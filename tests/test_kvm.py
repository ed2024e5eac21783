"""The kvm host: KVM's TDX protocol passes every invariant; leaks are data, not violations;
every step cites the kernel function it mirrors; traces replay."""

from __future__ import annotations

from collections import deque

import pytest
from tdxcheck.checker.explore.bfs import explore
from tdxcheck.checker.kvm import (
    ERROR_SITES,
    KVM_CONFIGS,
    LEAK_SITES,
    KvmHost,
    kvm_config,
    run_kvm,
)
from tdxcheck.checker.output.kvm_report import kvm_json, kvm_text


def reachable(prog: KvmHost) -> dict[tuple[int, ...], tuple[tuple[int, ...], int] | None]:
    init = prog.initial()
    par: dict[tuple[int, ...], tuple[tuple[int, ...], int] | None] = {init: None}
    q = deque([init])
    while q:
        s = q.popleft()
        for eid, _st, n, _v in prog.successors(s):
            if n not in par:
                par[n] = (s, eid)
                q.append(n)
    return par


def test_tiny_holds_with_every_invariant_and_reaches_teardown() -> None:
    run = run_kvm("tiny")
    assert run.verdict == "holds", kvm_text(run)
    assert run.violations == [] and run.leaks == []
    assert (run.result.states, run.result.transitions, run.result.depth) == (295, 467, 31)
    # not vacuous: the guest runs, a runnable TD's page is blocked, the TD is torn down
    assert run.witnesses == {"td-teardown": 23, "vcpu-in-guest": 13,
                             "runnable-page-blocked": 13}
    # no KVM error path is taken without a fault
    assert all(n is None for n in run.errors_reached.values())
    # the engine checks the host's obligations too (not only the module's)
    assert run.prog.engine.only == ""


def test_every_fault_free_run_ends_with_nothing_held() -> None:
    prog = KvmHost(kvm_config("tiny"))
    par = reachable(prog)
    ends = [s for s in par if prog.terminal(s)]
    assert ends
    for s in ends:
        assert prog.held_at_end(s) == ([], [])
    # every non-terminal state can move (no deadlock)
    for s in par:
        if not prog.terminal(s):
            assert any(True for _ in prog.successors(s)), prog.stuck(s)


def test_tiny_with_faults_reports_leaks_as_data() -> None:
    run = run_kvm("tiny", faults=True)
    assert run.verdict == "holds", kvm_text(run)
    assert (run.result.states, run.result.transitions, run.result.depth) == (1488, 2252, 33)
    assert "cache-wb-interrupted" in run.witnesses
    sites = {lk["site"]: lk for lk in run.leaks}
    # CACHE.WB interrupted TDX_SEAMCALL_RETRIES times: FREEID fails, the HKID stays leaked
    freeid = sites["tdx_mmu_release_hkid: tdh_mng_key_freeid"]
    assert freeid["hkids"] == [1] and "tdr" in freeid["pages"]
    assert any("retries exhausted" in step for step in freeid["trace"])
    # a guest's TD-fatal exit makes the zap fail: the folio and then the TDR leak
    block = sites["tdx_sept_zap_private_spte: tdh_mem_range_block"]
    assert any("td_fatal" in step for step in block["trace"])
    assert "m0" in block["pages"] and "tdr" in block["pages"]
    assert all(lk["site"] in LEAK_SITES for lk in run.leaks)
    # the retry-once of BLOCK/TRACK/REMOVE never fails twice: the guest-held locks are only
    # busy while a vCPU is in the guest, and wait_for_sept_zap keeps it out
    for lk in run.leaks:
        assert not any("retry" in step and "KVM_BUG_ON" in step for step in lk["trace"])


def test_leak_without_fault_is_a_violation_with_fault_is_not() -> None:
    prog = KvmHost(kvm_config("tiny"), faults=True)
    par = reachable(prog)
    leaky = next(s for s in par if prog.terminal(s) and prog.held_at_end(s) != ([], []))
    assert leaky[prog.n + prog.ENV] == 1
    assert "no-leak" not in {v.invariant for v in prog.state_violations(leaky)}
    assert any(g.startswith("leak[") for g in prog.goals(leaky))
    clean = leaky[: prog.n + prog.ENV] + (0,) + leaky[prog.n + prog.ENV + 1:]
    viol = [v for v in prog.state_violations(clean) if v.invariant == "no-leak"]
    assert viol and "HKID 1" in viol[0].message


def test_default_holds_with_and_without_faults() -> None:
    # the exact counts: the preemption mode (issue 17) leaves the reference host as it was
    for faults, counts in ((False, (3439, 6878, 40)), (True, (26427, 44718, 44))):
        run = run_kvm("default", faults=faults)
        assert run.verdict == "holds", kvm_text(run)
        assert not run.witnesses_missing
        r = run.result
        assert (r.states, r.transitions, r.depth) == counts
        assert run.outcomes == [] and not run.prog.preempt


@pytest.mark.slow
def test_large_holds() -> None:
    run = run_kvm("large")
    assert run.verdict == "holds" and not run.witnesses_missing
    assert (run.result.states, run.result.transitions, run.result.depth) == (50140, 170769, 47)


def test_every_step_cites_the_kernel_code_it_mirrors() -> None:
    prog = KvmHost(kvm_config("default"), faults=True)
    words = ("tdx_", "kvm_", "__tdx", "userspace", "the guest", "fallocate",
             "no more private-memory")
    for e in prog.edges:
        assert any(w in e.label for w in words), e.label
    # KVM_TDX_INIT_VM's order: KEY.CONFIG on the first CPU of each package
    labels = [op.label for op in prog.ops]
    assert sum("tdh_mng_key_config" in lb for lb in labels) == 2


def test_faults_kvm_serialises_are_not_injected() -> None:
    prog = KvmHost(kvm_config("tiny"), faults=True)
    faults = {e.fault for e in prog.edges if e.fault}
    assert not any(f.endswith("kot_lock") for f in faults)
    assert "phymem.cache_wb.wbt_lock" not in faults
    assert {"mng.create.rnd_entropy", "mng.key_config.ket_busy",
            "phymem.cache_wb.interrupted", "mem.range_block.sept_tree_lock"} <= faults


def test_tdx_lock_and_mmu_lock_hold() -> None:
    """No AUG while a zap holds mmu_lock for write; VP.ENTER never while wait_for_sept_zap."""
    prog = KvmHost(kvm_config("default"), faults=True)
    for s in reachable(prog):
        h = s[prog.n:]
        for eid, _st, n, _v in prog.successors(s):
            label = prog.edges[eid].label
            if "tdx_mem_page_aug" in label:
                assert h[prog.ZPC] == 0
            if "tdh_vp_enter" in label and prog.edges[eid].fault is None:
                assert not h[prog.WAIT]


def test_error_sites_are_all_declared() -> None:
    import importlib
    import inspect
    import pkgutil

    from tdxcheck.checker import kvm

    src = "".join(inspect.getsource(importlib.import_module(f"{kvm.__name__}.{m.name}"))
                  for m in pkgutil.iter_modules(kvm.__path__))  # every file of the package
    used = set()
    for line in src.splitlines():
        line = line.strip()
        if line.startswith(('mv.error("', "mv.error(site")):
            used.add(line.split('"')[1])
    assert used and used <= set(ERROR_SITES)


def test_pinning_off_frees_a_module_page_on_a_failed_zap() -> None:
    """6.19 dropped the page pin: a failed zap hands a still-owned page to the allocator."""
    from tdxcheck.checker.analyses.mutants import MUTANTS, run_mutant

    m = next(m for m in MUTANTS if m.name == "skip_track_before_remove")
    row = run_mutant(m, "tiny", pinning=False)
    found = {row["invariant"], *row["also"]}
    # the same page_free breaks both: the module still owns the page, HKID lines remain
    assert {"no-double-assignment", "flush-before-reclaim"} <= found
    assert "no-leak" not in found


def test_json_and_text() -> None:
    run = run_kvm("tiny", faults=True)
    d = kvm_json(run)
    assert d["verdict"] == "holds" and d["host"] == "kvm" and d["faults"] is True
    assert {lk["site"] for lk in d["leaks"]} >= {"tdx_mmu_release_hkid: tdh_mng_key_freeid"}
    text = kvm_text(run)
    assert "leaks on error paths" in text and "verdict: holds" in text


def test_configs_are_named() -> None:
    assert set(KVM_CONFIGS) == {"tiny", "default", "large"}
    with pytest.raises(ValueError, match="unknown kvm configuration"):
        kvm_config("huge")
    with pytest.raises(ValueError, match="unknown mutation switch"):
        KvmHost(kvm_config("tiny"), mutant="nope")


def test_explore_program_interface() -> None:
    """apply_edge gives exactly the successor of that edge (what trace rebuilding needs)."""
    prog = KvmHost(kvm_config("tiny"), faults=True)
    r = explore(prog, stop_at_first=False)
    assert r.verdict == "holds"
    s = prog.initial()
    for eid, st, n, v in prog.successors(s):
        assert prog.apply_edge(s, eid) == (eid, st, n, v)
    assert len(prog.bounds()) == len(s)
