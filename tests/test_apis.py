"""The API lab (``tdxcheck apis``, issue 14): variants as data, the most general client of
each API, the thirteen classes of host mistake, their verdicts, traces, feature credit, and
KVM written against an API."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import pytest
from tdxcheck.checker.analyses.apis import (
    CLASSES,
    ApiHost,
    explore_variant,
    misuse_class,
    variant,
)
from tdxcheck.checker.analyses.apis.run import (
    CAUGHT,
    HARMLESS,
    IMPOSSIBLE,
    NA,
    NOT_REACHED,
    SILENT,
)
from tdxcheck.checker.analyses.apis.traces import cell_tdx
from tdxcheck.checker.cli import main
from tdxcheck.checker.explore.bfs import Limits
from tdxcheck.checker.explore.engine import Engine
from tdxcheck.checker.explore.programs import any_host_actions, make_config
from tdxcheck.checker.explore.replay import replay
from tdxcheck.checker.explore.symmetry import Symmetry
from tdxcheck.checker.scenario import InputError, parse_file
from tdxcheck.model.actions import Action
from tdxcheck.model.compile import NOT_ENABLED
from tdxcheck.model.enums import HostPage
from tdxcheck.model.rule import LEAVES
from tdxcheck.model.state import S
from tdxcheck.model.status import status_name

TINY = make_config("tiny", {})


@pytest.fixture(scope="module")
def raw():  # type: ignore[no-untyped-def]
    return explore_variant(variant("raw"), TINY)


@pytest.fixture(scope="module")
def linux():  # type: ignore[no-untyped-def]
    return explore_variant(variant("linux-6.19"), TINY)


@pytest.fixture(scope="module")
def helpers():  # type: ignore[no-untyped-def]
    return explore_variant(variant("helpers"), TINY)


def verdicts(vr) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c.cls.id: c.summary() for c in vr.cells}


# ------------------------------------------------------------------ variants as data
def test_the_c_types_decide_the_operand_domains() -> None:
    raw_, rfc, lx, pfn, hp = (variant(n) for n in ("raw", "rfc", "linux-6.19", "pfn-2026",
                                                   "helpers"))
    assert raw_.features == frozenset()
    assert lx.page_type("tdh_mem_page_aug") == "struct page *"
    assert pfn.page_type("tdh_mem_page_aug") == "kvm_pfn_t"
    assert hp.page_type("tdh_mem_page_aug") is None  # the API allocates it
    # an HKID and a page address trade places only where both are integers
    assert raw_.swappable("tdh_mng_create") and rfc.swappable("tdh_mng_create")
    assert not lx.swappable("tdh_mng_create") and not lx.swappable(
        "tdh_phymem_page_wbinvd_hkid")
    assert pfn.swappable("tdh_phymem_page_wbinvd_hkid")  # (u64 hkid, kvm_pfn_t pfn)
    assert not hp.swappable("tdh_phymem_page_wbinvd_hkid")
    assert lx.without("struct_page").swappable("tdh_phymem_page_wbinvd_hkid")
    assert "tdh_mng_create(td, u16 hkid)" in lx.signatures()
    with pytest.raises(InputError, match="unknown API variant"):
        variant("xen")
    with pytest.raises(InputError, match="unknown misuse class"):
        misuse_class("99")


def test_a_sealed_handle_names_only_its_own_tdr(raw, linux, helpers) -> None:  # type: ignore[no-untyped-def]
    """Type-state handles: a TD operand is the live TD's own TDR; pokeable handles take any
    page of their field's type (struct page: never NULL; an integer: NULL too)."""
    hp, lx, rw = helpers.host, linux.host, raw.host

    def tdrs(h: ApiHost) -> set[int]:
        return {mv.action.arg("tdr") for mv in h.moves
                if mv.action is not None and mv.action.kind == "TDH.MNG.KEY.CONFIG"}

    assert tdrs(lx) == {1, 2, 3} and tdrs(rw) == {0, 1, 2, 3}
    assert all(mv.via_handle and mv.guard is not None for mv in hp.moves
               if mv.action is not None and mv.action.kind == "TDH.MNG.KEY.CONFIG")


