"""The scenario parser (checker/scenario.py) against scenario-format.md §1, §2, §5."""

from __future__ import annotations

import pickle
import textwrap
from dataclasses import fields

import pytest
from tdxcheck.checker.scenario import (
    SEAMCALL_LEAVES,
    Config,
    ScenarioError,
    parse_file,
    parse_text,
)
from tdxcheck.model.state import Platform
from tdxcheck.model.status import OperandId, Status
from tdxcheck.model.steps import STEPS

FILE = "s.tdx"

# scenario-format.md §1, verbatim
CONTRACT_EXAMPLE = """\
config packages=2 cpus_per_package=2 hkids=4 tdcs_pages=6 tdcx_pages=5
hkid_alloc hkid=1
page_alloc page=tdr0,cs0,cs1,cs2,cs3,cs4,cs5
tdh_mng_create td=td0 page=tdr0 hkid=1          -> TDX_SUCCESS
tdh_mng_key_config td=td0 cpu=0
tdh_mng_key_config td=td0 cpu=2
tdh_mng_addcx td=td0 page=cs0
"""

# three lines that make td0 (tdr0) and name cs0, cs1; an error on the next line is line 4
TD0 = """\
hkid_alloc hkid=1
page_alloc page=tdr0,cs0,cs1
tdh_mng_create td=td0 page=tdr0 hkid=1
"""

# five lines: TD0 plus vp0 (vpr0); an error on the next line is line 6
VP0 = TD0 + """\
page_alloc page=vpr0,cx0
tdh_vp_create td=td0 vp=vp0 page=vpr0
"""


def parse(text: str, **kw):
    return parse_text(textwrap.dedent(text), FILE, **kw)


def error(text: str, **kw) -> ScenarioError:
    with pytest.raises(ScenarioError) as ei:
        parse_text(text, FILE, **kw)
    return ei.value


def assert_error(text: str, line: int, *parts: str, **kw) -> ScenarioError:
    e = error(text, **kw)
    assert str(e).startswith(f"{FILE}:{line}: "), str(e)
    assert e.file == FILE and e.line == line
    assert str(e) == f"{FILE}:{line}: {e.reason}"
    assert "\n" not in str(e)
    for p in parts:
        assert p in e.reason, (p, e.reason)
    return e


# --------------------------------------------------------------------------- good input


def test_contract_example_block():
    sc = parse_text(CONTRACT_EXAMPLE, FILE)
    assert sc.file == FILE
    assert sc.config == Config(packages=2, cpus_per_package=2, hkids=4, tdcs_pages=6, tdcx_pages=5)
    assert sc.config_line == 1
    assert [s.name for s in sc.steps] == [
        "hkid_alloc", "page_alloc", "tdh_mng_create", "tdh_mng_key_config",
        "tdh_mng_key_config", "tdh_mng_addcx",
    ]
    assert [s.line for s in sc.steps] == [2, 3, 4, 5, 6, 7]
    assert sc.steps[0].operands == {"hkid": 1}
    assert sc.steps[1].operands == {"page": ["tdr0", "cs0", "cs1", "cs2", "cs3", "cs4", "cs5"]}
    create = sc.steps[2]
    assert create.operands == {"td": "td0", "page": "tdr0", "hkid": 1}
    assert create.expected == Status.TDX_SUCCESS
    assert create.expected_text == "TDX_SUCCESS"
    assert create.expected_has_opid is False
    assert create.text == "tdh_mng_create td=td0 page=tdr0 hkid=1          -> TDX_SUCCESS"
    # cpu is Step.cpu, never an operand; default 0
    assert [s.cpu for s in sc.steps] == [0, 0, 0, 0, 2, 0]
    assert sc.steps[4].operands == {"td": "td0"}
    assert all(s.expected is None for i, s in enumerate(sc.steps) if i != 2)
    assert all(s.thread is None and s.fault is None for s in sc.steps)
    # bindings and names in order of first appearance
    assert sc.td_tdr == {"td0": "tdr0"}
    assert sc.td_tdcs == {"td0": ["cs0"]}
    assert sc.tds == ["td0"] and sc.vps == []
    assert sc.pages == ["tdr0", "cs0", "cs1", "cs2", "cs3", "cs4", "cs5"]
    assert sc.hkids == [1] and sc.gpas == [] and sc.threads == []


