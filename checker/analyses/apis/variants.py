"""SEAMCALL wrapper APIs as data: feature switches, and the five variants built from them.

An API is what a host's C code can write: which wrappers exist, the C type of each of their
parameters (which decides what values a caller can put there), and which sequences the API
runs itself (combined helpers).  Each difference between the APIs of
``../shared/api-variants.md`` is one *feature*; a variant is a set of features plus the few
parameters whose type differs from what its features say (``pfn-2026``'s ``kvm_pfn_t``).
``ApiHost`` (``host.py``) reads a variant and generates every call its types allow.

Parameter domains, from the C type (api-variants.md §2; ``hpa_t`` and ``kvm_pfn_t`` are
plain ``u64`` typedefs, torvalds/linux ``include/linux/kvm_types.h``):

* an integer page parameter (``u64``, ``hpa_t``, ``kvm_pfn_t``): any page, the NULL page,
  and, where the same call also takes an HKID of an integer type, the two swapped;
* ``struct page *``: any page the kernel has (a pointer stays valid, if stale, after
  ``__free_page``); never NULL, never an integer;
* an HKID (``u16``, ``u64``): any private HKID; ``tdx_hkid_t`` (``distinct_scalars``) has
  no conversion from an integer;
* a handle (``struct tdx_td *``, ``struct tdx_vp *``) whose page field the caller may
  assign (upstream KVM sets ``td.tdr_page`` itself): any value of the field's type, as if
  assigned just before the call; a type-state handle holds the page its create gave it and
  exists only while its TD (vCPU) is in the states its type names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: every feature: (name, what it means for the caller)
FEATURES: tuple[tuple[str, str], ...] = (
    ("handles", ("TD and vCPU operands are struct tdx_td / tdx_vp handles (the RFC) instead "
     "of page addresses; the caller may assign their page fields")),
    ("struct_page", "pages are passed as struct page * (never NULL, never an integer)"),
    ("wrapper_clflush", ("every wrapper that hands a page over CLFLUSHes it first "
     "(tdx_clflush_page)")),
    ("hidden_global_keyid", ("PAGE.WBINVD is split: _tdr(td) picks the module's global KeyID, "
     "_hkid(hkid, page) a TD's; no caller-built keyed address")),
    ("distinct_scalars", "an HKID has a type of its own: no page address converts to one"),
    ("typestate_handles", ("handles are sealed (their page is the one create gave them, no "
     "two share one), typed by the TD's lifecycle, and consumed by teardown")),
    ("helper_alloc", ("the API allocates every page it hands over (alloc + CLFLUSH + "
     "SEAMCALL, freed on failure); the caller never holds such a page")),
    ("helper_reclaim", ("reclaim + WBINVD (the global KeyID for a TDR) + clear + free is one "
     "call")),
    ("helper_zap", "block + track + kick + remove + WBINVD + clear + free is one call"),
    ("helper_release_hkid", ("the API owns HKIDs: create allocates one; release is vCPU "
     "flush + VPFLUSHDONE + CACHE.WB on every package + FREEID + free, one call")),
    ("helper_vcpu_load", ("a vCPU used on a new CPU is flushed on its old one first, and a "
     "flush runs on the CPU the vCPU is associated with")),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f for f, _ in FEATURES)

#: the wrappers that hand a page to the module (the page the API allocates with
#: ``helper_alloc``), in the order of api-variants.md §2
HANDOVER = ("tdh_mng_create", "tdh_mng_addcx", "tdh_vp_create", "tdh_vp_addcx",
            "tdh_mem_sept_add", "tdh_mem_page_add", "tdh_mem_page_aug")

INTEGER_TYPES = ("u64", "hpa_t", "kvm_pfn_t", "u16")


@dataclass(frozen=True)
class Variant:
    """One API: its features, and the wrappers whose page parameter is ``kvm_pfn_t``."""

    name: str
    title: str
    source: str
    features: frozenset[str]
    pfn_params: frozenset[str] = frozenset()  # wrappers taking kvm_pfn_t for their page

    def has(self, feature: str) -> bool:
        assert feature in FEATURE_NAMES, feature
        return feature in self.features

    def without(self, feature: str) -> Variant:
        """The same API with one feature turned off (feature credit, as ``ablate``)."""
        return replace(self, name=f"{self.name}-{feature}",
                       features=self.features - {feature})

    # ---- C types, from the features
    def page_type(self, wrapper: str) -> str | None:
        """The C type of ``wrapper``'s page parameter (None: the API allocates it)."""
        if self.has("helper_alloc") and wrapper in HANDOVER:
            return None
        if wrapper in self.pfn_params:
            return "kvm_pfn_t"
        if self.has("struct_page"):
            return "struct page *"
        return "hpa_t" if self.has("handles") else "u64"

    def td_type(self) -> str:
        """The C type of a TD (vCPU) operand."""
        if self.has("typestate_handles"):
            return "sealed handle"
        if self.has("handles"):
            field = "struct page *" if self.has("struct_page") else "hpa_t"
            return f"handle ({field} field)"
        return "u64"

    def td_field_type(self) -> str:
        """The type of the value a TD (vCPU) operand puts in RCX/RDX: the handle's page
        field, or the raw address."""
        if self.has("handles"):
            return "struct page *" if self.has("struct_page") else "hpa_t"
        return "u64"

    def hkid_type(self, wrapper: str) -> str | None:
        """The C type of ``wrapper``'s HKID parameter (None: the API allocates HKIDs)."""
        if wrapper == "tdh_mng_create" and self.has("helper_release_hkid"):
            return None
        if self.has("distinct_scalars"):
            return "tdx_hkid_t"
        if wrapper == "tdh_mng_create":
            if self.has("struct_page"):
                return "u16"  # tdh_mng_create(struct tdx_td *td, u16 hkid)
            return "hpa_t" if self.has("handles") else "u64"  # the RFC: (td, hpa_t hkid)
        return "u64"  # tdh_phymem_page_wbinvd_hkid(u64 hkid, ...)

    def swappable(self, wrapper: str) -> bool:
        """An HKID and a page address can trade places in one call of ``wrapper``: both
        parameters are integers (no conversion stops the compiler)."""
        hk = self.hkid_type(wrapper)
        if hk is None or hk not in INTEGER_TYPES:
            return False
        if wrapper == "tdh_mng_create":  # the page rides in the td (or is the u64 tdr)
            return self.page_type(wrapper) is not None and \
                self.td_field_type() in INTEGER_TYPES
        if wrapper == "tdh_phymem_page_wbinvd_hkid":
            pt = self.page_type(wrapper)
            return pt is not None and pt in INTEGER_TYPES
        return False

    def signatures(self) -> list[str]:
        """The C signatures of the wrappers a caller sees (for reports)."""
        td = {"u64": "u64 tdr", "sealed handle": "td"}.get(self.td_type(), "td")
        vp = {"u64": "u64 tdvpr", "sealed handle": "vp"}.get(self.td_type(), "vp")

        def pg(w: str, name: str = "page") -> str:
            t = self.page_type(w)
            return "" if t is None else f", {t} {name}"

        out = []
        hk = self.hkid_type("tdh_mng_create")
        out.append(f"tdh_mng_create({td}{pg('tdh_mng_create') if td == 'u64 tdr' else ''}"
                   + (f", {hk} hkid" if hk else "") + ")"
                   + (" [allocates the TDR]" if self.page_type("tdh_mng_create") is None
                      else "") + (" [allocates the HKID]" if hk is None else ""))
        out.append(f"tdh_mng_addcx({td}{pg('tdh_mng_addcx')})")
        out.append(f"tdh_vp_create({td}, {vp}{pg('tdh_vp_create')})")
        out.append(f"tdh_mem_page_aug({td}, u64 gpa{pg('tdh_mem_page_aug')})")
        if self.has("hidden_global_keyid"):
            out.append(f"tdh_phymem_page_wbinvd_tdr({td}); tdh_phymem_page_wbinvd_hkid("
                       f"{self.hkid_type('tdh_phymem_page_wbinvd_hkid')} hkid"
                       f"{pg('tdh_phymem_page_wbinvd_hkid')})")
        else:
            out.append(f"tdh_phymem_page_wbinvd({self.page_type('x')} page_with_keyid)")
        helpers = [f for f in ("helper_reclaim", "helper_zap", "helper_release_hkid",
                               "helper_vcpu_load") if self.has(f)]
        if helpers:
            out.append("helpers: " + ", ".join(helpers))
        return out


