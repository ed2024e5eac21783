"""The explorer against a naive reference BFS, symmetry against brute force, traces that
replay, loud limits, scenario interleavings and deadlocks."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest
from tdxcheck.checker.explore.bfs import Limits, explore
from tdxcheck.checker.explore.check import run_check
from tdxcheck.checker.explore.engine import Engine
from tdxcheck.checker.explore.programs import AnyHost, make_config
from tdxcheck.checker.explore.replay import replay, universe_of
from tdxcheck.checker.explore.symmetry import Symmetry
from tdxcheck.checker.scenario import parse_file, parse_text

ROOT = Path(__file__).parent.parent


def reference_successors(prog, s):  # type: ignore[no-untyped-def]
    """Every action of the any host, one engine step each: no gates, no fused code."""
    for a, guard in zip(prog.actions, prog.guards, strict=True):
        if guard is not None and guard(s) >= 0:
            continue
        r = prog.engine.step(s, a)
        if r.status == -1:
            continue
        yield r.status, r.state, list(r.step_violations)


def naive_bfs(prog, stop_inv=None):  # type: ignore[no-untyped-def]
    """Reference: tuples in a set, every successor (self-loops too), no tricks."""
    init = prog.initial()
    dist = {init: 0}
    q = deque([init])
    transitions = 0
    first = None
    while q:
        s = q.popleft()
        for _st, n, viol in reference_successors(prog, s):
            transitions += 1
            if stop_inv and first is None:
                if stop_inv in {v.invariant for v in viol} or stop_inv in {
                        v.invariant for v in prog.state_violations(n)}:
                    first = dist[s] + 1
            if n not in dist:
                dist[n] = dist[s] + 1
                q.append(n)
    return len(dist), transitions, max(dist.values()), first


def tiny(**kw: str) -> AnyHost:
    return AnyHost(make_config("tiny", kw).universe())


ONE_LP = """config packages=1 cpus_per_package=2 hkids=2 tdcs_pages=1 tdcx_pages=0 max_vcpus=2
hkid_alloc hkid=1
page_alloc page=tdr0,cs0,vpr0,vpr1
tdh_mng_create td=td0 page=tdr0 hkid=1
tdh_mng_key_config td=td0 cpu=0
tdh_mng_addcx td=td0 page=cs0
tdh_mng_init td=td0
tdh_vp_create td=td0 vp=vp0 page=vpr0
tdh_vp_create td=td0 vp=vp1 page=vpr1
tdh_vp_init vp=vp0 cpu=0
tdh_vp_init vp=vp1 cpu={cpu1}
tdh_mr_finalize td=td0
thread a
tdh_vp_enter vp=vp0 cpu=0 -> TDX_SUCCESS
td_exit vp=vp0 reason=normal
thread b
tdh_vp_enter vp=vp1 cpu={cpu1} -> TDX_SUCCESS
td_exit vp=vp1 reason=normal
thread host
tdh_mng_rd td=td0 cpu=0 -> TDX_SUCCESS
"""


@pytest.mark.parametrize("cpu1", [0, 1])
def test_an_lp_runs_one_vcpu_and_makes_no_seamcall_while_it_does(cpu1: int) -> None:
    """Every interleaving: at most one vCPU in the guest per LP, and no SEAMCALL on an LP
    that runs a guest (the host's MNG.RD on cpu0 waits for the exit); with vp1 on cpu1 both
    vCPUs do run at once.  Every run completes (no deadlock) and every status is as expected."""
    sc = parse_text(ONE_LP.format(cpu1=cpu1), "one-lp.tdx")
    run = run_check(scenario=sc, all_violations=True)
    assert run.result.verdict == "holds"
    prog = run.prog
    lay = prog.engine.layout
    init = prog.initial()
    seen, q, both = {init}, deque([init]), False
    while q:
        st = q.popleft()
        lps = [st[lay.flat("assoc", (v,))] for v in range(len(prog.engine.u.vps))
               if st[lay.flat("in_guest", (v,))]]
        assert len(lps) == len(set(lps)), "two vCPUs on one LP"
        both |= len(lps) == 2
        for _eid, _status, n, _viol in prog.successors(st):
            if n not in seen:
                seen.add(n)
                q.append(n)
    assert both == (cpu1 == 1)


@pytest.mark.parametrize("fingerprint", [False, True])
def test_exact_counts_match_naive_bfs(fingerprint: bool) -> None:
    prog = tiny()
    states, transitions, depth, _ = naive_bfs(prog)
    r = explore(prog, fingerprint=fingerprint)
    assert r.verdict == "holds"
    assert (r.states, r.transitions, r.depth) == (states, transitions, depth)
    if fingerprint:
        assert r.fingerprint_collision_probability is not None
        assert r.fingerprint_collision_probability < 1e-6


def test_pinned_counts_tiny() -> None:
    r = explore(tiny())
    assert (r.states, r.transitions, r.depth) == (16779, 1996152, 29)
    r2 = explore(tiny(), canon=Symmetry(tiny().engine.layout).canonical)
    assert (r2.states, r2.depth) == (2886, 29)


# one in the default run; the others (20-40 s each on this machine) with the slow tests
@pytest.mark.parametrize("check,inv", [
    pytest.param("mng.key_freeid.wbinvd_done", "keyid-after-vpflushdone",
                 marks=pytest.mark.slow),
    ("mng.vpflushdone.no_assoc_vcpus", "keyid-after-vpflushdone"),
    pytest.param("mng.key_freeid.blocked", "keyid-after-vpflushdone", marks=pytest.mark.slow),
    pytest.param("phymem.page_reclaim.no_children", "pamt-owner-live",
                 marks=pytest.mark.slow),
])
def test_ablation_found_shortest_with_and_without_symmetry(check: str, inv: str) -> None:
    prog = AnyHost(make_config("tiny", {}).universe(), ablate=[check])
    _, _, _, shortest = naive_bfs(prog, stop_inv=inv)
    plain = explore(prog, stop_at_first=False)
    sym = explore(prog, stop_at_first=False, canon=Symmetry(prog.engine.layout).canonical)
    assert plain.verdict == sym.verdict == "violated"
    lengths = {c.invariant: c.length for c in plain.violations}
    assert lengths == {c.invariant: c.length for c in sym.violations}
    assert lengths[inv] == shortest
    # the concrete trace really is a run that ends in the violation
    cx = next(c for c in sym.violations if c.invariant == inv)
    s = prog.initial()
    for (eid, status), nxt in zip(cx.path, cx.states[1:], strict=True):
        r = prog.apply_edge(s, eid)
        assert r is not None and r[1] == status and r[2] == nxt
        s = nxt


def test_symmetry_matches_brute_force_on_random_states() -> None:
    for name, ov in (("tiny", {}), ("default", {}), ("large", {"pages": "4"})):
        prog = AnyHost(make_config(name, ov).universe())
        sym = Symmetry(prog.engine.layout)
        rnd = random.Random(7)
        s = prog.initial()
        checked = 0
        for i in range(1500):
            succ = [x[2] for x in prog.successors(s) if x[2] is not s]
            if not succ or rnd.random() < 0.03:
                s = prog.initial()
                continue
            s = rnd.choice(succ)
            if i % 15 == 0:
                assert sym.canonical(s) == sym.brute_canonical(s), (name, i)
                checked += 1
        assert checked > 50


def test_symmetry_factor_is_real() -> None:
    prog = tiny()
    plain = explore(prog)
    sym = explore(prog, canon=Symmetry(prog.engine.layout).canonical)
    assert plain.states / sym.states > 4


def test_trace_out_replays_to_the_same_violation(tmp_path: Path) -> None:
    abl = "mng.vpflushdone.no_assoc_vcpus"
    run = run_check(config=make_config("tiny", {}), ablate=[abl], trace_out=tmp_path,
                    all_violations=True)
    assert run.result.verdict == "violated" and run.files
    for (tdx, itf_path), cx in zip(run.files, run.result.violations, strict=True):
        sc = parse_file(tdx)
        rr = replay(sc, Engine(universe_of(sc), ablate=[abl]))
        assert not rr.mismatches, [m.message for m in rr.mismatches]
        assert cx.invariant in {v.invariant for _, v in rr.violations}
        data = json.loads(Path(itf_path).read_text())
        assert len(data["states"]) == cx.length + 1
        assert data["states"][-1]["action"].startswith("tdh_")


def test_limits_make_it_incomplete() -> None:
    prog = tiny()
    for lim in (Limits(max_states=100), Limits(max_depth=5), Limits(time_limit=0.0)):
        r = explore(prog, lim)
        assert r.verdict == "incomplete" and r.reason


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tdxcheck.checker", "check", "-q", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_exit_codes_and_json() -> None:
    p = cli("--config", "tiny", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["verdict"] == "holds" and out["states"] == 2886
    assert {w["id"] for w in out["witnesses"]} == {"td-teardown", "vcpu-in-guest"}
    assert all(w["reached"] for w in out["witnesses"])
    p = cli("--config", "tiny", "--max-states", "50")
    assert p.returncode == 3 and "incomplete" in p.stdout
    p = cli("--config", "tiny", "--ablate", "mng.key_freeid.wbinvd_done", "--json")
    assert p.returncode == 1
    v = json.loads(p.stdout)["violations"][0]
    assert v["invariant"] == "keyid-after-vpflushdone" and v["length"] == 5
    assert v["trace"][-1]["call"].startswith("tdh_mng_key_freeid")
    assert v["trace"][-1]["step"] == 5 and v["trace"][-1]["status_code"].startswith("0x")


@pytest.mark.parametrize("args,needle", [
    (["--config", "huge"], "unknown configuration"),
    (["--config", "tiny", "pagez=3"], "did you mean pages"),
    (["--config", "tiny", "pages=x"], "pages: bad integer"),
    (["a.tdx", "b.tdx"], "one scenario file"),
])
def test_cli_bad_options(args: list[str], needle: str) -> None:
    p = cli(*args)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr


RACE = """config packages=1 cpus_per_package=2 hkids=2 tdcs_pages=1 tdcx_pages=0 sept_levels=2
hkid_alloc hkid=1
page_alloc page=tdr0,cs0,vpr0
tdh_mng_create td=td0 page=tdr0 hkid=1
tdh_mng_key_config td=td0 cpu=0
tdh_mng_addcx td=td0 page=cs0
tdh_mng_init td=td0
tdh_vp_create td=td0 vp=vp0 page=vpr0
tdh_vp_init vp=vp0 cpu=0
tdh_mr_finalize td=td0
thread run
tdh_vp_enter vp=vp0 cpu=0
td_exit vp=vp0 reason=normal
thread teardown
tdh_vp_flush vp=vp0 cpu=0 -> TDX_SUCCESS
tdh_mng_vpflushdone td=td0 -> TDX_SUCCESS
"""


def test_scenario_interleavings_find_the_race() -> None:
    sc = parse_text(RACE, "race.tdx")
    run = run_check(scenario=sc, all_violations=True)
    got = {c.invariant: c for c in run.result.violations}
    # the flush cannot land while the vCPU runs: both are on cpu0, and an LP in the guest
    # makes no SEAMCALL; but it can land before the entry, and VPFLUSHDONE then finds the
    # re-entered vCPU associated again (TDX_FLUSHVP_NOT_DONE)
    assert "expected-status" in got
    assert got["expected-status"].length == 9 + 4  # the prefix, flush, enter, exit, flushdone
    assert "tdh_mng_vpflushdone" in got["expected-status"].message
    # and a flush + VPFLUSHDONE before the entry leave td_exit waiting for ever
    assert "deadlock" in got
    # the replay order (threads one after another) is one of the interleavings and is fine
    assert replay(sc).ok


def test_scenario_deadlock_is_reported() -> None:
    text = RACE.replace("thread run\ntdh_vp_enter vp=vp0 cpu=0\ntd_exit vp=vp0 reason=normal",
                        "thread run\ntd_exit vp=vp0 reason=normal")
    run = run_check(scenario=parse_text(text, "dead.tdx"))
    assert run.result.verdict == "violated"
    assert run.result.violations[0].invariant == "deadlock"


def test_output_is_deterministic_across_hash_seeds() -> None:
    import os

    outs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        p = subprocess.run([sys.executable, "-m", "tdxcheck.checker", "check", "-q", "--json",
                            "--config", "tiny", "--all", "--ablate",
                            "mng.vpflushdone.no_assoc_vcpus"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 1, p.stderr
        out = json.loads(p.stdout)
        out.pop("seconds")
        outs.append(out)
    assert outs[0] == outs[1]
    assert outs[0]["violations"]


def _bfs_sample(prog, pack, limit):  # type: ignore[no-untyped-def]
    """Up to ``limit`` reachable states whose encoding is in range, breadth-first."""
    init = prog.initial()
    seen, q, out = {init}, deque([init]), []
    while q and len(out) < limit:
        s = q.popleft()
        out.append(s)
        for _e, _st, n, _v in prog.successors(s):
            if n not in seen:
                try:
                    pack(n)
                except OverflowError:
                    continue
                seen.add(n)
                q.append(n)
    return out


@pytest.mark.parametrize("name,kw", [
    ("tiny", {}), ("tiny", {"faults": True}), ("default", {}),
    ("tiny", {"ablate": ["vp.addcx.page.pt"]}),  # drives a counter out of its range
    ("tiny", {"ablate": ["mng.key_freeid.wbinvd_done"]}),  # breaks a step invariant
])
def test_keyed_successors_match_successors(name: str, kw: dict) -> None:  # type: ignore[type-arg]
    """The explorer's fast path (fused code that also computes each successor's encoding
    and leaves out the ones already seen) gives the transitions ``successors`` gives, with
    the encoding ``Packing.pack`` gives (None where a cell left its range)."""
    from tdxcheck.checker.explore.bfs import Packing

    prog = AnyHost(make_config(name, {}).universe(), **kw)
    pk = Packing(prog.bounds(), prog.counter_cells())
    keyed = prog.keyed_successors(pk.key)
    encodings = 0
    for s in _bfs_sample(prog, pk.pack, 1200):
        key = pk.pack(s)
        assert pk.unpack(key) == s
        loops0 = prog.self_loops
        plain = list(prog.successors(s))
        loops = prog.self_loops - loops0
        full, total = keyed(s, key, ())
        assert total == len(plain) + loops
        assert [p[:2] for p in plain] == [f[:2] for f in full]
        for (_e, _st, n, viol), (_e2, _st2, k, n2, viol2, before) in zip(plain, full):
            assert tuple(n2) == n and list(viol2) == list(viol)
            try:
                want = pk.pack(n)
            except OverflowError:
                want = None
                encodings += 1
            assert k == want
        # with the successors in ``seen`` left out: only new ones and step violations
        seen = {f[2] for f in full[::2]} | {key}
        kept, total2 = keyed(s, key, seen)
        assert total2 == total
        assert [f[0] for f in kept] == [f[0] for f in full if f[4] or f[2] not in seen]
        assert [f[5] for f in kept] == sorted(f[5] for f in kept)
    if kw.get("ablate") == ["vp.addcx.page.pt"]:
        assert encodings > 0


def test_fast_path_and_plain_path_agree() -> None:
    """explore with the fused keyed successors and through ``successors`` (a program
    without ``keyed_successors``): the same counts, traces and per-edge discoveries, also
    when a violation or a state limit stops the run half-way through a state."""

    class Plain:
        def __init__(self, prog: AnyHost) -> None:
            self._p = prog

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            if name == "keyed_successors":
                raise AttributeError(name)
            return getattr(self._p, name)

    for ablate, limits, first in (([], Limits(max_states=5000), True),
                                  (["mng.key_freeid.wbinvd_done"], Limits(), True),
                                  (["mng.key_freeid.wbinvd_done"], Limits(), False)):
        fast = explore(AnyHost(make_config("tiny", {}).universe(), ablate=ablate), limits,
                       stop_at_first=first)
        plain = explore(Plain(AnyHost(make_config("tiny", {}).universe(), ablate=ablate)),
                        limits, stop_at_first=first)
        assert (fast.verdict, fast.states, fast.transitions, fast.depth) == (
            plain.verdict, plain.states, plain.transitions, plain.depth)
        assert fast.new_states_by_edge == plain.new_states_by_edge
        assert [(c.invariant, c.path) for c in fast.violations] == [
            (c.invariant, c.path) for c in plain.violations]


# ---------------------------------------------------------------- issue 16: the canonicaliser
def _walk(prog, steps, seed):  # type: ignore[no-untyped-def]
    """Reachable states of a seeded random walk (restarts now and then)."""
    rnd = random.Random(seed)
    s = prog.initial()
    out = []
    for _ in range(steps):
        succ = [x[2] for x in prog.successors(s) if x[2] is not s]
        if not succ or rnd.random() < 0.02:
            s = prog.initial()
            continue
        s = rnd.choice(succ)
        out.append(s)
    return out


SYM_CONFIGS = [("tiny", {}), ("default", {}), ("large", {}), ("default", {"tds": "3"}),
               ("default", {"hkids": "3"}), ("default", {"vps": "2"}),
               ("default", {"pages": "5"}), ("default", {"vps": "0"})]


@pytest.mark.parametrize("name,ov", SYM_CONFIGS)
def test_canonical_equals_the_previous_canonicaliser(
        name: str, ov: dict) -> None:  # type: ignore[type-arg]
    """The sorting canonicaliser gives exactly the state the enumerating one gave (the
    least of the orbit), and its packed-encoding form gives that state's encoding; on a
    random orbit member too (a renaming of the state: same canonical state)."""
    from tdxcheck.checker.explore.bfs import Packing

    prog = AnyHost(make_config(name, ov).universe())
    sym = Symmetry(prog.engine.layout)
    pk = Packing(prog.bounds(), prog.counter_cells())
    key, _mask = sym.canonical_key(pk.key)
    rnd = random.Random(11)
    states = _walk(prog, 900, 3)
    assert len(states) > 600
    for s in states:
        c = sym.canonical(s)
        assert c == sym.reference_canonical(s)
        assert key(s)[0] == pk.pack(c)
        tp = rnd.sample(range(sym.n_tds), sym.n_tds)
        vp = rnd.sample(range(sym.n_vps), sym.n_vps)
        hk = [0, *rnd.sample(range(1, sym.hkids), sym.hkids - 1)]
        pp = [0, *rnd.sample(range(1, sym.n_pages), sym.n_pages - 1)]
        assert sym.canonical(tuple(sym.apply(s, tp, vp, hk, pp))) == c


@pytest.mark.slow
def test_symmetry_matches_brute_force_on_large() -> None:
    """Every one of large's 5,760 renamings, on random states of large."""
    prog = AnyHost(make_config("large", {}).universe())
    sym = Symmetry(prog.engine.layout)
    assert sym.group_order == 5760
    states = _walk(prog, 1200, 5)[::40]
    assert len(states) >= 25
    for s in states:
        assert sym.canonical(s) == sym.brute_canonical(s)


