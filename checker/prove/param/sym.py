"""The symbolic universe the rule builders run on for the parametric reading.

``model/`` builds a rule from an ``Action`` and a ``Ctx`` holding a ``Universe``; here the
universe is ``SymUniverse``: every object domain is a ``SymDomain`` (so ``All``/``Count``/
``for_each``/``forall`` build ∀ nodes instead of expanding), the platform's object counts
(packages, HKIDs) are symbols, and only the platform constants stay numbers
(``tdcs_pages``, ``tdcx_pages``, ``max_vcpus``, ``sept_levels``, the host flags).

Operands are terms: a TD, vCPU, page or CPU operand is a ``Var``; an HKID operand is a
``PrivateHkid`` (a private HKID: ``1 <= h < hkids``), a GPA operand a ``SymGpa`` (a valid
private GPA aligned to its level, standing for the S-EPT entry it names).  The builders ask
a few Python-level questions of an operand (``int(1 <= hkid <= p.global_keyid)``,
``gpa % (4096 << 9 * level)``): these two classes answer the ones their declaration
decides and raise ``Undecided`` for any other, so nothing is answered by guesswork.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tdxcheck.model.expr import Const, Expr, Sym, SymDomain, Var, lift
from tdxcheck.model.state import Platform


class Undecided(ValueError):
    """A rule builder asked a question about a symbolic operand its declaration does not
    decide (the rule needs a node in the expression language instead)."""


#: the GPA width every symbolic GPA is below (``checks.gpa_valid``: 48 bits, shared bit 47)
GPA_BITS = 47

_GLOBAL = Sym("global_keyid")
_HKIDS = Sym("hkids")  # one past the private HKIDs (== the global KeyID)


def _int_of(x: Any) -> int | None:
    if isinstance(x, Const):
        return x.value
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    return None


@dataclass(frozen=True, eq=False, slots=True)
class PrivateHkid(Var):
    """An HKID operand declared private (``1 <= h <= hkids - 1``): comparisons with 0, 1,
    ``hkids`` and the global KeyID are decided; anything else builds a node (an Expr
    operand) or raises ``Undecided`` (an int the declaration does not place)."""

    def _decide(self, op: str, other: Any) -> Any:
        n = _int_of(other)
        if n is not None:
            if n <= 0 or (n == 1 and op in (">=", "<")):
                # 1 <= h: true above 0, false below
                return {">": True, ">=": True, "<": False, "<=": False}[op] if n <= 0 else \
                    op == ">="
            raise Undecided(f"is a private HKID {op} {n}?")
        if other is _GLOBAL or other is _HKIDS:
            return op in ("<", "<=")
        from tdxcheck.model.expr import _bin

        return _bin(op, self, other)

    def __lt__(self, other: Any) -> Any:
        return self._decide("<", other)

    def __le__(self, other: Any) -> Any:
        return self._decide("<=", other)

    def __gt__(self, other: Any) -> Any:
        return self._decide(">", other)

    def __ge__(self, other: Any) -> Any:
        return self._decide(">=", other)


@dataclass(frozen=True)
class SymGpa:
    """A GPA operand at ``level``: valid (private, and within the S-EPT's reach:
    ``0 <= gpa < 2**min(47, 12 + 9 * depth)``), aligned to ``4096 << 9 * level``; ``entry``
    is the S-EPT entry of that level it names.  (The any host's GPAs are small multiples of
    4 KiB: every one of them is such a GPA.)"""

    level: int
    entry: Var
    depth: int = 4

    def __mod__(self, m: int) -> int:
        if (4096 << 9 * self.level) % m == 0:
            return 0
        raise Undecided(f"is a level-{self.level} GPA a multiple of {m:#x}?")

    def _bound(self, op: str, n: Any) -> bool:
        n = _int_of(n)
        if n is None:
            raise Undecided(f"GPA {op} a symbol")
        top = 1 << min(GPA_BITS, 12 + 9 * self.depth)  # every symbolic GPA is below
        if op in ("<", "<=") and n >= top:
            return True
        if op in (">=", ">") and n <= 0:
            return op == ">=" or n < 0
        if op in (">=", ">") and n >= top:
            return False
        raise Undecided(f"is a valid GPA {op} {n:#x}?")

    def __lt__(self, n: Any) -> bool:
        return self._bound("<", n)

    def __le__(self, n: Any) -> bool:
        return self._bound("<=", n)

    def __gt__(self, n: Any) -> bool:
        return self._bound(">", n)

    def __ge__(self, n: Any) -> bool:
        return self._bound(">=", n)

    def __index__(self) -> int:  # pragma: no cover - a guard against silent int use
        raise Undecided("a symbolic GPA has no integer value")


class SymPlatform:
    """The platform with symbolic object counts and the proof's fixed constants."""

    def __init__(self, fixed: Platform) -> None:
        self.fixed = fixed
        self.tdcs_pages = fixed.tdcs_pages
        self.tdcx_pages = fixed.tdcx_pages
        self.max_vcpus = fixed.max_vcpus
        self.sept_levels = fixed.sept_levels
        self.clflush_before_alloc = fixed.clflush_before_alloc
        self.clear_before_reuse = fixed.clear_before_reuse
        self.wrapper_clflush = fixed.wrapper_clflush
        self.packages = _SymCount("packages")
        self.cpus_per_package = _SymCount("cpus_per_package")
        self.cpus = _SymCount("cpus")
        self.hkids = _HKIDS
        self.global_keyid = _GLOBAL
        self.all_packages = Sym("all_pkgs")

    @property
    def tdvps_pages(self) -> int:
        return 1 + self.tdcx_pages

    def pkg(self, cpu: Expr) -> Expr:
        return Sym("cpu_pkg", (lift(cpu),))


