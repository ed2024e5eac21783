"""``tdxcheck apis`` as text and JSON: the classes x variants table, the feature credit
table, and the trace files of the cells."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tdxcheck.checker.analyses.apis.run import (
    CAUGHT,
    HARMLESS,
    IMPOSSIBLE,
    NA,
    NOT_REACHED,
    SILENT,
    ApisResult,
    Cell,
    VariantRun,
)

_LEGEND = ("cell: the worst outcome of the mistake under that API, with the trace length in "
           "moves; SILENT = accepted, then an invariant it harms breaks (named); caught = "
           "refused by the module (status); harmless = accepted, nothing it harms breaks; "
           "impossible = no call of the API can make it (types, helpers), or an exhaustive run "
           "never did; not reached = a limit cut the run first; n/a = this configuration "
           "cannot show it; * = refused only for another reason")


def _cell(c: Cell) -> str:
    if c.verdict == IMPOSSIBLE and c.note.startswith("cannot be written"):
        return "impossible (types)"
    if c.verdict == IMPOSSIBLE:
        return "impossible"
    return c.summary()


def apis_table(res: ApisResult) -> str:
    """Classes x variants, a summary row, states and seconds per variant, then the notes."""
    runs = res.runs
    cols = [[_cell(c) for c in r.cells] for r in runs]
    heads = [r.variant.name for r in runs]
    names = [f"{c.number:>2} {c.id}" for c in res.classes]
    w0 = max(len(n) for n in [*names, "silent/caught/impossible"])
    ws = [max(len(h), *(len(x) for x in col)) for h, col in zip(heads, cols, strict=True)]
    out = [f"{'class':<{w0}}  " + "  ".join(f"{h:<{w}}" for h, w in zip(heads, ws, strict=True))]
    for i, n in enumerate(names):
        out.append(f"{n:<{w0}}  " + "  ".join(f"{col[i]:<{w}}" for col, w in
                                             zip(cols, ws, strict=True)))
    rows = [("silent/caught/impossible", [_counts(r) for r in runs]),
            ("states", [f"{r.states:,}" + ("" if r.complete else " (cut)") for r in runs]),
            ("seconds", [f"{r.seconds:.1f}" for r in runs])]
    out.append("")
    for label, vals in rows:
        out.append(f"{label:<{w0}}  " + "  ".join(f"{v:<{w}}" for v, w in
                                                  zip(vals, ws, strict=True)))
    out.append("")
    out.append(_LEGEND)
    notes = []
    for r in runs:
        if not r.complete:
            notes.append(f"{r.variant.name}: {r.reason} after {r.states:,} states: "
                         "unreached cells say not reached, never impossible")
        for c in r.cells:
            if c.note and c.verdict not in (NA,) and not (
                    c.verdict == IMPOSSIBLE and c.note.startswith("never reached")):
                notes.append(f"{r.variant.name}, {c.cls.id}: {c.note}")
    na: dict[tuple[str, str], list[str]] = {}  # (class, why) -> the variants it holds for
    for r in runs:
        for c in r.cells:
            if c.verdict == NA:
                na.setdefault((c.cls.id, c.note), []).append(r.variant.name)
    notes += [f"{k}: n/a" + ("" if len(vs) == len(runs) else f" ({', '.join(vs)})")
              + f", {why}" for (k, why), vs in na.items()]
    if notes:
        out.append("notes:")
        out += [f"  {n}" for n in notes]
    return "\n".join(out)


def _counts(r: VariantRun) -> str:
    k = r.counts()
    return f"{k[SILENT]}/{k[CAUGHT]}/{k[IMPOSSIBLE]}"


def apis_details(res: ApisResult) -> str:
    """Per cell: its finding (status and refusing check, or invariant and message) and its
    shortest trace."""
    out = []
    for r in res.runs:
        for c in r.cells:
            f = c.worst
            if f is None:
                continue
            what = (f"{f.invariant}: {f.message}" if f.outcome == SILENT else
                    f"{f.status} ({f.check})" if f.outcome.startswith(CAUGHT) else
                    f.message or "nothing it harms breaks")
            out.append(f"{r.variant.name} / {c.cls.number} {c.cls.id}: {c.verdict}, {what}")
            out += [f"    {i}. {t}" for i, t in enumerate(c.trace, 1)]
    return "\n".join(out)


def apis_text(res: ApisResult, details: bool = False) -> str:
    cfg = res.config
    head = (f"tdxcheck apis: config {cfg.describe()}"
            + (", module faults on" if res.faults else ""))
    parts = [head]
    if res.interleave:
        split = [r.variant.name for r in res.runs if r.interleaved]
        parts.append("interleaved: each combined helper runs step by step, the guest / vCPU "
                     "thread's moves between its steps (" + (
                         "split in " + ", ".join(split) + "; symmetry reduction off there"
                         if split else "no variant here has a helper of more than one step")
                     + ")")
    parts += ["", apis_table(res)]
    if details:
        parts += ["", apis_details(res)]
    return "\n".join(parts)


def _finding(f: Any) -> dict[str, Any] | None:
    if f is None:
        return None
    return {"outcome": f.outcome, "length": f.length, "status": f.status or None,
            "check": f.check or None, "invariant": f.invariant or None,
            "message": f.message or None, "also": f.also or None, "move": f.action}


def apis_json(res: ApisResult) -> dict[str, Any]:
    return {
        "faults": res.faults,
        "interleave": res.interleave,
        "classes": [{"number": c.number, "id": c.id, "title": c.title} for c in res.classes],
        "variants": [{
            "name": r.variant.name, "title": r.variant.title, "source": r.variant.source,
            "features": sorted(r.variant.features), "signatures": r.variant.signatures(),
            "states": r.states, "transitions": r.transitions, "depth": r.depth,
            "seconds": r.seconds, "complete": r.complete, "limit": r.reason or None,
            "interleaved": r.interleaved, "symmetry": r.symmetry, "counts": r.counts(),
            "cells": [{"class": c.cls.id, "verdict": c.verdict, "note": c.note or None,
                       "summary": _cell(c), "finding": _finding(c.worst),
                       "found": {k: _finding(v) for k, v in sorted(c.found.items())},
                       "trace": c.trace} for c in r.cells],
        } for r in res.runs],
    }


def write_traces(res: ApisResult, out: Path) -> list[str]:
    """Each cell's shortest trace as DIR/<variant>/<NN>-<class>.tdx."""
    from tdxcheck.checker.analyses.apis.traces import cell_tdx

    files = []
    for r in res.runs:
        for c in r.cells:
            if c.worst is None:
                continue
            d = out / r.variant.name
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"{c.cls.number:02d}-{c.cls.id}.tdx"
            p.write_text(cell_tdx(r, c))
            files.append(str(p))
    return files


