"""``tdxcheck check --host kvm`` for people and tools: the verdict, the violations with their
traces, the leaks KVM chose on its error paths, the error paths reached (``kvm_text``,
``kvm_json``).  ``checker/kvm/`` returns the ``KvmRun``; this file only formats it."""

from __future__ import annotations

from typing import Any

from tdxcheck.checker.kvm import FIXES, KvmRun

_PREEMPT_TEXT = {
    "all": "every reschedule point of a thread with a vCPU loaded (CONFIG_PREEMPTION)",
    "init_vcpu": "the KVM_TDX_INIT_VCPU window only (TDH.VP.INIT .. the state store)",
}


def outcomes_text(run: KvmRun, traces: bool = True) -> list[str]:
    """The KVM_TDX_INIT_VCPU window's outcomes: each reached one with its shortest run,
    then how many combinations no run reaches."""
    got = [o for o in run.outcomes if o["length"] is not None]
    head = f"KVM_TDX_INIT_VCPU window outcomes (runs with no fault injected): {len(got)} reached"
    out = [head]
    for o in got:
        if o["pages"] is None:
            end = "KVM's books agree with the module again at its last step"
        else:
            end = "held at the end: " + (", ".join(
                [*o["pages"], *(f"HKID {h}" for h in o["hkids"])]) or "nothing")
        out.append(f"- {o['outcome']}; {o['where']}; {o['leak']}: shortest run "
                   f"{o['length']} steps; {end}")
        if traces:
            out += [f"    {i}. {step}" for i, step in enumerate(o["trace"], start=1)]
    miss = len(run.outcomes) - len(got)
    if miss:
        out.append(f"- no run reaches {'the other' if got else 'any of the'} {miss} "
                   "combination(s) of outcome x window point x leak")
    return out


def kvm_text(run: KvmRun, traces: bool = True) -> str:
    """The verdict, the violations with their traces, and the leaks KVM chose, as text."""
    r = run.result
    out = [f"tdxcheck check: host kvm, config {run.config.describe()}"
           + (", module faults on" if run.faults else "")
           + (f", preemption: {_PREEMPT_TEXT[run.prog.preempt]}" if run.prog.preempt else "")]
    mut = run.prog.mutant
    if mut:
        out.append(f"mutant: {mut}")
    if run.prog.fix:
        out.append(f"fix: {run.prog.fix} ({FIXES[run.prog.fix]})")
    out.append(f"verdict: {r.verdict}" + (f" ({r.reason})" if r.reason else ""))
    out.append(f"states: {r.states:,}, transitions: {r.transitions:,}, depth: {r.depth}, "
               f"{r.seconds:.2f}s")
    for v in run.violations:
        out.append("")
        out.append(f"[{v['invariant']}] violated after {v['length']} step(s): {v['message']}")
        if traces:
            out += [f"  {i}. {step}" for i, step in enumerate(v["trace"], start=1)]
    if run.leaks:
        out.append("")
        out.append(f"leaks on error paths (KVM's choice, not violations): {len(run.leaks)}")
        for lk in run.leaks:
            held = ", ".join([*lk["pages"], *(f"HKID {h}" for h in lk["hkids"])])
            out.append(f"- after {lk['site']}: {held} (shortest path {lk['length']} steps)")
            if traces:
                out += [f"    {i}. {step}" for i, step in enumerate(lk["trace"], start=1)]
    if run.outcomes:
        out.append("")
        out += outcomes_text(run, traces)
    reached = [s for s, n in run.errors_reached.items() if n is not None]
    out.append("")
    out.append(f"KVM error paths reached: {len(reached)}/{len(run.errors_reached)}"
               + (": " + "; ".join(reached) if reached else ""))
    if run.witnesses:
        got = [w for w, n in run.witnesses.items() if n is not None]
        miss = run.witnesses_missing
        out.append(f"witnesses reached: {len(got)}/{len(run.witnesses)}"
                   + (f"; NOT reached: {', '.join(miss)}" if miss else ""))
    return "\n".join(out)


def kvm_json(run: KvmRun) -> dict[str, Any]:
    r = run.result
    return {
        "host": "kvm",
        "config": run.config.name,
        "faults": run.faults,
        "mutant": run.prog.mutant,
        "preempt": run.prog.preempt,
        "preempt_init": run.prog.preempt == "init_vcpu",
        "fix": run.prog.fix,
        "verdict": r.verdict,
        "reason": r.reason or None,
        "states": r.states,
        "transitions": r.transitions,
        "depth": r.depth,
        "seconds": round(r.seconds, 3),
        "violations": run.violations,
        "leaks": run.leaks,
        "errors_reached": run.errors_reached,
        "witnesses": [{"id": w, "reached": n is not None, "length": n}
                      for w, n in run.witnesses.items()],
        "outcomes": [{k: v for k, v in o.items() if k != "cx"} for o in run.outcomes],
    }