def _v(name: str, title: str, source: str, features: set[str],
       pfn: tuple[str, ...] = ()) -> Variant:
    assert features <= set(FEATURE_NAMES), features - set(FEATURE_NAMES)
    return Variant(name, title, source, frozenset(features), frozenset(pfn))


_LINUX = {"handles", "struct_page", "wrapper_clflush", "hidden_global_keyid"}

VARIANTS: tuple[Variant, ...] = (
    _v("raw", "pre-RFC u64 wrappers / raw seamcall",
       "v2 'TDX vCPU/VM creation' (Nov 2024); scenario-format.md raw seamcall", set()),
    _v("rfc", "the RFC: hpa_t in struct tdx_td/tdx_vp, CLFLUSH helper",
       "lore 20241115202028.1585487-1-rick.p.edgecombe@intel.com",
       {"handles", "wrapper_clflush"}),
    _v("linux-6.19", "merged: struct page, tdx_td/tdx_vp, _tdr/_hkid WBINVD",
       "torvalds/linux arch/x86/include/asm/tdx.h, arch/x86/virt/vmx/tdx/tdx.c (6.16-6.19)",
       set(_LINUX)),
    _v("pfn-2026", "proposed 2026: ADD/AUG/WBINVD on kvm_pfn_t",
       "'struct page to PFN' v2 (Apr 2026); api-variants.md §1", set(_LINUX),
       pfn=("tdh_mem_page_add", "tdh_mem_page_aug", "tdh_phymem_page_wbinvd_hkid")),
    _v("helpers", "stronger: combined helpers, type-state handles",
       "this lab (issue 14): every multi-step KVM sequence of api-variants.md §2 moved "
       "into the API", set(FEATURE_NAMES)),
)
VARIANT_BY_NAME: dict[str, Variant] = {v.name: v for v in VARIANTS}


def variant(name: str) -> Variant:
    from tdxcheck.checker.scenario import InputError

    if name not in VARIANT_BY_NAME:
        raise InputError(f"unknown API variant {name!r} (have: {', '.join(VARIANT_BY_NAME)})")
    return VARIANT_BY_NAME[name]
