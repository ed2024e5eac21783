"""Running the kvm host: ``run_kvm`` (explore every interleaving, collect violations, leaks
on KVM's error paths and the error paths reached, as data: ``KvmRun``), ``trace_of`` (a
path as KVM's steps with their calls), ``kvm_tdx`` (a path as a replayable scenario)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tdxcheck.checker.explore.traces import raw_seamcall
from tdxcheck.model.actions import Action
from tdxcheck.model.rule import LEAVES
from tdxcheck.model.state import State
from tdxcheck.model.status import status_name

from .config import KvmConfig, kvm_config
from .host import KvmHost


@dataclass
class KvmRun:
    """The result of exploring the kvm host: data for the reporters."""

    config: KvmConfig
    prog: KvmHost
    result: Any  # ExploreResult
    faults: bool
    violations: list[dict[str, Any]] = field(default_factory=list)
    leaks: list[dict[str, Any]] = field(default_factory=list)
    errors_reached: dict[str, int | None] = field(default_factory=dict)
    witnesses: dict[str, int | None] = field(default_factory=dict)
    # the preemption mode: every outcome class x window point x leak of the KVM_TDX_INIT_VCPU
    # window, with the shortest run that shows it (``length``/``trace`` None: unreachable)
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return str(self.result.verdict)

    @property
    def witnesses_missing(self) -> list[str]:
        return [w for w, n in self.witnesses.items() if n is None]


def trace_of(prog: KvmHost, cx: Any) -> list[str]:
    """A counterexample's steps: what KVM did (the kernel function), its thread, and the
    wrapper calls it made with the statuses they returned."""
    out = []
    for (eid, _status), s in zip(cx.path, cx.states, strict=False):
        calls = prog.calls_of(s, eid)
        fault = prog.edges[eid].fault
        head = prog.label(eid) + (f" [fault {fault}]" if fault else "")
        out.append(head + (": " + "; ".join(calls) if calls else ""))
    return out


def run_kvm(config: str | KvmConfig = "tiny", *, faults: bool = False,
            mutant: str | None = None, ablate: Sequence[str] = (), pinning: bool = True,
            limits: Any = None, progress: Callable[[dict[str, float]], None] | None = None,
            preempt: str | None = None, fix: str | None = None) -> KvmRun:
    """``tdxcheck check --host kvm``: explore every interleaving of KVM's threads (and, with
    ``faults``, every module fault the environment can cause); every invariant is checked.
    Leaks on paths with an environment event are collected as data (``leaks``), one
    shortest path per KVM error site that chose to leak.  ``preempt`` (``all`` or
    ``init_vcpu``) lets a thread that has a vCPU loaded be preempted and resume on another
    CPU (see ``KvmHost``); the outcomes of the KVM_TDX_INIT_VCPU window are then collected
    (``outcomes``).  ``fix`` applies one of ``FIXES``."""
    from tdxcheck.checker.explore.bfs import Limits, explore
    from tdxcheck.checker.explore.check import witness_fn
    from tdxcheck.properties.witnesses import WITNESSES

    cfg = kvm_config(config) if isinstance(config, str) else config
    prog = KvmHost(cfg, faults=faults, ablate=ablate, mutant=mutant, pinning=pinning,
                   preempt=preempt, fix=fix)
    wids = [w.id for w in WITNESSES if w.possible(prog.u, faults)]
    model_w = witness_fn(prog, wids) if wids else (lambda s: [])

    def goals(s: State) -> list[str]:
        return [*model_w(s), *prog.goals(s)]

    res = explore(prog, limits or Limits(), stop_at_first=False, progress=progress,
                  witnesses=goals, witness_ids=[*wids, *prog.goal_ids()])
    run = KvmRun(cfg, prog, res, faults)
    for cx in res.violations:
        run.violations.append({"invariant": cx.invariant, "message": cx.message,
                               "length": cx.length, "trace": trace_of(prog, cx)})
    for gid, wx in res.witnesses.items():
        if gid.startswith("error["):
            run.errors_reached[gid[6:-1]] = wx.length if wx else None
        elif gid.startswith("leak["):
            if wx is None:
                continue
            pages, hkids = prog.held_at_end(wx.states[-1])
            run.leaks.append({"site": gid[5:-1], "length": wx.length, "pages": pages,
                              "hkids": hkids, "errors": prog.errors_of(wx.states[-1]),
                              "trace": trace_of(prog, wx)})
        elif gid.startswith("outcome["):
            cls, where, leak = gid[8:-1].split("; ")
            row: dict[str, Any] = {"outcome": cls, "where": where, "leak": leak,
                                   "length": None, "trace": None}
            if wx is not None:
                end = wx.states[-1]
                # a healed run stops where the books agree again (not the end of the run)
                pages, hkids = prog.held_at_end(end) if prog.terminal(end) else (None, None)
                row.update(length=wx.length, trace=trace_of(prog, wx), pages=pages,
                           hkids=hkids, errors=prog.errors_of(end), cx=wx)
            run.outcomes.append(row)
        else:
            run.witnesses[gid] = wx.length if wx else None
    run.leaks.sort(key=lambda d: (d["length"], d["site"]))
    return run


def kvm_tdx(prog: KvmHost, cx: Any, title: str = "") -> str:
    """A counterexample as a replayable scenario (scenario-format.md): every model action of
    every step, typed wrappers with the status each returned (``-> STATUS``) and the fault
    injected (``fault=``); a wrapper KVM called without its CLFLUSH is written in the untyped
    form; KVM's reaction to an error status (KVM_BUG_ON, an error path) is a comment.  A
    trace of one of KVM's end-of-run properties (``no-leak``, ``vm-bugged``,
    ``loud-failure``) or a window outcome's run that ends with the VM destroyed ends with
    ``check_no_leak``."""
    from tdxcheck.checker.explore.traces import _Namer, config_line

    u = prog.u
    namer = _Namer(u)
    what = (f"# a run showing {cx.invariant}" if cx.invariant.startswith("outcome[")
            else f"# counterexample to [{cx.invariant}]: {cx.message}")
    lines = [f"# {title or 'tdxcheck counterexample, host kvm'}", what,
             f"# {cx.length} KVM step(s) (breadth-first: shortest), config "
             f"{prog.config.name}" + (f", mutant {prog.mutant}" if prog.mutant else ""),
             config_line(u.platform)]
    if prog.engine.ablate:
        lines.insert(3, "# found with module checks removed; reproduce: tdxcheck replay "
                     "THIS_FILE" + "".join(f" --ablate {a}" for a in sorted(prog.engine.ablate)))
    for (eid, _status), s in zip(cx.path, cx.states, strict=False):
        lines.append(f"# {prog.label(eid)}")
        for a, fault, status, before in prog.actions_of(s, eid):
            lines.append(_scenario_line(prog, namer, a, fault, status, before))
        # what KVM did with an error status (the scenario engines see only the status)
        lines += [f"#   -> {c}" for c in prog.calls_of(s, eid)
                  if c.startswith(("KVM_BUG_ON (", "error (", "silent ("))]
    kvm_level = cx.invariant in ("no-leak", "vm-bugged", "loud-failure") or \
        cx.invariant.startswith("outcome[")
    if kvm_level and prog.terminal(cx.states[-1]):
        lines.append("check_no_leak")
    return "\n".join(lines) + "\n"


def _scenario_line(prog: KvmHost, namer: Any, a: Action, fault: int | None,
                   status: int | None, before: State) -> str:
    u = prog.u
    o = a.kwargs
    if a.kind in ("hkid_alloc", "hkid_free"):
        return f"{a.kind} hkid={o['hkid']}"
    if a.kind in ("page_alloc", "page_free", "clflush", "clear_page"):
        return f"{a.kind} page={u.page_name(o['page'])}"
    ldef = LEAVES.get(a.kind)
    if ldef is not None and ldef.hands and not a.clflush and ldef.family != "guest":
        text = raw_seamcall(a, u.page_name)  # no CLFLUSH: the typed wrapper would flush
    else:
        text = namer.step(a, before, prog.lay)
    if fault is not None:
        text += f" fault={status_name(fault)}"
    if status is not None:
        text += f" -> {status_name(status)}"
    return text