@pytest.mark.parametrize("name", ["default", "large"])
def test_settled_successors_are_canonical(name: str) -> None:
    """The explorer's shortcut: a successor of a settled canonical state that differs
    from it only outside the renaming mask is canonical (and settled)."""
    from tdxcheck.checker.explore.bfs import Packing

    prog = AnyHost(make_config(name, {}).universe())
    sym = Symmetry(prog.engine.layout)
    pk = Packing(prog.bounds(), prog.counter_cells())
    key, mask = sym.canonical_key(pk.key)
    used = 0
    for s in _walk(prog, 700, 9):
        c = sym.canonical(s)
        kc, settled = key(c)
        assert key(s)[1] == settled  # settled is a property of the orbit
        if not settled:
            continue
        for _e, _st, n, _v in prog.successors(c):
            kn = pk.pack(n)
            if not (kn ^ kc) & mask:
                used += 1
                assert sym.canonical(n) == n and key(n) == (kn, True)
    assert used > 20


def _summary(r):  # type: ignore[no-untyped-def]
    return (r.verdict, r.reason, r.states, r.transitions, r.depth, r.new_states_by_edge,
            [(c.invariant, c.message, c.path, c.states) for c in r.violations],
            {w: (c.path if c else None) for w, c in r.witnesses.items()},
            r.fingerprint_collision_probability)


