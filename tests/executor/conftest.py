"""Helpers for the executor tests: a host that runs scenario-like lines on an Executor.

Lines use the scenario step syntax (``tdh_mng_create td=td0 page=tdr hkid=1 cpu=0``,
``seamcall TDH.MNG.ADDCX rcx=cs0 rdx=tdr``, ``fault=TDX_OPERAND_BUSY|KOT``) but are read here,
so these tests do not depend on ``checker/scenario.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tdxcheck.checker.executor import ExecStep, Executor
from tdxcheck.model.status import parse_status, status_name

#: a small platform: two packages of one CPU, HKIDs 1..2 (global KeyID 3), one TDCS page,
#: one TDCX page per vCPU, a two-level S-EPT (root + one PT page)
SMALL = {"packages": 2, "cpus_per_package": 1, "hkids": 3, "tdcs_pages": 1, "tdcx_pages": 1,
         "sept_levels": 2}

#: the stages ``Host.build`` walks through, KVM's order (kvm-sequences.md §1.1-1.3)
STAGES = ("alloc", "created", "keys", "tdcs", "init", "vcpu", "premem", "finalized", "running")


def _value(v: str) -> Any:
    try:
        return int(v, 0)
    except ValueError:
        return v


def parse_line(line: str) -> tuple[str, dict[str, Any], int, str | None]:
    words = line.split()
    name, rest = words[0], words[1:]
    ops: dict[str, Any] = {}
    cpu, fault = 0, None
    if name == "seamcall":
        ops["leaf"], rest = rest[0], rest[1:]
    for item in rest:
        k, v = item.split("=", 1)
        if k == "cpu":
            cpu = int(v, 0)
        elif k == "fault":
            fault = v
        elif k == "page" and name in ("page_alloc", "page_free"):
            ops[k] = v.split(",")
        elif k in ("td", "vp", "page", "reason"):
            ops[k] = v
        else:
            ops[k] = _value(v)
    return name, ops, cpu, fault


class Host:
    """Runs lines; ``ok``/``expect`` assert the exact 64-bit status."""

    def __init__(self, config: dict[str, int] | None = None, **kw: Any) -> None:
        self.ex = Executor(config if config is not None else SMALL, **kw)
        self.cfg = self.ex.config

    def __call__(self, line: str) -> ExecStep:
        name, ops, cpu, fault = parse_line(line)
        return self.ex.step(name, ops, cpu, fault)

    def status(self, line: str) -> str | None:
        r = self(line)
        return None if r.status is None else status_name(r.status)

    def ok(self, *lines: str) -> None:
        for line in lines:
            got = self.status(line)
            assert got in (None, "TDX_SUCCESS"), f"{line}: {got}"

    def expect(self, line: str, status: str) -> ExecStep:
        r = self(line)
        code, _ = parse_status(status)
        assert r.status == code, f"{line}: got {status_name(r.status or 0) if r.status is not None else None}, want {status}"
        return r

    def obs(self, key: str) -> Any:
        return self.ex.observe()[key]

    def build(self, upto: str, td: str = "td0", hkid: int = 1, p: str = "") -> None:
        """Bring ``td`` (pages named with prefix ``p``) to stage ``upto`` the KVM way."""
        c = self.cfg
        per = c["cpus_per_package"]
        cs = [f"{p}cs{i}" for i in range(c["tdcs_pages"])]
        cx = [f"{p}cx{i}" for i in range(c["tdcx_pages"])]
        sept = [f"{p}sept{lvl}" for lvl in range(c["sept_levels"] - 1, 0, -1)]
        for stage in STAGES[:STAGES.index(upto) + 1]:
            if stage == "alloc":
                self.ok(f"hkid_alloc hkid={hkid}",
                        f"page_alloc page={','.join([p + 'tdr', *cs, p + 'vpr', *cx, *sept, p + 'mem0', p + 'mem1'])}")
            elif stage == "created":
                self.ok(f"tdh_mng_create td={td} page={p}tdr hkid={hkid}")
            elif stage == "keys":
                self.ok(*(f"tdh_mng_key_config td={td} cpu={k * per}" for k in range(c["packages"])))
            elif stage == "tdcs":
                self.ok(*(f"tdh_mng_addcx td={td} page={x}" for x in cs))
            elif stage == "init":
                self.ok(f"tdh_mng_init td={td}")
            elif stage == "vcpu":
                self.ok(f"tdh_vp_create td={td} vp={p}vp0 page={p}vpr",
                        *(f"tdh_vp_addcx vp={p}vp0 page={x}" for x in cx),
                        f"tdh_vp_init vp={p}vp0 cpu=0")
            elif stage == "premem":
                self.ok(*(f"tdh_mem_sept_add td={td} gpa=0 level={lvl} page={p}sept{lvl}"
                          for lvl in range(c["sept_levels"] - 1, 0, -1)),
                        f"tdh_mem_page_add td={td} gpa=0 page={p}mem0")
            elif stage == "finalized":
                self.ok(f"tdh_mr_finalize td={td}")
            elif stage == "running":
                self.ok(f"tdh_vp_enter vp={p}vp0 cpu=0")


@pytest.fixture
def make_host() -> Callable[..., Host]:
    """``make_host(config=SMALL, **executor_kwargs)`` -> a fresh :class:`Host`."""
    return Host


@pytest.fixture
def small() -> dict[str, int]:
    return dict(SMALL)


@pytest.fixture
def host() -> Host:
    return Host()