class _SymCount:
    """An object count that is not a number (packages, CPUs): using it as one raises."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<any number of {self.name}>"

    def __index__(self) -> int:
        raise Undecided(f"the number of {self.name} is not fixed")

    __int__ = __index__


class _Names:
    """``u.tds[v]``: the name of a symbolic object (for clause messages).  There is no
    ``len``: a loop over the objects is ``u.domain(kind)`` with ``All``/``Any``/``Count``/
    ``for_each``/``forall``."""

    def __getitem__(self, x: Any) -> str:
        return name_of(x)

    def __len__(self) -> int:
        raise Undecided("a symbolic universe has any number of TDs and vCPUs: loop over "
                        "u.domain('td') / u.domain('vp') with All/Any/Count/for_each/forall")

    def __iter__(self) -> Any:
        return self.__len__()


def name_of(x: Any) -> str:
    if isinstance(x, Var):
        return x.name
    if isinstance(x, SymGpa):
        return x.entry.name
    if isinstance(x, Sym):
        return x.name
    return str(x)


class SymUniverse:
    """Any number of TDs, vCPUs, pages, HKIDs, packages and CPUs, on a fixed platform."""

    def __init__(self, fixed: Platform) -> None:
        self.platform = SymPlatform(fixed)
        self.tds = _Names()
        self.vps = _Names()

    def domain(self, kind: str) -> SymDomain:
        assert kind in ("page", "td", "vp", "hkid", "pkg", "entry"), kind
        return SymDomain(kind)

    def entry(self, gpa: Any, level: int) -> Expr:
        """The entry at ``level`` on the walk to ``gpa``: its own entry's ancestor."""
        if not isinstance(gpa, SymGpa):
            raise Undecided(f"a concrete GPA {gpa!r} in a parametric rule")
        if not gpa.level <= level < self.platform.sept_levels:
            raise ValueError(f"no level-{level} entry above a level-{gpa.level} GPA")
        e: Expr = gpa.entry
        for _ in range(level - gpa.level):
            e = Sym("parent", (e,))
        return e

    def children(self, gpa: Any, level: int) -> SymDomain:
        return SymDomain("children", of=self.entry(gpa, level), level=level)

    def page_name(self, x: Any) -> str:
        return name_of(x)

    def entry_label(self, e: Any) -> str:
        return name_of(e)

    def __getattr__(self, name: str) -> Any:  # n_pages, entries, gpas ...
        raise Undecided(f"a symbolic universe has no {name}: loop over u.domain(kind)")


def entry_var(level: int, name: str) -> Var:
    return Var(f"entry{level}", name)


#: how each operand of a leaf is abstracted (the any host's operand kinds)
OperandMaker = Callable[[str], Any]