@pytest.mark.parametrize("faults,ablate,limits", [
    (False, [], Limits()),
    (True, [], Limits(max_states=8000)),
    (False, ["mng.key_freeid.wbinvd_done"], Limits()),
])
def test_explorer_with_new_and_previous_canonicaliser_agree(
        faults: bool, ablate: list[str], limits: Limits) -> None:
    """The same exploration (counts, traces, per-edge discoveries) with the previous
    canonicaliser as a plain function (no shortcuts) and with the new one."""
    runs = []
    for new in (True, False):
        prog = AnyHost(make_config("tiny", {}).universe(), faults=faults, ablate=ablate)
        sym = Symmetry(prog.engine.layout)
        canon = sym.canonical if new else (lambda s, sym=sym: sym.reference_canonical(s))
        runs.append(_summary(explore(prog, limits, stop_at_first=False, canon=canon)))
    assert runs[0] == runs[1]


def test_explorer_with_new_and_previous_canonicaliser_agree_on_default_part() -> None:
    runs = []
    for new in (True, False):
        prog = AnyHost(make_config("default", {}).universe())
        sym = Symmetry(prog.engine.layout)
        canon = sym.canonical if new else (lambda s, sym=sym: sym.reference_canonical(s))
        runs.append(_summary(explore(prog, Limits(max_states=6000), canon=canon)))
    assert runs[0] == runs[1]
    assert runs[0][0] == "incomplete"


