"""The checker's layout: imports only point down (checker/__init__.py), including the
imports made inside functions, and the executor stays independent of the model's rules."""

from __future__ import annotations

import ast
from pathlib import Path

CHECKER = Path(__file__).resolve().parent.parent / "checker"

#: what each part of the checker may import (besides itself, model/ and properties/)
ALLOWED: dict[str, set[str]] = {
    "version": set(),
    "scenario": {"version"},
    "executor": {"version"},
    "explore": {"executor", "scenario", "version"},
    "kvm": {"explore", "executor", "scenario", "version"},
    "prove": {"explore", "executor", "scenario", "version"},
    "analyses": {"explore", "kvm", "prove", "executor", "scenario", "version"},
    "output": {"explore", "kvm", "prove", "analyses", "executor", "scenario", "version"},
    "cli": {"explore", "kvm", "prove", "analyses", "output", "executor", "scenario", "version"},
    "__main__": {"cli"},
}


def part_of(path: Path) -> str:
    rel = path.relative_to(CHECKER)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_parts(path: Path, text: str | None = None) -> set[str]:
    """Parts of the checker this file imports, anywhere in it (lazy imports included)."""
    tree = ast.parse(path.read_text() if text is None else text)
    here = path.relative_to(CHECKER).with_suffix("").parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = list(here[:-1])[: len(here) - node.level]
                mod = [*base, *(node.module or "").split(".")] if node.module else base
                names = [a.name for a in node.names] if not node.module else []
                out.add((mod or names or [""])[0])
            elif node.module and node.module.startswith("tdxcheck.checker"):
                rest = node.module.split(".")[2:]
                out.add(rest[0] if rest else node.names[0].name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tdxcheck.checker."):
                    out.add(a.name.split(".")[2])
    out.discard("")
    return out


def test_every_part_is_known() -> None:
    parts = {part_of(p) for p in CHECKER.rglob("*.py") if p.name != "__init__.py"
             or p.parent != CHECKER}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)


def test_imports_point_down() -> None:
    bad = []
    for path in sorted(CHECKER.rglob("*.py")):
        if path.parent == CHECKER and path.name == "__init__.py":
            continue
        part = part_of(path)
        for dep in imported_parts(path) - {part}:
            if dep not in ALLOWED[part]:
                bad.append(f"{path.relative_to(CHECKER)} ({part}) imports {dep}")
    assert not bad, "\n".join(bad)


def test_executor_imports_only_steps_and_status_from_the_model() -> None:
    for path in (CHECKER / "executor").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("tdxcheck.model"):
                assert node.module in ("tdxcheck.model.steps", "tdxcheck.model.status"), \
                    f"{path.name}: {node.module}"


def test_the_scan_sees_a_lazy_import_up() -> None:
    """Not vacuous: an engine importing output/ inside a function is seen, relative or not."""
    f = CHECKER / "explore" / "check.py"
    for line in ("from tdxcheck.checker.output.report import dumps", "from ..output import report"):
        text = f.read_text() + f"\n\ndef _x() -> None:\n    {line}\n"
        assert "output" in imported_parts(f, text)
        assert "output" not in ALLOWED["explore"]
