"""``tdxcheck ablate``: which module checks matter, one at a time.

Each check of the module's rules (``Check.name`` in ``model/``) is removed in turn when the
rules are built (``Engine(u, ablate={name})``), the host program is explored again, and the
invariants that then break are recorded with their shortest trace length.  ``--host any``
asks what the check protects against *any* host; ``--host kvm`` what it protects against
KVM's actual protocol (KVM may simply never reach the state the check refuses).

A check whose removal breaks nothing is either one the model has no reason for (no
invariant states what it protects: a gap in the properties) or one another check already
implies (redundant here).  ``NOTHING_BREAKS_WHY`` says which, per check family.

Returns data (a list of rows); ``ablation_table``/``ablation_json`` format it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from tdxcheck.model.actions import rule_of
from tdxcheck.model.rule import Check, Ctx
from tdxcheck.model.state import Layout, Universe

from .engine import Violation
from .explore import Limits, explore
from .programs import AnyHost, any_host_actions, make_config
from .symmetry import Symmetry


def check_names(u: Universe) -> list[str]:
    """Every distinct module check name, in rule order, from every action of an any-host
    universe (``any_host_actions``), i.e. every check a rule of the model can run."""
    lay = Layout(u)
    names: list[str] = []
    seen: set[str] = set()
    for a, _guard in any_host_actions(u):
        for step in rule_of(a, Ctx(u, lay, a.cpu)).steps:
            if isinstance(step, Check) and step.name not in seen:
                seen.add(step.name)
                names.append(step.name)
    return names


class _Encoded:
    """A program whose ``state_violations`` also names a state that left its encoding.

    The explorer reports such a state as ``state-encoding`` itself, but then cannot rebuild
    its trace (``rebuild`` looks for the invariant in ``state_violations``); an ablated
    rule that drives a counter out of range needs both, so the program says it too."""

    def __init__(self, prog: Any) -> None:
        self._prog = prog
        self._bounds = prog.bounds()
        self._counters = prog.counter_cells()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._prog, name)

    def state_violations(self, s: Any) -> list[Violation]:
        out = self._prog.state_violations(s)
        if any(x < 0 for x in s) or any(s[i] > self._bounds[i] for i in self._counters):
            out = [*out, Violation("state-encoding", "a state cell left its declared range "
                                   "(a counter below 0 or above its bound)", 0)]
        return out


def _explore_any(config_name: str, check: str, limits: Limits,
                 overrides: dict[str, str]) -> Any:
    prog = AnyHost(make_config(config_name, overrides).universe(), ablate=[check])
    return explore(_Encoded(prog), limits, stop_at_first=False,
                   canon=Symmetry(prog.engine.layout).canonical)


def _explore_kvm(config_name: str, check: str, limits: Limits, faults: bool) -> Any:
    from .kvm import KvmHost, kvm_config

    prog = KvmHost(kvm_config(config_name), faults=faults, ablate=[check])
    return explore(_Encoded(prog), limits, stop_at_first=False)


def run_ablation(host: str = "any", config_name: str = "tiny", *,
                 checks: Sequence[str] | None = None, faults: bool = True,
                 limits: Limits = Limits(), overrides: dict[str, str] | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """One row per module check: ``{"check", "broken": {invariant: shortest length},
    "invariant", "length" (the shortest of them, or None), "verdict", "states",
    "seconds"}``.  ``host`` is ``any`` (module invariants, symmetry on) or ``kvm`` (every
    invariant; ``faults`` lets the module fail where the environment can make it).
    ``overrides`` are ``key=value`` config overrides for ``--host any``."""
    if host not in ("any", "kvm"):
        raise ValueError(f"unknown host {host!r} (have: any, kvm)")
    overrides = dict(overrides or {})
    if host == "any":
        u = make_config(config_name, overrides).universe()
    else:
        from .kvm import kvm_config

        if overrides:
            raise ValueError("key=value overrides apply to --host any; --host kvm has named "
                             "configurations")
        u = kvm_config(config_name).universe()
    names = list(checks) if checks is not None else check_names(u)
    rows = []
    for i, name in enumerate(names):
        if progress is not None:
            progress(i, len(names), name)
        t0 = time.monotonic()
        if host == "any":
            r = _explore_any(config_name, name, limits, overrides)
        else:
            r = _explore_kvm(config_name, name, limits, faults)
        broken = {cx.invariant: cx.length for cx in r.violations}
        best = min(r.violations, key=lambda c: (c.length, c.invariant), default=None)
        rows.append({
            "check": name,
            "broken": broken,
            "invariant": best.invariant if best else None,
            "length": best.length if best else None,
            "verdict": r.verdict,
            "states": r.states,
            "seconds": round(time.monotonic() - t0, 3),
        })
    return rows


# ------------------------------------------------------------------ why nothing breaks

#: For a check whose removal breaks no invariant: why, by the check's name (most specific
#: entry first; matched on the name's suffix after ``<family>.<leaf>.``).  "gap" = the model
#: has no invariant that states what the check protects; "redundant" = another check (or the
#: model's encoding) already refuses the same states; "config" = the configuration is too
#: small to reach the state it refuses.
NOTHING_BREAKS_WHY: tuple[tuple[str, str, str], ...] = ()


def why_nothing_breaks(check: str) -> tuple[str, str]:
    """(kind, reason) for a check whose removal broke nothing, or ("?", "") if unclassified."""
    for pattern, kind, reason in NOTHING_BREAKS_WHY:
        if check == pattern or check.endswith(pattern):
            return kind, reason
    return "?", ""


def ablation_table(rows: Sequence[dict[str, Any]]) -> str:
    """Checks x invariants: each cell the shortest trace length that breaks it, '.' none."""
    invs = sorted({inv for r in rows for inv in r["broken"]})
    width = max([len(r["check"]) for r in rows] + [5])
    short = [_abbrev(i) for i in invs]
    out = []
    legend = ", ".join(f"{s} = {i}" for s, i in zip(short, invs, strict=True))
    out.append(f"{'check':<{width}}  " + " ".join(f"{s:>5}" for s in short) + "    s")
    for r in rows:
        cells = " ".join(f"{r['broken'].get(i, '.'):>5}" for i in invs)
        out.append(f"{r['check']:<{width}}  {cells}  {r['seconds']:5.1f}")
    none = [r["check"] for r in rows if not r["broken"]]
    out.append("")
    out.append(f"columns: {legend}" if legend else "no invariant broke")
    out.append(f"{len(rows) - len(none)}/{len(rows)} checks break an invariant when removed; "
               f"{len(none)} break nothing:")
    for c in none:
        kind, reason = why_nothing_breaks(c)
        out.append(f"  {c}: {kind}{': ' + reason if reason else ''}")
    return "\n".join(out)


def _abbrev(inv: str) -> str:
    parts = inv.split("-")
    return "".join(p[0] for p in parts).upper()[:5]


def ablation_json(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"checks": [
        {**r, "why_nothing_breaks": (dict(zip(("kind", "reason"), why_nothing_breaks(r["check"]),
                                              strict=True)) if not r["broken"] else None)}
        for r in rows]}