def consequences(files: Sequence[str]) -> dict[str, list[str]]:
    """Replay each trace on both engines: the executor's consequences (what the bug does
    to real bytes), and any disagreement, per file."""
    from tdxcheck.checker.explore.replay import replay
    from tdxcheck.checker.scenario import parse_file

    out = {}
    for f in files:
        r = replay(parse_file(f), run="both")
        lines = [f"{x.kind}: {x.message}" for x in r.consequences]
        lines += [f"DISAGREEMENT at line {d.line}: model {d.model}, executor {d.executor}"
                  for d in r.disagreements]
        lines += [f"MISMATCH at line {m.line}: {m.message}" for m in r.mismatches]
        out[f] = lines
    return out


def credit_table(cr: Any) -> str:
    """Features x classes: what each class becomes with that feature off, for the classes
    the base variant makes impossible; then each class's credit."""
    removed = cr.removed()
    feats = list(cr.runs)
    w0 = max([len(f) for f in feats] + [len("feature off")])
    short = {c.cls.id: f"{c.cls.number}" for c in cr.base.cells}
    head = f"{'feature off':<{w0}}  " + " ".join(f"{short[c]:>4}" for c in removed) + \
        "   states  seconds"
    out = [(f"feature credit: {cr.base.variant.name} ({cr.base.config.name}) with one "
            "feature off; columns: the classes it makes impossible"), head]
    code = {CAUGHT: "c", SILENT: "S", HARMLESS: "h", IMPOSSIBLE: ".", NOT_REACHED: "?",
            NA: "-"}
    for f, vr in cr.runs.items():
        out.append(f"{f:<{w0}}  " + " ".join(f"{code[vr.cell(c).verdict]:>4}" for c in removed)
                   + f"  {vr.states:>7,}  {vr.seconds:7.1f}")
    out.append("(S silent, c caught, h harmless, . still impossible, ? not reached in a "
               "limited run)")
    out.append("credit:")
    for c in removed:
        cell = cr.base.cell(c)
        by = cr.credited(c)
        if by:
            out.append(f"  {cell.cls.number:>2} {c}: {', '.join(by)}")
        else:
            pairs = cr.pair_credit(c)
            why = ("; two at a time: " + "; ".join(f"{a} + {b}" for a, b in pairs)) if pairs \
                else (": no two features either" if cr.pairs else "")
            out.append(f"  {cell.cls.number:>2} {c}: no single feature (protected more than "
                       f"once){why}")
    return "\n".join(out)


def credit_json(cr: Any) -> dict[str, Any]:
    return {"base": cr.base.variant.name, "config": cr.base.config.name,
            "removed": cr.removed(),
            "features": {f: {"states": vr.states, "seconds": vr.seconds,
                             "complete": vr.complete,
                             "cells": {c: vr.cell(c).verdict for c in cr.removed()}}
                         for f, vr in cr.runs.items()},
            "credit": {c: cr.credited(c) for c in cr.removed()},
            "pairs": {c: [list(p) for p in cr.pair_credit(c)] for c in cr.removed()}}
