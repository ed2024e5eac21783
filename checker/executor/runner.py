"""The adapter the replay engine drives: scenario steps in, statuses and consequences out.

``Executor(config)`` builds a :class:`~tdxcheck.checker.executor.machine.Machine` for the
scenario's ``config`` (scenario-format.md §1; missing keys get their defaults) and runs each
step of ``tdxcheck.model.steps.STEPS`` (or ``"seamcall"``) on it:

* SEAMCALL steps go through the typed wrappers (``wrappers.TdxHost``), which CLFLUSH the pages
  they hand to the module when ``wrapper_clflush=1``; the untyped ``seamcall`` form does not.
* Object names are bound on the host side as the contract says (scenario-format.md §2 "binds"):
  ``td.tdr = page`` on ``tdh_mng_create``, ``td.tdcs += page`` on ``tdh_mng_addcx``,
  ``vp.tdvpr = page`` (and ``vp`` belongs to ``td``) on ``tdh_vp_create``, ``vp.tdcx += page``
  on ``tdh_vp_addcx`` - even when the SEAMCALL fails.  A raw ``seamcall TDH.MNG.CREATE rcx=P``
  makes a hidden td ``@P`` and a raw ``TDH.VP.CREATE rcx=P rdx=T`` a hidden vp ``@P`` (``@0``
  for RCX 0, the NULL page: ``model.steps.hidden_object``) (of the
  first td whose TDR is ``T``), as the parser does; a later raw create keeps the first binding.
* Each page name gets a physical address on first use (in order of first use, 4 KiB apart).

Decisions where the contract is silent (documented here, tested in tests/executor):

* :class:`StepNotEnabled` (no state change) for: ``td_exit``/``guest_accept`` of a vCPU that is
  not in the guest; a typed wrapper step whose struct has no page yet (a td never created, a
  vp never created): a Linux caller cannot pass a NULL ``tdr_page``/``tdvpr_page``.
* ``step_index`` of a consequence is the 0-based index of the ``step`` call during which it was
  seen (calls that raise :class:`StepNotEnabled` count too, so indices line up with the
  scenario's step list); ``finish()`` uses the number of ``step`` calls.
* Leaks (``leaked-page``, ``leaked-hkid``) are reported only if the scenario ran
  ``check_no_leak``: at that step for what is held then, and at ``finish()`` for anything held
  at the end and not reported yet.  A page leaks if it is still allocated to the TDX code
  (``page_alloc`` without ``page_free``) or still owned by the module (PAMT type not PT_NDA); an
  HKID leaks if the host pool still holds it or the module's KOT still has it ASSIGNED/FLUSHED.
* ``hkid_alloc`` of an allocated HKID, ``hkid_free`` of a free one, ``page_alloc`` of an
  allocated page and ``page_free`` of a free one are recorded in ``host_events`` and done.
* The kernel's use of a page before ``page_alloc`` and ``host_write`` are partial KeyID-0 stores
  to lines 0, 8, ..., 56 of the page (``page_alloc``: line ``i`` on package ``(i // 8) %
  packages``, i.e. dirty lines on every package; ``host_write``: on the step's CPU's package).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tdxcheck.model.status import parse_status, status_name
from tdxcheck.model.steps import STEP_BY_NAME, TD_EXIT_REASONS, hidden_object

from .machine import Machine
from .platform import Consequence
from .structures import (
    DEFAULT_CONFIG,
    KOT_ASSIGNED,
    KOT_FLUSHED,
    KOT_FREE,
    LEAF,
    LINE,
    PAGE_SIZE,
    PT_NDA,
    PT_RSVD,
    PT_TDR,
    PT_TDVPR,
)
from .wrappers import Page, TdxHost, TdxTd, TdxVp

__all__ = ["Consequence", "ExecStep", "Executor", "StepNotEnabled"]

#: physical address of the first named page
PAGE_BASE = 0x10000000
#: the lines of a page the kernel's partial writes touch
HOST_LINES = tuple(range(0, 64, 8))


class StepNotEnabled(Exception):
    """A step that cannot happen in the current state (nothing was changed)."""


@dataclass
class ExecStep:
    """One executed step: the module's 64-bit status (``None`` for host actions) and outputs
    (raw registers ``rcx``/``rdx``/``r8`` for ``seamcall``; the wrapper's named out-arguments,
    e.g. ``tdx_pt``/``tdx_owner``/``tdx_size``, for typed steps)."""

    status: int | None
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def status_name(self) -> str | None:
        return None if self.status is None else status_name(self.status)


class Executor:
    """Replays scenario steps on the concrete machine (see module docstring)."""

    def __init__(
        self,
        config: Mapping[str, int] | None = None,
        *,
        ablate: Iterable[str] = (),
        names: Mapping[str, Iterable[str]] | None = None,
        cache_lines: int = 4096,
        seed: int = 0,
    ) -> None:
        cfg = dict(DEFAULT_CONFIG)
        cfg.update(config or {})
        self.config = cfg
        self.machine = Machine(cfg, ablate=ablate, cache_lines=cache_lines, seed=seed)
        self.host = TdxHost(self.machine, wrapper_clflush=bool(cfg["wrapper_clflush"]))
        self.pages: dict[str, Page] = {}
        self.tds: dict[str, TdxTd] = {}
        self.vps: dict[str, TdxVp] = {}
        self.bound: set[str] = set()  # hidden objects a raw create has bound
        self.vp_td: dict[str, str | None] = {}
        self.hkid_pool: dict[int, int] = {h: 0 for h in range(1, cfg["hkids"])}
        self.page_allocated: dict[str, int] = {}
        self.host_events: list[str] = []
        self.steps_done = 0
        self.no_leak_checked = False
        self._leaks_reported: set[tuple[str, str]] = set()
        for n in (names or {}).get("page", ()):
            self._page(n)
        for n in (names or {}).get("td", ()):
            self._new_td(n)
        for n in (names or {}).get("vp", ()):
            self._new_vp(n)

    @property
    def consequences(self) -> list[Consequence]:
        return self.machine.consequences

    # ------------------------------------------------------------------ names

    def _page(self, name: str) -> Page:
        page = self.pages.get(name)
        if page is None:
            page = self.pages[name] = Page(name, PAGE_BASE + len(self.pages) * PAGE_SIZE)
            self.page_allocated[name] = 0
        return page

    def _new_td(self, name: str) -> TdxTd:
        td = self.tds.get(name)
        if td is None:
            td = self.tds[name] = TdxTd(tdcs_nr_pages=self.config["tdcs_pages"],
                                        tdcx_nr_pages=self.config["tdcx_pages"])
        return td

    def _new_vp(self, name: str) -> TdxVp:
        vp = self.vps.get(name)
        if vp is None:
            vp = self.vps[name] = TdxVp()
            self.vp_td.setdefault(name, None)
        return vp

    def _bound_td(self, name: str) -> TdxTd:
        td = self.tds.get(name)
        if td is None or td.tdr_page is None:
            raise StepNotEnabled(f"td {name} has no TDR page (no tdh_mng_create yet)")
        return td

    def _vp_name(self, tdvpr: int) -> str:
        """The scenario name of the vp whose TDVPR is at ``tdvpr`` (its PA if unnamed)."""
        for n, vp in self.vps.items():
            if vp.tdvpr_page is not None and vp.tdvpr_page.pa == tdvpr:
                return n
        return f"0x{tdvpr:x}"

    def _bound_vp(self, name: str) -> TdxVp:
        vp = self.vps.get(name)
        if vp is None or vp.tdvpr_page is None:
            raise StepNotEnabled(f"vp {name} has no TDVPR page (no tdh_vp_create yet)")
        return vp

    def page_pa(self, name: str) -> int:
        """The physical address assigned to a page name (assigning one if new)."""
        return self._page(name).pa

    # ------------------------------------------------------------------ stepping

    def step(self, name: str, operands: Mapping[str, Any] | None = None, cpu: int = 0,
             fault: str | None = None) -> ExecStep:
        """Run one scenario step (a name of ``STEPS`` or ``"seamcall"``).

        ``fault`` (``"TDX_OPERAND_BUSY|KOT"`` or a bare status name) makes the leaf return that
        status at that fault point if the checks before it pass."""
        ops = dict(operands or {})
        cpu = int(ops.pop("cpu", cpu))
        self.machine.step_index = self.steps_done
        self.steps_done += 1
        self.machine.pkg_of(cpu)  # rejects a CPU the platform does not have
        self.host.cpu = cpu
        self.host.fault = parse_status(fault) if fault else None
        try:
            sig = STEP_BY_NAME.get(name)
            if name != "seamcall" and sig is None:
                raise ValueError(f"unknown step {name!r}")
            if name == "seamcall" or sig.is_seamcall:
                running = self.machine.guest_on(cpu)
                if running is not None:
                    raise StepNotEnabled(
                        f"cpu{cpu} is running vCPU {self._vp_name(running)} in the guest: an LP "
                        "in the guest makes no SEAMCALL (cannot happen on hardware)")
            if name == "seamcall":
                return self._raw(ops, cpu)
            handler: Callable[[dict[str, Any], int], ExecStep] = getattr(self, "_s_" + name)
            return handler(ops, cpu)
        finally:
            self.host.fault = None

    def _raw(self, ops: dict[str, Any], cpu: int) -> ExecStep:
        leaf = ops.get("leaf")
        if leaf not in LEAF:
            raise ValueError(f"unknown SEAMCALL leaf {leaf!r}")
        regs: dict[str, int] = {}
        for r in ("rcx", "rdx", "r8"):
            v = ops.get(r, 0)
            regs[r] = self._page(v).pa if isinstance(v, str) else int(v)
        rcx = ops.get("rcx", 0)
        hidden = hidden_object(rcx)  # hidden objects, as the parser makes them
        page = self.pages[rcx] if isinstance(rcx, str) else None  # None: the NULL page
        # the first raw create binds (the struct may exist, unbound, from the universe's names)
        if leaf == "TDH.MNG.CREATE" and hidden not in self.bound:
            self.bound.add(hidden)
            self._new_td(hidden).tdr_page = page
        elif leaf == "TDH.VP.CREATE" and hidden not in self.bound:
            self.bound.add(hidden)
            self._new_vp(hidden).tdvpr_page = page
            rdx = ops.get("rdx")
            self.vp_td[hidden] = next(
                (t for t, td in self.tds.items()
                 if isinstance(rdx, str) and td.tdr_page is not None
                 and td.tdr_page.name == rdx), None)
        status, out = self.host.seamcall(LEAF[leaf], regs["rcx"], regs["rdx"], regs["r8"])
        return ExecStep(status, dict(out))

    # typed SEAMCALL steps ---------------------------------------------------

    def _s_tdh_mng_create(self, o: dict[str, Any], cpu: int) -> ExecStep:
        td = self._new_td(o["td"])
        td.tdr_page = self._page(o["page"])
        return ExecStep(self.host.tdh_mng_create(td, int(o["hkid"])))

    def _s_tdh_mng_key_config(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_mng_key_config(self._bound_td(o["td"])))

    def _s_tdh_mng_addcx(self, o: dict[str, Any], cpu: int) -> ExecStep:
        td = self._bound_td(o["td"])
        page = self._page(o["page"])
        if page not in td.tdcs_pages:
            td.tdcs_pages.append(page)
        return ExecStep(self.host.tdh_mng_addcx(td, page))

    def _s_tdh_mng_init(self, o: dict[str, Any], cpu: int) -> ExecStep:
        status, err = self.host.tdh_mng_init(self._bound_td(o["td"]))
        return ExecStep(status, {"extended_err": err})

    def _s_tdh_mng_rd(self, o: dict[str, Any], cpu: int) -> ExecStep:
        status, data = self.host.tdh_mng_rd(self._bound_td(o["td"]))
        return ExecStep(status, {"data": data})

    def _s_tdh_mng_wr(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_mng_wr(self._bound_td(o["td"])))

    def _s_tdh_vp_create(self, o: dict[str, Any], cpu: int) -> ExecStep:
        td = self._bound_td(o["td"])
        vp = self._new_vp(o["vp"])
        vp.tdvpr_page = self._page(o["page"])
        self.vp_td[o["vp"]] = o["td"]
        return ExecStep(self.host.tdh_vp_create(td, vp))

    def _s_tdh_vp_addcx(self, o: dict[str, Any], cpu: int) -> ExecStep:
        vp = self._bound_vp(o["vp"])
        page = self._page(o["page"])
        if page not in vp.tdcx_pages:
            vp.tdcx_pages.append(page)
        return ExecStep(self.host.tdh_vp_addcx(vp, page))

    def _s_tdh_vp_init(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_vp_init(self._bound_vp(o["vp"])))

    def _s_tdh_vp_rd(self, o: dict[str, Any], cpu: int) -> ExecStep:
        status, data = self.host.tdh_vp_rd(self._bound_vp(o["vp"]))
        return ExecStep(status, {"data": data})

    def _s_tdh_vp_wr(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_vp_wr(self._bound_vp(o["vp"])))

    def _s_tdh_vp_enter(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_vp_enter(self._bound_vp(o["vp"])))

    def _s_tdh_vp_flush(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_vp_flush(self._bound_vp(o["vp"])))

    def _s_tdh_mng_vpflushdone(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_mng_vpflushdone(self._bound_td(o["td"])))

    def _s_tdh_phymem_cache_wb(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_phymem_cache_wb(int(o.get("resume", 0))))

    def _s_tdh_mng_key_freeid(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_mng_key_freeid(self._bound_td(o["td"])))

    def _s_tdh_phymem_page_reclaim(self, o: dict[str, Any], cpu: int) -> ExecStep:
        status, pt, owner, size = self.host.tdh_phymem_page_reclaim(self._page(o["page"]))
        return ExecStep(status, {"tdx_pt": pt, "tdx_owner": owner, "tdx_size": size})

    def _s_tdh_phymem_page_wbinvd_tdr(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_phymem_page_wbinvd_tdr(self._bound_td(o["td"])))

    def _s_tdh_phymem_page_wbinvd_hkid(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_phymem_page_wbinvd_hkid(int(o["hkid"]),
                                                             self._page(o["page"])))

    def _mem(self, status_and_errs: tuple[int, int, int]) -> ExecStep:
        status, e1, e2 = status_and_errs
        return ExecStep(status, {"ext_err1": e1, "ext_err2": e2})

    def _s_tdh_mem_sept_add(self, o: dict[str, Any], cpu: int) -> ExecStep:
        td = self._bound_td(o["td"])
        return self._mem(self.host.tdh_mem_sept_add(td, int(o["gpa"]), int(o["level"]),
                                                    self._page(o["page"])))

    def _s_tdh_mem_page_add(self, o: dict[str, Any], cpu: int) -> ExecStep:
        td = self._bound_td(o["td"])
        return self._mem(self.host.tdh_mem_page_add(td, int(o["gpa"]), self._page(o["page"])))

    def _s_tdh_mem_page_aug(self, o: dict[str, Any], cpu: int) -> ExecStep:
        td = self._bound_td(o["td"])
        return self._mem(self.host.tdh_mem_page_aug(td, int(o["gpa"]), 0, self._page(o["page"])))

    def _s_tdh_mem_range_block(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return self._mem(self.host.tdh_mem_range_block(self._bound_td(o["td"]), int(o["gpa"]),
                                                       int(o["level"])))

    def _s_tdh_mem_track(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_mem_track(self._bound_td(o["td"])))

    def _s_tdh_mem_page_remove(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return self._mem(self.host.tdh_mem_page_remove(self._bound_td(o["td"]), int(o["gpa"]),
                                                       int(o["level"])))

    def _s_tdh_mem_range_unblock(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return self._mem(self.host.tdh_mem_range_unblock(self._bound_td(o["td"]),
                                                         int(o["gpa"]), int(o["level"])))

    def _s_tdh_mem_sept_remove(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return self._mem(self.host.tdh_mem_sept_remove(self._bound_td(o["td"]), int(o["gpa"]),
                                                       int(o["level"])))

    def _s_tdh_mr_extend(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return self._mem(self.host.tdh_mr_extend(self._bound_td(o["td"]), int(o["gpa"])))

    def _s_tdh_mr_finalize(self, o: dict[str, Any], cpu: int) -> ExecStep:
        return ExecStep(self.host.tdh_mr_finalize(self._bound_td(o["td"])))

    # host and guest actions -------------------------------------------------

    def _s_hkid_alloc(self, o: dict[str, Any], cpu: int) -> ExecStep:
        h = int(o["hkid"])
        if self.hkid_pool.get(h):
            self.host_events.append(f"step {self.machine.step_index}: hkid_alloc of HKID {h}, "
                                    f"already allocated")
        self.hkid_pool[h] = 1
        return ExecStep(None)

    def _s_hkid_free(self, o: dict[str, Any], cpu: int) -> ExecStep:
        h = int(o["hkid"])
        if not self.hkid_pool.get(h):
            self.host_events.append(f"step {self.machine.step_index}: hkid_free of HKID {h}, "
                                    f"not allocated")
        self.hkid_pool[h] = 0
        return ExecStep(None)

    @staticmethod
    def _names(v: Any) -> list[str]:
        return [v] if isinstance(v, str) else list(v)

    def _s_page_alloc(self, o: dict[str, Any], cpu: int) -> ExecStep:
        m = self.machine
        for n in self._names(o["page"]):
            page = self._page(n)
            if self.page_allocated[n]:
                self.host_events.append(f"step {m.step_index}: page_alloc of {n}, already "
                                        f"allocated")
            self.page_allocated[n] = 1
            # the kernel used the page before handing it out: dirty KeyID-0 lines everywhere
            for i in HOST_LINES:
                pkg = (i // 8) % m.packages
                m.store(pkg * m.cpus_per_package, page.pa + i * LINE, 0,
                        b"kernel" + m.seq.to_bytes(8, "little"))
        return ExecStep(None)

    def _s_page_free(self, o: dict[str, Any], cpu: int) -> ExecStep:
        for n in self._names(o["page"]):
            self._page(n)
            if not self.page_allocated[n]:
                self.host_events.append(f"step {self.machine.step_index}: page_free of {n}, "
                                        f"not allocated")
            self.page_allocated[n] = 0
        return ExecStep(None)

    def _s_host_write(self, o: dict[str, Any], cpu: int) -> ExecStep:
        page = self._page(o["page"])
        self.machine.host_write(cpu, page.pa, b"host" + self.machine.seq.to_bytes(8, "little"),
                                HOST_LINES)
        return ExecStep(None)

    def _s_clflush(self, o: dict[str, Any], cpu: int) -> ExecStep:
        self.host.tdx_clflush_page(self._page(o["page"]))
        return ExecStep(None)

    def _s_clear_page(self, o: dict[str, Any], cpu: int) -> ExecStep:
        self.host.tdx_clear_page(self._page(o["page"]))
        return ExecStep(None)

    def _running_vp(self, name: str) -> int:
        vp = self.vps.get(name)
        if vp is None or vp.tdvpr_page is None or not self.machine.in_guest(vp.tdvpr_page.pa):
            raise StepNotEnabled(f"vp {name} is not running in the guest")
        return vp.tdvpr_page.pa

    def _s_td_exit(self, o: dict[str, Any], cpu: int) -> ExecStep:
        reason = o.get("reason", TD_EXIT_REASONS[0])
        if reason not in TD_EXIT_REASONS:
            raise ValueError(f"unknown td_exit reason {reason!r}")
        self.machine.td_exit(self._running_vp(o["vp"]), reason)
        return ExecStep(None)

    def _s_guest_accept(self, o: dict[str, Any], cpu: int) -> ExecStep:
        tdvpr = self._running_vp(o["vp"])
        return ExecStep(self.machine.tdg_mem_page_accept(tdvpr, int(o["gpa"])))

    def _s_check_no_leak(self, o: dict[str, Any], cpu: int) -> ExecStep:
        self.no_leak_checked = True
        self._report_leaks()
        return ExecStep(None)

    # ------------------------------------------------------------------ leaks and the end

    def _leak(self, kind: str, obj: str, message: str) -> None:
        if (kind, obj) in self._leaks_reported:
            return
        self._leaks_reported.add((kind, obj))
        self.machine.consequences.append(Consequence(kind, self.machine.step_index, message))

    def _report_leaks(self) -> None:
        m = self.machine
        for n, page in self.pages.items():
            pt = m.pamt_entry(page.pa).pt
            if pt not in (PT_NDA, PT_RSVD):
                self._leak("leaked-page", n, f"page {n} (0x{page.pa:x}) is still owned by the "
                                             f"TDX module (PAMT type {pt})")
            elif self.page_allocated[n]:
                self._leak("leaked-page", n, f"page {n} (0x{page.pa:x}) is still allocated to "
                                             f"the TDX code")
        for h in range(1, self.config["hkids"]):
            if self.hkid_pool.get(h):
                self._leak("leaked-hkid", str(h), f"HKID {h} is not back in the host pool")
            elif m.kot[h].state in (KOT_ASSIGNED, KOT_FLUSHED):
                self._leak("leaked-hkid", str(h), f"HKID {h} is still held by the module's KOT "
                                                  f"(state {m.kot[h].state})")

    def finish(self) -> None:
        """End of run: first the latent damage the caches and memory hold now
        (``latent_damage``), then every cache line is evicted (written back if dirty; stale
        lines show their damage now), then leaks are reported if ``check_no_leak`` ran."""
        self.machine.step_index = self.steps_done
        self.machine.consequences.extend(self.latent_damage())
        self.machine.evict_all()
        if self.no_leak_checked:
            self._report_leaks()

    def latent_damage(self) -> list[Consequence]:
        """What the machine holds at the end of the run that will hurt later, read from its own
        caches, memory and module structures (no model): per page, KeyID and package, with the
        number of dirty lines.

        * ``latent-corrupted-host-data``: a page the kernel allocator holds (freed, or never
          given to the TDX code) has dirty lines under a private KeyID: their write-back will
          overwrite what the kernel writes there;
        * ``latent-module-page-in-allocator``: a page the module owns (PAMT type not NDA) is
          back in the kernel allocator: the kernel may hand it out while the module uses it;
        * ``latent-hkid-reuse``: a private HKID the module's KOT has free still has dirty
          lines under its old key: the next TD to get it loses them (while the KOT does not
          have it free, the module refuses to give it out: no byte-level effect);
        * ``latent-corrupted-td-data``: a page the module owns has dirty KeyID-0 lines: their
          write-back will overwrite the TD's (or the module's) data."""
        m = self.machine
        out: list[Consequence] = []
        step = self.steps_done
        by_pa = {pg.pa: n for n, pg in self.pages.items()}
        counts: dict[tuple[int, int, int], int] = {}
        for pkg, line, keyid in m.dirty_lines():
            pa = line & ~0xFFF
            counts[(pa, keyid, pkg)] = counts.get((pa, keyid, pkg), 0) + 1
        private = range(1, m.global_keyid + 1)
        for (pa, keyid, pkg), n in sorted(counts.items()):
            name = by_pa.get(pa, f"0x{pa:x}")
            owned = m.pamt_entry(pa).pt not in (PT_NDA, PT_RSVD)
            where = f"page {name}: {n} dirty line(s) under KeyID {keyid} on package {pkg}"
            if keyid in private and not owned and not self.page_allocated.get(name, 0):
                out.append(Consequence(
                    "latent-corrupted-host-data", step, f"{where}, and the kernel holds the "
                    "page: their write-back will overwrite what the kernel writes there",
                    page=name, keyid=keyid, package=pkg, count=n))
            elif keyid == 0 and owned:
                out.append(Consequence(
                    "latent-corrupted-td-data", step, f"{where}, and the module owns the page: "
                    "their write-back will overwrite the TD's data", page=name, keyid=0,
                    package=pkg, count=n))
            if keyid in range(1, m.global_keyid) and m.kot[keyid].state == KOT_FREE:
                out.append(Consequence(
                    "latent-hkid-reuse", step, f"{where}, and the module's KOT has HKID "
                    f"{keyid} free: the next TD to get it loses these lines", page=name,
                    keyid=keyid, package=pkg, count=n))
        for n, pg in sorted(self.pages.items()):
            pt = m.pamt_entry(pg.pa).pt
            if pt not in (PT_NDA, PT_RSVD) and not self.page_allocated[n]:
                out.append(Consequence(
                    "latent-module-page-in-allocator", step, f"page {n}: the module owns it "
                    f"(PAMT type {pt}) and the kernel allocator has it back: the kernel may hand "
                    "it out while the module uses it", page=n))
        return out

    # ------------------------------------------------------------------ projections

    def observe(self) -> dict[str, int | None]:
        """The abstract projection compared with the model's, for every named object:
        ``page.<n>.pt``, ``page.<n>.allocated``, ``td.<n>.lifecycle``/``op_state`` (None unless
        the td's TDR page is PT_TDR; op_state 0 before any TDCS page), ``vp.<n>.state`` /
        ``assoc_cpu`` (None unless its TDVPR page is PT_TDVPR; assoc None when not associated),
        ``kot.<h>.state`` and ``hkid.<h>.allocated`` for every private HKID 1..hkids-1."""
        m = self.machine
        out: dict[str, int | None] = {}
        for n, page in self.pages.items():
            out[f"page.{n}.pt"] = m.pamt_entry(page.pa).pt
            out[f"page.{n}.allocated"] = self.page_allocated[n]
        for n, td in self.tds.items():
            lc: int | None = None
            op: int | None = None
            if td.tdr_page is not None and m.pamt_entry(td.tdr_page.pa).pt == PT_TDR:
                tdr = m.tdrs[td.tdr_page.pa]
                lc = tdr.lifecycle
                op = tdr.tdcs.op_state if tdr.tdcs is not None else 0
            out[f"td.{n}.lifecycle"] = lc
            out[f"td.{n}.op_state"] = op
        for n, vp in self.vps.items():
            state: int | None = None
            assoc: int | None = None
            if vp.tdvpr_page is not None and m.pamt_entry(vp.tdvpr_page.pa).pt == PT_TDVPR:
                v = m.tdvpss[vp.tdvpr_page.pa]
                state, assoc = v.state, v.assoc_lp
            out[f"vp.{n}.state"] = state
            out[f"vp.{n}.assoc_cpu"] = assoc
        for h in range(1, self.config["hkids"]):
            out[f"kot.{h}.state"] = m.kot[h].state
            out[f"hkid.{h}.allocated"] = int(bool(self.hkid_pool.get(h)))
        return out

    def check_invariants(self) -> list[str]:
        """The machine's own invariants (``Machine.check_invariants``) plus the host bindings'."""
        bad = self.machine.check_invariants()
        for n in self.vps:
            td = self.vp_td.get(n)
            if td is not None and td not in self.tds:
                bad.append(f"vp {n} belongs to unknown td {td}")
        return bad