def test_config_defaults_and_platform_keys():
    sc = parse("check_no_leak\n")
    assert sc.config == Config()
    assert sc.config_line is None
    c = Config()
    assert (c.packages, c.cpus_per_package, c.hkids, c.tdcs_pages, c.tdcx_pages, c.max_vcpus,
            c.sept_levels, c.clflush_before_alloc, c.clear_before_reuse, c.wrapper_clflush) == (
            2, 2, 4, 6, 5, 8, 4, 1, 1, 1)
    assert Config(packages=3, cpus_per_package=2).cpus == 6
    # the model builds its Platform from as_dict(): same keys, same defaults
    assert c.as_dict() == {f.name: f.default for f in fields(Platform)}
    assert Platform(**Config(hkids=3).as_dict()).hkids == 3


def test_config_all_keys_and_hex_values():
    sc = parse("""\
        # a comment line first is fine
        config packages=1 cpus_per_package=3 hkids=0x3 tdcs_pages=1 tdcx_pages=0 max_vcpus=2 sept_levels=2 clflush_before_alloc=0 clear_before_reuse=0 wrapper_clflush=0
        check_no_leak
        """)
    assert sc.config_line == 2
    assert sc.config.as_dict() == dict(packages=1, cpus_per_package=3, hkids=3, tdcs_pages=1,
                                       tdcx_pages=0, max_vcpus=2, sept_levels=2,
                                       clflush_before_alloc=0, clear_before_reuse=0,
                                       wrapper_clflush=0)


def test_config_constructor_validates():
    with pytest.raises(ValueError, match="sept_levels"):
        Config(sept_levels=1)


def test_status_without_and_with_operand_id():
    sc = parse(TD0 + """\
        tdh_mng_addcx td=td0 page=cs0 -> TDX_OPERAND_BUSY
        tdh_mng_addcx td=td0 page=cs0 -> TDX_OPERAND_BUSY|RCX
        tdh_mng_addcx td=td0 page=cs0 -> TDX_OPERAND_BUSY|0xBA
        tdh_mng_addcx td=td0 page=cs1 ->TDX_KEY_CONFIGURED
        tdh_mng_init td=td0 -> TDX_OPERAND_BUSY|RAX
        """)
    a, b, c, d, e = sc.steps[3:]
    assert (a.expected, a.expected_has_opid, a.expected_text) == (
        Status.TDX_OPERAND_BUSY, False, "TDX_OPERAND_BUSY")
    assert (b.expected, b.expected_has_opid, b.expected_text) == (
        Status.TDX_OPERAND_BUSY + OperandId.RCX, True, "TDX_OPERAND_BUSY|RCX")
    # a numeric operand id is normalised to its name
    assert (c.expected, c.expected_has_opid, c.expected_text) == (
        Status.TDX_OPERAND_BUSY + OperandId.KOT, True, "TDX_OPERAND_BUSY|KOT")
    assert d.expected == Status.TDX_KEY_CONFIGURED and d.expected_text == "TDX_KEY_CONFIGURED"
    # |RAX is operand id 0: still an exact match request
    assert (e.expected, e.expected_has_opid, e.expected_text) == (
        Status.TDX_OPERAND_BUSY, True, "TDX_OPERAND_BUSY|RAX")


def test_guest_accept_may_expect_a_status():
    sc = parse(VP0 + "guest_accept vp=vp0 gpa=0x1000 -> TDX_SUCCESS\n")
    st = sc.steps[-1]
    assert st.operands == {"vp": "vp0", "gpa": 0x1000}
    assert st.expected == Status.TDX_SUCCESS


def test_gpa_hex_and_decimal():
    sc = parse(TD0 + """\
        page_alloc page=s3
        tdh_mem_sept_add td=td0 gpa=0x2000 level=3 page=s3
        tdh_mr_extend td=td0 gpa=8192
        tdh_mem_range_block td=td0 gpa=4096 level=0
        tdh_mem_range_block td=td0 gpa=0X0 level=0
        """)
    assert sc.steps[4].operands == {"td": "td0", "gpa": 0x2000, "level": 3, "page": "s3"}
    assert sc.steps[5].operands == {"td": "td0", "gpa": 8192}
    assert sc.steps[6].operands["gpa"] == 0x1000
    assert sc.gpas == [0x2000, 0x1000, 0]
    assert all(isinstance(g, int) for g in sc.gpas)


def test_comma_page_lists():
    sc = parse("""\
        page_alloc page=a,b,c
        page_free page=b,a
        page_alloc page=d
        """)
    assert sc.steps[0].operands == {"page": ["a", "b", "c"]}
    assert sc.steps[1].operands == {"page": ["b", "a"]}
    assert sc.steps[2].operands == {"page": ["d"]}
    assert sc.pages == ["a", "b", "c", "d"]


