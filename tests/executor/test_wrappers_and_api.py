"""The typed wrappers (RFC / LH shapes), the untyped seamcall, the runner's API and bindings,
``observe()``'s projection, and the executor's independence from the model."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from tdxcheck.checker.executor import (
    Consequence,
    ExecStep,
    Executor,
    Machine,
    Page,
    StepNotEnabled,
    TdxHost,
    TdxTd,
    TdxVp,
    seamcall,
    tdx_td,
    tdx_vp,
)
from tdxcheck.checker.executor.structures import LEAF
from tdxcheck.model.status import Status, parse_status
from tdxcheck.model.steps import STEPS

EXECUTOR_DIR = Path(__file__).resolve().parents[2] / "checker" / "executor"
SUCCESS = int(Status.TDX_SUCCESS)


def test_public_api() -> None:
    assert {f.name for f in dataclasses.fields(ExecStep)} == {"status", "outputs"}
    assert [f.name for f in dataclasses.fields(Consequence)][:3] == ["kind", "step_index", "message"]
    assert issubclass(StepNotEnabled, Exception)
    assert tdx_td is TdxTd and tdx_vp is TdxVp
    assert {f.name for f in dataclasses.fields(TdxTd)} == {"tdr_page", "tdcs_pages",
                                                           "tdcs_nr_pages", "tdcx_nr_pages"}
    assert {f.name for f in dataclasses.fields(TdxVp)} == {"tdvpr_page", "tdcx_pages"}
    ex = Executor({"packages": 1})
    assert ex.config["cpus_per_package"] == 2 and ex.config["tdcs_pages"] == 6  # defaults


def test_every_step_of_the_table_has_a_handler() -> None:
    ex = Executor({})
    for sig in STEPS:
        assert hasattr(ex, "_s_" + sig.name), sig.name
        if sig.leaf is not None:
            assert sig.leaf in LEAF


def test_typed_wrappers_drive_a_td_without_the_runner() -> None:
    """KVM's creation order straight on the wrappers (smp_call_on_cpu = setting ``cpu``)."""
    m = Machine({"packages": 2, "cpus_per_package": 1, "tdcs_pages": 1, "tdcx_pages": 1,
                 "sept_levels": 2})
    host = TdxHost(m)
    pages = iter(Page(f"p{i}", 0x2000_0000 + i * 0x1000) for i in range(20))
    td = TdxTd(tdr_page=next(pages), tdcs_pages=[next(pages)], tdcs_nr_pages=1, tdcx_nr_pages=1)
    vp = TdxVp(tdvpr_page=next(pages), tdcx_pages=[next(pages)])
    assert host.tdh_mng_create(td, 1) == SUCCESS
    for cpu in (0, 1):
        host.cpu = cpu
        assert host.tdh_mng_key_config(td) == SUCCESS
    assert host.tdh_mng_addcx(td, td.tdcs_pages[0]) == SUCCESS
    assert host.tdh_mng_init(td) == (SUCCESS, 0)
    assert host.tdh_vp_create(td, vp) == SUCCESS
    assert host.tdh_vp_addcx(vp, vp.tdcx_pages[0]) == SUCCESS
    host.cpu = 0
    assert host.tdh_vp_init(vp, 0, 0) == SUCCESS
    sept, mem = next(pages), next(pages)
    assert host.tdh_mem_sept_add(td, 0, 1, sept) == (SUCCESS, 0, 0)
    assert host.tdh_mem_page_add(td, 0, mem)[0] == SUCCESS
    assert host.tdh_mr_finalize(td) == SUCCESS
    assert host.tdh_mem_range_block(td, 0, 0)[0] == SUCCESS
    assert host.tdh_mem_track(td) == SUCCESS
    status, removed, _ = host.tdh_mem_page_remove(td, 0, 0)
    assert status == SUCCESS and removed == mem.pa
    assert host.tdh_phymem_page_wbinvd_hkid(1, mem) == SUCCESS
    assert host.tdh_vp_flush(vp) == SUCCESS
    assert host.tdh_mng_vpflushdone(td) == SUCCESS
    for cpu in (0, 1):
        host.cpu = cpu
        assert host.tdh_phymem_cache_wb(False) == SUCCESS
    assert host.tdh_mng_key_freeid(td) == SUCCESS
    # semantic out-arguments: (status, tdx_pt, tdx_owner, tdx_size)
    assert host.tdh_phymem_page_reclaim(vp.tdvpr_page) == (SUCCESS, 6, td.tdr_page.pa, 0)  # type: ignore[union-attr]
    status, tdx_pt, tdx_owner, tdx_size = host.tdh_phymem_page_reclaim(td.tdr_page)  # type: ignore[arg-type]
    assert status == int(Status.TDX_TD_ASSOCIATED_PAGES_EXIST)
    assert (tdx_pt, tdx_owner, tdx_size) == (0, 0, 0)  # no outputs on failure