@pytest.mark.slow
def test_default_with_new_and_previous_canonicaliser_agree() -> None:
    """The whole of default (the previous canonicaliser takes minutes)."""
    runs = []
    for new in (True, False):
        prog = AnyHost(make_config("default", {}).universe())
        sym = Symmetry(prog.engine.layout)
        canon = sym.canonical if new else (lambda s, sym=sym: sym.reference_canonical(s))
        runs.append(_summary(explore(prog, canon=canon)))
    assert runs[0] == runs[1]
    assert runs[0][0] == "holds"


# ---------------------------------------------------------------- issue 16: workers
PAR_CASES = [
    {}, {"sym": True}, {"fp": True, "limits": Limits(max_states=6000)},
    {"sym": True, "fp": True},
    {"ablate": ["mng.key_freeid.wbinvd_done"]},
    {"ablate": ["mng.key_freeid.wbinvd_done"], "sym": True},
    {"ablate": ["mng.vpflushdone.no_assoc_vcpus"], "sym": True, "all": True},
    {"ablate": ["vp.addcx.page.pt"], "all": True},  # a counter leaves its range
    {"limits": Limits(max_states=5000)}, {"sym": True, "limits": Limits(max_states=777)},
    {"limits": Limits(max_depth=7)},
    {"faults": True, "sym": True, "limits": Limits(max_states=4000)},
]


