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

from tdxcheck.checker.explore.bfs import Limits, explore
from tdxcheck.checker.explore.programs import AnyHost, any_host_actions, make_config
from tdxcheck.checker.explore.symmetry import Symmetry
from tdxcheck.checker.scenario import InputError
from tdxcheck.model.actions import rule_of
from tdxcheck.model.rule import Check, Ctx
from tdxcheck.model.state import Layout, Universe


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


def _explore_any(config_name: str, check: str, limits: Limits,
                 overrides: Any) -> Any:
    prog = AnyHost(make_config(config_name, overrides).universe(), ablate=[check])
    return explore(prog, limits, stop_at_first=False,
                   canon=Symmetry(prog.engine.layout).canonical)


def _explore_kvm(config_name: str, check: str, limits: Limits, faults: bool) -> Any:
    from tdxcheck.checker.kvm import KvmHost, kvm_config

    prog = KvmHost(kvm_config(config_name), faults=faults, ablate=[check])
    return explore(prog, limits, stop_at_first=False)


def run_ablation(host: str = "any", config_name: str = "tiny", *,
                 checks: Sequence[str] | None = None, faults: bool = True,
                 limits: Limits | None = None, overrides: Any = None,
                 progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """One row per module check: ``{"check", "broken": {invariant: shortest length},
    "invariant", "length" (the shortest of them, or None), "verdict", "states",
    "seconds"}``.  ``host`` is ``any`` (module invariants, symmetry on) or ``kvm`` (every
    invariant; ``faults`` lets the module fail where the environment can make it).
    ``overrides`` are ``key=value`` config overrides for ``--host any``."""
    if host not in ("any", "kvm"):
        raise InputError(f"unknown host {host!r} (have: any, kvm)")
    overrides = overrides or []  # key=value pairs (or a dict): make_config validates them
    limits = limits or Limits()
    if host == "any":
        u = make_config(config_name, overrides).universe()
    else:
        from tdxcheck.checker.kvm import kvm_config

        if overrides:
            raise InputError("key=value overrides apply to --host any; --host kvm has named "
                             "configurations")
        u = kvm_config(config_name).universe()
    names = list(checks) if checks is not None else check_names(u)
    # which checks refuse a call KVM makes (with the same faults): why a silent one is silent
    refusals = kvm_refusals(config_name, faults) if host == "kvm" else None
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
            "limit": r.reason or None,  # a limit cut the run short: other invariants may break
            "states": r.states,
            "seconds": round(time.monotonic() - t0, 3),
        })
        if refusals is not None:
            rows[-1]["kvm_refuses"] = refusals.get(name)  # the KVM call it refuses, or None
    return rows


def _refusals_of(rows: Sequence[dict[str, Any]],
                 refusals: dict[str, str] | None) -> dict[str, str] | None:
    if refusals is not None or not any("kvm_refuses" in r for r in rows):
        return refusals
    return {r["check"]: r["kvm_refuses"] for r in rows if r.get("kvm_refuses")}


# ------------------------------------------------------------------ why nothing breaks

