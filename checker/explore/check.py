"""``tdxcheck check``: build the host program, explore it, and collect the results.

Returns data (``CheckRun``); the CLI prints it.  Symmetry reduction is on by default for
``--host any`` (every object is interchangeable there) and off for scenario files (a
scenario names its objects apart).
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdxcheck.checker.scenario import InputError
from tdxcheck.model.actions import describe
from tdxcheck.model.compile import compile_functions, new_gen, predicate_source
from tdxcheck.model.state import State
from tdxcheck.properties.witnesses import WITNESSES

from .bfs import Counterexample, ExploreResult, Limits, explore
from .programs import AnyHost, Config, ScenarioHost
from .symmetry import Symmetry


@dataclass
class CheckRun:
    title: str
    prog: Any
    result: ExploreResult
    symmetry: bool
    labels: list[list[str]] = field(default_factory=list)  # per counterexample
    files: list[list[str]] = field(default_factory=list)  # written trace files
    peak_rss_mib: float = 0.0
    witness_labels: dict[str, list[str]] = field(default_factory=dict)

    @property
    def witnesses_missing(self) -> list[str]:
        return [w for w, cx in self.result.witnesses.items() if cx is None]


def labels_of(prog: Any, cx: Counterexample) -> list[str]:
    """Each step of a counterexample as a wrapper call with named operands."""
    if isinstance(prog, AnyHost):
        return [describe(prog.action_of(e), prog.u) for e, _ in cx.path]
    return [f"[{prog.names[prog.edges[e].thread]}] {step_call(prog.edges[e].label)}"
            for e, _ in cx.path]


def step_call(text: str) -> str:
    """A scenario line as a call: its words without the ``-> STATUS`` expectation (the
    status it returned is printed next to it) and without alignment padding."""
    return " ".join(text.split("->", 1)[0].split())


def witness_fn(prog: Any, ids: Sequence[str]) -> Callable[[State], list[str]]:
    lay = prog.engine.layout
    gen = new_gen(lay)
    ws = [w for w in WITNESSES if w.id in ids]
    srcs = [predicate_source(f"w{i}", [w.goal(prog.u)], lay, gen, two_state=False)
            for i, w in enumerate(ws)]
    ns = compile_functions(srcs, gen)
    fns = [(w.id, ns[f"w{i}"]) for i, w in enumerate(ws)]
    size = lay.size

    def reached(s: State) -> list[str]:
        m = s[:size]
        return [wid for wid, fn in fns if fn(m) < 0]

    return reached


def run_check(
    *,
    scenario: Any = None,
    config: Config | None = None,
    faults: bool = False,
    symmetry: bool | None = None,
    all_violations: bool = False,
    fingerprint: bool = False,
    limits: Limits = Limits(),
    ablate: Sequence[str] = (),
    trace_out: Path | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    witnesses: bool = True,
) -> CheckRun:
    if scenario is not None:
        prog: Any = ScenarioHost(scenario, faults=faults, ablate=ablate)
        title = f"{scenario.file}: every interleaving of {len(scenario.threads)} thread(s)"
        use_sym = False if symmetry is None else symmetry
        wids: list[str] = []
    else:
        assert config is not None
        prog = AnyHost(config.universe(), faults=faults, ablate=ablate)
        title = f"host any, config {config.describe()}"
        use_sym = True if symmetry is None else symmetry
        u = prog.u
        wids = [w.id for w in WITNESSES if w.possible(u, faults)] if witnesses else []
    if use_sym and scenario is not None:
        raise InputError("symmetry reduction applies to --host any only: a scenario names "
                         "its objects apart")
    canon = Symmetry(prog.engine.layout).canonical if use_sym else None
    res = explore(prog, limits, stop_at_first=not all_violations, progress=progress,
                  canon=canon, fingerprint=fingerprint,
                  witnesses=witness_fn(prog, wids) if wids else None, witness_ids=wids)
    run = CheckRun(title, prog, res, use_sym)
    run.labels = [labels_of(prog, cx) for cx in res.violations]
    run.witness_labels = {w: labels_of(prog, cx) for w, cx in res.witnesses.items() if cx}
    run.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if trace_out is not None:
        run.files = write_traces(run, trace_out)
    return run


def write_traces(run: CheckRun, out: Path) -> list[list[str]]:
    from .traces import any_host_tdx, dumps_itf, itf, scenario_tdx

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for cx, labels in zip(run.result.violations, run.labels, strict=True):
        base = out / cx.invariant
        title = f"tdxcheck counterexample: {run.title}"
        if isinstance(run.prog, AnyHost):
            text = any_host_tdx(run.prog, cx, title)
        else:
            text = scenario_tdx(run.prog, cx, title)
        base.with_suffix(".tdx").write_text(text)
        base.with_suffix(".itf.json").write_text(dumps_itf(itf(run.prog, cx, labels)))
        files.append([str(base.with_suffix(".tdx")), str(base.with_suffix(".itf.json"))])
    return files
