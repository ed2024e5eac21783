"""What ``tdxcheck report`` shows from the engines besides the explorer, as plain rows.

``html_report`` finds these functions by name (a build without Z3 still gets a page, with
"not available" in their place).  Rows hold no timings, so the page is the same bytes for
the same model.

* ``prove_rows(config)``: ``tdxcheck prove`` (Z3 induction, ``--host any``) on the report's
  configuration: one row per invariant and lemma;
* ``mutant_rows(config)``: ``tdxcheck mutants`` on the kvm configuration of the same name
  (``tiny`` when there is none);
* ``ablation_rows(config)``: ``tdxcheck ablate --host kvm`` on the kvm ``tiny`` configuration
  with module faults (the any-host ablation of a full configuration takes an explorer run per
  check: run ``tdxcheck ablate`` for it);
* ``consequences(prog, cx)``: an explorer counterexample written as a scenario and replayed on
  the concrete executor in lockstep with the model: what the executor saw, one line each;
* ``apis_rows(config)``: ``tdxcheck apis`` on ``tiny`` (every variant; the full
  configuration's table is ``reports/apis-default.txt``): one row per class of host mistake.
"""

from __future__ import annotations

import functools
from typing import Any


def _kvm_name(config: Any) -> str:
    from tdxcheck.checker.kvm import KVM_CONFIGS

    name = str(getattr(config, "name", "tiny")).split("+")[0]
    return name if name in KVM_CONFIGS else "tiny"


def prove_rows(config: Any) -> list[dict[str, Any]]:
    from tdxcheck.checker.prove import prove

    r = prove(config)
    return [{"property": t.invariant, "kind": t.kind, "verdict": t.status,
             "engine": "Z3 induction (host any)",
             # query counts and times vary with the solver's timing: the page keeps neither
             "unchanged by": f"{t.frame} transition(s)", "note": t.note} for t in r.results]


def mutant_rows(config: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in _mutant_rows(_kvm_name(config))]


@functools.lru_cache(maxsize=4)
def _mutant_rows(name: str) -> tuple[dict[str, Any], ...]:
    from tdxcheck.checker.analyses.mutants import run_mutants

    return tuple({"mutant": r["name"], "killed": "yes" if r["killed"] else "NO",
                  "invariant": r["invariant"] or "-", "length": r["length"],
                  "kvm config": name, "patch": r["description"]} for r in run_mutants(name))


def ablation_rows(config: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in _ablation_rows()]


@functools.lru_cache(maxsize=1)
def _ablation_rows() -> tuple[dict[str, Any], ...]:
    """The same for every report (kvm tiny), so computed once per process."""
    from tdxcheck.checker.analyses.ablation import ablation_json, run_ablation

    out = []
    for r in ablation_json(run_ablation("kvm", "tiny", faults=True), "kvm")["checks"]:
        broken = ", ".join(f"{inv} ({n})" for inv, n in sorted(r["broken"].items()))
        why = r["why_nothing_breaks"]
        out.append({"check removed": r["check"], "host": "kvm tiny, faults",
                    "invariants broken (shortest trace)": broken or "none",
                    "why nothing breaks": f"{why['kind']}: {why['reason']}" if why else ""})
    return tuple(out)


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