def test_wrappers_clflush_and_raw_seamcall_does_not() -> None:
    m = Machine({"packages": 2, "cpus_per_package": 1})
    host = TdxHost(m)
    a, b = Page("a", 0x3000_0000), Page("b", 0x3000_1000)
    for p in (a, b):
        m.host_write(0, p.pa, b"kernel", range(0, 64, 8))
    assert m.dirty_lines(keyid=0, pa=a.pa) and m.dirty_lines(keyid=0, pa=b.pa)
    assert host.tdh_mng_create(TdxTd(tdr_page=a), 1) == SUCCESS
    assert not m.dirty_lines(keyid=0, pa=a.pa)  # written back, invalidated
    status, out = seamcall(m, LEAF["TDH.MNG.CREATE"], b.pa, 2)
    assert status == SUCCESS and out == {}
    assert m.dirty_lines(keyid=0, pa=b.pa)  # the bare SEAMCALL leaves them
    quiet = TdxHost(m, wrapper_clflush=False)
    c = Page("c", 0x3000_2000)
    m.host_write(0, c.pa, b"kernel", [0])
    quiet.tdh_mng_create(TdxTd(tdr_page=c), 1)
    assert m.dirty_lines(keyid=0, pa=c.pa)
    with pytest.raises(ValueError):
        host.tdh_mng_key_config(TdxTd())  # a NULL tdr_page


def test_seamcall_version_bits_and_unknown_leaf() -> None:
    m = Machine({})
    status, _ = m.seamcall(LEAF["TDH.PHYMEM.CACHE.WB"] | (1 << 16), 0)
    assert status == int(Status.TDX_NO_HKID_READY_TO_WBCACHE)
    status, _ = m.seamcall(99)
    assert status == parse_status("TDX_OPERAND_INVALID|RAX")[0]
    with pytest.raises(ValueError):
        m.seamcall(LEAF["TDH.PHYMEM.CACHE.WB"], 0, cpu=4)


def test_runner_bindings_even_on_failure(host: Any) -> None:
    host.ok("page_alloc page=tdr,cs0,vpr")
    host.expect("tdh_mng_create td=td0 page=tdr hkid=0", "TDX_OPERAND_INVALID|RDX")
    assert host.ex.tds["td0"].tdr_page.name == "tdr"
    host.ok("hkid_alloc hkid=1", "tdh_mng_create td=td0 page=tdr hkid=1")
    host.expect("tdh_mng_addcx td=td0 page=cs0", "TDX_TD_KEYS_NOT_CONFIGURED")
    host.expect("tdh_mng_addcx td=td0 page=cs0", "TDX_TD_KEYS_NOT_CONFIGURED")
    assert [p.name for p in host.ex.tds["td0"].tdcs_pages] == ["cs0"]  # a retry is not listed twice
    host.expect("tdh_vp_create td=td0 vp=vp0 page=vpr", "TDX_TD_KEYS_NOT_CONFIGURED")
    assert host.ex.vps["vp0"].tdvpr_page.name == "vpr" and host.ex.vp_td["vp0"] == "td0"