def test_threads_and_prefix():
    sc = parse(TD0 + """\
        thread destroyer   # comment after the name
        tdh_mng_vpflushdone td=td0
        tdh_phymem_cache_wb cpu=1 resume=0

        thread creator
        tdh_mng_addcx td=td0 page=cs0
        """)
    assert sc.threads == ["destroyer", "creator"]
    assert [s.thread for s in sc.steps] == [None, None, None, "destroyer", "destroyer", "creator"]
    assert [s.line for s in sc.steps[3:]] == [5, 6, 9]
    assert sc.steps[4].operands == {"resume": 0} and sc.steps[4].cpu == 1
    assert [s.name for s in sc.prefix()] == ["hkid_alloc", "page_alloc", "tdh_mng_create"]
    assert [s.line for s in sc.thread_steps("creator")] == [9]


def test_vp_bindings_and_addcx_lists():
    sc = parse(VP0 + """\
        tdh_vp_addcx vp=vp0 page=cx0
        tdh_vp_addcx vp=vp0 page=cx0 fault=TDX_RND_NO_ENTROPY
        tdh_mng_addcx td=td0 page=cs1
        tdh_mng_addcx td=td0 page=cs0
        tdh_mng_create td=td0 page=tdr0 hkid=2
        tdh_vp_create td=td0 vp=vp0 page=vpr0
        tdh_vp_init vp=vp0 cpu=3
        td_exit vp=vp0
        td_exit vp=vp0 reason=td_fatal
        """)
    assert sc.vp_tdvpr == {"vp0": "vpr0"}
    assert sc.vp_td == {"vp0": "td0"}
    assert sc.vp_tdcx == {"vp0": ["cx0"]}  # a retry does not list the page twice
    assert sc.td_tdcs == {"td0": ["cs1", "cs0"]}  # in addcx order
    assert sc.td_tdr == {"td0": "tdr0"}  # re-create with the same page: a retry
    assert sc.hkids == [1, 2]
    assert sc.steps[-3].cpu == 3
    assert sc.steps[-2].operands == {"vp": "vp0", "reason": "normal"}
    assert sc.steps[-1].operands == {"vp": "vp0", "reason": "td_fatal"}


def test_cpu_on_host_write_and_typed_seamcalls():
    sc = parse("""\
        config packages=2 cpus_per_package=1
        page_alloc page=p
        host_write page=p cpu=1
        host_write page=p
        tdh_phymem_page_reclaim page=p cpu=1
        """)
    assert [s.cpu for s in sc.steps] == [0, 1, 0, 1]
    assert sc.steps[1].operands == {"page": "p"}


def test_comments_blank_lines_and_text():
    sc = parse("""\

        # only a comment
        hkid_alloc hkid=1#no space before the comment
           hkid_free   hkid=1    # trailing
        """)
    assert [s.line for s in sc.steps] == [3, 4]
    assert sc.steps[0].text == "hkid_alloc hkid=1"
    assert sc.steps[1].text == "hkid_free   hkid=1"


def test_seamcall_form():
    sc = parse(TD0 + """\
        seamcall TDH.MNG.ADDCX rdx=tdr0 rcx=newpage cpu=3 -> TDX_SUCCESS
        seamcall TDH.PHYMEM.PAGE.RECLAIM rcx=0
        seamcall TDH.MNG.KEY.CONFIG rcx=tdr0 fault=TDX_KEY_GENERATION_FAILED
        seamcall TDH.MEM.SEPT.ADD rcx=0x2003 rdx=tdr0 r8=cs1
        """)
    a, b, c, d = sc.steps[3:]
    assert a.name == "seamcall"
    assert a.operands == {"leaf": "TDH.MNG.ADDCX", "rcx": "newpage", "rdx": "tdr0"}
    assert list(a.operands) == ["leaf", "rcx", "rdx"]  # register order, not text order
    assert a.cpu == 3 and a.expected == Status.TDX_SUCCESS
    assert a.leaf == "TDH.MNG.ADDCX"
    assert b.operands == {"leaf": "TDH.PHYMEM.PAGE.RECLAIM", "rcx": 0}  # the NULL page
    assert c.fault == "TDX_KEY_GENERATION_FAILED"
    assert d.operands == {"leaf": "TDH.MEM.SEPT.ADD", "rcx": 0x2003, "rdx": "tdr0", "r8": "cs1"}
    assert sc.pages == ["tdr0", "cs0", "cs1", "newpage"]  # a register names a page on first use
    # raw registers bind nothing: td0's TDCS list is untouched, and no gpa is recorded
    assert sc.td_tdcs == {"td0": []}
    assert sc.gpas == []


def test_seamcall_leaves_are_the_step_table_leaves():
    assert set(SEAMCALL_LEAVES) == {s.leaf for s in STEPS if s.leaf}
    assert "TDH.MNG.KEY.CONFIG" in SEAMCALL_LEAVES


