"""One atomic step of one kvm thread (``_Move``): the model actions it runs in order, KVM's
own variables, the error sites it reports; and the shapes of the vm thread's steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tdxcheck.checker.explore.engine import Violation
from tdxcheck.model.actions import Action, describe
from tdxcheck.model.compile import NOT_ENABLED
from tdxcheck.model.state import State
from tdxcheck.model.status import status_name

from .config import _SITE, LEAK_SITES, SILENT_SITES

if TYPE_CHECKING:
    from .host import KvmHost


class _Disabled(Exception):
    """The move cannot happen in this state (or its fault point does not fire here)."""


# --------------------------------------------------------------------------- one move


class _Move:
    """One atomic step of one thread: model actions in order, KVM's variables, violations."""

    __slots__ = ("acts", "calls", "fault", "h", "k", "m", "pc", "status", "tag", "viol")

    def __init__(self, k: KvmHost, m: State, h: list[int], fault: str | None, tag: str,
                 record: bool) -> None:
        self.k = k
        self.m = m
        self.h = h
        self.viol: list[Violation] = []
        self.status: int | None = None
        self.fault = fault
        self.tag = tag
        self.calls: list[str] | None = [] if record else None
        # (action, the fault's status or None, status or None, state before), when recording
        self.acts: list[tuple[Action, int | None, int | None, State]] = []
        self.pc = -1  # the vm thread's pc when this is one of its steps

    # ---- model
    def get(self, fld: str, *idx: int) -> int:
        return int(self.m[self.k.lay.flat(fld, idx)])

    def call(self, a: Action, faultable: bool = False) -> int:
        """A SEAMCALL through its wrapper; with ``faultable`` the move's fault may fire."""
        k = self.k
        fidx = -1
        if faultable and self.fault is not None:
            fidx, pos = k.fault_index(a, self.fault)
            if fidx < 0 or not k.env_gate(self.fault, self):
                raise _Disabled
        r = k.engine.step(self.m, a, fidx)
        if r.status == NOT_ENABLED:
            raise _Disabled
        if fidx >= 0:
            if r.where != pos:  # the fault point is not on this path (Fault.cond)
                raise _Disabled
            self.h[k.ENV] = 1
        if self.calls is not None:
            self.acts.append((a, r.status if fidx >= 0 else None, r.status, self.m))
        self.m = r.state
        self.viol.extend(r.step_violations)
        assert r.status is not None
        self.status = r.status
        if self.calls is not None:
            f = f" [fault {status_name(r.status)}]" if fidx >= 0 else ""
            self.calls.append(f"{describe(a, k.u)}{f} -> {status_name(r.status)}")
        return r.status

    def host(self, a: Action) -> None:
        """A host (or guest) action that is not a SEAMCALL."""
        r = self.k.engine.step(self.m, a)
        if r.status == NOT_ENABLED:
            raise _Disabled
        if self.calls is not None:
            self.acts.append((a, None, r.status, self.m))
        self.m = r.state
        self.viol.extend(r.step_violations)
        if a.kind == "TDG.MEM.PAGE.ACCEPT":
            self.status = r.status
        if self.calls is not None:
            st = f" -> {status_name(r.status)}" if r.status is not None else ""
            self.calls.append(f"{describe(a, self.k.u)}{st}")

    # ---- KVM's variables
    def __getitem__(self, i: int) -> int:
        return self.h[i]

    def __setitem__(self, i: int, v: int) -> None:
        self.h[i] = v

    def error(self, site: str, bug: bool = True) -> None:
        """KVM reports an error at ``site``; ``bug``: KVM_BUG_ON marks the VM dead."""
        k = self.k
        if self.calls is not None:  # silent: KVM neither logs nor returns it
            kind = "KVM_BUG_ON" if bug else "silent" if site in SILENT_SITES else "error"
            self.calls.append(f"{kind} ({site})")
        self.h[k.ERRORS] |= 1 << _SITE[site]
        if site in LEAK_SITES and not self.h[k.LEAK]:
            self.h[k.LEAK] = _SITE[site] + 1
        if bug:
            self.h[k.DEAD] = 1

    def env(self) -> None:
        """Something outside KVM happened (a guest's fatal exit, a retry budget spent)."""
        self.h[self.k.ENV] = 1

    def goto(self, name: str) -> None:
        self.h[self.k.VMPC] = self.k.pc_of[name]

    def stay(self) -> None:
        """The vm thread stays on this step (a loop, or waiting for the mmu thread)."""
        self.h[self.k.VMPC] = self.pc


@dataclass
class _Op:
    """One step of the ``vm`` thread: a kernel function's next SEAMCALL (or host work)."""

    name: str
    label: str
    fn: Callable[[_Move], None]
    sample: Action | None = None  # an action of the faultable SEAMCALL (its fault points)
    skip: Callable[[_Move], str | None] | None = None  # -> jump target when KVM skips it
    tags: tuple[str, ...] = ("",)  # host-level variants (edges) besides fault choices
    # the preemption mode (``KvmHost(preempt=...)``): the vCPU this thread has loaded while it
    # sits before this step (vcpu_load .. vcpu_put: a preemption reloads it on the new CPU)
    loaded: int | None = None
    # the point of the KVM_TDX_INIT_VCPU window this step starts at ("P1".."P4"), if any
    point: str = ""
    # userspace may close the VM here instead of issuing this ioctl (the ioctl's name)
    abandon: str = ""


@dataclass
class _EdgeDef:
    thread: int
    slot: int  # vm: pc; vcpu: V_RUN; mmu: zpc; zap: 0
    fn: Callable[[_Move], None]
    fault: str | None
    tag: str


@dataclass
class KvmRunInfo:
    """What one move did, for people: the calls with their statuses."""

    label: str
    calls: list[str] = field(default_factory=list)


#: ``op(name, label, fn, sample=None, skip=None, tags=("",), loaded=None, point="",
#: abandon="")`` appends a vm-thread step
OpFn = Callable[..., None]
