"""Reporters: turn engine results into text for people and JSON for tools.

Text reads like a review mail: numbered wrapper calls with named operands, the status each
returned, only the fields that changed, every violation in words at the step that caused
it, and how to replay.  JSON follows scenario-format.md §6 exactly.
"""

from __future__ import annotations

import json
from typing import Any

from tdxcheck.checker.explore.replay import ReplayResult
from tdxcheck.model.status import status_hex, status_name

_MAX_CHANGES = 12


def status_text(code: int) -> str:
    """``TDX_OPERAND_BUSY|KOT (0x80000200000000BA)``: the name and the 64-bit value."""
    return f"{status_name(code)} ({status_hex(code)})"


def replay_text(r: ReplayResult, verbose: bool = True) -> str:
    out: list[str] = []
    nviol = len(r.violations)
    for st in r.steps:
        bad = st.violations or not st.ok
        if not verbose and not bad:
            continue
        status = f" -> {status_text(st.status)}" if st.status is not None else ""
        call = st.calls[0] if len(st.calls) == 1 else st.text
        head = f"{st.index + 1:3d}. {call}{status}"
        out.append(f"{head:<72} # line {st.line}")
        if st.failed_check:
            out.append(f"       failed check: {st.failed_check}")
        if st.expected is not None and not st.ok:
            out.append(f"       MISMATCH: expected {st.expected}")
        if st.note:
            out.append(f"       MISMATCH: {st.note}")
        shown = st.changes[:_MAX_CHANGES]
        for c in shown:
            out.append(f"       {c.label}: {c.old} -> {c.new}")
        if len(st.changes) > len(shown):
            out.append(f"       ... and {len(st.changes) - len(shown)} more fields")
        for v in st.violations:
            out.append(f"   !! {r.file}:{st.line}: [{v.invariant}] {v.message}")
    verdict = "ok" if r.ok else "FAILED"
    out.append("")
    agree = (f", {len(r.disagreements)} model/executor disagreement(s)"
             if r.engine == "both" else "")
    out.append(f"{r.file}: {len(r.steps)} steps, {nviol} violation(s), "
               f"{len(r.mismatches)} mismatch(es){agree}: {verdict}")
    for st, v in r.violations:
        out.append(f"{r.file}:{st.line}: error: [{v.invariant}] violated at step {st.index + 1}: "
                   f"{v.message}")
    for m in r.mismatches:
        out.append(f"{r.file}:{m.line}: error: step {m.step_index + 1}: {m.message}")
    for d in r.disagreements:
        out.append(f"{r.file}:{d.line}: error: step {d.step_index + 1}: model and executor "
                   f"disagree: model {d.model}; executor {d.executor}")
    if r.engine != "model":
        out.append(f"executor: {len(r.consequences)} consequence(s)"
                   + (":" if r.consequences else ""))
        for c in r.consequences:
            when = ("at the end of the run" if c.kind.startswith("latent-")  # type: ignore
                    else f"step {c.step_index + 1}")  # type: ignore[attr-defined]
            out.append(f"  {when}: {c.kind}: {c.message}")  # type: ignore[attr-defined]
        if (r.violations or r.mismatches) and not r.consequences:
            out.append("  no byte-level damage in this run, now or latent at its end: the "
                       "caches and memory hold nothing that will hurt (the module refuses the "
                       "next misuse, or the lines the model must assume dirty were clean here)")
    if not r.ok:
        out.append(f"reproduce: tdxcheck replay {r.file}"
                   + "".join(f" --ablate {a}" for a in r.ablate))
    return "\n".join(out)


def replay_json(r: ReplayResult) -> dict[str, Any]:
    """scenario-format.md §6.  ``status_code`` is the 64-bit value as a hex string (a JSON
    number would lose bits above 2**53 in JavaScript and jq); every entry that points at a
    step has ``step`` (1-based, as the text prints it) and ``step_index`` (0-based, kept for
    compatibility); a step's own text is ``text`` (and ``step`` in ``steps[]``, as §6 has it)."""
    return {
        "steps": [
            {
                "line": st.line,
                "step": st.text,
                "text": st.text,
                "index": st.index + 1,
                "calls": st.calls,
                "status": status_name(st.status) if st.status is not None else None,
                "status_code": status_hex(st.status) if st.status is not None else None,
                "expected": st.expected,
                "ok": st.ok,
            }
            for st in r.steps
        ],
        "violations": [
            {"invariant": v.invariant, "line": st.line, "step": st.index + 1,
             "step_index": st.index, "message": v.message}
            for st, v in r.violations
        ],
        "mismatches": [
            {"line": m.line, "step": m.step_index + 1, "step_index": m.step_index,
             "expected": m.expected, "actual": m.actual, "message": m.message}
            for m in r.mismatches
        ],
        **({} if r.engine == "model" else {
            "consequences": [_consequence_json(c) for c in r.consequences],
            "disagreements": [{"line": d.line, "step": d.step_index + 1,
                               "step_index": d.step_index, "model": d.model,
                               "executor": d.executor} for d in r.disagreements],
        }),
    }