def test_seamcall_hidden_objects():
    sc = parse(TD0 + """\
        page_alloc page=rtdr,rvpr,x
        seamcall TDH.MNG.CREATE rcx=rtdr rdx=2
        seamcall TDH.MNG.CREATE rcx=rtdr rdx=2
        seamcall TDH.VP.CREATE rcx=rvpr rdx=tdr0
        seamcall TDH.VP.CREATE rcx=x rdx=0
        seamcall TDH.MNG.CREATE rcx=0 rdx=2
        """)
    # created once; RCX 0 (the NULL page) makes @0, a name no page can have
    assert sc.tds == ["td0", "@rtdr", "@0"]
    assert sc.td_tdr == {"td0": "tdr0", "@rtdr": "rtdr", "@0": 0}
    assert sc.td_tdcs["@rtdr"] == []
    assert sc.vps == ["@rvpr", "@x"]
    assert sc.vp_tdvpr == {"@rvpr": "rvpr", "@x": "x"}
    assert sc.vp_td == {"@rvpr": "td0", "@x": None}
    assert sc.vp_tdcx == {"@rvpr": [], "@x": []}
    assert sc.hkids == [1]  # raw register integers are not HKIDs to the parser


def test_seamcall_hidden_vp_of_a_hidden_td():
    sc = parse("""\
        page_alloc page=r,v
        seamcall TDH.MNG.CREATE rcx=r rdx=1
        seamcall TDH.VP.CREATE rcx=v rdx=r
        """)
    assert sc.vp_td == {"@v": "@r"}


def test_fault_normalised_and_accepted():
    sc = parse(TD0 + """\
        tdh_mng_key_config td=td0 fault=TDX_OPERAND_BUSY|0xBB
        tdh_mng_addcx td=td0 page=cs0 fault=TDX_RND_NO_ENTROPY -> TDX_RND_NO_ENTROPY
        tdh_phymem_cache_wb cpu=0 resume=0 fault=TDX_INTERRUPTED_RESUMABLE
        """)
    assert sc.steps[3].fault == "TDX_OPERAND_BUSY|KET"
    assert sc.steps[4].fault == "TDX_RND_NO_ENTROPY"
    assert sc.steps[4].expected == Status.TDX_RND_NO_ENTROPY
    assert sc.steps[5].fault == "TDX_INTERRUPTED_RESUMABLE"
    assert "fault" not in sc.steps[3].operands


FAULTS = {
    "TDH.MNG.CREATE": ["TDX_OPERAND_BUSY|KOT", "TDX_RND_NO_ENTROPY"],
    "TDH.MNG.KEY.CONFIG": ["TDX_OPERAND_BUSY|KET", "TDX_KEY_GENERATION_FAILED"],
}


def test_fault_table_accepts_listed_and_bare_class():
    sc = parse("""\
        page_alloc page=t
        tdh_mng_create td=td0 page=t hkid=1 fault=TDX_OPERAND_BUSY|KOT
        tdh_mng_create td=td0 page=t hkid=1 fault=TDX_OPERAND_BUSY
        seamcall TDH.MNG.CREATE rcx=t fault=TDX_RND_NO_ENTROPY
        """, fault_table=FAULTS)
    assert [s.fault for s in sc.steps[1:]] == [
        "TDX_OPERAND_BUSY|KOT", "TDX_OPERAND_BUSY", "TDX_RND_NO_ENTROPY"]


def test_parse_file_reads_and_names_the_file(tmp_path):
    p = tmp_path / "ok.tdx"
    p.write_text(CONTRACT_EXAMPLE)
    sc = parse_file(p)
    assert sc.file == str(p)
    assert len(sc.steps) == 6
    bad = tmp_path / "bad.tdx"
    bad.write_text("hkid_alloc hkid=9\n")
    with pytest.raises(ScenarioError) as ei:
        parse_file(bad)
    assert str(ei.value).startswith(f"{bad}:1: ")


def test_parse_file_unreadable(tmp_path):
    missing = tmp_path / "nope.tdx"
    with pytest.raises(ScenarioError) as ei:
        parse_file(missing)
    e = ei.value
    assert (e.file, e.line) == (str(missing), 0)
    assert str(e).startswith(f"{missing}: cannot read: ")
    assert "No such file" in e.reason
    with pytest.raises(ScenarioError, match="cannot read"):
        parse_file(tmp_path)  # a directory
    binary = tmp_path / "bin.tdx"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ScenarioError, match=r":1: not UTF-8 text: byte 0xff at column 1"):
        parse_file(binary)


