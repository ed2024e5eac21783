"""The command line: exit codes, one-line errors, JSON shape (scenario-format.md §6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tdxcheck.checker.cli import main

ROOT = Path(__file__).parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tdxcheck.checker", *args],
                          capture_output=True, text=True, timeout=120)


def test_builtin_default_replays_clean() -> None:
    p = run("replay")
    assert p.returncode == 0, p.stderr
    assert "0 violation(s), 0 mismatch(es), 0 model/executor disagreement(s): ok" in p.stdout


def test_violation_exit_1_and_review_mail_text() -> None:
    p = run("replay", str(ROOT / "examples" / "bug-no-wbinvd-after-remove.tdx"))
    assert p.returncode == 1
    assert "[flush-before-reclaim]" in p.stdout
    assert "tdh_mem_page_remove(" in p.stdout and "-> TDX_SUCCESS" in p.stdout
    assert "reproduce: tdxcheck replay" in p.stdout


def test_json_contract(tmp_path: Path) -> None:
    p = run("replay", "--json", str(ROOT / "examples" / "bug-remove-without-block.tdx"))
    assert p.returncode == 1
    out = json.loads(p.stdout)
    # the common envelope, the contract's three keys, plus the executor's two
    envelope = {"schema", "tool", "version", "command", "config", "host"}
    assert set(out) == envelope | {"steps", "violations", "mismatches", "consequences",
                                   "disagreements"}
    assert out["schema"] == "tdxcheck/1" and out["command"] == "replay"
    assert out["disagreements"] == []
    only_model = json.loads(run("replay", "--json", "--engine", "model", str(
        ROOT / "examples" / "bug-remove-without-block.tdx")).stdout)
    assert set(only_model) == envelope | {"steps", "violations", "mismatches"}
    step = out["steps"][-1]
    # §6's keys, plus the step's number, its text and the calls it made
    assert {"line", "step", "status", "status_code", "expected", "ok"} <= set(step)
    assert step["status"] == "TDX_GPA_RANGE_NOT_BLOCKED|RCX"
    assert step["status_code"] == "0xC0000B0600000001"  # hex: JSON numbers lose bits
    assert int(step["status_code"], 16) == 0xC0000B0600000001
    assert step["expected"] == "TDX_SUCCESS" and step["ok"] is False
    m = out["mismatches"][0]
    assert m["line"] == step["line"] and m["step"] == step["index"] == m["step_index"] + 1


@pytest.mark.parametrize("text,needle", [
    ("tdh_mng_creat td=td0 page=p hkid=1\n", "did you mean tdh_mng_create"),
    ("config hkidz=3\nhkid_alloc hkid=1\n", "did you mean hkids"),
    ("tdh_mng_key_config td=td0\n", "td0"),
    ("hkid_alloc hkid=1 -> TDX_SUCES\n", ""),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.tdx"
    f.write_text(text)
    p = run("replay", str(f))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{f}:1:"), p.stderr
    assert "Traceback" not in p.stderr
    assert needle in lines[0]


def test_fault_the_leaf_cannot_return_is_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "f.tdx"
    f.write_text("hkid_alloc hkid=1\npage_alloc page=t\n"
                 "tdh_mng_create td=td0 page=t hkid=1\n"
                 "tdh_mng_init td=td0 fault=TDX_RND_NO_ENTROPY\n")
    p = run("replay", str(f))
    assert p.returncode == 2
    assert p.stderr.startswith(f"{f}:4:") and "no fault point" in p.stderr


def test_fault_point_is_honoured(tmp_path: Path) -> None:
    f = tmp_path / "f.tdx"
    f.write_text("hkid_alloc hkid=1\npage_alloc page=t\n"
                 "tdh_mng_create td=td0 page=t hkid=1 fault=TDX_RND_NO_ENTROPY "
                 "-> TDX_RND_NO_ENTROPY\n"
                 "tdh_mng_create td=td0 page=t hkid=1 fault=TDX_OPERAND_BUSY "
                 "-> TDX_OPERAND_BUSY|KOT\n"
                 "tdh_mng_create td=td0 page=t hkid=1 -> TDX_SUCCESS\n")
    assert main(["replay", "-q", str(f)]) == 0


def test_unreadable_file_exit_2(tmp_path: Path) -> None:
    p = run("replay", str(tmp_path / "missing.tdx"))
    assert p.returncode == 2 and "cannot read" in p.stderr


def test_usage_error_exit_2() -> None:
    assert run("nosuchcommand").returncode == 2
    assert run().returncode == 2


# ---------------------------------------------------------------- kvm, mutants, ablate, prove
def test_check_host_kvm_json_and_trace_files(tmp_path: Path) -> None:
    p = run("check", "--host", "kvm", "--config", "tiny", "--faults", "--json", "-q")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["verdict"] == "holds" and out["host"] == "kvm" and out["violations"] == []
    assert out["leaks"] and all(lk["trace"] for lk in out["leaks"])  # leaks are data
    # a mutation of the module rules against KVM: the trace replays on both engines
    p = run("check", "--host", "kvm", "--config", "tiny", "--faults", "-q",
            "--ablate", "mng.key_freeid.wbinvd_done", "--trace-out", str(tmp_path))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "[keyid-after-vpflushdone] violated" in p.stdout
    tdx = tmp_path / "keyid-after-vpflushdone.tdx"
    assert f"reproduce: tdxcheck replay {tdx} --ablate mng.key_freeid.wbinvd_done" in p.stdout
    assert json.loads((tmp_path / "keyid-after-vpflushdone.itf.json").read_text())["states"]
    r = run("replay", str(tdx), "--ablate", "mng.key_freeid.wbinvd_done", "--json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["disagreements"] == [] and rep["mismatches"] == []
    assert "keyid-after-vpflushdone" in {v["invariant"] for v in rep["violations"]}


@pytest.mark.parametrize("args,needle", [
    (("check", "--host", "kvm", "--config", "huge"), "unknown kvm configuration"),
    (("check", "--host", "kvm", "tdxs=2"), "named configurations"),
    (("check", "--host", "kvm", "--fingerprint"), "--fingerprint is for --host any"),
    (("check", "--config", "tiny", "--ablate", "mng.key_freeid.wbinvd_dne"),
     "did you mean mng.key_freeid.wbinvd_done"),
    (("replay", "--ablate", "nope"), "unknown module check 'nope'"),
    (("prove", "--config", "tiny", "--ablate", "nope"), "unknown module check"),
    (("prove", "--config", "tiny", "--invariant", "nope"), "unknown invariant"),
    (("prove", "--host", "x.tdx"), "x.tdx: cannot read"),
    (("mutants", "--only", "nope"), "unknown mutant"),
    (("ablate", "--host", "kvm", "a=1"), "named configurations"),
    (("ablate", "--check", "nope"), "unknown module check"),
])
def test_new_commands_bad_input_exit_2(args: tuple[str, ...], needle: str) -> None:
    p = run(*args, "-q") if args[0] != "replay" else run(*args)
    assert p.returncode == 2, p.stdout + p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_mutants_json_contract() -> None:
    p = run("mutants", "--config", "tiny", "--only", "skip_wbinvd_after_remove",
            "--only", "hkid_free_before_freeid", "--json", "-q")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [set(m) for m in out["mutants"]] == [
        {"name", "description", "killed", "invariant", "length"}] * 2
    got = {m["name"]: (m["killed"], m["invariant"]) for m in out["mutants"]}
    assert got == {"skip_wbinvd_after_remove": (True, "flush-before-reclaim"),
                   "hkid_free_before_freeid": (True, "keyid-after-vpflushdone")}
    p = run("mutants", "--config", "tiny", "--only", "skip_wbinvd_after_remove")
    assert p.returncode == 0 and "1/1 mutants killed" in p.stdout
    assert "mutant 1/1: skip_wbinvd_after_remove" in p.stderr  # progress on stderr


def test_ablate_table_and_list() -> None:
    p = run("ablate", "--list")
    names = p.stdout.split()
    assert p.returncode == 0 and "mng.key_freeid.wbinvd_done" in names
    assert names == sorted(set(names), key=names.index)  # no repeats, rule order
    p = run("ablate", "--config", "tiny", "--check", "mng.key_freeid.wbinvd_done", "--check",
            "mng.vpflushdone.no_assoc_vcpus", "--json", "-q")
    assert p.returncode == 0, p.stderr
    rows = {r["check"]: r for r in json.loads(p.stdout)["checks"]}
    for c in ("mng.key_freeid.wbinvd_done", "mng.vpflushdone.no_assoc_vcpus"):
        assert "keyid-after-vpflushdone" in rows[c]["broken"], rows[c]
    # against KVM (module faults on) only FREEID's check matters: KVM flushes every vCPU
    p = run("ablate", "--host", "kvm", "--config", "tiny", "--check",
            "mng.key_freeid.wbinvd_done", "--check", "mng.vpflushdone.no_assoc_vcpus")
    assert p.returncode == 0, p.stderr
    assert "1/2 checks break an invariant" in p.stdout
    assert "mng.vpflushdone.no_assoc_vcpus: not relied on by KVM" in p.stdout


def test_prove_exit_codes_and_json(tmp_path: Path) -> None:
    p = run("prove", "--config", "tiny", "--json", "-q")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)["results"]
    assert {r["status"] for r in res} == {"proved"}
    assert "keyid-after-vpflushdone" in {r["invariant"] for r in res}
    # a removed module check: violated (a reachable trace) with a replayable .tdx
    p = run("prove", "--config", "tiny", "--ablate", "mng.key_freeid.wbinvd_done",
            "--trace-out", str(tmp_path), "-q")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "violated" in p.stdout
    files = sorted(tmp_path.glob("*.tdx"))
    assert files
    r = run("replay", str(files[0]), "--ablate", "mng.key_freeid.wbinvd_done", "-q")
    assert r.returncode == 1 and "0 model/executor disagreement(s)" in r.stdout
    # a solver budget too small to answer: unknown, never proved, exit 3
    p = run("prove", "--config", "tiny", "--timeout-ms", "1", "--json", "-q")
    statuses = {r["status"] for r in json.loads(p.stdout)["results"]}
    if p.returncode == 0:  # every query answered within 1 ms
        assert statuses == {"proved"}
    else:  # a timed-out hypothesis is unknown (and what needed it may not be inductive)
        assert p.returncode in (1, 3) and "unknown" in statuses


def test_kvm_preempt_finds_the_init_vcpu_window_and_a_fix_closes_it(tmp_path: Path) -> None:
    """check --host kvm --preempt: KVM_TDX_INIT_VCPU preempted between TDH.VP.INIT and the
    state store bugs the VM or leaks with no module fault; the window's outcomes are written
    as .tdx files that replay on both engines; --fix state_under_mmu_lock holds."""
    p = run("check", "--host", "kvm", "--config", "tiny", "--preempt", "-q",
            "--trace-out", str(tmp_path))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "[no-leak] violated" in p.stdout and "[vm-bugged] violated" in p.stdout
    assert "TDX_FLUSHVP_NOT_DONE" in p.stdout and "silent leak" in p.stdout
    assert " -> TDX_SUCCESS -> TDX_SUCCESS" not in p.stdout
    silent = tmp_path / "outcome-silent-leak-migrated-after-the-vmcs-writes-leaks-no-s-ept-page.tdx"
    assert silent.exists(), sorted(f.name for f in tmp_path.iterdir())
    r = run("replay", str(silent), "--json")
    rep = json.loads(r.stdout)
    assert r.returncode == 1 and rep["disagreements"] == [] and rep["mismatches"] == []
    assert {"no-leak"} == {v["invariant"] for v in rep["violations"]}
    p = run("check", "--host", "kvm", "--config", "tiny", "--preempt-init", "--fix",
            "state_under_mmu_lock", "--json", "-q")
    assert p.returncode == 0, p.stdout + p.stderr
    d = json.loads(p.stdout)
    assert d["verdict"] == "holds" and d["preempt"] == "init_vcpu"
    assert d["fix"] == "state_under_mmu_lock"
    assert all(o["length"] is None for o in d["outcomes"])
    p = run("check", "--preempt", "-q")
    assert p.returncode == 2 and "--host kvm" in p.stderr


def test_prove_host_file_agrees_with_check(tmp_path: Path) -> None:
    """prove --host FILE: BMC to the scenario's length is a proof; same verdicts and shortest
    lengths as check FILE; the trace it writes replays to the same violation."""
    race = str(ROOT / "examples" / "race-flush-while-running.tdx")
    p = run("prove", "--host", race, "--json", "-q", "--trace-out", str(tmp_path))
    assert p.returncode == 1, p.stderr
    res = {r["invariant"]: r for r in json.loads(p.stdout)["results"]}
    assert res["expected-status"]["status"] == "violated"
    assert res["deadlock"]["status"] == "violated"
    assert res["flush-before-reclaim"]["status"] == "proved"
    c = run("check", race, "--all", "--json", "-q")
    assert c.returncode == 1
    want = {v["invariant"]: v["length"] for v in json.loads(c.stdout)["violations"]}
    assert want == {"expected-status": 13, "deadlock": 12}  # no flush while cpu0 runs the guest
    assert {i: r["counterexample"]["length"] for i, r in res.items()
            if r["status"] == "violated"} == want
    assert sorted(f.stem for f in tmp_path.glob("*.tdx")) == ["deadlock", "expected-status"]
    r = run("replay", str(tmp_path / "expected-status.tdx"), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["mismatches"]
    p = run("prove", "--host", str(ROOT / "examples" / "two-tds-threads.tdx"), "-q")
    assert p.returncode == 0 and "all proved" in p.stdout
    p = run("prove", "--host", race, "--bmc", "-q")
    assert p.returncode == 2 and "--host any" in p.stderr


def test_check_ablate_out_of_encoding_has_a_replayable_trace(tmp_path: Path) -> None:
    """``check --ablate`` of a check whose removal drives a counter past its bound: the
    Engine reports ``state-encoding`` (as the prover does), so the trace is rebuilt, written
    and replayed, instead of a traceback."""
    abl = "vp.flush.associated_here"  # a flush of a vCPU associated nowhere: num_assoc < 0
    p = run("check", "--config", "tiny", "--ablate", abl, "--all", "-q",
            "--trace-out", str(tmp_path))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "[state-encoding] violated after 6 step(s): td0.num_assoc = -1" in p.stdout
    r = run("replay", str(tmp_path / "state-encoding.tdx"), "--ablate", abl, "-q")
    assert r.returncode == 1 and "[state-encoding] violated at step" in r.stdout
    assert "0 model/executor disagreement(s)" in r.stdout


def test_check_summary_says_what_was_not_checked_and_where() -> None:
    """The main job's summary names every invariant it did not check, and the host clauses
    of the ones it checked only in part, so "holds" is never read as more than it is."""
    from tdxcheck.checker.explore.programs import make_config
    from tdxcheck.checker.output.report import check_scope_text

    lines = check_scope_text(make_config("default", {}).universe(), True, 48, {})
    skipped = lines[-1]
    assert skipped.startswith("not checked here (--host any makes SEAMCALLs only")
    for inv in ("flush-before-reclaim", "flush-before-alloc", "clear-before-reuse", "no-leak",
                "the host clauses of no-double-assignment"):
        assert inv in skipped, inv
    assert any(ln.startswith("  no-double-assignment") and "host clauses are the host's" in ln
               for ln in lines)
    tiny = check_scope_text(make_config("tiny", {}).universe(), True, None, {})
    assert "no-double-assignment," in tiny[-1] and "host clauses of" not in tiny[-1]
    # a scenario (a host) checks everything: nothing is listed as not checked
    assert not any(ln.startswith("not checked") for ln in
                   check_scope_text(make_config("tiny", {}).universe(), False, None, {}))


def test_incomplete_check_names_the_proof_that_gives_a_verdict() -> None:
    """A ``--host any`` run cut by a limit names the inductive proof of the same invariants
    (with the run's overrides, faults and ablations), and that command runs as printed: on
    the intact model it proves them; with a breaking ablation it does not say "proved"."""
    import shlex

    p = run("check", "--config", "tiny", "tds=1", "--max-states", "40", "-q")
    assert p.returncode == 3, p.stderr
    hint = [ln for ln in p.stdout.splitlines() if "for a verdict at every depth:" in ln]
    assert len(hint) == 1, p.stdout
    cmd = hint[0].split(": ", 1)[1].split(" (induction", 1)[0]
    assert cmd == "tdxcheck prove --config tiny tds=1"
    q = run(*shlex.split(cmd)[1:], "-q")
    assert q.returncode == 0 and "all proved" in q.stdout, q.stdout + q.stderr
    abl = "mng.key_freeid.wbinvd_done"
    p = run("check", "--config", "tiny", "--max-states", "3", "--ablate", abl, "-q")
    assert p.returncode == 3
    assert f"tdxcheck prove --config tiny --ablate {abl} (induction" in p.stdout
    # a run that finished, and a scenario run, print no such line
    done = run("check", "--config", "tiny", "-q")
    assert done.returncode == 0 and "for a verdict at every depth" not in done.stdout
