"""Packaging: every sub-package is listed (else it is silently missing from the wheel), no
bare `model`/`checker` import leaks, and a wheel install runs the command."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_subpackage_is_listed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    for top in ("model", "properties", "checker"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            assert "tdxcheck." + ".".join(rel) in listed, init


def test_no_generic_top_level_names() -> None:
    import tdxcheck.checker.cli
    import tdxcheck.properties  # noqa: F401

    for name in ("model", "checker", "properties"):
        assert name not in sys.modules


def test_wheel_install_in_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    pip = venv / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", "--no-deps", str(ROOT)],
                   check=True, timeout=600)
    out = subprocess.run([str(venv / "bin" / "tdxcheck"), "replay", "-q"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert ": ok" in out.stdout
