"""The hardware under the module: physical memory as 64-byte lines (ciphertext, TD-owner bit,
KeyID, write sequence), one LRU cache per package with KeyID-tagged lines, the memory
controllers' keys, the host's KeyID-0 accesses (``host_write``, ``host_clear_page``,
CLFLUSH), and the consequences it observes (``Consequence``).  See ``machine.py``."""


from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from .structures import (
    ABLATION_ALIASES,
    DEFAULT_CONFIG,
    LINE,
    LINES_PER_PAGE,
)

# --------------------------------------------------------------------------- consequences


@dataclass
class Consequence:
    """Something the concrete machine saw go wrong (kinds: module docstring and runner.py).

    ``step_index`` is the 0-based index of the ``Executor.step`` call during which it showed up
    (``finish()`` uses the number of steps).  ``address``/``expected``/``found`` are filled for
    data corruption; ``count`` says how many lines of the same page were hit in that step.
    """

    kind: str
    step_index: int
    message: str
    address: int | None = None
    expected: bytes | None = None
    found: bytes | None = None
    count: int = 1
    # latent damage (``latent-*`` kinds, found at the end of a run): where it sits
    page: str | None = None
    keyid: int | None = None
    package: int | None = None


# --------------------------------------------------------------------------- bytes and keys


@lru_cache(maxsize=1 << 16)
def _keystream(key: int, line: int) -> bytes:
    return hashlib.blake2b(line.to_bytes(8, "little"), key=key.to_bytes(16, "little"),
                           digest_size=LINE).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(LINE, "little")


ZERO_LINE = bytes(LINE)


@dataclass
class MemLine:
    """One 64-byte line of DRAM as the memory controller stores it."""

    data: bytes = ZERO_LINE  # ciphertext
    td_bit: bool = False  # TD-owner bit (logical integrity)
    seq: int = 0  # write sequence number of the data held
    keyid: int = 0  # KeyID the data was written with
    keygen: int = 0  # generation of that KeyID's key on the home package at the time


@dataclass
class CacheLine:
    """A cached line: tag ``(line address, KeyID)``, plaintext, dirty bit, write seq."""

    data: bytes
    dirty: bool
    seq: int
    keygen: int