def _consequence_json(c: Any) -> dict[str, Any]:
    """A consequence: kind, step_index, message; latent ones (``latent-*``, at the end of the
    run) also page, keyid, package and lines."""
    out: dict[str, Any] = {"kind": c.kind, "step": c.step_index + 1,
                           "step_index": c.step_index, "message": c.message}
    if c.kind.startswith("latent-"):
        out.update(page=c.page, keyid=c.keyid, package=c.package,
                   lines=c.count if c.keyid is not None else None)
    return out


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)


# ---------------------------------------------------------------------------- explorer
def counterexample_text(prog: Any, cx: Any, labels: list[str], reproduce: str = "") -> str:
    """A counterexample as numbered calls, statuses, changed fields, the invariant in words."""
    lay = prog.engine.layout
    n = lay.size
    out = [f"[{cx.invariant}] violated after {cx.length} step(s): {cx.message}"]
    for k, ((eid, status), label) in enumerate(zip(cx.path, labels, strict=True), start=1):
        st = f" -> {status_text(status)}" if status is not None else ""
        fault = prog.edges[eid].fault
        out.append(f"  {k}. {label}{' [fault ' + fault + ']' if fault else ''}{st}")
        a, b = cx.states[k - 1], cx.states[k]
        changes = [(i, x, y) for i, (x, y) in enumerate(zip(a[:n], b[:n], strict=True))
                   if x != y]
        for i, x, y in changes[:_MAX_CHANGES]:
            out.append(f"       {lay.label(i)}: {lay.show(i, x)} -> {lay.show(i, y)}")
        if len(changes) > _MAX_CHANGES:
            out.append(f"       ... and {len(changes) - _MAX_CHANGES} more fields")
    if reproduce:
        out.append(f"  reproduce: {reproduce}")
    return "\n".join(out)


def check_scope_text(u: Any, any_host: bool, symmetry_order: int | None,
                     witnesses: dict[str, Any]) -> list[str]:
    """What ``check`` checked, in words: the invariants (id and its sentence, in every
    reachable state and step), the witnesses (what a reached goal means, and which), the
    symmetry reduction, and what was not checked and where it is checked."""
    from tdxcheck.checker.explore.programs import not_covered, partly_covered
    from tdxcheck.properties import INVARIANTS
    from tdxcheck.properties.witnesses import WITNESSES

    out: list[str] = []
    if symmetry_order is not None:
        out.append(f"symmetry: on: states that differ only in which TD, vCPU, page or HKID "
                   f"plays which part are one state ({symmetry_order:,} renamings of this "
                   "configuration's objects); exact, so the verdict and counterexample "
                   "lengths are those of the full space")
    skip = not_covered(u) if any_host else {}
    part = set(partly_covered(u)) if any_host else set()
    checked = [inv for inv in INVARIANTS if inv.id not in skip]
    width = max([len(inv.id) for inv in checked] + [10])
    out.append(f"invariants checked in every reachable state and step ({len(checked)}):")
    for inv in checked:
        note = " (its module clauses; the host clauses are the host's)" if inv.id in part else ""
        out.append(f"  {inv.id:<{width}}  {inv.summary}{note}")
    if witnesses:
        summary = {w.id: w.summary for w in WITNESSES}
        got = [w for w, cx in witnesses.items() if cx is not None]
        out.append(f"witnesses (states a run must reach, so that \"holds\" is not vacuous): "
                   f"{len(got)}/{len(witnesses)} reached")
        for w, cx in witnesses.items():
            when = f"reached in {cx.length} step(s)" if cx is not None else "NOT reached"
            out.append(f"  {w:<{width}}  {when}: {summary.get(w, '')}")
    if skip:
        out.append("not checked here (--host any makes SEAMCALLs only; these are the host's "
                   "obligations): " + ", ".join([*skip, *(f"the host clauses of {i}"
                                                       for i in sorted(part))])
                   + "; check them with a scenario file or --host kvm")
    return out


def explore_json(result: Any, traces: list[list[str]], witnesses: list[dict[str, Any]],
                 lines: list[int | None] | None = None) -> dict[str, Any]:
    """``check --json``: the verdict, counts, each violation with its trace (a step per
    entry: ``step`` 1-based, the call, its status and 64-bit value) and, for a scenario, the
    ``line`` of the step that broke it; the witnesses."""
    return {
        "verdict": result.verdict,
        "reason": result.reason or None,
        "states": result.states,
        "transitions": result.transitions,
        "depth": result.depth,
        "seconds": round(result.seconds, 3),
        "violations": [
            {"invariant": cx.invariant, "message": cx.message, "length": cx.length,
             **({"line": lines[i]} if lines and lines[i] is not None else {}),
             "trace": [{"step": k, "call": label,
                        "status": None if status is None else status_name(status),
                        "status_code": None if status is None else status_hex(status)}
                       for k, ((_eid, status), label) in enumerate(
                           zip(cx.path, trace, strict=True), start=1)]}
            for i, (cx, trace) in enumerate(zip(result.violations, traces, strict=True))
        ],
        "witnesses": witnesses,
    }
