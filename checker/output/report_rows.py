"""What ``tdxcheck report`` shows from the engines besides the explorer, as plain rows.

``html_report`` finds these functions by name (a build without Z3 still gets a page, with
"not available" in their place).  Rows hold no timings, so the page is the same bytes for
the same model.

* ``prove_rows(config)``: ``tdxcheck prove`` (Z3 induction, ``--host any``) on the report's
  configuration: one row per invariant and lemma;
* ``kvm_rows(config)``: ``tdxcheck check --host kvm`` on the kvm configuration of the same
  name (``tiny`` when there is none), without and with module faults: one row each;
* ``mutant_rows(config)``: ``tdxcheck mutants`` on that kvm configuration;
* ``ablation_rows(config)``: ``tdxcheck ablate --host kvm`` on the kvm ``tiny`` configuration
  with module faults (the any-host ablation of a full configuration takes an explorer run per
  check: run ``tdxcheck ablate`` for it); each row with its ``class``: ``breaks`` for a
  removal that broke an invariant, else why nothing broke, as a class the page folds by;
* ``consequences(prog, cx)``: an explorer counterexample written as a scenario and replayed on
  the concrete executor in lockstep with the model: what the executor saw, one line each;
* ``apis_rows(config)``: ``tdxcheck apis`` on ``tiny`` (every variant; the full
  configuration's table is ``reports/apis-default.txt``): one row per class of host mistake.

Each takes ``progress`` (a callable given one line of text, or None): the report says what
it is doing while they run (the ablation takes minutes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any


def _kvm_name(config: Any) -> str:
    from tdxcheck.checker.kvm import KVM_CONFIGS

    name = str(getattr(config, "name", "tiny")).split("+")[0]
    return name if name in KVM_CONFIGS else "tiny"


Say = Callable[[str], None] | None


def prove_rows(config: Any, progress: Say = None, ablate: tuple[str, ...] = ()
               ) -> list[dict[str, Any]]:
    from tdxcheck.checker.prove import prove

    def show(d: dict[str, Any]) -> None:
        if progress is not None:
            progress(", ".join(f"{k} {v:.1f}s" if k == "seconds" else f"{k} {v}"
                               for k, v in d.items() if not isinstance(v, float)
                               or k == "seconds"))

    r = prove(config, progress=show if progress is not None else None, ablate=ablate)
    return [{"property": t.invariant, "kind": t.kind, "verdict": t.status,
             "engine": "Z3 induction (host any)",
             # query counts and times vary with the solver's timing: the page keeps neither
             "unchanged by": f"{t.frame} transition(s)", "note": t.note,
             **({"ablated": ", ".join(ablate)} if ablate else {})} for t in r.results]


def kvm_rows(config: Any, progress: Say = None, ablate: tuple[str, ...] = ()
             ) -> list[dict[str, Any]]:
    """``check --host kvm`` without and with module faults (a second or so each on
    ``tiny``, ten on ``default``), with the report's ablated checks removed too."""
    from tdxcheck.checker.kvm import run_kvm

    name = _kvm_name(config)
    out = []
    for faults in (False, True):
        cmd = f"check --host kvm --config {name}" + (" --faults" if faults else "") + "".join(
            f" --ablate {a}" for a in ablate)
        if progress is not None:
            progress(cmd)
        run = run_kvm(name, faults=faults, ablate=ablate)
        r = run.result
        leaks = "; ".join(
            f"after {lk['site']}: {', '.join([*lk['pages'], *(f'HKID {h}' for h in lk['hkids'])])}"
            f" ({lk['length']} steps)" for lk in run.leaks)
        reached = sum(1 for n in run.errors_reached.values() if n is not None)
        got = sum(1 for n in run.witnesses.values() if n is not None)
        out.append({
            "command": cmd, "verdict": r.verdict, "states": r.states,
            "transitions": r.transitions, "depth": r.depth,
            "violations": ", ".join(f"{v['invariant']} ({v['length']} steps)"
                                    for v in run.violations) or "none",
            "leaks on error paths (KVM's choice)": leaks or "none",
            "KVM error paths reached": f"{reached}/{len(run.errors_reached)}",
            "witnesses reached": f"{got}/{len(run.witnesses)}",
            "missing witnesses": ", ".join(run.witnesses_missing),
            **({"ablated": ", ".join(ablate)} if ablate else {})})
    return out


_CACHE: dict[tuple[str, str], tuple[dict[str, Any], ...]] = {}


