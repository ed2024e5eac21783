"""Which feature removes which class, and KVM written against an API.

``feature_credit``: the strongest variant (``helpers`` by default) with one feature turned
off at a time, as ``tdxcheck ablate`` removes one module check at a time.  A class the
variant makes impossible and that a variant without feature F reaches is credited to F; a
class no single removal brings back is protected more than once (each of its protections
alone suffices), and the pairs of features whose joint removal brings it back are named.

``kvm_unwritable``: every transition of ``--host kvm`` (the reference, or a mutant), each
model action checked against the one-action moves of an API in the state KVM made it in
(``ApiHost.writable``): a step no move of the API makes is a step KVM could not write
against it, so that API would be stricter than upstream.

``mutant_classes``: the classes of host mistake the shortest killing trace of each KVM
mutant makes (a leak at the end of KVM's run is class 13); a mutant whose trace makes a
mistake an API makes impossible cannot be written against that API.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tdxcheck.checker.explore.bfs import Limits
from tdxcheck.checker.explore.programs import Config

from .classes import CLASSES, MisuseClass
from .host import ApiHost
from .run import CAUGHT, HARMLESS, IMPOSSIBLE, SILENT, VariantRun, _Classifier, explore_variant
from .variants import VARIANT_BY_NAME, Variant

_REACHED = (CAUGHT, SILENT, HARMLESS)


@dataclass
class CreditResult:
    base: VariantRun
    runs: dict[str, VariantRun]  # feature turned off -> the run without it
    pairs: dict[tuple[str, str], VariantRun] = field(default_factory=dict)

    def removed(self) -> list[str]:
        """The classes the base variant makes impossible."""
        return [c.cls.id for c in self.base.cells if c.verdict == IMPOSSIBLE]

    def credited(self, cls_id: str) -> list[str]:
        """The features whose removal alone brings ``cls_id`` back."""
        return [f for f, vr in self.runs.items() if vr.cell(cls_id).verdict in _REACHED]

    def pair_credit(self, cls_id: str) -> list[tuple[str, str]]:
        return [p for p, vr in self.pairs.items() if vr.cell(cls_id).verdict in _REACHED]


def feature_credit(config: Config, base: Variant | None = None, *,
                   features: Sequence[str] | None = None, faults: bool = False,
                   classes: Sequence[MisuseClass] = CLASSES, limits: Limits | None = None,
                   pairs: bool = True,
                   progress: Callable[[str], None] | None = None) -> CreditResult:
    """Turn ``base``'s features off one at a time (then, for a class none of those brings
    back, two at a time among the features it could depend on)."""
    base = base or VARIANT_BY_NAME["helpers"]
    if progress:
        progress(base.name)
    b = explore_variant(base, config, faults=faults, classes=classes, limits=limits)
    res = CreditResult(b, {})
    for f in features or sorted(base.features):
        if progress:
            progress(f"{base.name} without {f}")
        res.runs[f] = explore_variant(base.without(f), config, faults=faults,
                                      classes=classes, limits=limits)
    if pairs:
        orphans = [c for c in res.removed() if not res.credited(c)]
        feats = sorted(res.runs)
        for i, f in enumerate(feats):
            for g in feats[i + 1:]:
                if not orphans:
                    break
                if progress:
                    progress(f"{base.name} without {f}, {g}")
                vr = explore_variant(base.without(f).without(g), config, faults=faults,
                                     classes=classes, limits=limits)
                res.pairs[(f, g)] = vr
                orphans = [c for c in orphans if vr.cell(c).verdict not in _REACHED]
    return res


# ---------------------------------------------------------------------- KVM against an API
def _kvm_transitions(prog: Any, visit: Callable[[Any, int, Any], None]) -> int:
    """Every transition of a ``KvmHost`` from every state reachable without a violation:
    ``visit(state, edge, the actions it ran)``.  Returns the number of states."""
    init = prog.initial()
    seen = {init}
    q = deque([init])
    while q:
        s = q.popleft()
        for eid, _status, n, viol in prog.successors(s):
            visit(s, eid, prog.actions_of(s, eid))
            if viol or n in seen or prog.state_violations(n):
                continue
            seen.add(n)
            q.append(n)
    return len(seen)


def kvm_unwritable(variant: Variant, config_name: str = "tiny", *, faults: bool = False,
                   mutant: str | None = None, limit: int = 20,
                   host: ApiHost | None = None) -> tuple[list[str], int]:
    """KVM's steps (or a mutant's) that no one-action move of ``variant`` makes, in the state
    KVM made them: (up to ``limit`` descriptions, states explored).  ``host``: the API's
    client over KVM's universe, built once for several runs."""
    from tdxcheck.checker.kvm import KvmHost, kvm_config

    prog = KvmHost(kvm_config(config_name), faults=faults, mutant=mutant)
    host = host or ApiHost(variant, prog.u)
    out: list[str] = []
    seen: set[Any] = set()

    def visit(_s: Any, eid: int, acts: Any) -> None:
        for a, _fst, _st, m in acts:
            if not host.writable(m, a) and (a, prog.label(eid)) not in seen:
                seen.add((a, prog.label(eid)))
                if len(out) < limit:
                    out.append(f"{prog.label(eid)}: {_show(host, a)}")

    states = _kvm_transitions(prog, visit)
    return out, states


