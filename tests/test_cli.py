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
    # the contract's three keys, plus the executor's two (issue: concrete executor)
    assert set(out) == {"steps", "violations", "mismatches", "consequences", "disagreements"}
    assert out["disagreements"] == []
    only_model = json.loads(run("replay", "--json", "--engine", "model", str(
        ROOT / "examples" / "bug-remove-without-block.tdx")).stdout)
    assert set(only_model) == {"steps", "violations", "mismatches"}
    step = out["steps"][-1]
    assert set(step) == {"line", "step", "status", "status_code", "expected", "ok"}
    assert step["status"] == "TDX_GPA_RANGE_NOT_BLOCKED|RCX"
    assert step["status_code"] == 0xC0000B0600000001
    assert step["expected"] == "TDX_SUCCESS" and step["ok"] is False
    assert out["mismatches"][0]["line"] == step["line"]


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