def test_scenario_error_shape():
    e = ScenarioError("f.tdx", 7, "something")
    assert str(e) == "f.tdx:7: something"
    assert (e.file, e.line, e.reason) == ("f.tdx", 7, "something")
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == "f.tdx:7: something"


def test_every_example_and_builtin_parses():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "examples").glob("*.tdx")) + sorted(
        (root / "checker" / "builtin").glob("*.tdx"))
    assert files
    for f in files:
        sc = parse_file(f)
        assert sc.steps, f


# --------------------------------------------------------------------------- bad input


def test_unknown_step_with_suggestion():
    assert_error(TD0 + "tdh_mng_craete td=td1 page=cs0 hkid=1\n", 4,
                 "unknown step 'tdh_mng_craete'", "did you mean tdh_mng_create?")
    assert_error("Page_Alloc page=a\n", 1, "did you mean page_alloc?")
    e = assert_error("frobnicate\n", 1, "unknown step 'frobnicate'")
    assert "did you mean" not in e.reason


def test_leaf_name_as_step_points_to_wrapper_and_seamcall():
    assert_error(TD0 + "TDH.MNG.INIT td=td0\n", 4, "tdh_mng_init", "seamcall TDH.MNG.INIT")
    assert_error("TDH.PHYMEM.PAGE.WBINVD\n", 1, "tdh_phymem_page_wbinvd_tdr",
                 "tdh_phymem_page_wbinvd_hkid")


def test_unknown_operand_with_suggestion():
    assert_error(TD0 + "tdh_mng_addcx td=td0 pgae=cs0\n", 4,
                 "unknown operand 'pgae' for tdh_mng_addcx", "did you mean page?", "td=", "page=")
    # cpu= is not an operand of host actions without a CPU
    assert_error("hkid_alloc hkid=1 cpu=1\n", 1, "unknown operand 'cpu' for hkid_alloc")
    assert_error("page_alloc pages=a\n", 1, "unknown operand 'pages'", "did you mean page?")


def test_missing_operand():
    assert_error(TD0 + "tdh_mng_create td=td1 page=cs0\n", 4,
                 "tdh_mng_create needs hkid=")
    assert_error("tdh_phymem_cache_wb cpu=0\n", 1, "tdh_phymem_cache_wb needs resume=")
    assert_error(TD0 + "tdh_vp_create td=td0\n", 4, "needs vp= page=")


def test_duplicate_operand():
    assert_error(TD0 + "tdh_mng_init td=td0 td=td0\n", 4, "duplicate operand td=")
    assert_error(TD0 + "tdh_mng_key_config td=td0 cpu=0 cpu=1\n", 4, "duplicate operand cpu=")
    assert_error(TD0 + "tdh_mng_init td=td0 fault=TDX_OPERAND_BUSY fault=TDX_OPERAND_BUSY\n", 4,
                 "duplicate operand fault=")
    assert_error("seamcall TDH.MNG.INIT rcx=a rcx=b\n", 1, "duplicate operand rcx=")


@pytest.mark.parametrize("tok", ["hkid", "hkid=", "=1", "hkid = 1"])
def test_malformed_key_value(tok):
    e = assert_error(f"hkid_alloc {tok}\n", 1, "malformed operand", "expected key=value")
    assert repr(tok.split()[0]) in e.reason


@pytest.mark.parametrize("text,line,part", [
    ("hkid_alloc hkid=one\n", 1, "hkid: bad integer 'one'"),
    ("hkid_alloc hkid=1.0\n", 1, "bad integer '1.0'"),
    (TD0 + "tdh_mr_extend td=td0 gpa=0x1g\n", 4, "gpa: bad integer '0x1g'"),
    (TD0 + "tdh_mr_extend td=td0 gpa=1_000\n", 4, "bad integer '1_000'"),
    ("tdh_phymem_cache_wb resume=yes\n", 1, "resume: bad integer 'yes'"),
    ("tdh_phymem_cache_wb resume=0 cpu=zero\n", 1, "cpu: bad integer 'zero'"),
    ("config hkids=four\ncheck_no_leak\n", 1, "config hkids: bad integer 'four'"),
])
def test_bad_integer(text, line, part):
    assert_error(text, line, part)


def test_hkid_out_of_range():
    assert_error("hkid_alloc hkid=0\n", 1, "hkid=0 out of range", "1..3")
    assert_error("hkid_alloc hkid=4\n", 1, "hkid=4 out of range", "1..3", "hkids=4")
    assert_error("config hkids=2\nhkid_alloc hkid=1\nhkid_free hkid=2\n", 3,
                 "hkid=2 out of range", "1..1")
    assert_error("page_alloc page=p\ntdh_phymem_page_wbinvd_hkid hkid=7 page=p\n", 2,
                 "hkid=7 out of range")