def test_raw_seamcall_makes_hidden_objects(host: Any) -> None:
    host.ok("hkid_alloc hkid=1", "page_alloc page=tdr,cs0,v,x")
    host.ok("seamcall TDH.MNG.CREATE rcx=tdr rdx=1")
    assert host.obs("td.@tdr.lifecycle") == 0
    host.ok("seamcall TDH.MNG.KEY.CONFIG rcx=tdr cpu=0", "seamcall TDH.MNG.KEY.CONFIG rcx=tdr cpu=1",
            "seamcall TDH.MNG.ADDCX rcx=cs0 rdx=tdr", "seamcall TDH.MNG.INIT rcx=tdr",
            "seamcall TDH.VP.CREATE rcx=v rdx=tdr")
    assert host.ex.vp_td["@v"] == "@tdr"
    assert host.obs("vp.@v.state") == 0 and host.obs("td.@tdr.op_state") == 1
    r = host("seamcall TDH.PHYMEM.PAGE.RECLAIM rcx=x")
    assert r.outputs == {}
    with pytest.raises(ValueError):
        host("seamcall TDH.NO.SUCH.LEAF rcx=0")


def test_observe_keys(make_host: Any, small: dict[str, int]) -> None:
    h = make_host(small, names={"page": ["tdr", "cs0", "vpr"], "td": ["td0"], "vp": ["vp0"]})
    o = h.ex.observe()
    assert set(o) == {
        "page.tdr.pt", "page.tdr.allocated", "page.cs0.pt", "page.cs0.allocated",
        "page.vpr.pt", "page.vpr.allocated", "td.td0.lifecycle", "td.td0.op_state",
        "vp.vp0.state", "vp.vp0.assoc_cpu", "kot.1.state", "kot.2.state",
        "hkid.1.allocated", "hkid.2.allocated"}
    assert o["td.td0.lifecycle"] is None and o["vp.vp0.assoc_cpu"] is None
    h.build("vcpu")
    o = h.ex.observe()
    assert (o["page.tdr.pt"], o["page.cs0.pt"], o["page.vpr.pt"]) == (4, 5, 6)
    assert (o["td.td0.lifecycle"], o["td.td0.op_state"]) == (1, 1)
    assert (o["vp.vp0.state"], o["vp.vp0.assoc_cpu"]) == (2, 0)
    assert (o["kot.1.state"], o["hkid.1.allocated"], o["page.tdr.allocated"]) == (1, 1, 1)
    assert "kot.3.state" not in o  # the global KeyID is not a private HKID of the host pool


def test_step_index_counts_every_call(host: Any) -> None:
    with pytest.raises(StepNotEnabled):
        host("td_exit vp=nobody")
    host.ok("hkid_alloc hkid=1", "page_alloc page=tdr", "tdh_mng_create td=td0 page=tdr hkid=1")
    host.ok("host_write page=tdr cpu=0")
    assert host.ex.consequences[0].step_index == 4
    host.ok("hkid_alloc hkid=1", "hkid_free hkid=2", "page_free page=zz")
    assert len(host.ex.host_events) == 3


def test_executor_imports_only_steps_and_status_from_the_model() -> None:
    """The executor is the project's second implementation: it may read the step table and the
    status codes, nothing else of ``tdxcheck.model`` (and no other tdxcheck package)."""
    allowed = {"tdxcheck.model.steps", "tdxcheck.model.status"}
    files = sorted(EXECUTOR_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "machine.py", "wrappers.py", "runner.py"}
    for f in files:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: stays inside the executor package
                    assert node.level == 1, f"{f.name}: {ast.dump(node)}"
                    continue
                names = [node.module or ""]
            else:
                continue
            for n in names:
                if n.startswith("tdxcheck"):
                    assert n in allowed, f"{f.name} imports {n}"
                assert not n.startswith(("model", "checker", "properties")), f"{f.name}: {n}"
