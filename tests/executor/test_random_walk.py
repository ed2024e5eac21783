"""Seeded random walks over the executor: it raises nothing but StepNotEnabled, and its own
invariants (machine.py ``check_invariants``: chldcnt, KOT vs lifecycle, association and epoch
counts, S-EPT references, cache tags) hold after every step.

Most steps are drawn from what the current state makes plausible (so walks reach running TDs,
runtime removal and teardown); the rest are any step or raw SEAMCALL with random operands and
faults, so every error path is exercised too.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from tdxcheck.checker.executor import Executor, StepNotEnabled
from tdxcheck.checker.executor.structures import LEAF
from tdxcheck.model.status import status_name
from tdxcheck.model.steps import STEP_BY_NAME, STEPS, Kind

CONFIG = {"packages": 2, "cpus_per_package": 2, "hkids": 4, "tdcs_pages": 2, "tdcx_pages": 1,
          "max_vcpus": 2, "sept_levels": 3, "clflush_before_alloc": 1, "clear_before_reuse": 1,
          "wrapper_clflush": 1}
PAGES = [f"p{i}" for i in range(18)]
TDS = ["td0", "td1"]
VP_OF = {"vp0": "td0", "vp1": "td0", "vp2": "td1"}
GPAS = [0x0, 0x1000, 0x200000, 0x40000000]
FAULTS = ["TDX_OPERAND_BUSY", "TDX_RND_NO_ENTROPY", "TDX_INTERRUPTED_RESUMABLE",
          "TDX_KEY_GENERATION_FAILED", "TDX_OPERAND_BUSY|RCX", "TDX_OPERAND_BUSY|KOT",
          "TDX_OPERAND_BUSY|TD_EPOCH", "TDX_OPERAND_BUSY|SEPT_TREE"]

Step = tuple[str, dict[str, Any], int]


def _random_step(rng: random.Random, ncpu: int) -> Step:
    if rng.random() < 0.15:
        ops: dict[str, Any] = {"leaf": rng.choice(list(LEAF))}
        for r in ("rcx", "rdx", "r8"):
            ops[r] = rng.choice(PAGES + [0, 1, 0x1001, 0x200002])
        return "seamcall", ops, rng.randrange(ncpu)
    sig = rng.choice(STEPS)
    ops = {}
    for k in sig.operands:
        if k == Kind.TD:
            ops["td"] = rng.choice(TDS)
        elif k == Kind.VP:
            ops["vp"] = rng.choice(list(VP_OF))
        elif k == Kind.PAGE:
            ops["page"] = rng.choice(PAGES)
        elif k == Kind.PAGES:
            ops["page"] = rng.sample(PAGES, rng.randint(1, 3))
        elif k == Kind.HKID:
            ops["hkid"] = rng.choice([0, 1, 2, 3, 4])
        elif k == Kind.GPA:
            ops["gpa"] = rng.choice(GPAS + [0x800])
        elif k == Kind.LEVEL:
            ops["level"] = rng.choice([0, 1, 2, 3])
        elif k == Kind.RESUME:
            ops["resume"] = rng.choice([0, 1, 2])
        elif k == Kind.REASON:
            ops["reason"] = rng.choice(["normal", "vcpu_fatal", "td_fatal"])
    return sig.name, ops, rng.randrange(ncpu)


def _guided_step(ex: Executor, rng: random.Random) -> Step | None:
    """A step the current state makes plausible (a light host 'program')."""
    m, cfg = ex.machine, ex.config
    per = cfg["cpus_per_package"]
    obs = ex.observe()

    def pt(name: str) -> int:
        return m.pamt_entry(ex.page_pa(name)).pt if name in ex.pages else 0

    free = [p for p in PAGES if pt(p) == 0]
    cands: list[Step] = []
    for td in TDS:
        lc = obs.get(f"td.{td}.lifecycle")
        if lc is None:
            h = rng.randint(1, cfg["hkids"] - 1)
            if free:
                p = rng.choice(free)
                cands += [("hkid_alloc", {"hkid": h}, 0), ("page_alloc", {"page": [p]}, 0),
                          ("tdh_mng_create", {"td": td, "page": p, "hkid": h}, 0)]
            continue
        tdr_pa = ex.tds[td].tdr_page.pa  # type: ignore[union-attr]
        tdr = m.tdrs[tdr_pa]
        mine = [n for n in PAGES if n in ex.pages and m.pamt_entry(ex.page_pa(n)).owner == tdr_pa
                and pt(n) not in (0, 4)]
        if lc == 0:
            cands += [("tdh_mng_key_config", {"td": td}, p * per) for p in range(cfg["packages"])]
        elif lc == 1:
            op = obs[f"td.{td}.op_state"]
            if tdr.num_tdcx < cfg["tdcs_pages"] and free:
                cands.append(("tdh_mng_addcx", {"td": td, "page": rng.choice(free)}, 0))
            elif op == 0:
                cands.append(("tdh_mng_init", {"td": td}, 0))
            else:
                gpa = rng.choice(GPAS)
                vps = [vp for vp, owner in VP_OF.items() if owner == td]
                if tdr.fatal or rng.random() < 0.04:  # tear the TD down
                    for vp in vps:
                        assoc = obs.get(f"vp.{vp}.assoc_cpu")
                        if assoc is not None:
                            cands.append(("tdh_vp_flush", {"vp": vp}, assoc))
                    cands.append(("tdh_mng_vpflushdone", {"td": td}, 0))
                    continue
                for vp in vps:
                    state = obs.get(f"vp.{vp}.state")
                    assoc = obs.get(f"vp.{vp}.assoc_cpu")
                    v = ex.vps.get(vp)
                    running = (v is not None and v.tdvpr_page is not None
                               and m.in_guest(v.tdvpr_page.pa))
                    if state is None and free and op == 1:
                        cands.append(("tdh_vp_create", {"td": td, "vp": vp,
                                                        "page": rng.choice(free)}, 0))
                    elif state == 0 and free:
                        cands += [("tdh_vp_addcx", {"vp": vp, "page": rng.choice(free)}, 0),
                                  ("tdh_vp_init", {"vp": vp}, rng.randrange(m.ncpus))]
                    elif running:
                        cands += [("td_exit", {"vp": vp, "reason": rng.choice(
                            ["normal"] * 18 + ["vcpu_fatal", "td_fatal"])}, 0),
                                  ("guest_accept", {"vp": vp, "gpa": gpa}, 0)]
                    elif state is not None and op == 2:
                        cpu = assoc if assoc is not None else rng.randrange(m.ncpus)
                        cands += [("tdh_vp_enter", {"vp": vp}, cpu)] * 2
                        cands.append(("tdh_vp_flush", {"vp": vp}, cpu))
                assert tdr.tdcs is not None
                reached, _, _ = m._walk(tdr.tdcs, gpa, 0)
                if reached > 0 and free:  # build the S-EPT path one level at a time
                    cands += [("tdh_mem_sept_add", {"td": td, "gpa": gpa, "level": reached,
                                                    "page": rng.choice(free)}, 0)] * 2
                elif free:
                    cands += [("tdh_mem_page_add" if op == 1 else "tdh_mem_page_aug",
                               {"td": td, "gpa": gpa, "page": rng.choice(free)}, 0)] * 2
                if op == 1:
                    cands += [("tdh_mr_extend", {"td": td, "gpa": gpa}, 0),
                              ("tdh_mr_finalize", {"td": td}, 0)]
                else:
                    cands += [(n, {"td": td, "gpa": gpa, "level": rng.choice([0, 0, 0, 1])}, 0)
                              for n in ("tdh_mem_range_block", "tdh_mem_page_remove",
                                        "tdh_mem_range_block", "tdh_mem_page_remove",
                                        "tdh_mem_range_unblock", "tdh_mem_sept_remove")]
                    cands.append(("tdh_mem_track", {"td": td}, 0))
                    if reached == 0:
                        _, sp, idx = m._walk(tdr.tdcs, gpa, 0)
                        if idx in sp.entries and sp.entries[idx][0] in (5, 11):  # *BLOCKED
                            cands += [("tdh_mem_track", {"td": td}, 0),
                                      ("tdh_mem_page_remove", {"td": td, "gpa": gpa,
                                                               "level": 0}, 0)] * 3
        elif lc == 2:
            cands += [("tdh_phymem_cache_wb", {"resume": rng.choice([0, 0, 1])}, p * per)
                      for p in range(cfg["packages"])]
            cands.append(("tdh_mng_key_freeid", {"td": td}, 0))
        elif lc == 3:
            if mine:
                cands.append(("tdh_phymem_page_reclaim", {"page": rng.choice(mine)}, 0))
            else:
                cands += [("tdh_phymem_page_reclaim", {"td": td, "page": ex.tds[td].tdr_page.name}, 0),  # type: ignore[union-attr]
                          ("hkid_free", {"hkid": tdr.hkid}, 0)]
    # hygiene of pages that left the module
    gone = [n for n in PAGES if n in ex.pages and pt(n) == 0 and ex.page_allocated[n]]
    if gone:
        n = rng.choice(gone)
        cands += [("tdh_phymem_page_wbinvd_hkid", {"hkid": rng.randint(1, 3), "page": n}, 0),
                  ("clear_page", {"page": n}, 0), ("page_free", {"page": [n]}, 0)]
    for td in TDS:
        if obs.get(f"td.{td}.lifecycle") is None and td in ex.tds and ex.tds[td].tdr_page:
            cands.append(("tdh_phymem_page_wbinvd_tdr", {"td": td}, 0))
    if not cands:
        return None
    name, ops, cpu = rng.choice(cands)
    if name == "tdh_phymem_page_reclaim":
        ops = {"page": ops["page"]}
    return name, ops, cpu


def walk(seed: int, n: int, config: dict[str, int] = CONFIG) -> tuple[Executor, Counter[tuple[str, str]]]:
    rng = random.Random(seed)
    ex = Executor(config)
    seen: Counter[tuple[str, str]] = Counter()
    for i in range(n):
        step = _guided_step(ex, rng) if rng.random() < 0.8 else None
        if step is None:
            step = _random_step(rng, ex.machine.ncpus)
        name, ops, cpu = step
        fault = rng.choice(FAULTS) if name in STEP_BY_NAME and STEP_BY_NAME[name].is_seamcall \
            and rng.random() < 0.06 else None
        if name == "tdh_phymem_cache_wb" and rng.random() < 0.3:
            fault = "TDX_INTERRUPTED_RESUMABLE"
        label = ops["leaf"] if name == "seamcall" else name
        try:
            r = ex.step(name, ops, cpu, fault)
        except StepNotEnabled:
            seen[(label, "not enabled")] += 1
        else:
            seen[(label, "-" if r.status is None else status_name(r.status))] += 1
        bad = ex.check_invariants()
        assert not bad, f"seed {seed} step {i} {name} {ops} cpu={cpu} fault={fault}: {bad}"
    ex.finish()
    assert not ex.check_invariants()
    return ex, seen


def test_random_walk_keeps_invariants_and_reaches_deep_states() -> None:
    seen: Counter[tuple[str, str]] = Counter()
    kinds: set[str] = set()
    for seed in (1, 2, 3, 4):
        ex, s = walk(seed, 1000)
        seen.update(s)
        kinds |= {c.kind for c in ex.consequences}
    total = sum(seen.values())
    assert total >= 4000
    # the walks are not vacuous: they build, run, shrink and tear down TDs
    for label in ("tdh_mng_addcx", "tdh_mng_init", "tdh_vp_init", "tdh_mem_sept_add",
                  "tdh_mem_page_add", "tdh_mr_finalize", "tdh_vp_enter", "tdh_mem_page_aug",
                  "guest_accept", "tdh_mem_range_block", "tdh_mem_track", "tdh_mem_page_remove",
                  "tdh_vp_flush", "tdh_mng_vpflushdone", "tdh_phymem_cache_wb",
                  "tdh_mng_key_freeid", "tdh_phymem_page_reclaim"):
        assert seen[(label, "TDX_SUCCESS")] > 0, label
    # ... and they hit error paths, faults and StepNotEnabled
    assert seen[("tdh_phymem_cache_wb", "TDX_INTERRUPTED_RESUMABLE")] > 0
    assert seen[("tdh_mem_page_remove", "TDX_GPA_RANGE_NOT_BLOCKED|RCX")] > 0
    assert any(v == "not enabled" for _, v in seen)
    assert len({k for k in seen if k[1] not in ("-", "not enabled")}) > 120
    # whatever the host does, the module's FREEID check keeps HKID reuse clean (§6.12); the
    # host's own mistakes do show up as concrete damage
    assert "hkid-reuse-dirty-lines" not in kinds
    assert {"machine-check", "corrupted-host-data"} <= kinds


def test_random_walk_is_deterministic() -> None:
    a, sa = walk(7, 300)
    b, sb = walk(7, 300)
    assert sa == sb
    assert a.observe() == b.observe()
    assert [(c.kind, c.step_index, c.message) for c in a.consequences] == \
        [(c.kind, c.step_index, c.message) for c in b.consequences]