# ------------------------------------------------------------------ the classification
RAW_TINY = {
    "wrong-type-operand": "caught PAGE_METADATA_INCORRECT|RCX (1)",
    "hkid-page-swap": "caught OPERAND_INVALID|RDX (1)",
    "no-clflush": "SILENT flush-before-alloc (3)",
    "no-or-wrong-wbinvd": "SILENT flush-before-reclaim (8)",
    "clear-order": "SILENT flush-before-reclaim (8)",
    "hkid-freed-early": "SILENT keyid-after-vpflushdone (4)",
    "teardown-step-skipped": "caught LIFECYCLE_STATE_INCORRECT (4)",
    "remove-untracked": "n/a",
    "free-while-owned": "SILENT no-double-assignment (9)",
    "tdr-before-tdcs": "caught TD_ASSOCIATED_PAGES_EXIST (10)",
    "vcpu-wrong-cpu": "n/a",
    "stale-handle": "n/a",
    "leak": "SILENT no-leak (2)",
}


@pytest.mark.parametrize("cls", [c.id for c in CLASSES])
def test_raw_classification_pinned(raw, cls: str) -> None:  # type: ignore[no-untyped-def]
    """Every class under the pre-RFC u64 API (tiny, exhaustive): what the module refuses
    (with its status), what it accepts and then an invariant breaks."""
    assert raw.complete
    assert verdicts(raw)[cls] == RAW_TINY[cls]


LINUX_TINY = dict(RAW_TINY, **{"hkid-page-swap": "impossible", "no-clflush": "impossible"})


@pytest.mark.parametrize("cls", [c.id for c in CLASSES])
def test_linux_classification_pinned(linux, cls: str) -> None:  # type: ignore[no-untyped-def]
    """linux-6.19: struct page stops the swap and the wrapper's CLFLUSH the dirty hand-over
    (by construction: no call of the API can make them); everything else stays."""
    assert verdicts(linux)[cls] == LINUX_TINY[cls]
    c = linux.cell(cls)
    if cls in ("hkid-page-swap", "no-clflush"):
        assert c.note.startswith("cannot be written")


def test_helpers_make_every_mistake_impossible_but_the_leak(helpers) -> None:  # type: ignore[no-untyped-def]
    """The helpers API (tiny, exhaustive): nothing a caller can write breaks an invariant
    but stopping without teardown; the witnesses say the lifecycle was explored."""
    v = {c.cls.id: c.verdict for c in helpers.cells}
    assert v.pop("leak") == SILENT
    assert set(v.values()) <= {IMPOSSIBLE, NA}
    assert set(helpers.violations) == {"no-leak"}
    assert helpers.complete and helpers.witnesses["td-teardown"] is not None
    assert helpers.witnesses["vcpu-in-guest"] is not None


def bounded(name: str, cls: str, depth: int, **over: str):  # type: ignore[no-untyped-def]
    return explore_variant(variant(name), make_config("tiny", over),
                           classes=[misuse_class(cls)], limits=Limits(max_depth=depth)).cells[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["raw", "linux-6.19"])
def test_classes_that_need_a_larger_config(name: str) -> None:
    """REMOVE without BLOCK/TRACK (a guest page: five pages with a two-level S-EPT), a
    vCPU on the wrong CPU (two CPUs), a handle with no TD of its own naming a live vCPU
    (two vCPU slots): caught, caught, accepted (the module cannot tell)."""
    # a guest page under the smallest S-EPT the format allows (sept_levels 2..5): TDR,
    # TDVPR, one S-EPT page and the guest page, plus TDCS (5 pages); the shortest trace is
    # longer under linux-6.19 than raw (measured: 16 and 14 moves)
    c8 = bounded(name, "remove-untracked", 16, pages="5", sept_levels="2")
    assert c8.summary() == ("caught GPA_RANGE_NOT_BLOCKED|RCX "
                            f"({ {'raw': 14, 'linux-6.19': 16}[name] })")
    c11 = bounded(name, "vcpu-wrong-cpu", 13, cpus_per_package="2")
    assert c11.summary() == "caught VCPU_ASSOCIATED (11)"
    c12 = bounded(name, "stale-handle", 11, vps="2")
    assert c12.summary() == "harmless (10)"
    for c in (c8, c11, c12):  # a depth bound: says how far it looked, never impossible
        assert "depth bound" in c.note