def _case_id(c: dict) -> str:  # type: ignore[type-arg]
    parts = [k if v is True else f"{k}={v}" for k, v in c.items() if k != "limits"]
    lim = c.get("limits")
    if lim is not None:
        parts += [f"{k}={v}" for k, v in vars(lim).items() if v is not None]
    return ",".join(parts) or "plain"


@pytest.mark.parametrize("case", PAR_CASES, ids=_case_id)
def test_workers_give_the_single_process_result(case: dict) -> None:  # type: ignore[type-arg]
    """Two processes (three, for a run with violations and symmetry): the same verdict,
    counts, depth, per-edge discoveries, violations with their traces, witnesses, as
    one."""
    out = []
    for workers in (1, 2, 3) if case.get("all") and case.get("sym") else (1, 2):
        prog = AnyHost(make_config("tiny", {}).universe(), ablate=case.get("ablate", []),
                       faults=case.get("faults", False))
        canon = Symmetry(prog.engine.layout).canonical if case.get("sym") else None
        r = explore(prog, case.get("limits", Limits()), stop_at_first=not case.get("all"),
                    canon=canon, fingerprint=case.get("fp", False), workers=workers)
        out.append(_summary(r))
    assert all(o == out[0] for o in out)


def test_workers_on_default_part() -> None:
    out = []
    for workers in (1, 2):
        prog = AnyHost(make_config("default", {}).universe())
        out.append(_summary(explore(prog, Limits(max_states=12000), workers=workers,
                                    canon=Symmetry(prog.engine.layout).canonical)))
    assert out[0] == out[1]


