"""A cell's shortest trace as a replayable ``.tdx`` scenario (scenario-format.md).

The run is made concrete from the initial state (``run.concrete_run``), and every model
action of every move becomes one scenario line: the typed wrapper where its TD or vCPU is
one a ``tdh_mng_create``/``tdh_vp_create`` line named, else the untyped ``seamcall`` form
(a page of the wrong type, the NULL page, a page address as an HKID).  The file says
``wrapper_clflush=0`` and writes every CLFLUSH, the wrapper's or the caller's, as its own
``clflush`` line, so a hand-over without one replays as it ran.  Each SEAMCALL carries the
status it returned as its expectation, and a fault that fired its ``fault=``.  In an
interleaved run (``--interleave``) a helper's steps are moves of their own, with the guest's
or a vCPU thread's moves between them: each move's lines follow a comment naming it (the
helper, and whether this is its first or a later step), so the split shows in the file.
"""

from __future__ import annotations

from dataclasses import replace

from tdxcheck.checker.explore.traces import _Namer, config_line, raw_seamcall
from tdxcheck.model.rule import LEAVES, Fault
from tdxcheck.model.status import status_name

from .host import PA_AS_HKID, ApiHost, Rec
from .run import Cell, VariantRun, concrete_run

_HOST_PAGE = ("page_alloc", "page_free", "clear_page")


def cell_tdx(vr: VariantRun, cell: Cell) -> str:
    """The scenario of ``cell``'s worst finding (its shortest trace)."""
    host = vr.host
    f = cell.worst
    assert f is not None and cell.path
    namer = _Namer(host.u)
    if f.outcome == "silent":
        what = f"it breaks [{f.invariant}]: {f.message}"
    elif f.outcome == "harmless":
        what = "the module accepts it and nothing it harms breaks"
    else:
        what = f"the module refuses it: {f.status} ({f.check})"
    lines = [f"# tdxcheck apis: variant {vr.variant.name}, config {vr.config.name}",
             f"# class {cell.cls.number} {cell.cls.id} ({cell.cls.title}): {cell.verdict}",
             f"# the last step is the mistake; {what}",
             (f"# {len(cell.path)} move(s), breadth-first (shortest); replay: tdxcheck "
              "replay THIS_FILE"),
             config_line(replace(host.u.platform, wrapper_clflush=0))]
    for k, (eid, run) in enumerate(concrete_run(vr, cell.path), 1):
        if vr.interleaved:
            who = " (guest / vCPU thread)" if host.thread[host.edges[eid][0]] else ""
            lines.append(f"# move {k}{who}: {host.label(eid)}")
        for rec in run.recs:
            lines += rec_lines(host, namer, rec)
    return "\n".join(lines) + "\n"


def rec_lines(host: ApiHost, namer: _Namer, rec: Rec) -> list[str]:
    """The scenario line(s) of one model action of a move."""
    u = host.u
    a = rec.action
    out = [f"clflush page={u.page_name(p)}" for p in a.clflush]
    if a.kind in _HOST_PAGE:
        return out + [f"{a.kind} page={u.page_name(a.arg('page'))}"]
    if a.kind in ("hkid_alloc", "hkid_free"):
        return out + [f"{a.kind} hkid={a.arg('hkid')}"]
    if a.kind == "check_no_leak":
        return out + ["check_no_leak"]
    bare = replace(a, clflush=())
    untyped = a.kind in LEAVES and (
        any(a.arg(k) == 0 for k in ("tdr", "tdvpr", "page") if a.arg(k) is not None)
        or PA_AS_HKID in (a.arg("hkid"), a.arg("keyid")))
    if untyped:
        text = raw_seamcall(bare, u.page_name)
    else:  # the namer's untyped fallback CLFLUSHes what it hands over: ours are above
        text = "\n".join(x for x in namer.step(bare, rec.pre, host.lay).split("\n")
                         if not x.startswith("clflush "))
    if rec.status is not None and a.kind in LEAVES and LEAVES[a.kind].family != "guest":
        if rec.where >= 0:
            step = host.engine.compiled(a).rule.steps[rec.where]
            if isinstance(step, Fault):
                text += f" fault={status_name(step.status)}"
        text += f" -> {status_name(rec.status)}"
    return out + text.split("\n")