#: For a check whose removal breaks no invariant: why, by the check's name (most specific
#: entry first; matched on the name's suffix after ``<family>.<leaf>.``).  "gap" = the model
#: has no invariant that states what the check protects; "redundant" = another check (or the
#: model's encoding) already refuses the same states; "config" = the configuration is too
#: small to reach the state it refuses.
_GAP, _RED, _CFG = "model gap", "redundant", "config"
NOTHING_BREAKS_WHY: tuple[tuple[str, str, str], ...] = (
    # ---- specific checks first
    ("mng.init.tdcs_allocated", _GAP, ("MNG.INIT writes the TDCS; the model keeps no TDCS "
     "contents, so initialising a TD without its TDCS pages breaks no invariant")),
    ("mng.init.keys_configured", _GAP, ("no invariant says the module writes TD memory only "
     "under a key programmed on every package")),
    ("mng.key_config.pkg_not_configured", _GAP, ("re-programming a package's key is idempotent "
     "in the model; in hardware it makes the TD's existing memory unreadable (no invariant "
     "on key consistency)")),
    ("mng.create.hkid_private", _RED, ("the host programs pass only private HKIDs (operands "
     "are well-formed by construction; the check matters for raw seamcalls in replay)")),
    ("phymem.cache_wb.cmd", _RED, "resume is 0 or 1 by construction"),
    ("phymem.cache_wb.hkid_ready", _RED, ("an empty CACHE.WB run clears nothing, and FREEID "
     "still waits for every package's bit")),
    ("phymem.cache_wb.resume_point", _RED, ("a resume with no saved run uses an empty "
     "snapshot: it clears no wbinvd bit, so FREEID's own check still holds")),
    ("phymem.page_reclaim.lock", _RED, ("RECLAIM needs TD_TEARDOWN, which needs VPFLUSHDONE: "
     "no vCPU can be running (in the guest implies associated)")),
    ("vp.flush.tdvpr.lock", _GAP, ("no invariant says a vCPU in the guest stays associated "
     "with the LP it runs on")),
    ("vp.flush.keys_configured", _GAP, ("no invariant on flushing a vCPU's cached state "
     "under a key being torn down")),
    ("vp.flush.tdvps_pages", _CFG, ("with TDCX pages a vCPU has TDVPS pages only after VP.INIT "
     "(or none are needed in this config)")),
    ("vp.enter.not_associated_elsewhere", _GAP, ("no invariant says a vCPU's cached state lives "
     "on one LP at a time (the VMCS on two LPs)")),
    ("vp.rd.not_associated_elsewhere", _GAP, ("no invariant says a vCPU's cached state lives "
     "on one LP at a time")),
    ("vp.wr.not_associated_elsewhere", _GAP, ("no invariant says a vCPU's cached state lives "
     "on one LP at a time")),
    ("vp.addcx.uninitialized", _GAP, ("no invariant relates the TDVPS layout to an "
     "initialised vCPU")),
    ("vp.init.uninitialized", _GAP, ("re-initialising a vCPU counts it twice in "
     "num_vcpus; no invariant relates num_vcpus to the vCPUs")),
    ("vp.init.max_vcpus", _CFG, "the configuration has no more vCPU slots than max_vcpus"),
    ("mr.finalize.vcpus", _GAP, "no invariant that a RUNNABLE TD has a vCPU (an ABI rule)"),
    ("mem.page_remove.blocked", _RED, ("in the model a page that was never blocked has a "
     "fresh block epoch, so PAGE.REMOVE's TLB-tracking check refuses it as well")),
    ("mem.sept_remove.blocked", _RED, ("the TLB-tracking check refuses an unblocked S-EPT "
     "page as well (its block epoch is fresh)")),
    ("mem.range_block.not_blocked", _RED, ("the entry-state check refuses a blocked entry "
     "too (only the status differs: ALREADY_BLOCKED vs ENTRY_STATE_INCORRECT)")),
    ("mem.range_unblock.tlb_tracked", _GAP, ("no invariant speaks of an entry made present "
     "again before its block was tracked (UNBLOCK serves PROMOTE/DEMOTE, not modelled)")),
    ("mem.sept_remove.children_free", _GAP, ("no invariant says every page a TD owns is "
     "reachable from its S-EPT: removing a non-empty S-EPT page orphans its children")),
    ("mem.page_remove.tlb_tracked", _CFG, ("tiny's 3 pages cannot map a guest page; with "
     "pages=5 removing it breaks tlb-tracked-before-remove (12 steps)")),
    ("mem.sept_remove.tlb_tracked", _CFG, ("tiny's 3 pages cannot map a guest page; with "
     "pages=5 removing it breaks tlb-tracked-before-remove (11 steps)")),
    ("mng.create.hkid_free", _CFG, ("one TD cannot take an HKID another TD holds; with tds=2 "
     "removing it breaks keyid-after-vpflushdone and no-double-assignment (2 steps)")),
    ("mng.vpflushdone.lifecycle", _CFG, ("with one TD a second VPFLUSHDONE changes nothing; "
     "with tds=2 removing it breaks kot-matches-lifecycle (7 steps)")),
    ("mng.create.tdr.pt", _CFG, ("with one TD its slot is free only once its TDR was "
     "reclaimed, after every other page of it: every page is PT_NDA; with tds=2 removing it "
     "breaks operand-type-respected (5 steps)")),
    ("mem.page_remove.tdr.pt", _CFG, ("tiny's 3 pages cannot map a guest page; with pages=4 "
     "removing it breaks operand-type-respected (7 steps)")),
    ("mem.page_add.tdr.pt", _CFG, ("tiny's 3 pages cannot map a guest page; with pages=4 "
     "removing it breaks operand-type-respected (6 steps)")),
    ("mem.page_aug.tdr.pt", _CFG, ("tiny's 3 pages cannot map a guest page; with pages=4 "
     "removing it breaks operand-type-respected (6 steps)")),
    ("mem.track.previous_epoch_drained", _RED, ("PAGE.REMOVE's own TLB-tracking check "
     "refuses the removal an early TRACK would allow")),
    # ---- families
    (".tdr.lock", _RED, ("the op state or lifecycle that lets this leaf succeed already "
     "excludes a vCPU running in the guest (which is what holds the TDR)")),
    (".tdvpr.lock", _RED, "a vCPU this leaf can succeed on cannot be in the guest"),
    (".page.lock", _RED, ("a PT_NDA page is never held by a running vCPU (only a TDR or TDVPR "
     "is); the type check refuses every other page")),
    (".not_fatal", _GAP, "no invariant says a TD the guest made fatal is left alone"),
    (".tdcs_allocated", _RED, ("the op-state check implies MNG.INIT ran, and MNG.INIT needed "
     "the TDCS pages")),
    (".keys_configured", _GAP, ("after VPFLUSHDONE this leaf adds no dirty lines and no "
     "association, so nothing the invariants see changes; the module refuses it because the "
     "TD's key is being freed (no invariant on using a TD whose key is going away)")),
    (".op_state", _GAP, ("the build/run protocol (measurement before MR.FINALIZE, no PAGE.ADD "
     "after it) has no invariant: measurement and attestation are not modelled")),
    (".gpa_level", _RED, "the host programs pass only aligned GPAs and levels"),
    (".gpa_valid", _RED, "the host programs pass only valid private GPAs"),
    (".gpa_aligned", _RED, "the host programs pass only aligned GPAs"),
    (".tdcx_num", _CFG, "the configuration has too few pages to exceed the TDCX limit"),
    (".tdvps_pages", _CFG, ("the configuration's vCPUs need no TDCX page, or cannot get "
     "past VP.INIT without them")),
    ("mng.rd.", _GAP, ("TDH.MNG.RD changes nothing the model keeps (TD metadata is not "
     "modelled)")),
    ("mng.wr.", _GAP, ("TDH.MNG.WR changes nothing the model keeps (TD metadata is not "
     "modelled)")),
    ("mr.extend.", _GAP, "TDH.MR.EXTEND changes only the measurement, which is not modelled"),
    (".walk", _CFG, "the configuration has no S-EPT level below the one the walk needs"),
    (".entry_state", _CFG, "the configuration's S-EPT cannot reach the refused entry state"),
)