def _show(host: ApiHost, a: Any) -> str:
    from tdxcheck.model.actions import describe

    text = describe(a, host.u)
    if a.clflush:
        text += " [CLFLUSH " + ",".join(host.u.page_name(p) for p in a.clflush) + "]"
    return text + f" [cpu{a.cpu}]"


def mutant_classes(config_name: str = "tiny",
                   names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Per KVM mutant (``analyses/mutants.py``), the classes of host mistake its shortest
    killing trace makes (class ids in trace order; ``leak`` for a no-leak kill)."""
    from tdxcheck.checker.explore.bfs import explore
    from tdxcheck.checker.kvm import KvmHost, kvm_config

    from ..mutants import MUTANTS

    out: dict[str, list[str]] = {}
    clf = None
    for m in MUTANTS:
        if names is not None and m.name not in names:
            continue
        prog = KvmHost(kvm_config(config_name), faults=m.faults, mutant=m.name)
        r = explore(prog, Limits(), stop_at_first=False)
        hit = next((cx for cx in r.violations if cx.invariant == m.invariant), None) or \
            min(r.violations, key=lambda c: c.length, default=None)
        if clf is None:  # the class predicates over KVM's universe (no moves needed)
            clf = _Classifier(_Predicates(prog.u), CLASSES)
        found: list[str] = []
        if hit is not None:
            for (eid, _st), s in zip(hit.path, hit.states, strict=False):
                for a, _fst, _status, pre in prog.actions_of(s, eid):
                    for ci, fn in clf.fns(a, False):
                        cid = CLASSES[ci].id
                        if fn(pre) >= 0 and cid not in found:
                            found.append(cid)
            if hit.invariant == "no-leak" and "leak" not in found:
                found.append("leak")
        out[m.name] = found
    return out


class _Predicates:
    """What ``_Classifier`` needs of a host: the universe and its layout."""

    def __init__(self, u: Any) -> None:
        from tdxcheck.model.state import Layout

        self.u = u
        self.lay = Layout(u)


def unwritable_mutants(helpers_run: VariantRun, classes_of: dict[str, list[str]]
                       ) -> dict[str, list[str]]:
    """The mutants whose killing trace makes a mistake ``helpers_run``'s variant makes
    impossible: mutant -> those classes."""
    impossible = {c.cls.id for c in helpers_run.cells if c.verdict == IMPOSSIBLE}
    return {m: [c for c in cs if c in impossible] for m, cs in classes_of.items()
            if any(c in impossible for c in cs)}

