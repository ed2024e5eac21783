"""``tdxcheck conform``: random walks of host calls on the model and the executor in lockstep.

The model (``model/``) and the concrete executor (``checker/executor/``) are written apart;
a seeded random walk of scenario steps is replayed on both, and the first step where their
statuses or observed effects differ is reported with a shrunk reproducer (delta debugging
over the walk's steps).  Returns data; the CLI prints it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tdxcheck.checker.explore.replay import Disagreement, replay
from tdxcheck.checker.scenario import ScenarioError, parse_text
from tdxcheck.model.steps import STEPS, TD_EXIT_REASONS, Kind

CONFIG = ("config packages=2 cpus_per_package=1 hkids=3 tdcs_pages=1 tdcx_pages=1 "
          "sept_levels=2")
PAGES = [f"p{i}" for i in range(10)]
TDS = {"td0": "p0", "td1": "p1"}
VPS = {"vp0": ("td0", "p2"), "vp1": ("td1", "p3")}
GPAS = [0x0, 0x1000, 0x200000, 0x201000]
CPUS = 2
#: leaves with a BUSY fault point, as a walk may ask for one (the rules say where)
BUSY_STEPS = {"tdh_mng_create", "tdh_mng_key_config", "tdh_mng_vpflushdone",
              "tdh_mng_key_freeid", "tdh_phymem_cache_wb", "tdh_mem_sept_add",
              "tdh_mem_page_aug", "tdh_mem_range_block", "tdh_mem_page_remove",
              "tdh_mem_range_unblock", "tdh_mem_sept_remove", "tdh_mem_track", "tdh_vp_enter"}


def prefix_lines() -> list[str]:
    """Every object exists before the random part (the parser wants a create first)."""
    lines = [CONFIG, "hkid_alloc hkid=1", "page_alloc page=" + ",".join(PAGES)]
    lines += [f"tdh_mng_create td={t} page={p} hkid=1" for t, p in TDS.items()]
    lines += [f"tdh_vp_create td={t} vp={v} page={p}" for v, (t, p) in VPS.items()]
    return lines


def random_step(rnd: random.Random) -> str:
    sig = rnd.choice([s for s in STEPS if s.name not in ("tdh_mng_create", "tdh_vp_create")])
    ops = []
    for k in sig.operands:
        if k in sig.optional and k is not Kind.CPU and rnd.random() < 0.3:
            continue
        if k is Kind.TD:
            ops.append(f"td={rnd.choice(list(TDS))}")
        elif k is Kind.VP:
            ops.append(f"vp={rnd.choice(list(VPS))}")
        elif k is Kind.PAGE or k is Kind.PAGES:
            ops.append(f"page={rnd.choice(PAGES)}")
        elif k is Kind.HKID:
            ops.append(f"hkid={rnd.choice((1, 2))}")
        elif k is Kind.GPA:
            ops.append(f"gpa=0x{rnd.choice(GPAS):x}")
        elif k is Kind.LEVEL:
            ops.append(f"level={rnd.choice((0, 1))}")
        elif k is Kind.CPU:
            ops.append(f"cpu={rnd.randrange(CPUS)}")
        elif k is Kind.RESUME:
            ops.append(f"resume={rnd.choice((0, 1))}")
        elif k is Kind.REASON:
            ops.append(f"reason={rnd.choice(TD_EXIT_REASONS)}")
    if sig.name in BUSY_STEPS and rnd.random() < 0.05:
        ops.append("fault=TDX_OPERAND_BUSY")
    return " ".join([sig.name, *ops])


def guided_steps() -> list[str]:
    """A lifecycle the walk interleaves with, so it reaches deep states too."""
    return [
        "tdh_mng_key_config td=td0 cpu=0", "tdh_mng_key_config td=td0 cpu=1",
        "tdh_mng_addcx td=td0 page=p4", "tdh_mng_init td=td0", "tdh_vp_addcx vp=vp0 page=p5",
        "tdh_vp_init vp=vp0 cpu=0", "tdh_mem_sept_add td=td0 gpa=0x0 level=1 page=p6",
        "tdh_mem_page_add td=td0 gpa=0x0 page=p7", "tdh_mr_finalize td=td0",
        "tdh_vp_enter vp=vp0 cpu=0", "td_exit vp=vp0 reason=normal",
        "tdh_mem_page_aug td=td0 gpa=0x1000 page=p8", "tdh_mem_range_block td=td0 gpa=0x1000 level=0",
        "tdh_mem_track td=td0", "tdh_mem_page_remove td=td0 gpa=0x1000 level=0",
        "tdh_phymem_page_wbinvd_hkid hkid=1 page=p8", "tdh_vp_flush vp=vp0 cpu=0",
        "tdh_mng_vpflushdone td=td0", "tdh_phymem_cache_wb cpu=0 resume=0",
        "tdh_phymem_cache_wb cpu=1 resume=0", "tdh_mng_key_freeid td=td0",
        "tdh_phymem_page_reclaim page=p5", "tdh_phymem_page_reclaim page=p2",
        "tdh_phymem_page_reclaim page=p4", "tdh_phymem_page_reclaim page=p6",
        "tdh_phymem_page_reclaim page=p7", "tdh_phymem_page_reclaim page=p0",
    ]


def make_walk(steps: int, seed: int) -> list[str]:
    """A seeded walk: a guided lifecycle with random steps mixed in."""
    rnd = random.Random(seed)
    guided = guided_steps()
    out: list[str] = []
    gi = 0
    while len(out) < steps:
        if rnd.random() < 0.35:
            out.append(guided[gi % len(guided)])
            gi += 1
        else:
            out.append(random_step(rnd))
    return out


@dataclass
class ConformResult:
    steps: int
    seed: int
    disagreement: Disagreement | None
    reproducer: list[str]  # scenario lines (prefix + shrunk walk), empty if they agree

    @property
    def ok(self) -> bool:
        return self.disagreement is None


def first_disagreement(body: list[str], strict: bool = True
                       ) -> tuple[int, Disagreement] | None:
    """(index in ``body``, disagreement) of the first step the engines differ on.

    ``strict=False`` (while shrinking) treats a walk that no longer parses as "no
    disagreement"; the walk itself must always parse, or the run would prove nothing."""
    lines = prefix_lines()
    try:
        sc = parse_text("\n".join(lines + body) + "\n", "<walk>")
        r = replay(sc, run="both")
    except ScenarioError:
        if strict:
            raise
        return None
    if not r.disagreements:
        return None
    d = r.disagreements[0]
    return d.line - len(lines) - 1, d


def shrink(body: list[str], still: Callable[[list[str]], bool]) -> list[str]:
    """ddmin: drop chunks of steps while the disagreement persists."""
    n = 2
    while len(body) >= 2:
        chunk = max(1, len(body) // n)
        reduced = False
        for i in range(0, len(body), chunk):
            cand = body[:i] + body[i + chunk:]
            if cand and still(cand):
                body, n, reduced = cand, max(n - 1, 2), True
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(n * 2, len(body))
    return body


def conform(steps: int, seed: int) -> ConformResult:
    body = make_walk(steps, seed)
    hit = first_disagreement(body)
    if hit is None:
        return ConformResult(steps, seed, None, [])
    k, d = hit
    body = body[: k + 1]
    body = shrink(body, lambda b: first_disagreement(b, strict=False) is not None)
    hit2 = first_disagreement(body, strict=False)
    return ConformResult(steps, seed, hit2[1] if hit2 else d, prefix_lines() + body)
