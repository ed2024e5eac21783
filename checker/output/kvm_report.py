"""``tdxcheck check --host kvm`` for people and tools: the verdict, the violations with their
traces, the leaks KVM chose on its error paths, the error paths reached (``kvm_text``,
``kvm_json``).  ``checker/kvm/`` returns the ``KvmRun``; this file only formats it."""

from __future__ import annotations

from typing import Any

from tdxcheck.checker.kvm import KvmRun


def kvm_text(run: KvmRun, traces: bool = True) -> str:
    """The verdict, the violations with their traces, and the leaks KVM chose, as text."""
    r = run.result
    out = [f"tdxcheck check: host kvm, config {run.config.describe()}"
           + (", module faults on" if run.faults else "")
           + (", INIT_VCPU preemption window on" if run.prog.preempt_init else "")]
    mut = run.prog.mutant
    if mut:
        out.append(f"mutant: {mut}")
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
        "preempt_init": run.prog.preempt_init,
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
    }