def test_cpu_out_of_range():
    assert_error(TD0 + "tdh_mng_key_config td=td0 cpu=4\n", 4, "cpu=4 out of range", "0..3")
    assert_error("config packages=1 cpus_per_package=1\npage_alloc page=p\nhost_write page=p cpu=1\n",
                 3, "cpu=1 out of range", "0..0")
    assert_error("seamcall TDH.MNG.INIT rcx=a cpu=-1\n", 1, "cpu=-1 out of range")


def test_level_out_of_range():
    # a level the S-EPT does not have is the module's to refuse (OPERAND_INVALID|RCX); only
    # what does not fit the 3 RCX bits the wrapper puts it in is bad input
    parse(TD0 + "tdh_mem_range_block td=td0 gpa=0 level=4\n")
    parse("config sept_levels=2\n" + TD0 + "tdh_mem_sept_remove td=td0 gpa=0 level=7\n")
    assert_error(TD0 + "tdh_mem_range_block td=td0 gpa=0 level=8\n", 4,
                 "level=8 out of range", "0..7")
    assert_error(TD0 + "tdh_mem_page_remove td=td0 gpa=0 level=-1\n", 4, "level=-1 out of range")


def test_gpa_unaligned_or_negative():
    # alignment is the module's to check (MR.EXTEND takes 256-byte chunks); a GPA is a u64
    parse(TD0 + "tdh_mr_extend td=td0 gpa=0x1100\n")
    parse(TD0 + "tdh_mem_page_aug td=td0 gpa=0x1001 page=x\n")
    assert_error(TD0 + "tdh_mr_extend td=td0 gpa=-4096\n", 4, "gpa=-4096 is negative")
    assert_error(TD0 + "tdh_mr_extend td=td0 gpa=0x10000000000000000\n", 4,
                 "does not fit in 64 bits")


def test_resume_not_0_or_1():
    assert_error("tdh_phymem_cache_wb resume=2\n", 1, "resume=2", "0 (start) or 1 (resume)")


def test_bad_td_exit_reason_with_suggestion():
    assert_error(VP0 + "td_exit vp=vp0 reason=td_fatl\n", 6,
                 "unknown reason 'td_fatl'", "did you mean td_fatal?", "normal, vcpu_fatal, td_fatal")


def test_unknown_expected_status_with_suggestion():
    assert_error(TD0 + "tdh_mng_init td=td0 -> TDX_SUCESS\n", 4,
                 "unknown status 'TDX_SUCESS'", "did you mean TDX_SUCCESS?")
    assert_error(TD0 + "tdh_mng_init td=td0 -> TDX_OPERAND_BUSY|KTO\n", 4,
                 "unknown operand id 'KTO'", "did you mean KOT?")
    assert_error(TD0 + "tdh_mng_init td=td0 -> TDX_OPERAND_BUSY|-1\n", 4, "operand id")


def test_arrow_without_status_or_with_trailing_tokens():
    assert_error(TD0 + "tdh_mng_init td=td0 ->\n", 4, "'->' needs a status")
    assert_error(TD0 + "tdh_mng_init td=td0 -> TDX_SUCCESS cpu=1\n", 4,
                 "unexpected 'cpu=1' after '-> TDX_SUCCESS'")


def test_expected_status_on_host_action():
    assert_error("hkid_alloc hkid=1 -> TDX_SUCCESS\n", 1,
                 "hkid_alloc is a host action and returns no status")
    assert_error(VP0 + "td_exit vp=vp0 -> TDX_SUCCESS\n", 6, "td_exit", "returns no status")


def test_fault_unknown_status_with_suggestion():
    assert_error(TD0 + "tdh_mng_init td=td0 fault=TDX_OPERAND_BUSSY\n", 4,
                 "bad fault", "unknown status 'TDX_OPERAND_BUSSY'", "did you mean TDX_OPERAND_BUSY?")


def test_fault_not_nondeterministic():
    e = assert_error(TD0 + "tdh_mng_init td=td0 fault=TDX_OPERAND_INVALID\n", 4,
                     "fault=TDX_OPERAND_INVALID", "not a status a leaf returns nondeterministically")
    for name in ("TDX_RND_NO_ENTROPY", "TDX_KEY_GENERATION_FAILED",
                 "TDX_INTERRUPTED_RESUMABLE", "TDX_OPERAND_BUSY"):
        assert name in e.reason


