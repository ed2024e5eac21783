"""``tdxcheck apis --interleave`` (issue 14, item 2): a combined helper's body runs step by
step, the guest / vCPU thread's moves between its steps, so races inside a helper show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tdxcheck.checker.analyses.apis import ApiHost, explore_variant, variant
from tdxcheck.checker.analyses.apis.run import (
    CAUGHT,
    IMPOSSIBLE,
    NOT_REACHED,
    VariantRun,
    concrete_run,
)
from tdxcheck.checker.analyses.apis.traces import cell_tdx
from tdxcheck.checker.cli import main
from tdxcheck.checker.explore.bfs import Limits
from tdxcheck.checker.explore.programs import make_config
from tdxcheck.checker.explore.replay import replay
from tdxcheck.checker.scenario import parse_file
from tdxcheck.model.status import status_name

TINY = make_config("tiny", {})
#: the smallest configuration where a vCPU can be on the wrong CPU: tiny with two CPUs
TWO_CPUS = make_config("tiny", {"cpus_per_package": "2"})


@pytest.fixture(scope="module")
def runs():  # type: ignore[no-untyped-def]
    """helpers on TWO_CPUS: atomic (with and without symmetry), interleaved."""
    hp = variant("helpers")
    return {"atomic": explore_variant(hp, TWO_CPUS),
            "atomic-nosym": explore_variant(hp, TWO_CPUS, symmetry=False),
            "interleaved": explore_variant(hp, TWO_CPUS, interleave=True)}


def verdicts(vr: VariantRun) -> dict[str, str]:
    return {c.cls.id: c.summary() for c in vr.cells}


# ------------------------------------------------------------------ (a) state counts
def test_interleaving_adds_states(runs) -> None:  # type: ignore[no-untyped-def]
    """Interleaved, the helpers' intermediate states are states: more than the atomic run
    (compared without symmetry on both sides: an interleaved run has none)."""
    at, at_ns, il = runs["atomic"], runs["atomic-nosym"], runs["interleaved"]
    assert at.complete and at_ns.complete and il.complete
    assert il.interleaved and not il.symmetry and not at.interleaved and at.symmetry
    assert il.host.extra == 4 and at.host.extra == 0
    assert (at.states, at_ns.states, il.states) == (40, 206, 1157)
    assert il.states > at_ns.states >= at.states
    assert il.depth > at.depth


def test_interleaving_on_tiny() -> None:
    """On tiny (one CPU) interleaving adds states and no verdict but the leak's trace
    length changes: every class impossible atomically stays impossible."""
    hp = variant("helpers")
    at = explore_variant(hp, TINY)
    at_ns = explore_variant(hp, TINY, symmetry=False)
    il = explore_variant(hp, TINY, interleave=True)
    assert (at.states, at_ns.states, il.states) == (34, 170, 785)
    assert il.states > at_ns.states
    a, b = verdicts(at), verdicts(il)
    assert a.pop("leak") == "SILENT no-leak (2)"
    assert b.pop("leak") == "SILENT no-leak (4)"  # the create's three steps come first
    assert a == b


# ------------------------------------------------------------------ (b) no helpers: no change
@pytest.mark.parametrize("name,over", [
    ("raw", {"pages": "2"}), ("linux-6.19", {"pages": "2"}),
    pytest.param("raw", {}, marks=pytest.mark.slow),
    pytest.param("linux-6.19", {}, marks=pytest.mark.slow)])
def test_variants_without_helpers_are_unaffected(name: str, over: dict[str, str]) -> None:
    """An API without a helper of more than one step: --interleave changes nothing (same
    states, transitions and verdicts; the symmetry reduction stays on)."""
    cfg = make_config("tiny", over)
    at = explore_variant(variant(name), cfg)
    il = explore_variant(variant(name), cfg, interleave=True)
    assert il.host.extra == 0 and not il.interleaved and il.symmetry
    assert (il.states, il.transitions, il.depth) == (at.states, at.transitions, at.depth)
    assert verdicts(il) == verdicts(at)


@pytest.mark.slow
def test_which_variants_have_helpers_to_split() -> None:
    u = TWO_CPUS.universe()
    split = {v: bool(ApiHost(variant(v), u, interleave=True).extra)
             for v in ("raw", "rfc", "linux-6.19", "pfn-2026", "helpers")}
    assert split == {"raw": False, "rfc": False, "linux-6.19": False, "pfn-2026": False,
                     "helpers": True}


def test_the_explorer_agrees_with_the_reference_reading(runs) -> None:  # type: ignore[no-untyped-def]
    """The interleaved run's states, found again one edge at a time through
    ``ApiHost.transitions`` (no fused code, no symmetry), stopping where an invariant
    breaks as the explorer does: the same count.  On the way: a vCPU that enters between
    the HKID release's flush and its VPFLUSHDONE makes the module refuse the VPFLUSHDONE
    (the helper stops; nothing breaks)."""
    from collections import deque

    h = runs["interleaved"].host
    s0 = h.initial()
    seen, q = {s0}, deque([s0])
    refused = set()
    while q:
        s = q.popleft()
        for eid, r in h.transitions(s):
            if any(x.viol for x in r.recs):
                continue
            if eid >= h.n_start:
                refused |= {(x.action.kind, status_name(x.status)) for x in r.recs
                            if x.status}
            if r.m not in seen and not h.state_violations(r.m):
                seen.add(r.m)
                q.append(r.m)
    assert len(seen) == runs["interleaved"].states
    assert ("TDH.MNG.VPFLUSHDONE", "TDX_FLUSHVP_NOT_DONE") in refused


# ------------------------------------------------------------------ (c) the race
def _race_shown(vr: VariantRun, path: list[int]) -> bool:
    """The path's last move is a later step of a helper, and a guest / vCPU thread move
    ran after that helper started and before that step."""
    h = vr.host
    last = path[-1]
    if last < h.n_start:
        return False
    i = h.edges[last][0]
    start = max(k for k, e in enumerate(path) if e < h.n_start and h.edges[e][0] == i)
    return any(h.thread[h.edges[e][0]] for e in path[start + 1:-1])


def test_every_impossible_stays_impossible_or_shows_a_race(runs) -> None:  # type: ignore[no-untyped-def]
    """Each class the atomic helpers API makes impossible stays impossible interleaved, or
    is reached by a trace with a guest / vCPU thread move between two steps of one helper.
    One race exists on two CPUs: the vcpu_load helper flushes the vCPU from its old CPU,
    the vCPU thread enters it on that CPU (KVM_RUN), and the helper's TDH.VP.RD on the
    new CPU is refused (TDX_VCPU_ASSOCIATED): the API needs the vCPU's lock around its
    flush and its call (KVM's vcpu->mutex)."""
    at, il = runs["atomic"], runs["interleaved"]
    changed = {}
    for ca, ci in zip(at.cells, il.cells, strict=True):
        if ca.verdict != IMPOSSIBLE:
            continue
        if ci.verdict == IMPOSSIBLE:
            continue
        assert _race_shown(il, ci.path), (ca.cls.id, ci.trace)
        changed[ca.cls.id] = ci.summary()
    assert changed == {"vcpu-wrong-cpu": "caught VCPU_ASSOCIATED (15)"}
    c = il.cell("vcpu-wrong-cpu")
    assert c.verdict == CAUGHT and c.worst.check == "vp.rd.not_associated_elsewhere"
    assert c.trace[-4:] == [
        "tdh_vp_rd(tdvpr=p2, cpu=1) [cpu1] [vcpu_load] [first step]",
        "tdh_vp_enter(tdvpr=p2, cpu=0) [vcpu_load]",
        "td_exit(vp=vp0, reason=normal)",
        "tdh_vp_rd(tdvpr=p2, cpu=1) [cpu1] [vcpu_load] [next step]"]


def test_the_host_makes_no_other_call_while_a_helper_is_in_flight(runs) -> None:  # type: ignore[no-untyped-def]
    """Along the race's trace, in each state with a helper in flight, every move that can
    happen is that helper's next step or a move of the guest / vCPU thread."""
    il = runs["interleaved"]
    h = il.host
    seen = 0
    for _eid, run in concrete_run(il, il.cell("vcpu-wrong-cpu").path):
        s = run.m
        if not h.in_flight(s):
            continue
        seen += 1
        for eid, _r in h.transitions(s):
            i = h.edges[eid][0]
            assert h.thread[i] or (eid >= h.n_start and h.bodies[s[h.N] - 1] == i), \
                h.label(eid)
    assert seen >= 6


# ------------------------------------------------------------------ (d) traces replay
@pytest.mark.parametrize("faults", [False, True])
def test_interleaved_traces_replay_on_both_engines(faults: bool, tmp_path: Path) -> None:
    """Each cell's trace of an interleaved run, helper steps split and thread moves in
    between, replays with the model and the executor agreeing; the last step is the
    mistake (its status, or the invariant it breaks)."""
    vr = explore_variant(variant("helpers"), TWO_CPUS, interleave=True, faults=faults)
    done = 0
    for c in vr.cells:
        if c.worst is None:
            continue
        p = tmp_path / f"{c.cls.id}.tdx"
        p.write_text(cell_tdx(vr, c))
        r = replay(parse_file(str(p)), run="both")
        assert not r.mismatches and not r.disagreements, (c.cls.id, r.mismatches,
                                                          r.disagreements)
        if c.worst.outcome == "silent":
            assert c.worst.invariant in {v.invariant for _s, v in r.violations}
        else:
            assert status_name(r.steps[-1].status) == c.worst.status
        done += 1
    assert done == 2
    text = (tmp_path / "vcpu-wrong-cpu.tdx").read_text()
    assert "(guest / vCPU thread): tdh_vp_enter" in text
    assert "[vcpu_load] [next step]" in text


# ------------------------------------------------------------------ (e) limits
def test_a_cut_interleaved_run_says_not_reached() -> None:
    vr = explore_variant(variant("helpers"), TWO_CPUS, interleave=True,
                         limits=Limits(max_states=50))
    assert not vr.complete and "state limit" in vr.reason
    c = vr.cell("vcpu-wrong-cpu")
    assert c.verdict == NOT_REACHED and c.note.startswith("not reached in 50 states")
    assert all(c.verdict != IMPOSSIBLE or c.note.startswith("cannot be written")
               for c in vr.cells)


# ------------------------------------------------------------------ the command
def test_cli_interleave(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["apis", "--config", "tiny", "cpus_per_package=2", "--variant", "helpers",
               "--variant", "linux-6.19", "--class", "11", "--interleave", "--json", "-q"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["interleave"] is True
    hp, lx = out["variants"]
    assert (hp["name"], hp["interleaved"], hp["symmetry"]) == ("helpers", True, False)
    assert (lx["name"], lx["interleaved"], lx["symmetry"]) == ("linux-6.19", False, True)
    assert hp["cells"][0]["summary"] == "caught VCPU_ASSOCIATED (15)"
    rc = main(["apis", "--config", "tiny", "--variant", "helpers", "--class", "13",
               "--interleave", "-q"])
    text = capsys.readouterr().out
    assert rc == 0 and "interleaved: each combined helper runs step by step" in text
    assert "split in helpers; symmetry reduction off there" in text
    rc = main(["apis", "--config", "tiny", "--variant", "helpers", "--class", "13", "-q"])
    assert "interleaved" not in capsys.readouterr().out


def test_credit_with_interleave_says_it_runs_atomically(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """``--credit`` keeps the helpers atomic; with ``--interleave`` the output says so
    (text and JSON) instead of dropping the flag silently."""
    args = ["apis", "--config", "tiny", "--variant", "helpers", "--credit", "--interleave",
            "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "feature credit: helpers run atomically here (--interleave applies" in out
    assert main([*args, "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["interleave"] is True and js["credit"]["interleave"] is False
