"""A grammar fuzzer for scenario files (Hypothesis): well-formed scenarios built from the step
table itself (``model.steps.STEPS``: every wrapper, host and guest action, and the raw
``seamcall`` form of every leaf), biased toward whole TD lifecycles so that deep states are
reached, with ``fault=`` drawn from each leaf's fault points and ``thread`` blocks; and
malformed ones (a line made invalid, garbage bytes, huge values).

Properties:

* ``replay`` never raises, on the model and on the executor in lockstep, and the two engines
  never disagree (status or observed state); its JSON result is well-formed;
* the CLI answers every well-formed file with exit 0 or 1 and JSON, never 2 (bad input) or 4
  (internal error), and every malformed one with exit 2 and one ``FILE:LINE: reason`` line;
* ``check FILE`` and ``prove --host FILE`` agree on small threaded files;
* a line made invalid is reported at that line.

A failure prints the shrunk scenario as a ``.tdx`` to paste into a regression test
(``note``).  The default run is bounded (``FUZZ_EXAMPLES``, about 200 scenarios in all); the
long run is marked ``slow`` (``pytest -m slow tests/test_fuzz.py``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from tdxcheck.checker.cli import main
from tdxcheck.checker.explore.replay import replay
from tdxcheck.checker.scenario import ScenarioError, parse_text
from tdxcheck.model.actions import raw_register
from tdxcheck.model.rule import LEAVES
from tdxcheck.model.status import status_name
from tdxcheck.model.steps import STEPS, Kind

#: examples per property in the default run (the slow run multiplies it)
FUZZ_EXAMPLES = int(os.environ.get("TDXCHECK_FUZZ_EXAMPLES", "60"))
SLOW_EXAMPLES = 1500

TDS = ("td0", "td1")
VPS = ("vp0", "vp1", "vp2")
PAGES = tuple(f"p{i}" for i in range(14))
GPAS = (0x0, 0x1000, 0x2000, 0x200000,
        0x800000000000, 0x1000000000000, 0xFFFFFFFFFFFFF000)  # shared bit, past GPAW, 2^64-4K
EXIT_REASONS = ("normal", "vcpu_fatal", "td_fatal")

# every fault a leaf can return: "STATUS|OPID" texts, from the rule data
_FAULTS: dict[str, list[str]] = {}


def faults_of(leaf: str) -> list[str]:
    """The ``fault=`` texts leaf ``leaf`` accepts (its rule's fault points)."""
    if leaf not in _FAULTS:
        from tdxcheck.checker.explore.engine import Engine
        from tdxcheck.checker.explore.programs import make_config
        from tdxcheck.model.actions import Action

        eng = Engine(make_config("default", {}).universe())
        ldef = LEAVES[leaf]
        a = Action("seamcall", leaf, tuple((o, 1) for o in ldef.operands), 0)
        rule = eng.compiled(a).rule
        _FAULTS[leaf] = sorted({status_name(f.status) for f in rule.faults})
    return _FAULTS[leaf]


@dataclass
class Gen:
    """What the generator knows while it writes a file: the platform and the names bound."""

    packages: int
    cpus_per_package: int
    hkids: int
    tdcs: int
    tdcx: int
    levels: int
    lines: list[str] = field(default_factory=list)
    tds: dict[str, str] = field(default_factory=dict)  # td -> TDR page
    vps: dict[str, str] = field(default_factory=dict)  # vp -> TDVPR page
    used: set[str] = field(default_factory=set)  # page names, in order of use below
    threads: int = 0

    @property
    def cpus(self) -> int:
        return self.packages * self.cpus_per_package

    def config(self) -> str:
        return (f"config packages={self.packages} cpus_per_package={self.cpus_per_package} "
                f"hkids={self.hkids} tdcs_pages={self.tdcs} tdcx_pages={self.tdcx} "
                f"sept_levels={self.levels}")


@st.composite
def platform(draw: st.DrawFn) -> Gen:
    return Gen(packages=draw(st.integers(1, 2)), cpus_per_package=draw(st.integers(1, 2)),
               hkids=draw(st.integers(2, 4)), tdcs=draw(st.integers(1, 2)),
               tdcx=draw(st.integers(0, 1)), levels=draw(st.integers(2, 3)))


def _operand(draw: st.DrawFn, g: Gen, kind: Kind, step: str) -> str | None:
    """One ``key=value`` for an operand kind, respecting the binding rules of the parser (a
    td or vp exists once created; a page cannot be a td or vp name)."""
    if kind is Kind.TD:
        if step == "tdh_mng_create":
            return "td=" + draw(st.sampled_from(TDS))
        if not g.tds:
            return None
        return "td=" + draw(st.sampled_from(sorted(g.tds)))
    if kind is Kind.VP:
        if step == "tdh_vp_create":
            return "vp=" + draw(st.sampled_from(VPS))
        if not g.vps:
            return None
        return "vp=" + draw(st.sampled_from(sorted(g.vps)))
    if kind is Kind.PAGE:
        return "page=" + draw(st.sampled_from(PAGES))
    if kind is Kind.PAGES:
        return "page=" + ",".join(draw(st.lists(st.sampled_from(PAGES), min_size=1,
                                                max_size=4, unique=True)))
    if kind is Kind.HKID:
        return f"hkid={draw(st.integers(1, g.hkids - 1))}"
    if kind is Kind.GPA:
        return f"gpa=0x{draw(st.sampled_from(GPAS)):x}"
    if kind is Kind.LEVEL:
        # one past the depth too: the module answers it (OPERAND_INVALID), it is no parse error
        return f"level={draw(st.integers(0, g.levels + 1))}"
    if kind is Kind.CPU:
        return f"cpu={draw(st.integers(0, g.cpus - 1))}"
    if kind is Kind.RESUME:
        return f"resume={draw(st.integers(0, 1))}"
    if kind is Kind.REASON:
        return "reason=" + draw(st.sampled_from(EXIT_REASONS))
    raise AssertionError(kind)


def _bind(g: Gen, name: str, ops: dict[str, str]) -> bool:
    """Record a create's binding; False if the parser would refuse it (rebinding)."""
    if name == "tdh_mng_create":
        td, page = ops["td"], ops["page"]
        if td in g.vps or td in PAGES or g.tds.get(td, page) != page:
            return False
        g.tds[td] = page
    if name == "tdh_vp_create":
        vp, page = ops["vp"], ops["page"]
        if g.vps.get(vp, page) != page:
            return False
        g.vps[vp] = page
    return True


@st.composite
def typed_step(draw: st.DrawFn, g: Gen) -> str | None:
    sig = draw(st.sampled_from(STEPS))
    parts = [sig.name]
    ops: dict[str, str] = {}
    for kind in sig.operands:
        if kind in sig.optional and kind is not Kind.CPU and draw(st.booleans()):
            continue
        if kind is Kind.CPU and kind not in sig.operands:
            continue
        kv = _operand(draw, g, kind, sig.name)
        if kv is None:
            return None
        k, _, v = kv.partition("=")
        ops[k] = v
        parts.append(kv)
    if Kind.CPU in sig.optional and Kind.CPU not in sig.operands and draw(st.booleans()):
        parts.append(f"cpu={draw(st.integers(0, g.cpus - 1))}")
    if sig.is_seamcall and draw(st.integers(0, 9)) == 0:
        fl = faults_of(sig.leaf or "")
        if fl:
            parts.append("fault=" + draw(st.sampled_from(fl)))
    if not _bind(g, sig.name, ops):
        return None
    return " ".join(parts)


@st.composite
def raw_step(draw: st.DrawFn, g: Gen) -> str:
    """The untyped form of any leaf: registers from pages, 0, odd integers and big values."""
    leaf = draw(st.sampled_from(sorted(lf for lf, d in LEAVES.items() if d.family != "guest")))
    parts = ["seamcall", leaf]
    ints = st.one_of(
        st.sampled_from(["0", "1", "2", "3", "0x1000", "0x1001", "0x1002", "0x200001",
                         "0x8001", "0x8100", "0x7fffffff000", "0x400000000000", "65535",
                         "0xffffffffffffffff"]),
        st.integers(0, (1 << 64) - 1).map(str))
    pages = st.one_of(st.sampled_from(PAGES), st.just("0"))
    for reg in ("rcx", "rdx", "r8"):
        if draw(st.integers(0, 3)):
            kind = raw_register(leaf, reg)
            val = draw(pages if kind == "page" else ints if kind == "int" else
                       st.one_of(pages, ints))
            if leaf == "TDH.MEM.PAGE.AUG" and reg == "rcx" and int(val, 0) & 7 == 1:
                val = hex(int(val, 0) & ~7)  # a 2M AUG is beyond the model (refused, exit 2)
            parts.append(f"{reg}={val}")
    if draw(st.booleans()):
        parts.append(f"cpu={draw(st.integers(0, g.cpus - 1))}")
    if draw(st.integers(0, 7)) == 0 and faults_of(leaf):
        parts.append("fault=" + draw(st.sampled_from(faults_of(leaf))))
    return " ".join(parts)


def lifecycle(g: Gen, td: str, vp: str, hkid: int, base: int) -> list[str]:
    """KVM's order of calls for one TD (kvm-sequences.md): build, run, zap, tear down."""
    p = [f"p{(base + i) % len(PAGES)}" for i in range(8)]
    tdr, cs, vpr, cx, sept, m0, m1 = p[0], p[1:1 + g.tdcs], p[3], p[4], p[5], p[6], p[7]
    cs = cs[: g.tdcs]
    cx_l = [cx] if g.tdcx else []
    lv = list(range(g.levels - 1, 0, -1))
    sepl = [f"{sept}" if i == 0 else f"p{(base + 8 + i) % len(PAGES)}" for i in range(len(lv))]
    c_run = g.cpus - 1
    out = [f"hkid_alloc hkid={hkid}",
           f"page_alloc page={','.join(dict.fromkeys([tdr, *cs, vpr, *cx_l, *sepl, m0, m1]))}",
           f"tdh_mng_create td={td} page={tdr} hkid={hkid}",
           *(f"tdh_mng_key_config td={td} cpu={k * g.cpus_per_package}"
             for k in range(g.packages)),
           *(f"tdh_mng_addcx td={td} page={c}" for c in cs),
           f"tdh_mng_init td={td}",
           f"tdh_vp_create td={td} vp={vp} page={vpr}",
           *(f"tdh_vp_addcx vp={vp} page={c}" for c in cx_l),
           f"tdh_vp_init vp={vp} cpu={c_run}",
           *(f"tdh_mem_sept_add td={td} gpa=0x0 level={lv_} page={s}"
             for lv_, s in zip(lv, sepl, strict=True)),
           f"tdh_mem_page_add td={td} gpa=0x0 page={m0}",
           f"tdh_mr_extend td={td} gpa=0x0",
           f"tdh_mr_finalize td={td}",
           f"tdh_vp_enter vp={vp} cpu={c_run}",
           f"tdh_mem_page_aug td={td} gpa=0x1000 page={m1}",
           f"guest_accept vp={vp} gpa=0x1000",
           f"td_exit vp={vp} reason=normal",
           f"tdh_mem_range_block td={td} gpa=0x1000 level=0",
           f"tdh_mem_track td={td}",
           f"tdh_mem_page_remove td={td} gpa=0x1000 level=0",
           f"tdh_phymem_page_wbinvd_hkid hkid={hkid} page={m1}",
           f"clear_page page={m1}",
           f"tdh_vp_flush vp={vp} cpu={c_run}",
           f"tdh_mng_vpflushdone td={td}",
           *(f"tdh_phymem_cache_wb cpu={k * g.cpus_per_package} resume=0"
             for k in range(g.packages)),
           f"tdh_mng_key_freeid td={td}",
           f"hkid_free hkid={hkid}",
           *(f"tdh_phymem_page_reclaim page={x}" for x in [*cs, *cx_l, vpr, *sepl, m0]),
           f"tdh_phymem_page_reclaim page={tdr}",
           f"tdh_phymem_page_wbinvd_tdr td={td}",
           *(f"clear_page page={x}" for x in [tdr, *cs, vpr, *cx_l, *sepl, m0]),
           f"page_free page={','.join(dict.fromkeys([tdr, *cs, vpr, *cx_l, *sepl, m0, m1]))}",
           "check_no_leak"]
    return out


@st.composite
def scenario(draw: st.DrawFn, threads: bool = True, max_len: int = 60) -> str:
    """A well-formed scenario: lifecycles (cut, with steps dropped, swapped and random steps
    inserted) or random steps; maybe with thread blocks."""
    g = draw(platform())
    body: list[str] = []
    if draw(st.integers(0, 3)):  # biased toward whole lifecycles
        n_td = draw(st.integers(1, 2))
        for i in range(n_td):
            td, vp = TDS[i], VPS[i]
            hkid = draw(st.integers(1, g.hkids - 1))
            body += lifecycle(g, td, vp, hkid, base=draw(st.integers(0, len(PAGES) - 1)))
        cut = draw(st.integers(len(body) // 3, len(body)))
        body = body[:cut]
        for _ in range(draw(st.integers(0, 6))):  # drop, swap, insert
            op = draw(st.integers(0, 2))
            if op == 0 and body:
                body.pop(draw(st.integers(0, len(body) - 1)))
            elif op == 1 and len(body) > 1:
                i = draw(st.integers(0, len(body) - 2))
                body[i], body[i + 1] = body[i + 1], body[i]
            else:
                extra = draw(st.one_of(st.just(None), raw_step(g)))
                if extra is not None:
                    body.insert(draw(st.integers(0, len(body))), extra)
    else:
        for _ in range(draw(st.integers(1, 25))):
            body.append(draw(st.one_of(raw_step(g), st.just("check_no_leak"))))
    # re-derive bindings in file order and keep only lines the parser accepts as bound
    g2 = Gen(g.packages, g.cpus_per_package, g.hkids, g.tdcs, g.tdcx, g.levels)
    kept: list[str] = []
    for line in body[:max_len]:
        ok = _still_bound(g2, line)
        if ok:
            kept.append(line)
    for _ in range(draw(st.integers(0, 10))):  # random typed steps anywhere
        s = draw(typed_step(g2))
        if s is not None:
            kept.insert(draw(st.integers(0, len(kept))), s)
            kept = [x for x in kept if _still_bound(Gen(g.packages, g.cpus_per_package, g.hkids,
                                                         g.tdcs, g.tdcx, g.levels), x, True)]
    if not kept:
        kept = ["check_no_leak"]
    if threads and len(kept) > 4 and draw(st.integers(0, 3)) == 0:
        cut = draw(st.integers(1, len(kept) - 2))
        mid = draw(st.integers(cut + 1, len(kept) - 1))
        kept = [*kept[:cut], "thread a", *kept[cut:mid], "thread b", *kept[mid:]]
    expect = draw(st.booleans())
    if expect:  # an expectation on a few SEAMCALL lines
        for i, line in enumerate(kept):
            if line.startswith(("tdh_", "seamcall")) and \
                    draw(st.integers(0, 5)) == 0:
                kept[i] = line + " -> " + draw(st.sampled_from(
                    ["TDX_SUCCESS", "TDX_OPERAND_BUSY", "TDX_OPERAND_INVALID|RCX",
                     "TDX_PAGE_METADATA_INCORRECT"]))
    return "\n".join([g.config(), *kept]) + "\n"


def _still_bound(g: Gen, line: str, dry: bool = False) -> bool:
    """Whether ``line`` uses only tds/vps created above it (and binds consistently)."""
    toks = line.split()
    name = toks[0]
    ops = dict(t.partition("=")[::2] for t in toks[1:] if "=" in t)
    if name == "tdh_mng_create":
        return _bind(g, name, ops) if not dry else True
    if name == "tdh_vp_create":
        if ops.get("td") not in g.tds:
            return False
        return _bind(g, name, ops) if not dry else True
    if "td" in ops and ops["td"] not in g.tds:
        return False
    return not ("vp" in ops and ops["vp"] not in g.vps)


# --------------------------------------------------------------------------- running


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as e:  # argparse
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def _parse_or_skip(text: str) -> object | None:
    """The generator keeps to the grammar; a parse error is a generator gap or a parser bug:
    report it with the file so it can be told apart."""
    try:
        return parse_text(text, "fuzz.tdx")
    except ScenarioError as e:
        note(text)
        raise AssertionError(f"a well-formed file was refused: {e}") from None


def fuzz(n: int, **kw: object) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much], **kw)


def _replay_agrees(text: str) -> None:
    note("scenario:\n" + text)
    sc = _parse_or_skip(text)
    r = replay(sc, run="both")  # type: ignore[arg-type]
    assert not r.disagreements, [(d.line, d.model, d.executor) for d in r.disagreements]
    from tdxcheck.checker.output.report import replay_json

    json.dumps(replay_json(r))


@fuzz(FUZZ_EXAMPLES)
@given(scenario())
def test_replay_never_raises_and_the_engines_agree(text: str) -> None:
    _replay_agrees(text)


@pytest.mark.slow
@fuzz(SLOW_EXAMPLES)
@given(scenario())
def test_replay_agrees_long_run(text: str) -> None:
    _replay_agrees(text)


def _cli_answers(text: str, tmp: Path) -> None:
    note("scenario:\n" + text)
    f = tmp / "fuzz.tdx"
    f.write_text(text)
    rc, out, err = run_cli(["replay", str(f), "--json"])
    assert rc in (0, 1), (rc, err)
    assert "Traceback" not in err
    json.loads(out)


@fuzz(FUZZ_EXAMPLES // 2)
@given(text=scenario())
def test_cli_replay_answers_well_formed_files(text: str, tmp_path_factory: pytest.TempPathFactory
                                              ) -> None:
    _cli_answers(text, tmp_path_factory.mktemp("fz"))


@fuzz(max(FUZZ_EXAMPLES // 6, 8))
@given(text=scenario(threads=True, max_len=10))
def test_check_and_prove_agree_on_small_threaded_files(text: str) -> None:
    """Every interleaving, explored and proved: the same invariants break (or none)."""
    from tdxcheck.checker.explore.check import run_check
    from tdxcheck.checker.prove import prove_scenario

    note("scenario:\n" + text)
    sc = _parse_or_skip(text)
    run = run_check(scenario=sc, all_violations=True)  # type: ignore[arg-type]
    explored = {c.invariant for c in run.result.violations}
    assert run.result.verdict in ("holds", "violated"), run.result.verdict
    pr = prove_scenario(sc, timeout_ms=20_000)
    assert not any(t.status == "unknown" for t in pr.results)
    proved = {t.invariant for t in pr.results if t.status == "violated"}
    assert explored == proved, (explored, proved)


# --------------------------------------------------------------------------- malformed


#: ways to make one line invalid, each with the line the error must name
_BREAKERS: list[tuple[str, Callable[[str], str]]] = [
    ("unknown operand", lambda s: s + " zzz=1"),
    ("bad status", lambda s: s + " -> TDX_NO_SUCH_STATUS"),
    ("malformed token", lambda s: s + " ="),
    ("unknown step", lambda s: "tdh_no_such_step " + s.partition(" ")[2]),
    ("huge integer", lambda s: s + " cpu=" + "9" * 40),
]


@fuzz(FUZZ_EXAMPLES)
@given(text=scenario(threads=False), data=st.data())
def test_a_broken_line_is_reported_at_that_line(text: str, data: st.DataObject) -> None:
    lines = text.splitlines()
    k = data.draw(st.integers(1, len(lines) - 1))  # not the config line
    how, brk = data.draw(st.sampled_from(_BREAKERS))
    lines[k] = brk(lines[k])
    bad = "\n".join(lines) + "\n"
    note(f"{how} on line {k + 1}:\n{bad}")
    with pytest.raises(ScenarioError) as ei:
        parse_text(bad, "bad.tdx")
    assert ei.value.line == k + 1, str(ei.value)
    assert str(ei.value).startswith(f"bad.tdx:{k + 1}: ")


@fuzz(FUZZ_EXAMPLES)
@given(st.binary(max_size=300))
def test_garbage_bytes_are_bad_input_with_a_line(blob: bytes) -> None:
    """Any bytes: a clean parse or one FILE:LINE: reason (invalid UTF-8 at its line)."""
    from tdxcheck.checker.scenario import parse_bytes

    note(repr(blob))
    try:
        parse_bytes(blob, "blob.tdx")
    except ScenarioError as e:
        n_lines = max(blob.count(b"\n") + 1, 1)
        assert 1 <= e.line <= n_lines, str(e)
        assert "\n" not in str(e)


@fuzz(FUZZ_EXAMPLES // 3)
@given(key=st.sampled_from(["packages", "cpus_per_package", "hkids", "tdcs_pages",
                            "tdcx_pages", "max_vcpus", "sept_levels"]),
       value=st.one_of(st.integers(-5, 10), st.integers(10, 10**12)))
def test_config_values_answer_fast(key: str, value: int) -> None:
    """Any config value: refused at parse time with the limit, or a replay that answers (a
    size the layout cannot hold is refused, never a hang)."""
    import time

    text = f"config {key}={value}\nhkid_alloc hkid=1\n"
    t0 = time.monotonic()
    try:
        sc = parse_text(text, "cfg.tdx")
    except ScenarioError as e:
        assert e.line == 1 and key in str(e)
    else:
        replay(sc, run="both")
    assert time.monotonic() - t0 < 5.0