class Platform:
    """Packages, CPUs, memory, caches and memory-controller keys: what the module runs on."""

    def __init__(
        self,
        config: dict[str, int] | None = None,
        *,
        ablate: Iterable[str] = (),
        cache_lines: int = 4096,
        seed: int = 0,
        keyid_shift: int = 40,
    ) -> None:
        cfg = dict(DEFAULT_CONFIG)
        cfg.update(config or {})
        self.cfg = cfg
        self.packages = cfg["packages"]
        self.cpus_per_package = cfg["cpus_per_package"]
        self.ncpus = self.packages * self.cpus_per_package
        self.global_keyid = cfg["hkids"]  # the module's own KeyID (TDH.SYS.CONFIG), §2.4
        self.min_tdcs = cfg["tdcs_pages"]  # MIN_NUM_TDCS_PAGES
        self.max_tdcs = cfg["tdcs_pages"] + 3  # MAX_NUM_TDCS_PAGES
        self.min_tdvps = 1 + cfg["tdcx_pages"]  # MIN_TDVPS_PAGES
        self.max_tdvps = 1 + cfg["tdcx_pages"] + 9  # MAX_TDVPS_PAGES
        self.pwl = cfg["sept_levels"] - 1  # eptp.ept_pwl: level of the root's entries
        self.all_pkgs = (1 << self.packages) - 1  # global pkg_config_bitmap: every package
        self.pw_mce_erratum = bool(cfg["clear_before_reuse"])
        self.clflush_before_alloc = bool(cfg["clflush_before_alloc"])
        self.keyid_shift = keyid_shift
        self.pa_mask = (1 << keyid_shift) - 1
        self.ablate = frozenset(ABLATION_ALIASES.get(a, a) for a in ablate)
        self.cache_capacity = cache_lines
        self._rng = random.Random(seed)

        # platform
        self.memory: dict[int, MemLine] = {}
        self.caches: list[OrderedDict[tuple[int, int], CacheLine]] = [
            OrderedDict() for _ in range(self.packages)]
        self.keys: list[dict[int, tuple[int, int]]] = [{} for _ in range(self.packages)]
        for p in range(self.packages):  # TDH.SYS.KEY.CONFIG on every package
            self.keys[p][self.global_keyid] = (self._new_key(), 1)
        self._seq = 0

        # reporting
        self.consequences: list[Consequence] = []
        self.step_index = 0
        self._reported: dict[tuple[str, int, int], Consequence] = {}

    # ------------------------------------------------------------------ small helpers

    def pkg_of(self, cpu: int) -> int:
        """Package of a logical CPU: ``cpu // cpus_per_package`` (scenario-format.md §1)."""
        if not 0 <= cpu < self.ncpus:
            raise ValueError(f"cpu {cpu} does not exist (the platform has {self.ncpus})")
        return cpu // self.cpus_per_package

    def home_of(self, line: int) -> int:
        """Package whose memory controller holds a line (pages interleave across packages)."""
        return (line >> 12) % self.packages

    def _new_key(self) -> int:
        return self._rng.getrandbits(128) | 1

    @property
    def seq(self) -> int:
        """The number of line writes so far (each write's ``seq``; also a handy data stamp)."""
        return self._seq

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _key(self, home: int, keyid: int) -> tuple[int, int]:
        if keyid == 0:
            return 0, 0
        return self.keys[home].get(keyid, (0, 0))

    def _cipher(self, line: int, keyid: int, data: bytes, key: int) -> bytes:
        if keyid == 0 or key == 0:
            # KeyID 0 is plaintext; a never-programmed KeyID behaves like it (cannot happen for
            # module writes: the module writes under an HKID only after KEY.CONFIG)
            return data
        return _xor(data, _keystream(key, line))

    def report(self, kind: str, page: int, message: str, *, address: int | None = None,
               expected: bytes | None = None, found: bytes | None = None) -> None:
        """Record a consequence; repeated hits on one page in one step are counted, not listed."""
        k = (kind, page, self.step_index)
        prev = self._reported.get(k)
        if prev is not None:
            prev.count += 1
            return
        c = Consequence(kind, self.step_index, message, address, expected, found)
        self._reported[k] = c
        self.consequences.append(c)

    # ------------------------------------------------------------------ caches and memory

    def _find(self, tag: tuple[int, int]) -> int | None:
        for p, cache in enumerate(self.caches):
            if tag in cache:
                return p
        return None

    def _write_back(self, tag: tuple[int, int], cl: CacheLine) -> None:
        """A dirty line reaches memory, encrypted with its KeyID's key *now* (§ module doc)."""
        line, keyid = tag
        home = self.home_of(line)
        key, gen = self._key(home, keyid)
        old = self.memory.get(line, MemLine())
        if keyid != 0 and cl.keygen != gen:
            self.report("hkid-reuse-dirty-lines", line & ~0xFFF,
                        f"line 0x{line:x} written under HKID {keyid}'s old key was written back "
                        f"with the key programmed for its new owner: the old data is lost and "
                        f"the bytes are garbage to everyone", address=line)
        if cl.seq < old.seq and not self._newer_alias_cached(line, keyid, old.seq):
            # stale: a newer write to this physical line (under another KeyID) already reached
            # memory, and this write-back destroys it (unless an even newer dirty copy is still
            # cached under yet another KeyID: that one lands last and nothing is lost)
            okey, _ = self._key(home, old.keyid)
            expected = self._cipher(line, old.keyid, old.data, okey)
            new_cipher = self._cipher(line, keyid, cl.data, key)
            found = self._cipher(line, old.keyid, new_cipher, okey)
            kind = "corrupted-host-data" if old.keyid == 0 else "corrupted-td-data"
            whose = ("the host's newer KeyID-0 data" if old.keyid == 0
                     else f"newer data written under KeyID {old.keyid}")
            self.report(kind, line & ~0xFFF,
                        f"0x{line:x}: a stale dirty line cached under KeyID {keyid} was written "
                        f"back over {whose}: expected {expected[:16].hex()}.. found "
                        f"{found[:16].hex()}..", address=line, expected=expected, found=found)
        self.memory[line] = MemLine(self._cipher(line, keyid, cl.data, key), keyid != 0,
                                    cl.seq, keyid, gen)

    def _newer_alias_cached(self, line: int, keyid: int, seq: int) -> bool:
        for cache in self.caches:
            for k in range(self.global_keyid + 1):
                if k == keyid:
                    continue
                cl = cache.get((line, k))
                if cl is not None and cl.dirty and cl.seq > seq:
                    return True
        return False

    def _evict(self, pkg: int, tag: tuple[int, int]) -> None:
        cl = self.caches[pkg].pop(tag)
        if cl.dirty:
            self._write_back(tag, cl)

    def _insert(self, pkg: int, tag: tuple[int, int], cl: CacheLine) -> None:
        cache = self.caches[pkg]
        cache[tag] = cl
        cache.move_to_end(tag)
        while len(cache) > self.cache_capacity:
            oldest = next(iter(cache))
            self._evict(pkg, oldest)

    def _fill(self, pkg: int, line: int, keyid: int) -> CacheLine:
        """Bring ``(line, keyid)`` into ``pkg``'s cache: from another package, else from memory."""
        tag = (line, keyid)
        other = self._find(tag)
        if other is not None:
            cl = self.caches[other].pop(tag)
            self._insert(pkg, tag, cl)
            return cl
        mem = self.memory.get(line, MemLine())
        home = self.home_of(line)
        if keyid == 0 and mem.td_bit and self.pw_mce_erratum:
            self.report("machine-check", line & ~0xFFF,
                        f"#MC: KeyID-0 access to line 0x{line:x} whose TD-owner bit is set "
                        f"(last written under KeyID {mem.keyid}); this platform has the "
                        f"partial-write erratum (X86_BUG_TDX_PW_MCE)", address=line)
        elif keyid != 0 and not mem.td_bit:
            self.report("machine-check", line & ~0xFFF,
                        f"#MC in SEAM/guest mode: read of line 0x{line:x} under KeyID {keyid} "
                        f"failed the integrity check (TD-owner bit clear: last written under "
                        f"KeyID {mem.keyid})", address=line)
        if keyid == 0 and mem.td_bit:
            data = ZERO_LINE  # a TD-owned line reads as zeros through a non-TD KeyID
        else:
            key, _ = self._key(home, keyid)
            data = self._cipher(line, keyid, mem.data, key)
        cl = CacheLine(data, False, mem.seq, self._key(home, keyid)[1])
        self._insert(pkg, tag, cl)
        return cl

    def store(self, cpu: int, addr: int, keyid: int, data: bytes) -> None:
        """A normal (write-back cached) store of ``data`` at ``addr`` through ``keyid``."""
        pkg = self.pkg_of(cpu)
        line = addr & ~(LINE - 1)
        off = addr - line
        assert off + len(data) <= LINE, "a store stays inside one line"
        tag = (line, keyid)
        if off == 0 and len(data) == LINE and self._find(tag) is None:
            old = None  # a full-line store needs no read-for-ownership
        else:
            old = self._fill(pkg, line, keyid).data
        if old is None:
            new = data
        else:
            new = old[:off] + data + old[off + len(data):]
        home = self.home_of(line)
        self._insert(pkg, tag, CacheLine(new, True, self._next_seq(), self._key(home, keyid)[1]))

    def load(self, cpu: int, addr: int, keyid: int, length: int = LINE) -> bytes:
        """A cached load through ``keyid`` (fills the line into the CPU's package cache)."""
        line = addr & ~(LINE - 1)
        off = addr - line
        cl = self._fill(self.pkg_of(cpu), line, keyid)
        return cl.data[off:off + length]

    def movdir64b(self, line: int, keyid: int, data: bytes) -> None:
        """A direct store (MOVDIR64B) of a whole line: straight to memory, invalidating cached
        copies of the same tag; lines cached under other KeyIDs are untouched (§9, LK
        ``tdx_clear_page``).  With ``clflush_before_alloc=0`` the platform needs no CLFLUSH
        before allocation, modelled as: a direct store under a TDX KeyID also drops the line's
        KeyID-0 copies."""
        for cache in self.caches:
            cache.pop((line, keyid), None)
            if keyid != 0 and not self.clflush_before_alloc:
                cache.pop((line, 0), None)
        home = self.home_of(line)
        key, gen = self._key(home, keyid)
        self.memory[line] = MemLine(self._cipher(line, keyid, data, key), keyid != 0,
                                    self._next_seq(), keyid, gen)

    def movdir64b_page(self, pa: int, keyid: int, fill: bytes = ZERO_LINE) -> None:
        for i in range(LINES_PER_PAGE):
            self.movdir64b(pa + i * LINE, keyid, fill)

    def flush_line(self, line: int, keyid: int) -> None:
        """CLFLUSH(OPT) through ``keyid``: write back if dirty and invalidate, in every package."""
        p = self._find((line, keyid))
        if p is not None:
            self._evict(p, (line, keyid))

    def flush_page(self, pa: int, keyid: int) -> None:
        for i in range(LINES_PER_PAGE):
            self.flush_line(pa + i * LINE, keyid)

    def evict_all(self, pkg: int | None = None, keep_keyid: int | None = None) -> None:
        """Write back and invalidate every line (of one package; optionally sparing one KeyID),
        oldest first (LRU order)."""
        for p in range(self.packages) if pkg is None else (pkg,):
            for tag in list(self.caches[p]):
                if keep_keyid is not None and tag[1] == keep_keyid:
                    continue
                self._evict(p, tag)

    def dirty_lines(self, keyid: int | None = None, pa: int | None = None) -> list[tuple[int, int, int]]:
        """``(package, line, keyid)`` of every dirty cached line, optionally filtered."""
        out = []
        for p, cache in enumerate(self.caches):
            for (line, k), cl in cache.items():
                if not cl.dirty:
                    continue
                if keyid is not None and k != keyid:
                    continue
                if pa is not None and line & ~0xFFF != pa:
                    continue
                out.append((p, line, k))
        return out

    def peek(self, line: int, keyid: int) -> bytes:
        """What memory holds for ``line`` decrypted with ``keyid``'s current key (no cache, no
        side effect; for tests and reports)."""
        mem = self.memory.get(line, MemLine())
        key, _ = self._key(self.home_of(line), keyid)
        return self._cipher(line, keyid, mem.data, key)

    def td_bit(self, line: int) -> bool:
        return self.memory.get(line, MemLine()).td_bit

    def program_key(self, pkg: int, hkid: int) -> None:
        """PCONFIG ``KEYID_SET_KEY_RANDOM`` on one package (M15 ``program_mktme_keys``)."""
        home_dirty = [(p, line) for p, line, _ in self.dirty_lines(keyid=hkid)
                      if self.home_of(line) == pkg]
        if home_dirty:
            pages = sorted({line & ~0xFFF for _, line in home_dirty})
            self.report("hkid-reuse-dirty-lines", pages[0],
                        f"a new key for HKID {hkid} was programmed on package {pkg} while "
                        f"{len(home_dirty)} line(s) written under its old key were still dirty "
                        f"in a cache (pages {', '.join(hex(p) for p in pages)})",
                        address=home_dirty[0][1])
        _, gen = self.keys[pkg].get(hkid, (0, 0))
        self.keys[pkg][hkid] = (self._new_key(), gen + 1)

    # ------------------------------------------------------------------ host side

    def host_write(self, cpu: int, pa: int, pattern: bytes, lines: Iterable[int]) -> None:
        """The kernel writes part of each given line of a page through KeyID 0 (normal stores:
        a read-for-ownership then a partial write)."""
        for i in lines:
            self.store(cpu, pa + i * LINE, 0, pattern)

    def host_clear_page(self, pa: int) -> None:
        """``tdx_clear_page``: 64 x MOVDIR64B of zeros under KeyID 0 (LK; §9 "Clearing")."""
        self.movdir64b_page(pa, 0, ZERO_LINE)
