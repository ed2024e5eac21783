"""Host actions that are not SEAMCALLs (scenario-format.md §2, §3).

The host can always do these; whether doing so breaks an obligation is for the invariants
in ``properties/`` to say.  Sources for what each one does to caches and ownership:
tdx-reference.md §9 and §10.2 (LH ``tdx_clflush_page``, ``tdx_clear_page``,
``tdx_guest_keyid_alloc/free``).
"""

from __future__ import annotations

from .checks import keyid_lines
from .enums import HostPage
from .expr import AndNot
from .rule import Ctx, Rule, RuleBuilder, set_
from .state import S


def hkid_alloc(ctx: Ctx, hkid: int) -> Rule:
    """The host takes KeyID ``hkid`` from its pool (``tdx_guest_keyid_alloc``)."""
    return RuleBuilder(ctx).done(set_(S.host_hkid[hkid], 1))


def hkid_free(ctx: Ctx, hkid: int) -> Rule:
    """The host returns KeyID ``hkid`` to its pool (``tdx_guest_keyid_free``)."""
    return RuleBuilder(ctx).done(set_(S.host_hkid[hkid], 0))


def page_alloc(ctx: Ctx, page: int) -> Rule:
    """The kernel allocator hands the page to the TDX code; the kernel used it before, so it
    may hold dirty KeyID-0 lines on every package."""
    return RuleBuilder(ctx).done(
        set_(S.host[page], HostPage.TDX),
        set_(S.dirty[page], S.dirty[page] | keyid_lines(ctx.p.packages, 0)),
    )


def page_free(ctx: Ctx, page: int) -> Rule:
    """The page goes back to the kernel allocator, which may reuse it for anything."""
    return RuleBuilder(ctx).done(set_(S.host[page], HostPage.KERNEL))


def host_write(ctx: Ctx, page: int) -> Rule:
    """The host writes the page through its KeyID-0 mapping on this CPU's package."""
    return RuleBuilder(ctx).done(
        set_(S.dirty[page], S.dirty[page] | keyid_lines(ctx.p.packages, 0, ctx.pkg))
    )


def clflush(ctx: Ctx, page: int) -> Rule:
    """CLFLUSH of the page's KeyID-0 lines (``tdx_clflush_page``), coherent on all packages."""
    return RuleBuilder(ctx).done(
        set_(S.dirty[page], AndNot(S.dirty[page], keyid_lines(ctx.p.packages, 0)))
    )


def clear_page(ctx: Ctx, page: int) -> Rule:
    """MOVDIR64B of zeros under KeyID 0 (``tdx_clear_page``): a host write that goes
    straight to memory, so no KeyID-0 line stays dirty; lines held under another KeyID are
    another alias and stay."""
    return RuleBuilder(ctx).done(
        set_(S.dirty[page], AndNot(S.dirty[page], keyid_lines(ctx.p.packages, 0))),
        set_(S.uncleared[page], 0),
    )


def check_no_leak(ctx: Ctx) -> Rule:
    """From here on nothing may still be held (see the ``no-leak`` invariant)."""
    return RuleBuilder(ctx).done(set_(S.leak_armed[0], 1))
