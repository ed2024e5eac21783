"""Every counterexample the explorer writes for the kvm mutants (and for KVM with a module
check removed) replays on the concrete executor in lockstep with the model: same statuses,
same effects, and the replay breaks the same invariant the explorer reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from tdxcheck.checker.analyses.mutants import MUTANTS
from tdxcheck.checker.explore.bfs import Limits, explore
from tdxcheck.checker.explore.replay import replay
from tdxcheck.checker.kvm import KvmHost, kvm_config, kvm_tdx
from tdxcheck.checker.scenario import parse_file

# KVM-level properties no module engine can observe, and the comment kvm_tdx writes for each
_KVM_REACTIONS = {"vm-bugged": "KVM_BUG_ON", "loud-failure": "error"}


def _replay_all(prog: KvmHost, tmp_path: Path, tag: str) -> list[str]:
    r = explore(prog, Limits(), stop_at_first=False)
    assert r.violations, f"{tag}: nothing to replay"
    seen = []
    for cx in r.violations:
        path = tmp_path / f"{tag}.{cx.invariant}.tdx"
        path.write_text(kvm_tdx(prog, cx))
        sc = parse_file(path)
        res = replay(sc, None if not prog.engine.ablate else _engine(sc, prog), run="both")
        assert res.disagreements == [], (path, res.disagreements[:3])
        assert res.mismatches == [], (path, res.mismatches[:3])  # every status as written
        broken = {v.invariant for _s, v in res.violations}
        if cx.invariant in _KVM_REACTIONS:
            # KVM's own assertion or error path: the scenario engines see the status that
            # made KVM react (checked above, as written); the trace says what KVM did
            assert f"#   -> {_KVM_REACTIONS[cx.invariant]} (" in path.read_text(), path
        else:
            assert cx.invariant in broken, (path, broken)
        seen.append(cx.invariant)
    return seen


def _engine(sc: object, prog: KvmHost) -> object:
    from tdxcheck.checker.explore.engine import Engine
    from tdxcheck.checker.explore.replay import universe_of

    return Engine(universe_of(sc), ablate=prog.engine.ablate)  # type: ignore[arg-type]


@pytest.mark.parametrize("m", MUTANTS, ids=lambda m: m.name)
def test_mutant_counterexamples_replay_with_agreement(m: object, tmp_path: Path) -> None:
    prog = KvmHost(kvm_config("tiny"), faults=m.faults, mutant=m.name)  # type: ignore[attr-defined]
    assert m.invariant in _replay_all(prog, tmp_path, m.name)  # type: ignore[attr-defined]


def test_ablated_kvm_counterexample_replays_with_agreement(tmp_path: Path) -> None:
    prog = KvmHost(kvm_config("tiny"), faults=True, ablate=["mng.key_freeid.wbinvd_done"])
    assert "keyid-after-vpflushdone" in _replay_all(prog, tmp_path, "ablated")