@pytest.mark.slow
@pytest.mark.parametrize("ablate", [[], ["mng.key_freeid.wbinvd_done"]])
def test_workers_on_default(ablate: list[str]) -> None:
    out = []
    for workers in (1, 2):
        prog = AnyHost(make_config("default", {}).universe(), ablate=ablate)
        r = explore(prog, stop_at_first=False, workers=workers,
                    canon=Symmetry(prog.engine.layout).canonical)
        out.append(_summary(r))
    assert out[0] == out[1]


def test_workers_on_scenarios_and_kvm() -> None:
    """Scenario threads (a deadlock, a race) and the kvm host: the same with two."""
    from tdxcheck.checker.kvm import run_kvm

    for text in (RACE, RACE.replace("thread run\ntdh_vp_enter vp=vp0 cpu=0\n", "thread run\n")):
        sc = parse_text(text, "race.tdx")
        for allv in (False, True):
            a, b = (run_check(scenario=sc, all_violations=allv, workers=w).result
                    for w in (1, 2))
            assert _summary(a) == _summary(b)
    a, b = (run_kvm("tiny", faults=True, workers=w).result for w in (1, 2))
    assert _summary(a) == _summary(b) and a.states > 1000


def test_memory_budget_stops_the_run() -> None:
    """Past the budget the run stops as incomplete with the reason (never holds)."""
    for workers in (1, 2):
        r = explore(tiny(), Limits(memory_mib=1.0), workers=workers)
        assert r.verdict == "incomplete" and "memory budget" in r.reason
    r = explore(tiny(), Limits(time_limit=0.0), workers=2)
    assert r.verdict == "incomplete" and "time limit" in r.reason


def test_cli_workers_and_memory_budget() -> None:
    outs = []
    for w in ("1", "2"):
        p = cli("--config", "tiny", "--json", "--workers", w, "--ablate",
                "mng.vpflushdone.no_assoc_vcpus", "--all")
        assert p.returncode == 1, p.stderr
        out = json.loads(p.stdout)
        out.pop("seconds")
        outs.append(out)
    assert outs[0] == outs[1]
    p = cli("--config", "tiny", "--memory-budget", "1")
    assert p.returncode == 3 and "memory budget 1 MiB reached" in p.stdout
    for bad in (["--workers", "0"], ["--memory-budget", "-5"]):
        p = cli("--config", "tiny", *bad)
        assert p.returncode == 2 and "Traceback" not in p.stderr