def test_fault_on_non_seamcall_step():
    assert_error("page_alloc page=p fault=TDX_OPERAND_BUSY\n", 1,
                 "fault= is only for SEAMCALL steps", "page_alloc")
    assert_error(VP0 + "guest_accept vp=vp0 gpa=0 fault=TDX_OPERAND_BUSY\n", 6,
                 "fault= is only for SEAMCALL steps", "guest_accept")


def test_fault_the_leaf_cannot_return():
    assert_error("page_alloc page=t\ntdh_mng_create td=td0 page=t hkid=1 "
                 "fault=TDX_OPERAND_BUSY|KET\n", 2,
                 "TDH.MNG.CREATE cannot return TDX_OPERAND_BUSY|KET",
                 "TDX_OPERAND_BUSY|KOT, TDX_RND_NO_ENTROPY", fault_table=FAULTS)
    assert_error("page_alloc page=t\ntdh_mng_create td=td0 page=t hkid=1 "
                 "fault=TDX_INTERRUPTED_RESUMABLE\n", 2,
                 "cannot return TDX_INTERRUPTED_RESUMABLE", fault_table=FAULTS)
    # a leaf missing from the table has no fault points
    assert_error("page_alloc page=t\ntdh_mng_create td=td0 page=t hkid=1\n"
                 "tdh_mng_init td=td0 fault=TDX_OPERAND_BUSY\n", 3,
                 "TDH.MNG.INIT cannot return TDX_OPERAND_BUSY", "(its faults: none)",
                 fault_table=FAULTS)
    assert_error("page_alloc page=t\nseamcall TDH.MNG.KEY.CONFIG rcx=t fault=TDX_RND_NO_ENTROPY\n",
                 2, "TDH.MNG.KEY.CONFIG cannot return TDX_RND_NO_ENTROPY", fault_table=FAULTS)


def test_td_used_before_it_exists():
    assert_error("tdh_mng_init td=td0\n", 1, "td td0 is used before it exists",
                 "tdh_mng_create td=td0")
    # creation later in the file does not count
    assert_error("page_alloc page=t,c\ntdh_mng_addcx td=td0 page=c\n"
                 "tdh_mng_create td=td0 page=t hkid=1\n", 2, "td td0 is used before it exists")
    assert_error("page_alloc page=p\ntdh_vp_create td=nope vp=vp0 page=p\n", 2,
                 "td nope is used before it exists")


def test_vp_used_before_it_exists():
    assert_error(TD0 + "tdh_vp_init vp=vp0 cpu=1\n", 4, "vp vp0 is used before it exists",
                 "tdh_vp_create vp=vp0")
    assert_error(TD0 + "td_exit vp=vp9\n", 4, "vp vp9 is used before it exists")
    assert_error(TD0 + "guest_accept vp=vp9 gpa=0\n", 4, "vp vp9 is used before it exists")


def test_td_created_twice_with_another_page():
    assert_error(TD0 + "tdh_mng_create td=td0 page=cs0 hkid=1\n", 4,
                 "td td0 was created on line 3 with page tdr0", "page=cs0")


def test_vp_created_twice_differently():
    assert_error(VP0 + "tdh_vp_create td=td0 vp=vp0 page=cx0\n", 6,
                 "vp vp0 was created on line 5", "page=vpr0", "page=cx0")
    text = VP0 + "page_alloc page=t1\ntdh_mng_create td=td1 page=t1 hkid=2\n" \
                 "tdh_vp_create td=td1 vp=vp0 page=vpr0\n"
    assert_error(text, 8, "vp vp0 was created on line 5 with td=td0")


def test_names_are_one_namespace():
    assert_error(TD0 + "tdh_phymem_page_reclaim page=td0\n", 4, "td0 is a td (line 3), not a page")
    assert_error(TD0 + "tdh_mng_create td=cs0 page=cs1 hkid=2\n", 4,
                 "cs0 is a page (line 2), not a td")
    assert_error(TD0 + "tdh_mng_init td=cs0\n", 4, "cs0 is a page (line 2), not a td")
    assert_error(VP0 + "seamcall TDH.VP.FLUSH rcx=vp0\n", 6, "vp0 is a vp (line 5), not a page")


def test_bad_names():
    assert_error("page_alloc page=1abc\n", 1, "bad page name '1abc'")
    assert_error("page_alloc page=a,,b\n", 1, "empty name in the page list")
    assert_error(TD0 + "tdh_mng_addcx td=td0 page=cs0,cs1\n", 4,
                 "only page_alloc and page_free take a comma list")
    assert_error("page_alloc page=t\ntdh_mng_create td=t-0 page=t hkid=1\n", 2, "bad td name 't-0'")