def _cached(key: tuple[str, str], make: Callable[[], list[dict[str, Any]]]
            ) -> list[dict[str, Any]]:
    """The same rows for every report of this process (tests make several)."""
    if key not in _CACHE:
        _CACHE[key] = tuple(make())
    return [dict(r) for r in _CACHE[key]]


def mutant_rows(config: Any, progress: Say = None) -> list[dict[str, Any]]:
    from tdxcheck.checker.analyses.mutants import run_mutants

    name = _kvm_name(config)

    def show(i: int, n: int, mutant: str) -> None:
        if progress is not None:
            progress(f"{i + 1}/{n}: {mutant}")

    return _cached(("mutants", name), lambda: [
        {"mutant": r["name"], "killed": "yes" if r["killed"] else "NO",
         "invariant": r["invariant"] or "-", "length": r["length"],
         "kvm config": name, "patch": r["description"]}
        for r in run_mutants(name, progress=show)])


def ablation_rows(config: Any, progress: Say = None, checks: Sequence[str] | None = None
                  ) -> list[dict[str, Any]]:
    """The same for every report (kvm tiny, faults), so computed once per process;
    ``checks`` (tests) removes only those, one at a time, instead of every check."""
    from tdxcheck.checker.analyses.ablation import ablation_json, run_ablation, why_nothing_breaks

    def show(i: int, n: int, check: str) -> None:
        if progress is not None:
            progress(f"check {i + 1}/{n} removed: {check}")

    def make() -> list[dict[str, Any]]:
        rows = run_ablation("kvm", "tiny", checks=checks, faults=True, progress=show)
        out = []
        for row, r in zip(rows, ablation_json(rows, "kvm")["checks"], strict=True):
            broken = ", ".join(f"{inv} ({n})" for inv, n in sorted(r["broken"].items()))
            why = r["why_nothing_breaks"]
            if broken:
                cls = "breaks"
            elif row.get("limit"):
                cls = "unknown: a limit cut the run short"
            else:
                # KVM's side, then the any-host reason kind (redundant, model gap, config)
                kind = why_nothing_breaks(r["check"])[0]
                cls = ("refuses a KVM call on a fault path; harmless without it"
                       if row.get("kvm_refuses") else "KVM never makes a call it refuses")
                cls += "" if kind == "?" else f"; against any host: {kind}"
            out.append({"check removed": r["check"], "host": "kvm tiny, faults",
                        "invariants broken (shortest trace)": broken or "none",
                        "class": cls,
                        "why nothing breaks": f"{why['kind']}: {why['reason']}" if why else ""})
        return out

    which = "" if checks is None else " " + ",".join(checks)
    return _cached(("ablation", "kvm tiny faults" + which), make)


def consequences(prog: Any, cx: Any) -> list[str]:
    """Replay an any-host counterexample on the executor and the model in lockstep."""
    from tdxcheck.checker.explore.replay import replay
    from tdxcheck.checker.explore.traces import any_host_tdx
    from tdxcheck.checker.scenario import parse_text

    text = any_host_tdx(prog, cx, "report")
    res = replay(parse_text(text, "<counterexample>"), prog.engine, run="both")
    # step numbers are the scenario's: they count its prologue (HKIDs and pages handed over)
    out = [f"{c.kind} (scenario step {c.step_index + 1}): {c.message}"
           for c in res.consequences]
    out += [f"DISAGREEMENT at scenario step {d.step_index + 1}: model {d.model}, executor "
            f"{d.executor}" for d in res.disagreements]
    return out or ["the executor saw nothing go wrong up to the violation"]


def apis_rows(config: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in _apis_rows()]


@functools.lru_cache(maxsize=1)
def _apis_rows() -> tuple[dict[str, Any], ...]:
    """Classes x variants on tiny (the same for every report, so computed once)."""
    from tdxcheck.checker.analyses.apis import run_apis
    from tdxcheck.checker.explore.programs import make_config
    from tdxcheck.checker.output.apis_report import _cell

    res = run_apis(make_config("tiny", {}))
    out = []
    for i, c in enumerate(res.classes):
        row: dict[str, Any] = {"class": f"{c.number} {c.title}"}
        for r in res.runs:
            row[r.variant.name] = _cell(r.cells[i])
        out.append(row)
    out.append({"class": "silent / caught / impossible (config tiny)",
                **{r.variant.name: "/".join(str(r.counts()[k]) for k in
                                            ("silent", "caught", "impossible"))
                   for r in res.runs}})
    return tuple(out)
