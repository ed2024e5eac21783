"""``tdxcheck``: the command line.

Exit codes (scenario-format.md §6; style-and-ecosystem.md §2.4): 0 nothing violated and
every expectation met; 1 a violation or a mismatch; 2 bad input or usage (one line
``FILE:LINE: reason`` on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

EXIT_OK, EXIT_VIOLATED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"tdxcheck: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def builtin_scenario(name: str) -> Path:
    """A scenario shipped inside the package (``checker/builtin/NAME.tdx``)."""
    path = Path(str(resources.files("tdxcheck.checker") / "builtin" / f"{name}.tdx"))
    return path


def _cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay
    from .report import dumps, replay_json, replay_text
    from .scenario import ScenarioError, parse_file

    path = args.file or str(builtin_scenario("kvm-lifecycle"))
    try:
        sc = parse_file(path)
        result = replay(sc)
    except ScenarioError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(dumps(replay_json(result)))
    else:
        print(replay_text(result, verbose=not args.quiet))
    return EXIT_OK if result.ok else EXIT_VIOLATED


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tdxcheck", description="Model checker for the Intel TDX host/module rules.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    r = sub.add_parser("replay", help="step a scenario file through the model")
    r.add_argument("file", nargs="?", help="scenario file (*.tdx); default: the built-in "
                   "KVM lifecycle")
    r.add_argument("--json", action="store_true", help="print the JSON result (§6)")
    r.add_argument("-q", "--quiet", action="store_true",
                   help="print only steps with a violation or a mismatch")
    r.set_defaults(fn=_cmd_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not getattr(args, "fn", None):
        p.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.fn(args))
    except BrokenPipeError:  # pragma: no cover - `tdxcheck ... | head`
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