def test_config_not_first():
    assert_error("hkid_alloc hkid=1\nconfig hkids=3\n", 2,
                 "config must come before the first step")
    assert_error("thread a\nconfig hkids=3\nhkid_alloc hkid=1\n", 2, "config must come before")


def test_config_twice():
    assert_error("config hkids=3\n# x\nconfig hkids=3\ncheck_no_leak\n", 3,
                 "config given twice (first on line 1)")


def test_config_unknown_key_with_suggestion():
    assert_error("config packges=1\ncheck_no_leak\n", 1,
                 "unknown config key 'packges'", "did you mean packages?")
    assert_error("config cpu=1\ncheck_no_leak\n", 1, "unknown config key 'cpu'")


def test_config_duplicate_key_and_status():
    assert_error("config hkids=3 hkids=4\ncheck_no_leak\n", 1, "duplicate config key hkids=")
    assert_error("config hkids=3 -> TDX_SUCCESS\ncheck_no_leak\n", 1, "config takes no")


@pytest.mark.parametrize("kv,part", [
    ("packages=0", "packages=0: must be in 1..8"),
    ("packages=9", "packages=9: must be in 1..8 (the limit"),
    ("cpus_per_package=0", "cpus_per_package=0: must be in 1..64"),
    ("hkids=1", "hkids=1: must be in 2..256"),
    ("hkids=1000000", "hkids=1000000: must be in 2..256 (the limit"),
    ("tdcs_pages=0", "tdcs_pages=0: must be in 1..16"),
    ("tdcx_pages=-1", "tdcx_pages=-1: must be in 0..16"),
    ("max_vcpus=0", "max_vcpus=0: must be in 1..1024"),
    ("sept_levels=1", "sept_levels=1: must be in 2..5"),
    ("sept_levels=6", "sept_levels=6: must be in 2..5"),
    ("clflush_before_alloc=2", "clflush_before_alloc=2: must be 0 or 1"),
    ("clear_before_reuse=-1", "must be 0 or 1"),
    ("wrapper_clflush=yes", "config wrapper_clflush: bad integer 'yes'"),
])
def test_config_bad_value(kv, part):
    assert_error(f"# header\nconfig {kv}\ncheck_no_leak\n", 2, part)


def test_thread_without_name_or_duplicate():
    assert_error("check_no_leak\nthread\ncheck_no_leak\n", 2, "thread needs a name")
    assert_error("thread a\ncheck_no_leak\nthread a\ncheck_no_leak\n", 3,
                 "duplicate thread a (first on line 1)")
    assert_error("thread a b\ncheck_no_leak\n", 1, "unexpected 'b' after thread a")
    assert_error("thread 9a\ncheck_no_leak\n", 1, "bad thread name '9a'")


def test_thread_with_no_steps():
    assert_error("check_no_leak\nthread a\n# nothing\nthread b\ncheck_no_leak\n", 2,
                 "thread a has no steps")
    assert_error("check_no_leak\nthread a\ncheck_no_leak\nthread b\n\n", 4,
                 "thread b has no steps")


def test_file_with_no_steps():
    assert_error("", 1, "no steps")
    assert_error("# just a comment\n\n", 2, "no steps")
    assert_error("config hkids=3\n", 1, "no steps")


def test_seamcall_bad_leaf_with_suggestion():
    assert_error("seamcall TDH.MNG.KEY.CONFG rcx=a\n", 1,
                 "unknown leaf 'TDH.MNG.KEY.CONFG'", "did you mean TDH.MNG.KEY.CONFIG?")
    assert_error("seamcall tdh_mng_init rcx=a\n", 1, "did you mean TDH.MNG.INIT?")
    # the guest's TDCALL is not a SEAMCALL leaf of the step table
    assert_error("seamcall TDG.MEM.PAGE.ACCEPT rcx=0\n", 1, "unknown leaf 'TDG.MEM.PAGE.ACCEPT'")


def test_seamcall_without_leaf():
    assert_error("seamcall\n", 1, "seamcall needs a leaf")
    assert_error("seamcall rcx=a\n", 1, "seamcall needs a leaf")


def test_seamcall_bad_register():
    assert_error("seamcall TDH.MNG.INIT rcxx=a\n", 1,
                 "unknown operand 'rcxx' for seamcall", "did you mean rcx?")
    assert_error("seamcall TDH.MNG.INIT r9=a\n", 1, "unknown operand 'r9'")
    assert_error("seamcall TDH.MNG.INIT rcx=a-b\n", 1, "bad rcx value 'a-b'")
    assert_error("seamcall TDH.MNG.INIT rcx=-1\n", 1, "rcx=-1 out of range")
    assert_error("seamcall TDH.MNG.INIT rcx=0x10000000000000000\n", 1, "out of range")
