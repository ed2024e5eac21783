"""The ∀ nodes of the expression language (``All``/``Any``/``Count``/``UnionOf``,
``rule.for_each``, ``properties.base.forall``/``forall_pairs``) expand, over a finite
universe, into exactly the trees the Python loops they replaced built: every rule the any
host and the host actions build, and every invariant and lemma clause, has the digest it
had before the change (``tests/golden/finite.json``, taken at the commit before; the
finite readers compile the same trees, so every finite verdict is unchanged).

When a rule or clause is changed on purpose, regenerate the digests with
``python tests/finite_snapshot.py > tests/golden/finite.json`` in the same commit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from tdxcheck.model.expr import Agg, All, And, Any, Count, SymDomain, UnionOf, Var
from tdxcheck.model.rule import ForEach, for_each, set_
from tdxcheck.model.state import S
from tdxcheck.properties.base import Clause, forall, forall_pairs

_spec = importlib.util.spec_from_file_location(
    "finite_snapshot", Path(__file__).parent / "finite_snapshot.py")
assert _spec is not None and _spec.loader is not None
snapshot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(snapshot)
CONFIGS, digests = snapshot.CONFIGS, snapshot.digests

GOLDEN = json.loads((Path(__file__).parent / "golden" / "finite.json").read_text())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_finite_trees_unchanged(name: str) -> None:
    got = digests(name)
    changed = sorted(k for k in GOLDEN[name] if got.get(k) != GOLDEN[name][k])
    assert not changed, f"{name}: these trees changed: {changed}"
    assert sorted(got) == sorted(GOLDEN[name])


def test_finite_aggregates_are_the_loops() -> None:
    dom = range(3)
    assert repr(All(dom, lambda i: S.pt[i] == 3)) == repr(And(*(S.pt[i] == 3 for i in dom)))
    assert repr(Count(range(0), lambda i: S.pt[i] == 3)) == "Const(value=0)"
    assert repr(Any(range(0), lambda i: S.pt[i] == 3)) == "Const(value=0)"
    assert repr(UnionOf(range(0), lambda i: S.pt[i])) == "Const(value=0)"
    effs = for_each(range(2), lambda i: set_(S.pt[i], 0))
    assert [e.index[0].value for e in effs] == [0, 1]  # type: ignore[union-attr]


def test_symbolic_domain_builds_nodes() -> None:
    d = SymDomain("page")
    e = All(d, lambda p: S.pt[p] == 3)
    assert isinstance(e, Agg) and e.op == "all" and isinstance(e.var, Var)
    (fe,) = for_each(d, lambda p: set_(S.pt[p], 0))
    assert isinstance(fe, ForEach) and fe.var.kind == "page"
    cs = forall(SymDomain("td"), lambda t: [Clause(S.tdr[t] == 0, "a"), Clause(S.tdr[t] != 0, "b")])
    assert len(cs) == 2 and all(len(c.vars) == 1 for c in cs)
    (pair,) = forall_pairs((SymDomain("td"),), lambda a, b: Clause(S.hkid[a] != S.hkid[b], "x"))
    assert len(pair.vars) == 2 and repr(pair.where) != "Const(value=1)"
    # finite pairs: i < j, in loop order
    assert [c.message for c in forall_pairs((range(3),), lambda a, b: Clause(
        S.pt[a] == 0, f"{a}{b}"))] == ["01", "02", "12"]