def kvm_refusals(config_name: str = "tiny", faults: bool = True) -> dict[str, str]:
    """The module checks that refuse a call the reference KVM makes (on some run, with
    ``faults`` every module fault): check name -> the first call it refused.  Measured by
    exploring KVM and reading the failing step of every non-success status."""
    from tdxcheck.checker.kvm import KvmHost, kvm_config

    prog = KvmHost(kvm_config(config_name), faults=faults)
    eng = prog.engine
    seen: dict[str, str] = {}
    step = eng.step

    def spy(m: Any, a: Any, fault: int = -1) -> Any:
        r = step(m, a, fault)
        if r.where >= 0 and not eng.is_fault(a, r.where):
            seen.setdefault(eng.check_name(a, r.where), a.step)
        return r

    eng.step = spy  # type: ignore[method-assign,assignment]
    explore(prog, Limits(), stop_at_first=False)
    return seen


def why_nothing_breaks(check: str, host: str = "any",
                       refusals: dict[str, str] | None = None) -> tuple[str, str]:
    """(kind, reason) for a check whose removal broke nothing, or ("?", "") if unclassified.

    Against ``--host kvm`` the answer is KVM's: with ``refusals`` (``kvm_refusals``) it says
    whether KVM ever makes a call the check refuses (then KVM handles the refusal on that
    error path, and without the check that call does no harm: the any-host reason says
    why) or never does (a safety net KVM does not lean on)."""
    if host == "kvm":
        kind, reason = why_nothing_breaks(check)
        if refusals is not None and check in refusals:
            base = (f"it refuses KVM's {refusals[check]} on a fault path, and KVM's call "
                    "without it breaks nothing")
        elif refusals is not None:
            base = "KVM never makes a call this check refuses"
        else:
            base = "KVM never relies on this check to keep an invariant"
        if kind in ("?", _CFG):
            return "not relied on by KVM", base
        return "not relied on by KVM", f"{base}; against any host: {kind}, {reason}"
    for pattern, kind, reason in NOTHING_BREAKS_WHY:
        if check == pattern or (pattern.startswith(".") and check.endswith(pattern)) or (
                pattern.endswith(".") and check.startswith(pattern)):
            return kind, reason
    return "?", ""