def test_remove_untracked_needs_a_guest_page_only_without_sept_remove() -> None:
    """On default (4 pages: TD, vCPU and one S-EPT page), raw's SEPT.REMOVE can show REMOVE
    without BLOCK/TRACK; the wrapper APIs have no SEPT.REMOVE (api-variants.md §2) and need
    a fifth page for a guest page, so the cell is n/a there, never impossible."""
    from tdxcheck.checker.analyses.apis.host import ApiHost

    u = make_config("default", {}).universe()
    c8 = misuse_class("remove-untracked")
    for name, why in (("raw", ""), ("linux-6.19", "needs 5 pages"), ("helpers", "needs 5")):
        h = ApiHost(variant(name), u)
        sr = any(mv.action is not None and mv.action.kind == "TDH.MEM.SEPT.REMOVE"
                 for mv in h.moves)
        assert sr == (name == "raw")
        assert c8.applies(u, sr).startswith(why)
    assert c8.applies(TINY.universe(), True).startswith("needs 4 pages")


def test_a_limit_gives_not_reached_never_impossible() -> None:
    vr = explore_variant(variant("linux-6.19"), TINY, limits=Limits(max_states=30))
    assert not vr.complete and "state limit" in vr.reason
    cells = {c.cls.id: c for c in vr.cells}
    for cid in ("tdr-before-tdcs", "no-or-wrong-wbinvd"):
        assert cells[cid].verdict == NOT_REACHED
        assert cells[cid].note.startswith("not reached in 30 states")
    assert "every instance in 30 states" in cells["wrong-type-operand"].note
    # what the API's types rule out is impossible whatever the run
    assert cells["no-clflush"].verdict == IMPOSSIBLE
    assert all(c.verdict != IMPOSSIBLE or c.note.startswith("cannot be written")
               for c in vr.cells)
    assert cells["leak"].verdict == SILENT  # a silent instance is definitive


# ------------------------------------------------------------------ raw = any host + host
def any_plus_host_states(config) -> int:  # type: ignore[no-untyped-def]
    """The states --host any's SEAMCALLs (with and without the caller's CLFLUSH of a page
    handed over) and the host's own actions reach without breaking an invariant, built
    apart from the API lab and explored one action at a time (no fused code)."""
    u = config.universe()
    acts = list(any_host_actions(u))
    for a, g in list(acts):
        if a.kind in LEAVES and LEAVES[a.kind].hands:
            acts.append((Action(a.step, a.kind, a.args, a.cpu,
                                tuple(a.arg(h) for h in LEAVES[a.kind].hands)), g))
    for p in range(1, u.n_pages):
        acts += [(Action("page_alloc", "page_alloc", (("page", p),)), S.host[p] == HostPage.KERNEL),
                 (Action("page_free", "page_free", (("page", p),)), S.host[p] == HostPage.TDX),
                 (Action("clear_page", "clear_page", (("page", p),)), S.host[p] == HostPage.TDX)]
    for h in range(1, u.platform.hkids):
        acts += [(Action("hkid_alloc", "hkid_alloc", (("hkid", h),)), S.host_hkid[h] == 0),
                 (Action("hkid_free", "hkid_free", (("hkid", h),)), S.host_hkid[h] == 1)]
    acts.append((Action("check_no_leak", "check_no_leak", ()), None))
    eng = Engine(u)
    from tdxcheck.model.compile import compile_functions, new_gen, predicate_source

    gen = new_gen(eng.layout)
    srcs = [predicate_source(f"g{i}", [g], eng.layout, gen, two_state=False)
            for i, (_a, g) in enumerate(acts) if g is not None]
    ns = compile_functions(srcs, gen)
    guards = [ns[f"g{i}"] if g is not None else None for i, (_a, g) in enumerate(acts)]
    canon = Symmetry(eng.layout).canonical
    init = canon(eng.initial())
    seen, q = {init}, deque([init])
    while q:
        s = q.popleft()
        for (a, _g), guard in zip(acts, guards, strict=True):
            if guard is not None and guard(s) >= 0:
                continue
            r = eng.step(s, a)
            if r.status == NOT_ENABLED or r.step_violations:
                continue
            c = canon(r.state)
            if c not in seen and not eng.state_violations(c):
                seen.add(c)
                q.append(c)
    return len(seen)


