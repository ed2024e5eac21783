"""The finite readers' input, as text: every rule the any host and the host actions build,
and every invariant and lemma clause, for a few configurations (``tests/golden/finite.json``
holds the digests taken before the expression language got its ∀ nodes; see
``tests/test_param_expand.py``).  Run as a script to print the digests."""

from __future__ import annotations

import hashlib
import json
import sys

from tdxcheck.checker.explore.programs import any_host_actions, make_config
from tdxcheck.model.actions import HOST_ACTIONS, Action, rule_of, wrapper_pre
from tdxcheck.model.rule import Ctx
from tdxcheck.model.state import Layout, Universe
from tdxcheck.properties import INVARIANTS
from tdxcheck.properties.lemmas import LEMMAS

#: name -> (config, overrides)
CONFIGS = {
    "tiny": ("tiny", {}),
    "default": ("default", {}),
    "large": ("large", {}),
    "default-sept4": ("default", {"sept_levels": "4", "gpas": "2"}),
    "large-pkg3": ("large", {"packages": "3", "cpus_per_package": "2", "hkids": "4"}),
}


def _host_actions(u: Universe) -> list[Action]:
    out = []
    for pg in range(1, u.n_pages):
        for kind in ("page_alloc", "page_free", "clflush", "clear_page"):
            out.append(Action(kind, kind, (("page", pg),)))
        for c in range(u.platform.cpus):
            out.append(Action("host_write", "host_write", (("page", pg),), c))
    for h in range(1, u.platform.hkids):
        for kind in ("hkid_alloc", "hkid_free"):
            out.append(Action(kind, kind, (("hkid", h),)))
    out.append(Action("check_no_leak", "check_no_leak", ()))
    assert {a.kind for a in out} | {"td_exit"} == set(HOST_ACTIONS)
    # a typed wrapper with its CLFLUSH of the handed page
    out.append(Action("tdh_mng_addcx", "TDH.MNG.ADDCX", (("page", 1), ("tdr", 2)), 0, (1,)))
    return out


def texts(name: str) -> dict[str, str]:
    """group -> the text of every tree in it (rules: steps, effects, enabled; clauses:
    ok, message, by), in order."""
    base, ov = CONFIGS[name]
    u = make_config(base, ov).universe()
    lay = Layout(u)
    out: dict[str, list[str]] = {}
    acts = [a for a, _g in any_host_actions(u)] + _host_actions(u)
    for a, g in any_host_actions(u):
        out.setdefault("guard:" + a.kind, []).append(repr(g))
    for a in acts:
        r = rule_of(a, Ctx(u, lay, a.cpu))
        out.setdefault("rule:" + a.kind, []).append(
            f"{a}\n{r!r}\n{wrapper_pre(a, u)!r}")
        for inv in INVARIANTS:
            for c in inv.step_clauses(u, a):
                out.setdefault("step:" + inv.id, []).append(
                    f"{a}\n{c.ok!r}\n{c.message}\n{c.by}")
    for inv in (*INVARIANTS, *LEMMAS):
        for c in inv.state_clauses(u):
            out.setdefault("state:" + inv.id, []).append(f"{c.ok!r}\n{c.message}\n{c.by}")
    return {k: "\n\n".join(v) for k, v in sorted(out.items())}


def digests(name: str) -> dict[str, str]:
    return {k: hashlib.sha256(v.encode()).hexdigest()[:16] for k, v in texts(name).items()}


if __name__ == "__main__":
    json.dump({n: digests(n) for n in CONFIGS}, sys.stdout, indent=1, sort_keys=True)
    print()