def ablation_table(rows: Sequence[dict[str, Any]], host: str = "any",
                   refusals: dict[str, str] | None = None) -> str:
    """Checks x invariants: each cell the shortest trace length that breaks it, '.' none."""
    invs = sorted({inv for r in rows for inv in r["broken"]})
    width = max([len(r["check"]) for r in rows] + [5])
    short = [_abbrev(i) for i in invs]
    out = []
    legend = ", ".join(f"{s} = {i}" for s, i in zip(short, invs, strict=True))
    out.append(f"{'check':<{width}}  " + " ".join(f"{s:>5}" for s in short) + "    s")
    for r in rows:
        cells = " ".join(f"{r['broken'].get(i, '.'):>5}" for i in invs)
        cut = "*" if r.get("limit") else ""
        out.append(f"{r['check']:<{width}}  {cells}  {r['seconds']:5.1f}{cut}")
    cut_rows = [r for r in rows if r.get("limit")]
    unknown = [r["check"] for r in cut_rows if not r["broken"]]
    none = [r["check"] for r in rows if not r["broken"] and not r.get("limit")]
    refusals = _refusals_of(rows, refusals)
    out.append("")
    out.append(f"columns: {legend}" if legend else "no invariant broke")
    if cut_rows:
        out.append(f"*: a limit cut the run short ({cut_rows[0]['limit']}): more invariants may "
                   "break than the row shows")
    if unknown:
        out.append(f"unknown (a limit hit before anything broke): {', '.join(unknown)}")
    out.append(f"{len(rows) - len(none) - len(unknown)}/{len(rows)} checks break an invariant "
               f"when removed; {len(none)} break nothing:")
    for c in none:
        kind, reason = why_nothing_breaks(c, host, refusals)
        out.append(f"  {c}: {kind}{': ' + reason if reason else ''}")
    return "\n".join(out)


def _abbrev(inv: str) -> str:
    parts = inv.split("-")
    return "".join(p[0] for p in parts).upper()[:5]


def ablation_json(rows: Sequence[dict[str, Any]], host: str = "any",
                  refusals: dict[str, str] | None = None) -> dict[str, Any]:
    refusals = _refusals_of(rows, refusals)
    return {"host": host, "checks": [
        {**r, "why_nothing_breaks": (
            dict(zip(("kind", "reason"), why_nothing_breaks(r["check"], host, refusals),
                     strict=True))
            if not r["broken"] and not r.get("limit") else None)}
        for r in rows]}
