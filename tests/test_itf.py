"""Counterexamples as ITF that ITF tools load (Apalache ADR-015, ``015adr-trace.html``): the
files ``--trace-out`` writes are checked against the format's rules here, value by value, and
every variable keeps one type across the states (as Quint's and Apalache's readers need)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from tdxcheck.checker.explore.check import run_check
from tdxcheck.checker.explore.programs import make_config
from tdxcheck.checker.scenario import parse_file

ROOT = Path(__file__).resolve().parent.parent
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


ANY = ("?",)  # the element type of an empty collection: unifies with anything


def unify(a: tuple[Any, ...], b: tuple[Any, ...], where: str) -> tuple[Any, ...]:
    if a == ANY:
        return b
    if b == ANY:
        return a
    assert a[0] == b[0] and len(a) == len(b), f"{where}: {a} and {b} do not unify"
    if a[0] == "rec":
        assert a[1] == b[1], f"{where}: records with fields {a[1]} and {b[1]}"
        return ("rec", a[1], tuple(unify(x, y, where) for x, y in zip(a[2], b[2], strict=True)))
    return (a[0], *(unify(x, y, where) if isinstance(x, tuple) else x
                    for x, y in zip(a[1:], b[1:], strict=True)))


def unify_all(ts: list[tuple[Any, ...]], where: str) -> tuple[Any, ...]:
    out = ANY
    for t in ts:
        out = unify(out, t, where)
    return out


def itf_type(v: Any, where: str) -> tuple[Any, ...]:
    """The ITF type of a JSON value, checking the ADR-015 encoding on the way."""
    if isinstance(v, bool):
        return ("bool",)
    if isinstance(v, int):
        assert -(1 << 53) < v < (1 << 53), f"{where}: int past 2**53 must be #bigint"
        return ("int",)
    if isinstance(v, str):
        return ("str",)
    if isinstance(v, list):  # a sequence: one element type
        return ("seq", unify_all([itf_type(x, where) for x in v], where))
    assert isinstance(v, dict), f"{where}: {type(v)} is no ITF value"
    if "#bigint" in v:
        assert set(v) == {"#bigint"} and re.fullmatch(r"-?[0-9]+", v["#bigint"]), where
        return ("int",)
    if "#tup" in v:
        assert set(v) == {"#tup"} and isinstance(v["#tup"], list), where
        return ("tup", tuple(itf_type(x, where) for x in v["#tup"]))
    if "#set" in v:
        assert set(v) == {"#set"} and isinstance(v["#set"], list), where
        return ("set", unify_all([itf_type(x, where) for x in v["#set"]], where))
    if "#map" in v:
        assert set(v) == {"#map"} and isinstance(v["#map"], list), where
        for pair in v["#map"]:
            assert isinstance(pair, list) and len(pair) == 2, f"{where}: a #map entry is [k, v]"
        return ("map", unify_all([itf_type(k, where) for k, _ in v["#map"]], where),
                unify_all([itf_type(x, where) for _, x in v["#map"]], where))
    assert "#unserializable" not in v, f"{where}: unserializable value"
    assert all(not k.startswith("#") for k in v), f"{where}: unknown ITF tag in {list(v)}"
    assert all(IDENT.match(k) for k in v), f"{where}: record field names are identifiers"
    keys = tuple(sorted(v))
    return ("rec", keys, tuple(itf_type(v[k], where) for k in keys))


def check_itf(doc: dict[str, Any]) -> None:
    assert set(doc) <= {"#meta", "params", "vars", "states", "loop"}, set(doc)
    assert isinstance(doc["vars"], list) and doc["vars"], "vars"
    assert all(isinstance(x, str) and IDENT.match(x) for x in doc["vars"]), doc["vars"]
    assert len(set(doc["vars"])) == len(doc["vars"])
    types: dict[str, tuple[Any, ...]] = {}
    for k, st in enumerate(doc["states"]):
        assert set(st) - {"#meta"} == set(doc["vars"]), f"state {k}: vars differ"
        for var in doc["vars"]:
            where = f"state {k} {var}"
            types[var] = unify(types.get(var, ANY), itf_type(st[var], where), where)


def test_itf_of_an_any_host_counterexample(tmp_path: Path) -> None:
    run_check(config=make_config("tiny", {}), ablate=["vp.flush.associated_here"],
              trace_out=tmp_path, all_violations=True)
    files = sorted(tmp_path.glob("*.itf.json"))
    assert files
    for f in files:
        doc = json.loads(f.read_text())
        check_itf(doc)
        assert doc["states"][0]["action"] == "init" and doc["states"][0]["status"] == "none"
        pts = {k: v for k, v in doc["states"][-1]["pt"]["#map"]}
        assert pts["NULL"] == "PT_RSVD"


@pytest.mark.parametrize("name", ["race-flush-while-running.tdx",
                                  "bug-raw-seamcall-no-clflush.tdx"])
def test_itf_of_a_scenario_counterexample(name: str, tmp_path: Path) -> None:
    run = run_check(scenario=parse_file(ROOT / "examples" / name), trace_out=tmp_path,
                    all_violations=True)
    assert run.result.violations
    for f in tmp_path.glob("*.itf.json"):
        check_itf(json.loads(f.read_text()))


def test_the_checker_rejects_what_itf_readers_reject() -> None:
    good = {"vars": ["x"], "states": [{"x": {"#set": [1, 2]}}, {"x": {"#set": []}},
                                      {"x": {"#set": [{"#bigint": "3"}]}}]}
    check_itf(good)
    for bad in (
        {"vars": ["a b"], "states": [{"a b": 1}]},  # not an identifier
        {"vars": ["x"], "states": [{"x": 1}, {"x": "one"}]},  # type changes
        {"vars": ["x"], "states": [{"x": 1 << 60}]},  # needs #bigint
        {"vars": ["x", "y"], "states": [{"x": 1}]},  # a var missing
        {"vars": ["x"], "states": [{"x": {"#map": [[1, 2, 3]]}}]},
    ):
        with pytest.raises(AssertionError):
            check_itf(bad)