def test_raw_is_the_any_host_plus_the_host_actions() -> None:
    """The variant whose types allow everything: the same state count as --host any plus
    host actions (a configuration of two pages: a TD without a vCPU)."""
    small = make_config("tiny", {"pages": "2"})
    vr = explore_variant(variant("raw"), small)
    assert vr.complete and vr.states == any_plus_host_states(small)


@pytest.mark.slow
def test_raw_is_the_any_host_plus_the_host_actions_tiny(raw) -> None:  # type: ignore[no-untyped-def]
    assert raw.states == any_plus_host_states(TINY) == 4574


# ------------------------------------------------------------------ traces
def test_cell_traces_replay_on_both_engines(raw, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each cell's shortest trace as a .tdx: the model and the executor agree on every step,
    the last step is the mistake, and a silent cell's invariant breaks there; the executor
    shows what the bug does to bytes."""
    for cid in ("no-clflush", "wrong-type-operand", "free-while-owned", "hkid-page-swap"):
        c = raw.cell(cid)
        p = tmp_path / f"{cid}.tdx"
        p.write_text(cell_tdx(raw, c))
        r = replay(parse_file(str(p)), run="both")
        assert not r.mismatches and not r.disagreements, (cid, r.mismatches, r.disagreements)
        broken = {v.invariant for _s, v in r.violations}
        if c.verdict == SILENT:
            assert c.worst.invariant in broken
            assert r.steps[-1].violations
        else:
            assert status_name(r.steps[-1].status) == c.worst.status, cid
    kinds = {x.kind for x in replay(parse_file(str(tmp_path / "no-clflush.tdx")),
                                    run="both").consequences}
    assert "corrupted-td-data" in kinds  # the dirty KeyID-0 line written back over TD data


def test_a_refused_mistake_is_the_last_line_of_its_trace(tmp_path: Path) -> None:
    """A refused call leaves the state as it was, so the trace is concretised by what the
    move did, not only where it led: pfn-2026's swap is a PAGE.WBINVD with an HKID for its
    pfn (not some other call the module refuses with the same status)."""
    vr = explore_variant(variant("pfn-2026"), TINY, classes=[misuse_class("hkid-page-swap")],
                         limits=Limits(max_depth=1))
    c = vr.cells[0]
    assert c.summary() == "caught PAGE_METADATA_INCORRECT|RCX (1)"
    p = tmp_path / "swap.tdx"
    p.write_text(cell_tdx(vr, c))
    last = p.read_text().strip().splitlines()[-1]
    assert last.startswith("seamcall TDH.PHYMEM.PAGE.WBINVD"), last
    r = replay(parse_file(str(p)), run="both")
    assert not r.mismatches and not r.disagreements
    assert status_name(r.steps[-1].status) == c.worst.status


# ------------------------------------------------------------------ the command
def test_cli_apis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["apis", "--config", "tiny", "--variant", "helpers", "--json", "-q",
               "--trace-out", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["schema"] == "tdxcheck/1" and out["command"] == "apis"
    assert out["config"]["name"] == "tiny" and out["config"]["tds"] == 1
    cells = {c["class"]: c for c in out["variants"][0]["cells"]}
    assert cells["leak"]["verdict"] == SILENT and cells["no-clflush"]["verdict"] == IMPOSSIBLE
    assert out["trace_files"] == [str(tmp_path / "helpers" / "13-leak.tdx")]
    rc = main(["apis", "--config", "tiny", "--variant", "linux-6.19", "--class", "13",
               "--max-states", "5", "-q"])
    text = capsys.readouterr().out
    assert rc == 3 and "13 leak" in text and "(cut)" in text
    assert main(["apis", "--variant", "xen"]) == 2
    assert "unknown API variant" in capsys.readouterr().err


_ = (CAUGHT, HARMLESS)


# ------------------------------------------------------------------ KVM against an API
@pytest.mark.slow
@pytest.mark.parametrize("faults", [False, True])
def test_every_kvm_step_is_writable_in_linux_6_19(faults: bool) -> None:
    """Every transition of --host kvm (tiny; every module fault too), each model action in
    the state KVM made it: some move of the linux-6.19 API makes it.  Otherwise that API
    model would be stricter than upstream."""
    from tdxcheck.checker.analyses.apis.credit import kvm_unwritable

    bad, states = kvm_unwritable(variant("linux-6.19"), "tiny", faults=faults)
    assert bad == [] and states > 200


@pytest.mark.slow
def test_every_kvm_mutant_is_writable_in_linux_6_19_but_the_wrapper_one() -> None:
    """Each seeded KVM bug can be written against linux-6.19, but skip_clflush_page_aug:
    it patches the wrapper (tdh_mem_page_aug's own tdx_clflush_page, arch/x86), which no
    caller of the merged API can skip.  helpers makes every mutant impossible to write
    whose killing trace makes a mistake it rules out."""
    from tdxcheck.checker.analyses.apis.credit import (
        kvm_unwritable,
        mutant_classes,
        unwritable_mutants,
    )
    from tdxcheck.checker.analyses.mutants import MUTANTS
    from tdxcheck.checker.kvm import KvmHost, kvm_config

    host = ApiHost(variant("linux-6.19"), KvmHost(kvm_config("tiny")).u)
    unwritable = {m.name for m in MUTANTS
                  if kvm_unwritable(variant("linux-6.19"), "tiny", faults=m.faults,
                                    mutant=m.name, host=host)[0]}
    assert unwritable == {"skip_clflush_page_aug"}
    classes = mutant_classes("tiny")
    assert classes["skip_clflush_page_aug"] == ["no-clflush"]
    assert classes["hkid_free_before_freeid"] == ["hkid-freed-early"]
    hp = explore_variant(variant("helpers"), make_config(
        "tiny", {"pages": "5", "cpus_per_package": "2", "vps": "2"}))
    assert hp.complete and {c.verdict for c in hp.cells} == {IMPOSSIBLE, SILENT}
    out = unwritable_mutants(hp, classes)
    # only the mutant that shows as a leak and nothing else stays writable
    assert set(classes) - set(out) == {"skip_vp_flush_on_release"}
    assert classes["skip_vp_flush_on_release"] == ["leak"]


#: a configuration where every class can show: a guest page (five pages), two CPUs, a
#: second vCPU slot (one handle dead while the other is live)
LAB = make_config("tiny", {"pages": "5", "cpus_per_package": "2", "vps": "2"})


@pytest.mark.slow
def test_feature_credit() -> None:
    """helpers with one feature off at a time (exhaustive runs): each class it removes comes
    back with the feature(s) that remove it; the page lifecycle needs all three page
    helpers (guest pages go back through the zap, control pages through the reclaim); the
    swap is protected more than twice over (struct page, a distinct HKID type, and the
    helpers that take the page and the HKID out of the caller's hands).  Handles alone,
    struct page alone, a distinct HKID type alone and the hidden global KeyID alone remove
    nothing the rest does not."""
    from tdxcheck.checker.analyses.apis.credit import feature_credit

    cr = feature_credit(LAB, pairs=False)
    assert cr.base.complete and all(vr.complete for vr in cr.runs.values())
    credit = {c: cr.credited(c) for c in cr.removed()}
    assert credit == {
        "wrong-type-operand": ["typestate_handles"],
        "hkid-page-swap": [],
        "no-clflush": ["wrapper_clflush"],
        "no-or-wrong-wbinvd": ["helper_reclaim", "helper_zap"],
        "clear-order": ["helper_reclaim", "helper_zap"],
        "hkid-freed-early": ["helper_release_hkid"],
        "teardown-step-skipped": ["helper_release_hkid"],
        "remove-untracked": ["helper_zap"],
        "free-while-owned": ["helper_alloc", "helper_reclaim", "helper_zap"],
        "tdr-before-tdcs": ["typestate_handles"],
        "vcpu-wrong-cpu": ["helper_vcpu_load"],
        "stale-handle": ["typestate_handles"],
    }
    for f in ("handles", "struct_page", "hidden_global_keyid", "distinct_scalars"):
        assert not any(f in v for v in credit.values())
