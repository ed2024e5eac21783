"""``tdxcheck``: the command line.

Exit codes (scenario-format.md §6; style-and-ecosystem.md §2.4): 0 nothing violated and
every expectation met; 1 a violation or a mismatch; 2 bad input or usage (one line
``FILE:LINE: reason`` or ``tdxcheck: error: reason`` on stderr, never a traceback); 3
incomplete (a limit, a timeout, a solver's unknown); 4 an internal error: a bug in tdxcheck,
never the user's input (one line; ``--debug`` or ``TDXCHECK_DEBUG=1`` prints the traceback).
Only ``ScenarioError`` and ``InputError`` (``checker/scenario.py``) are bad input.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from tdxcheck.checker.scenario import InputError
from tdxcheck.checker.version import config_json, envelope, version

EXIT_OK, EXIT_VIOLATED, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERNAL = 0, 1, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """A usage error is one line naming the option, and where to read the usage."""
        print(f"tdxcheck: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _number(kind: type, low: float, what: str) -> Any:
    """An argparse type: a ``kind`` number >= ``low`` (``what`` says which)."""
    def conv(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{text} must be {what}")
        return v
    conv.__name__ = kind.__name__
    return conv


POSITIVE = _number(int, 1, "a positive integer")
NON_NEGATIVE = _number(int, 0, ">= 0")
SECONDS = _number(float, 1e-9, "a positive number of seconds")
MIB = _number(float, 1e-9, "a positive size in MiB")


def writable_file(path: str) -> Path:
    """Check before any work that ``path`` can be written (its directory exists and takes
    a file there); bad input otherwise.  Leaves no file behind."""
    p = Path(path)
    existed = p.exists()
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    try:
        with open(p, "a"):
            pass
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    if not existed:
        p.unlink()
    return p


def writable_dir(path: str) -> Path:
    """Check before any work that directory ``path`` exists or can be made, and takes files."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"cannot write into {path}: it is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".tdxcheck-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"cannot write into {path}: {e.strerror or e}") from None
    return p


def known_checks(names: Sequence[str], u: Any) -> None:
    """Refuse a ``--ablate``/``--check`` name that is not a module check of universe ``u``
    (a typo would otherwise remove nothing and report the unablated verdict)."""
    import difflib

    from tdxcheck.checker.analyses.ablation import check_names

    if not names:
        return
    have = check_names(u)
    for n in names:
        if n not in have:
            near = difflib.get_close_matches(n, have, n=3)
            raise InputError(f"unknown module check {n!r}"
                             + (f" (did you mean {', '.join(near)}?)" if near else "")
                             + "; tdxcheck ablate --list lists them all")


def builtin_scenario(name: str) -> Path:
    """A scenario shipped inside the package (``checker/builtin/NAME.tdx``)."""
    path = Path(str(resources.files("tdxcheck.checker") / "builtin" / f"{name}.tdx"))
    return path


def _cmd_replay(args: argparse.Namespace) -> int:
    from tdxcheck.checker.explore.engine import Engine
    from tdxcheck.checker.explore.replay import replay, universe_of
    from tdxcheck.checker.output.report import dumps, replay_json, replay_text
    from tdxcheck.checker.scenario import ScenarioError, parse_file

    path = args.file or str(builtin_scenario("kvm-lifecycle"))
    try:
        sc = parse_file(path)
        known_checks(args.ablate, universe_of(sc))
        result = replay(sc, Engine(universe_of(sc), ablate=args.ablate) if args.ablate else None,
                        run=args.engine)
    except ScenarioError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(dumps(envelope("replay", replay_json(result), config=config_json(sc.config),
                             host=path)))
    else:
        print(replay_text(result, verbose=not args.quiet))
    return EXIT_OK if result.ok else EXIT_VIOLATED


def _progress_printer(phase: str = "explore") -> Any:
    """Progress on stderr, each line naming its phase (``explore``, ``coverage``,
    ``graph``, ...; a report's phases say which part of the page they build); one line
    rewritten in place on a terminal, plain lines otherwise."""
    tty = sys.stderr.isatty()

    def show(d: dict[str, Any]) -> None:
        line = _progress_line(d, phase)
        print(("\r\033[K" + line) if tty else line, end="" if tty else "\n",
              file=sys.stderr, flush=True)

    return show


def _progress_line(d: dict[str, Any], phase: str) -> str:
    if "message" in d:  # a phase of its own (a report's sections)
        return f"{d.get('phase', phase)}: {d['message']}"
    rate = d["states"] / d["seconds"] if d["seconds"] else 0.0
    depth = f", depth {int(d['depth'])}" if d.get("depth") else ""
    return (f"{d.get('phase', phase)}: {int(d['states']):,} states, queue "
            f"{int(d['queue']):,}{depth}, {rate:,.0f} states/s, {d['seconds']:.0f}s")


def _cmd_check(args: argparse.Namespace) -> int:
    from tdxcheck.checker.explore.bfs import Limits
    from tdxcheck.checker.explore.check import run_check
    from tdxcheck.checker.explore.programs import make_config
    from tdxcheck.checker.output.report import (
        check_scope_text,
        counterexample_text,
        dumps,
        explore_json,
    )
    from tdxcheck.checker.scenario import ScenarioError, parse_file

    if args.host == "kvm":
        return _cmd_check_kvm(args)
    if args.preempt or args.fix:
        print("tdxcheck: error: --preempt, --preempt-init and --fix are for --host kvm",
              file=sys.stderr)
        return EXIT_USAGE
    files = [a for a in args.args if "=" not in a]
    overrides = [tuple(a.split("=", 1)) for a in args.args if "=" in a]
    if len(files) > 1:
        print(f"tdxcheck: error: one scenario file at most (got {' '.join(files)})",
              file=sys.stderr)
        return EXIT_USAGE
    if files and args.host == "any":
        print("tdxcheck: error: give a scenario file or --host any, not both", file=sys.stderr)
        return EXIT_USAGE
    sc = config = None
    try:
        if files:
            if overrides:
                raise InputError("key=value overrides apply to --host any; a scenario sets "
                                 "its own config line")
            sc = parse_file(files[0])
            from tdxcheck.checker.explore.replay import universe_of

            known_checks(args.ablate, universe_of(sc))
        else:
            config = make_config(args.config, overrides)
            known_checks(args.ablate, config.universe())
        workers, budget = _parallel_opts(args)
        run = run_check(
            scenario=sc, config=config, faults=args.faults,
            symmetry=False if args.no_symmetry else None, all_violations=args.all,
            fingerprint=args.fingerprint,
            limits=Limits(args.max_states, args.max_depth, args.time_limit, budget),
            ablate=args.ablate, trace_out=Path(args.trace_out) if args.trace_out else None,
            progress=None if args.quiet else _progress_printer("explore"), workers=workers)
    except ScenarioError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    r = run.result
    missing = run.witnesses_missing if r.verdict == "holds" else []
    if args.json:
        wit = [{"id": w, "reached": cx is not None, "length": cx.length if cx else None}
               for w, cx in r.witnesses.items()]
        lines = None if sc is None else [
            run.prog.step_of_edge[cx.path[-1][0]].line if cx.path else None
            for cx in r.violations]
        print(dumps(envelope("check", explore_json(r, run.labels, wit, lines),
                             config=config_json(config if sc is None else sc.config),
                             host="any" if sc is None else files[0])))
    else:
        print(f"tdxcheck check: {run.title}")
        order = None
        if run.symmetry:
            from tdxcheck.checker.explore.symmetry import Symmetry

            order = Symmetry(run.prog.engine.layout).group_order
        print(f"verdict: {r.verdict}" + (f" ({r.reason})" if r.reason else ""))
        # the run's ablations, as the commands it names (replay, prove) take them
        abl = "".join(f" --ablate {shlex.quote(a)}" for a in args.ablate)
        if r.verdict == "incomplete" and config is not None:
            # the same invariants of the same host, at every depth, by the other engine
            cmd = " ".join(["tdxcheck prove --config", shlex.quote(args.config),
                            *(shlex.quote(f"{k}={v}") for k, v in overrides),
                            *(["--faults"] if args.faults else [])]) + abl
            print(f"  for a verdict at every depth: {cmd} (induction over the same "
                  "invariants; exit 0 = they hold in every reachable state)")
        print(f"states: {r.states:,} (symmetry {'on' if order else 'off'}), transitions: "
              f"{r.transitions:,}, depth: {r.depth}, {r.seconds:.1f}s, "
              f"{r.states_per_second:,.0f} states/s, peak memory {run.peak_rss_mib:,.0f} MiB")
        if r.fingerprint_collision_probability is not None:
            print(f"fingerprints: 64-bit; chance that a collision hid a state "
                  f"<= {r.fingerprint_collision_probability:.2e}")
        for i, (cx, labels) in enumerate(zip(r.violations, run.labels, strict=True)):
            repro = (f"tdxcheck replay {run.files[i][0]}{abl}" if run.files
                     else "rerun with --trace-out DIR to get a replayable .tdx")
            print()
            print(counterexample_text(run.prog, cx, labels, repro))
        print()
        print("\n".join(check_scope_text(run.prog.engine.u, config is not None, order,
                                         r.witnesses)))
    if r.verdict == "violated" or missing:
        return EXIT_VIOLATED
    if r.verdict == "incomplete":
        return EXIT_INCOMPLETE
    return EXIT_OK


def _cmd_check_kvm(args: argparse.Namespace) -> int:
    """``check --host kvm``: KVM's protocol (``checker/kvm/``) under every interleaving;
    every violated invariant gets its shortest trace (as ``--all``), leaks on KVM's error
    paths are listed apart (they do not change the exit status)."""
    import dataclasses

    from tdxcheck.checker.explore.bfs import Limits
    from tdxcheck.checker.explore.traces import dumps_itf, itf
    from tdxcheck.checker.kvm import KVM_CONFIGS, kvm_tdx, run_kvm, trace_of
    from tdxcheck.checker.output.kvm_report import kvm_json, kvm_text
    from tdxcheck.checker.output.report import counterexample_text, dumps

    if args.args:
        print(f"tdxcheck: error: --host kvm takes no scenario file or key=value overrides "
              f"(got {' '.join(args.args)}); it has named configurations: "
              f"{', '.join(KVM_CONFIGS)}", file=sys.stderr)
        return EXIT_USAGE
    if args.fingerprint:
        print("tdxcheck: error: --fingerprint is for --host any (the kvm host's state spaces "
              "are stored exactly)", file=sys.stderr)
        return EXIT_USAGE
    try:
        from tdxcheck.checker.kvm import kvm_config

        known_checks(args.ablate, kvm_config(args.config).universe())
        workers, budget = _parallel_opts(args)
        run = run_kvm(args.config, faults=args.faults, ablate=args.ablate,
                      preempt=args.preempt, fix=args.fix,
                      limits=Limits(args.max_states, args.max_depth, args.time_limit, budget),
                      progress=None if args.quiet else _progress_printer("explore kvm"),
                      workers=workers)
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    r = run.result
    files: list[list[str]] = []
    if args.trace_out:
        out = Path(args.trace_out)
        out.mkdir(parents=True, exist_ok=True)
        for cx in r.violations:
            base = out / cx.invariant
            base.with_suffix(".tdx").write_text(kvm_tdx(run.prog, cx))
            base.with_suffix(".itf.json").write_text(
                dumps_itf(itf(run.prog, cx, trace_of(run.prog, cx))))
            files.append([str(base.with_suffix(".tdx")), str(base.with_suffix(".itf.json"))])
        for o in run.outcomes:  # the window's outcomes (preemption mode)
            if o["length"] is not None:
                words = " ".join((o["outcome"].split(" (")[0], o["where"], o["leak"]))
                name = "outcome-" + "-".join(
                    "".join(ch if ch.isalnum() else " " for ch in words.lower()).split())
                o["file"] = str(out / f"{name}.tdx")
                Path(o["file"]).write_text(kvm_tdx(run.prog, o["cx"]))
    if args.json:
        data = kvm_json(run)
        if files:
            for v, f in zip(data["violations"], files, strict=True):
                v["files"] = f
        print(dumps(envelope("check", data, config=config_json(run.config), host="kvm")))
    else:
        print(kvm_text(run, traces=False))
        abl = "".join(f" --ablate {a}" for a in args.ablate)
        for i, cx in enumerate(r.violations):
            repro = (f"tdxcheck replay {files[i][0]}{abl}" if files
                     else "rerun with --trace-out DIR to get a replayable .tdx")
            print()
            # a KVM step may make several calls: its label carries each call's status
            bare = dataclasses.replace(cx, path=[(e, None) for e, _st in cx.path])
            print(counterexample_text(run.prog, bare, trace_of(run.prog, cx), repro))
        if run.leaks:
            print()
            print("leak paths (shortest per KVM error site):")
            for lk in run.leaks:
                print(f"- {lk['site']}:")
                print("\n".join(f"    {i}. {step}" for i, step in enumerate(lk["trace"], 1)))
    if r.verdict == "violated" or run.witnesses_missing:
        return EXIT_VIOLATED
    if r.verdict == "incomplete":
        return EXIT_INCOMPLETE
    return EXIT_OK


def _cmd_mutants(args: argparse.Namespace) -> int:
    """``mutants``: every seeded KVM bug explored; exit 1 if one survives."""
    from tdxcheck.checker.analyses.mutants import (
        mutants_json,
        mutants_table,
        run_mutants,
    )
    from tdxcheck.checker.output.report import dumps

    def show(i: int, n: int, name: str) -> None:
        print(f"mutant {i + 1}/{n}: {name}", file=sys.stderr, flush=True)

    try:
        rows = run_mutants(args.config, names=args.only or None,
                           progress=None if args.quiet else show)
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        from tdxcheck.checker.kvm import kvm_config

        print(dumps(envelope("mutants", mutants_json(rows),
                             config=config_json(kvm_config(args.config)), host="kvm")))
    else:
        print(f"tdxcheck mutants: host kvm, config {args.config}")
        print(mutants_table(rows))
        if args.verbose:
            for row in rows:
                if row["trace"]:
                    print()
                    print(f"{row['name']}: [{row['invariant']}] after {row['length']} "
                          f"step(s): {row['message']}")
                    print("\n".join(f"  {i}. {st}" for i, st in enumerate(row["trace"], 1)))
    return EXIT_OK if all(r["killed"] for r in rows) else EXIT_VIOLATED


def _cmd_ablate(args: argparse.Namespace) -> int:
    """``ablate``: remove one module check at a time; which invariants break."""
    from tdxcheck.checker.analyses.ablation import (
        ablation_json,
        ablation_table,
        run_ablation,
    )
    from tdxcheck.checker.explore.bfs import Limits
    from tdxcheck.checker.output.report import dumps

    config = args.config or ("tiny" if args.host == "any" else "default")

    def show(i: int, n: int, name: str) -> None:
        print(f"ablate {i + 1}/{n}: {name}", file=sys.stderr, flush=True)

    try:
        from tdxcheck.checker.analyses.ablation import check_names
        from tdxcheck.checker.explore.programs import make_config
        from tdxcheck.checker.kvm import kvm_config

        overrides = _overrides(args)
        if args.host == "kvm" and overrides:
            raise InputError("key=value overrides apply to --host any; --host kvm has named "
                             "configurations")
        u = (kvm_config(config).universe() if args.host == "kvm" else
             make_config(config, overrides).universe())
        if args.list:
            print("\n".join(check_names(u)))
            return EXIT_OK
        known_checks(args.check, u)
        rows = run_ablation(args.host, config, checks=args.check or None,
                            faults=not args.no_faults,
                            limits=Limits(args.max_states, None, args.time_limit),
                            overrides=overrides, progress=None if args.quiet else show)
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        cfg = kvm_config(config) if args.host == "kvm" else make_config(config, overrides)
        print(dumps(envelope("ablate", ablation_json(rows, args.host),
                             config=config_json(cfg), host=args.host)))
    else:
        print(f"tdxcheck ablate: host {args.host}, config {config}"
              + ("" if args.no_faults or args.host == "any" else ", module faults on"))
        print(ablation_table(rows, args.host))
    incomplete = [r["check"] for r in rows if r.get("limit") and not r["broken"]]
    if incomplete:
        print(f"tdxcheck: incomplete (a limit was hit before anything broke) for: "
              f"{', '.join(incomplete)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _cmd_prove(args: argparse.Namespace) -> int:
    """``prove``: Z3 induction (default) or ``--bmc --depth K`` for ``--host any``."""

    if args.parametric:
        return _cmd_prove_parametric(args)
    if args.sept_levels is not None:
        print("tdxcheck: error: --sept-levels is for --parametric (else: key=value "
              "sept_levels=N)", file=sys.stderr)
        return EXIT_USAGE
    if args.host not in (None, "any"):
        return _cmd_prove_scenario(args)
    try:
        from tdxcheck.checker.output.prove_report import prove_json, prove_text
        from tdxcheck.checker.prove import BMC, INDUCTION, prove, write_traces

        config = _config_args(args)
        known_checks(args.ablate, config.universe())
        mode = BMC if args.bmc else INDUCTION
        if args.depth is not None and args.depth < 0:
            raise InputError("--depth must be >= 0")
        result = prove(config, mode=mode, depth=args.depth, timeout_ms=args.timeout_ms,
                       ablate=args.ablate, invariants=args.invariant or None,
                       faults=args.faults, cores=args.lemmas_used,
                       progress=None if args.quiet else _prove_progress)
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return _prove_output(args, result, write_traces, prove_json, prove_text, config, "any")


def _cmd_prove_parametric(args: argparse.Namespace) -> int:
    """``prove --parametric``: the module invariants for every size (``prove/param/``)."""
    if args.host not in (None, "any") or args.bmc or args.lemmas_used:
        print("tdxcheck: error: --parametric proves the any host by induction over sorts: "
              "--host FILE, --bmc and --lemmas-used are for the finite prover",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        from tdxcheck.checker.output.param_report import (
            param_json,
            param_text,
            write_param_traces,
        )
        from tdxcheck.checker.prove.param import prove_parametric

        config = _config_args(args)
        known_checks(args.ablate, config.universe())
        if args.depth is not None and args.depth < 0:
            raise InputError("--depth must be >= 0")
        result = prove_parametric(
            config, sept_levels=args.sept_levels, faults=args.faults, ablate=args.ablate,
            timeout_ms=args.timeout_ms, invariants=args.invariant or None,
            confirm_depth=12 if args.depth is None else args.depth,
            progress=None if args.quiet else _prove_progress)
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.sept_levels is not None:  # the envelope's config: the depth proved for
        from dataclasses import replace

        config = replace(config, platform=replace(config.platform,
                                                  sept_levels=args.sept_levels))
    return _prove_output(args, result, write_param_traces, param_json, param_text,
                         config, "any")


def _prove_output(args: argparse.Namespace, result: Any, write: Any, to_json: Any,
                  to_text: Any, config: Any, host: str) -> int:
    """Trace files, then the JSON or the text; the exit status is the result's."""
    from tdxcheck.checker.output.report import dumps

    if args.trace_out:
        write(result, Path(args.trace_out))
    if args.json:
        print(dumps(envelope("prove", to_json(result), config=config_json(config), host=host)))
    else:
        print(to_text(result, verbose=args.verbose))
    return int(result.exit_status)


class Heartbeat:
    """Progress that is never silent for long: ``__call__`` prints a progress line (as
    ``fmt`` makes it) and a daemon thread repeats the last one, with the time it has been
    running, when nothing new came for ``every`` seconds (a Z3 query or a report section
    that takes minutes).  ``stop()`` ends it."""

    def __init__(self, fmt: Any, every: float | None = None, inplace: bool = False,
                 throttle: bool = False) -> None:
        import threading
        import time

        self.fmt, self.time = fmt, time
        self.every = every or (5.0 if sys.stderr.isatty() else 30.0)
        # on a terminal, ``inplace`` rewrites the line while its phase lasts (a new phase
        # starts a new line, so the phases stay on screen)
        self.inplace = inplace and sys.stderr.isatty()
        self.throttle = throttle
        self.last = ""
        self.phase: Any = None
        self.t_last = self.t0 = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _print(self, line: str, new_line: bool = False) -> None:
        if self.inplace:
            print(("\n" if new_line else "\r\033[K") + line, end="", file=sys.stderr,
                  flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def __call__(self, d: dict[str, Any]) -> None:
        phase = d.get("phase")
        line = self.fmt(d)
        now = self.time.monotonic()
        # plain lines (a log): one per phase change, then at most one every 5 s
        quiet = (self.throttle and not self.inplace and phase == self.phase
                 and now - self.t_last < 5.0)
        if not quiet:
            self._print(line, new_line=bool(self.last) and phase != self.phase)
            self.t_last = now
        self.last, self.phase = line, phase

    def _beat(self) -> None:
        while not self.done.wait(1.0):
            now = self.time.monotonic()
            if self.last and now - self.t_last >= self.every:
                self.t_last = now
                self._print(f"{self.last} ... still working ({now - self.t0:.0f}s in all)")

    def stop(self) -> None:
        self.done.set()
        if self.inplace and self.last:
            print(file=sys.stderr, flush=True)


def _prove_line(d: dict[str, Any]) -> str:
    parts = [f"{k} {v:.1f}s" if k == "seconds" else
             f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
             for k, v in d.items() if k != "phase"]
    return f"prove: {d.get('phase', '')}: " + ", ".join(parts)


def _prove_progress(d: dict[str, Any]) -> None:
    global _HEART
    if _HEART is None:
        _HEART = Heartbeat(_prove_line)
    _HEART(d)


_HEART: Heartbeat | None = None


def _cmd_prove_scenario(args: argparse.Namespace) -> int:
    """``prove --host FILE``: a scenario's runs are at most its N steps long, so BMC to
    depth N over every interleaving of its threads is a proof (``checker/prove/scenario_bmc.py``)."""
    from tdxcheck.checker.scenario import ScenarioError, parse_file

    if args.args or args.bmc or args.depth is not None or args.lemmas_used:
        print("tdxcheck: error: --host FILE proves the scenario to its full length: key=value, "
              "--bmc, --depth and --lemmas-used are for --host any", file=sys.stderr)
        return EXIT_USAGE
    try:
        from tdxcheck.checker.explore.replay import universe_of
        from tdxcheck.checker.output.prove_report import scenario_json, scenario_text
        from tdxcheck.checker.prove.scenario_bmc import (
            prove_scenario,
            write_scenario_traces,
        )

        sc = parse_file(args.host)
        known_checks(args.ablate, universe_of(sc))
        result = prove_scenario(sc, timeout_ms=args.timeout_ms, ablate=args.ablate,
                                invariants=args.invariant or None, faults=args.faults,
                                progress=None if args.quiet else _prove_progress)
    except ScenarioError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return _prove_output(args, result, write_scenario_traces, scenario_json, scenario_text,
                         sc.config, args.host)


def _overrides(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The ``key=value`` arguments, in order (a key given twice is refused by
    ``make_config``; anything that is not key=value is bad input)."""
    bad = [a for a in args.args if "=" not in a]
    if bad:
        raise InputError(f"expected key=value, got {' '.join(bad)}")
    return [tuple(a.split("=", 1)) for a in args.args]  # type: ignore[misc]


def _config_args(args: argparse.Namespace) -> Any:
    """``--config NAME`` with ``key=value`` overrides (ValueError on anything else)."""
    from tdxcheck.checker.explore.programs import make_config

    return make_config(args.config, _overrides(args))


def _cmd_coverage(args: argparse.Namespace) -> int:

    from tdxcheck.checker.analyses.coverage import (
        BaselineError,
        collect,
        compare,
        comparison_text,
        coverage_text,
        dumps,
        load,
    )

    try:
        config = _config_args(args)
        baseline = load(args.baseline) if args.baseline else None
        cov, _walk = collect(config, faults=args.faults, ablate=args.ablate,
                             symmetry=False if args.no_symmetry else None,
                             progress=None if args.quiet else _progress_printer("coverage"))
    except BaselineError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    if args.save:
        Path(args.save).write_text(dumps(cov, config))
    cmp = compare(baseline, cov) if baseline is not None else None
    if args.json:
        data = cov.to_json()
        if cmp is not None:
            data["baseline"] = {"file": args.baseline, "regressions": cmp.regressions,
                                "gained": cmp.gained, "notes": cmp.notes}
        print(dumps(data, config), end="")
    else:
        print(coverage_text(cov, f"tdxcheck coverage: host any, config {cov.description}"))
        if cmp is not None:
            print()
            print(comparison_text(cmp, args.baseline))
    return EXIT_VIOLATED if cmp is not None and not cmp.ok else EXIT_OK


def _cmd_graph(args: argparse.Namespace) -> int:
    from tdxcheck.checker.output.graphs import FORMATS, dot_available, graph, write

    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lstrip(".") if args.output else ""
        fmt = suffix if suffix in FORMATS else "dot"
    try:
        if fmt == "png" and not args.output:
            raise InputError("--format png writes binary: give -o FILE")
        if fmt == "png" and not dot_available():
            raise InputError("--format png needs Graphviz's dot on the PATH (apt-get install "
                             "graphviz); --format svg draws without it (networkx), and dot, "
                             "graphml and json need nothing")
        config = _config_args(args)
        G = graph(config, args.projection, symmetry=not args.no_symmetry,
                  max_states=args.max_states,
                  progress=None if args.quiet else _progress_printer("graph"))
        data = write(G, fmt)
    except InputError as e:
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"{args.output}: {args.projection} graph of {G.graph['config']}, "
              f"{G.number_of_nodes():,} nodes, {G.number_of_edges():,} edges ({fmt})")
    else:
        sys.stdout.write(data.decode())
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    """``report``: one exploration, then each section; progress names its phase and is
    never silent for long (``Heartbeat``: the ablation and the proofs take minutes)."""
    from tdxcheck.checker.output.html_report import collect, write_report

    beat = None if args.quiet else Heartbeat(lambda d: "report: " + _progress_line(d, ""),
                                             inplace=True, throttle=True)
    try:
        config = _config_args(args)
        known_checks(args.ablate, config.universe())
        data = collect(config, faults=args.faults, ablate=args.ablate, progress=beat)
    except InputError as e:
        if beat is not None:
            beat.stop()
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if beat is not None:
        beat({"phase": "write", "message": f"{args.output}"})
        beat.stop()
    path = write_report(data, args.output)
    print(f"{path}: verdict {data.run.result.verdict}, {len(data.coverage.holes())} "
          f"status cell(s) never reached")
    return EXIT_OK


def _cmd_conform(args: argparse.Namespace) -> int:
    from tdxcheck.checker.analyses.conform import conform
    from tdxcheck.checker.output.report import dumps

    r = conform(args.steps, args.seed)
    if args.json:
        d = r.disagreement
        print(dumps(envelope("conform", {"steps": r.steps, "seed": r.seed, "agree": r.ok,
                     "disagreement": None if d is None else {
                         "step_index": d.step_index, "model": d.model,
                         "executor": d.executor},
                     "reproducer": r.reproducer})))
    elif r.ok:
        print(f"conform: {r.steps:,} random steps (seed {r.seed}): model and executor agree")
    else:
        d = r.disagreement
        assert d is not None
        print(f"conform: seed {r.seed}: model and executor disagree at the last step of this "
              f"{len(r.reproducer)}-line reproducer:\n  model:    {d.model}\n"
              f"  executor: {d.executor}\n")
        print("\n".join(r.reproducer))
    return EXIT_OK if r.ok else EXIT_VIOLATED


def _debug_arg(p: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """``--debug`` before or after the command (a subparser's default must not reset it)."""
    p.add_argument("--debug", action="store_true", default=default,
                   help="on an internal error (exit 4), print the traceback "
                   "(also TDXCHECK_DEBUG=1)")


def _parallel_args(p: argparse.ArgumentParser) -> None:
    """``check``'s --workers and --memory-budget (issue 16; ``explore/parallel.py``)."""
    p.add_argument("--workers", type=POSITIVE, default=None, metavar="N",
                   help="explore in N processes (default: the machine's cores); the result "
                   "is the same for every N, only the time changes")
    p.add_argument("--memory-budget", type=MIB, default=None, metavar="MIB",
                   help="stop as incomplete, with the reason, when the explorer's processes "
                   "hold MIB MiB (default: 80%% of the memory available at the start)")


def _parallel_opts(args: argparse.Namespace) -> tuple[int, float | None]:
    """(workers, memory budget in MiB) from ``_parallel_args``."""
    import os

    from tdxcheck.checker.explore.bfs import memory_budget

    workers = args.workers
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            workers = os.cpu_count() or 1
    budget = args.memory_budget if args.memory_budget is not None else memory_budget()
    return workers, budget


def _ablate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ablate", action="append", default=[], metavar="CHECK",
                   help="remove a module check by name (e.g. mng.key_freeid.wbinvd_done; "
                   "tdxcheck ablate --list names them)")


def _kvm_fixes() -> list[str]:
    """The kvm host's candidate fixes (checker/kvm/config.py FIXES), for --fix."""
    from tdxcheck.checker.kvm import FIXES

    return list(FIXES)


def _json_quiet(p: argparse.ArgumentParser, json_help: str = "print the result as JSON") -> None:
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tdxcheck", description="Model checker for the Intel TDX host/module rules.",
                epilog="Exit codes: 0 holds / ok, 1 violated (or a mismatch), 2 bad input or "
                "usage, 3 incomplete (a limit or a solver timeout), 4 internal error (a bug in "
                "tdxcheck: re-run with --debug and report it).")
    _debug_arg(p, False)
    p.add_argument("--version", action="version", version=f"tdxcheck {version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    r = sub.add_parser("replay", help="step a scenario file through the model")
    r.add_argument("file", nargs="?", help="scenario file (*.tdx); default: the built-in "
                   "KVM lifecycle")
    r.add_argument("--json", action="store_true", help="print the JSON result (§6)")
    r.add_argument("-q", "--quiet", action="store_true",
                   help="print only steps with a violation or a mismatch")
    r.add_argument("--ablate", action="append", default=[], metavar="CHECK",
                   help="replay with a module check removed (as the check run that wrote it)")
    r.add_argument("--engine", choices=("both", "model", "executor"), default="both",
                   help="the model, the concrete executor, or both in lockstep (default): "
                   "any status or effect they disagree on fails the replay")
    _debug_arg(r)
    r.set_defaults(fn=_cmd_replay)

    c = sub.add_parser("check", help="explore every reachable state (breadth-first)",
                       description="Explore every run of a host program: --host any (the "
                       "default) or the threads of a scenario file. Exit 0 holds, 1 "
                       "violated (or a witness not reached), 2 bad input, 3 incomplete.")
    c.add_argument("args", nargs="*", metavar="FILE | key=value",
                   help="a scenario file with thread blocks, or config overrides for --host "
                   "any (scenario config keys, plus tds, vps, pages, gpas)")
    c.add_argument("--host", choices=("any", "kvm"), default=None,
                   help="the host program to explore (default: any, unless a FILE is given); "
                   "kvm: upstream KVM's TDX protocol, every invariant, leaks listed apart")
    c.add_argument("--config", default="default", help="tiny | default | large")
    c.add_argument("--faults", action="store_true",
                   help="let every SEAMCALL fail at each of its fault points")
    pre = c.add_mutually_exclusive_group()
    pre.add_argument("--preempt", action="store_const", const="all", dest="preempt",
                     help="--host kvm: a CONFIG_PREEMPTION kernel: a thread with a vCPU loaded "
                     "may be preempted and resume on another CPU wherever the kernel can "
                     "reschedule (see checker/kvm/); lists the KVM_TDX_INIT_VCPU window's "
                     "outcomes")
    pre.add_argument("--preempt-init", action="store_const", const="init_vcpu",
                     dest="preempt",
                     help="--host kvm: as --preempt, with only the reschedule points inside "
                     "the KVM_TDX_INIT_VCPU window (TDH.VP.INIT .. the state store): a subset")
    c.add_argument("--fix", choices=tuple(_kvm_fixes()), default=None, metavar="FIX",
                   help="--host kvm: apply a candidate fix of the KVM_TDX_INIT_VCPU window: "
                   + ", ".join(_kvm_fixes()))
    c.add_argument("--all", action="store_true",
                   help="one shortest trace per violated invariant (default: stop at first)")
    c.add_argument("--no-symmetry", action="store_true", help="turn symmetry reduction off")
    c.add_argument("--fingerprint", action="store_true",
                   help="store 64-bit fingerprints instead of exact states")
    c.add_argument("--max-states", type=POSITIVE, default=None,
                   help="stop (verdict incomplete) after this many states")
    c.add_argument("--max-depth", type=NON_NEGATIVE, default=None,
                   help="stop (verdict incomplete) below this depth")
    c.add_argument("--time-limit", type=SECONDS, default=None, metavar="SECONDS",
                   help="stop (verdict incomplete) after this long")
    _parallel_args(c)
    _ablate_arg(c)
    c.add_argument("--trace-out", metavar="DIR",
                   help="write each counterexample as DIR/<invariant>.tdx and .itf.json")
    _json_quiet(c)
    _debug_arg(c)
    c.set_defaults(fn=_cmd_check)

    cv = sub.add_parser("coverage", help="what the explorer exercised: wrappers x statuses",
                        description="Explore --host any with coverage counters: per wrapper "
                        "how often it was enabled, fired and reached new states, and every "
                        "status its rules can return with how often it did. Exit 0, 1 when "
                        "--baseline lists something no longer reached, 2 bad input.")
    cv.add_argument("args", nargs="*", metavar="key=value", help="config overrides")
    cv.add_argument("--host", choices=("any",), default="any", help="the host program (any)")
    cv.add_argument("--config", default="default", help="tiny | default | large")
    cv.add_argument("--faults", action="store_true", help="explore the fault points too")
    _ablate_arg(cv)
    cv.add_argument("--no-symmetry", action="store_true", help="turn symmetry reduction off")
    cv.add_argument("--baseline", metavar="FILE",
                    help="a saved coverage file: fail if something it reached is not reached")
    cv.add_argument("--save", metavar="FILE", help="write the coverage file (JSON)")
    _json_quiet(cv, "print the coverage as JSON")
    _debug_arg(cv)
    cv.set_defaults(fn=_cmd_coverage)

    g = sub.add_parser("graph", help="the state graph or a projection of it",
                       description="The full state graph of a small configuration, or one "
                       "object's machine (td, page, hkid, vcpu) with edges counted per "
                       "wrapper and status. SVG is drawn by Graphviz's dot when it is on the "
                       "PATH, else by a layered layout of tdxcheck's own (networkx); PNG needs "
                       "dot.")
    g.add_argument("args", nargs="*", metavar="key=value", help="config overrides")
    g.add_argument("--projection", choices=("full", "td", "page", "hkid", "vcpu"),
                   default="td")
    g.add_argument("--config", default="tiny", help="tiny (default) | default | large")
    g.add_argument("--format", choices=("dot", "graphml", "json", "svg", "png"), default=None,
                   help="default: from the -o suffix, else dot")
    g.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    g.add_argument("--no-symmetry", action="store_true", help="turn symmetry reduction off")
    g.add_argument("--max-states", type=POSITIVE, default=5000,
                   help="refuse a full graph of more states (default 5000)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    _debug_arg(g)
    g.set_defaults(fn=_cmd_graph)

    rp = sub.add_parser("report", help="one self-contained HTML page for a configuration",
                        description="Run check, coverage and the projection graphs (and the "
                        "prover and mutants when the build has them); write DIR/NAME.html.")
    rp.add_argument("args", nargs="*", metavar="key=value", help="config overrides")
    rp.add_argument("--config", default="default", help="tiny | default | large")
    rp.add_argument("-o", "--output", default="reports", metavar="DIR",
                    help="directory to write into (default: reports)")
    rp.add_argument("--faults", action="store_true", help="explore the fault points too")
    _ablate_arg(rp)
    rp.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    _debug_arg(rp)
    rp.set_defaults(fn=_cmd_report)

    mu = sub.add_parser("mutants", help="seeded KVM host bugs: is each one caught?",
                        description="Explore every mutant of the kvm host (one-line changes a "
                        "patch could make) and report the invariant that kills it. Exit 0 "
                        "all killed, 1 a mutant survived, 2 bad input.")
    mu.add_argument("--config", default="tiny", help="kvm configuration: tiny (default) | "
                    "default | large")
    mu.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run only this mutant (repeatable)")
    mu.add_argument("-v", "--verbose", action="store_true", help="print each killing trace")
    _json_quiet(mu)
    _debug_arg(mu)
    mu.set_defaults(fn=_cmd_mutants)

    ab = sub.add_parser("ablate", help="remove one module check at a time: what breaks",
                        description="Remove each module check in turn (or those given with "
                        "--check), explore again and tabulate checks x invariants broken with "
                        "the shortest trace length. Exit 0 done, 2 bad input, 3 a limit hit.")
    ab.add_argument("args", nargs="*", metavar="key=value", help="config overrides (--host any)")
    ab.add_argument("--host", choices=("any", "kvm"), default="any")
    ab.add_argument("--config", default=None,
                    help="default: tiny for --host any, default for --host kvm")
    ab.add_argument("--check", action="append", default=[], metavar="CHECK",
                    help="ablate only this check (repeatable)")
    ab.add_argument("--list", action="store_true",
                    help="print the module checks' names, in rule order, and exit")
    ab.add_argument("--no-faults", action="store_true",
                    help="--host kvm: no module faults (default: faults on)")
    ab.add_argument("--max-states", type=POSITIVE, default=None, help="per check")
    ab.add_argument("--time-limit", type=SECONDS, default=None, metavar="SECONDS",
                    help="per check")
    _json_quiet(ab)
    _debug_arg(ab)
    ab.set_defaults(fn=_cmd_ablate)

    pv = sub.add_parser("prove", help="Z3: the module invariants for runs of any length",
                        description="Induction (default): every module invariant with the "
                        "lemmas of properties/lemmas.py, per transition; a failed query gives "
                        "a counterexample to induction. --bmc --depth K: bounded model "
                        "checking. Exit 0 proved (bmc: no violation within K), 1 violated or "
                        "not inductive, 2 bad input, 3 a solver timeout (unknown).")
    pv.add_argument("args", nargs="*", metavar="key=value", help="config overrides")
    pv.add_argument("--host", default=None, metavar="any|FILE",
                    help="any (the default): every wrapper with every operand, by induction; "
                    "FILE: a scenario's threads, every interleaving, proved to the scenario's "
                    "full length by bounded model checking")
    pv.add_argument("--config", default="default", help="tiny | default | large")
    pv.add_argument("--faults", action="store_true", help="include every fault point")
    _ablate_arg(pv)
    pv.add_argument("--invariant", action="append", default=[], metavar="ID",
                    help="show only this invariant (repeatable); induction still proves it "
                    "together with every other invariant and lemma")
    pv.add_argument("--bmc", action="store_true", help="bounded model checking")
    pv.add_argument("--depth", type=NON_NEGATIVE, default=None,
                    help="bmc depth (default 8); induction: how deep to look for a real "
                    "violation of a non-inductive invariant")
    pv.add_argument("--lemmas-used", action="store_true",
                    help="also list, per proved invariant, the hypotheses its proofs cite "
                    "(minimised unsat cores; slower)")
    pv.add_argument("--parametric", action="store_true",
                    help="prove the module invariants for every number of TDs, vCPUs, pages, "
                    "HKIDs, packages and CPUs (uninterpreted sorts); the platform constants "
                    "and the S-EPT depth stay fixed")
    pv.add_argument("--sept-levels", type=int, default=None, metavar="N",
                    help="--parametric: the S-EPT depth to prove for (default: the config's)")
    pv.add_argument("--timeout-ms", type=POSITIVE, default=60_000, help="per solver query")
    pv.add_argument("--trace-out", metavar="DIR",
                    help="write each violation as DIR/<invariant>.tdx and .itf.json")
    pv.add_argument("-v", "--verbose", action="store_true", help="per-query detail")
    _json_quiet(pv)
    _debug_arg(pv)
    pv.set_defaults(fn=_cmd_prove)

    f = sub.add_parser("conform", help="random walks on the model and the executor in lockstep")
    f.add_argument("--steps", type=POSITIVE, default=10_000,
                   help="random steps in all (default 10000)")
    f.add_argument("--seed", type=int, default=1, help="the first walk's seed (default 1)")
    f.add_argument("--json", action="store_true", help="print the result as JSON")
    _debug_arg(f)
    f.set_defaults(fn=_cmd_conform)
    _apis_parser(sub)
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    """Every place a command will write is checked before it starts."""
    if getattr(args, "trace_out", None):
        writable_dir(args.trace_out)
    if getattr(args, "save", None):
        writable_file(args.save)
    if getattr(args, "output", None):
        (writable_dir if args.command == "report" else writable_file)(args.output)


# ------------------------------------------------------------------ apis (issue 14)
def _apis_parser(sub: Any) -> None:
    """``tdxcheck apis``: what each SEAMCALL wrapper API lets a host get wrong."""
    a = sub.add_parser("apis", help="what each wrapper API lets a host get wrong, by "
                       "exhaustive search", description="Explore the most general client "
                       "of each API variant (raw, rfc, linux-6.19, pfn-2026, helpers) and "
                       "classify each class of host mistake: impossible, caught (status), "
                       "SILENT (invariant) or harmless, with the shortest trace. Exit 0, 2 "
                       "bad input, 3 a limit cut a run short.")
    a.add_argument("args", nargs="*", metavar="key=value", help="config overrides")
    a.add_argument("--config", default="default", help="tiny | default | large")
    a.add_argument("--variant", action="append", default=[], metavar="V",
                   help="only this variant (repeatable)")
    a.add_argument("--class", dest="cls", action="append", default=[], metavar="C",
                   help="only this class, by number or id (repeatable)")
    a.add_argument("--faults", action="store_true",
                   help="let every SEAMCALL fail at each of its fault points")
    a.add_argument("--max-states", type=POSITIVE, default=None, help="per variant")
    a.add_argument("--max-depth", type=NON_NEGATIVE, default=None, help="per variant")
    a.add_argument("--time-limit", type=SECONDS, default=None, metavar="SECONDS",
                   help="per variant")
    a.add_argument("--trace-out", metavar="DIR",
                   help="write each cell's shortest trace as DIR/<variant>/<NN-class>.tdx")
    a.add_argument("--consequences", action="store_true",
                   help="with --trace-out: replay each trace on both engines and print what "
                   "the executor saw")
    a.add_argument("--credit", action="store_true",
                   help="also turn the helpers variant's features off one at a time: which "
                   "feature removes which class")
    a.add_argument("--interleave", action="store_true",
                   help="run each combined helper (zap, reclaim, HKID release, destroy, "
                   "vcpu_load, ...) step by step instead of atomically: between any two of "
                   "its steps the guest / vCPU thread may exit, accept a page or enter, so "
                   "races inside a helper show (the host makes no other call meanwhile; "
                   "symmetry reduction off for variants with such helpers; --credit stays atomic)")
    a.add_argument("-v", "--verbose", action="store_true",
                   help="each cell's finding and shortest trace")
    _json_quiet(a)
    _debug_arg(a)
    a.set_defaults(fn=_cmd_apis)


def _cmd_apis(args: argparse.Namespace) -> int:
    from tdxcheck.checker.analyses.apis import misuse_class, run_apis, variant
    from tdxcheck.checker.analyses.apis.credit import feature_credit
    from tdxcheck.checker.analyses.apis.variants import VARIANTS
    from tdxcheck.checker.explore.bfs import Limits
    from tdxcheck.checker.output import apis_report as rep
    from tdxcheck.checker.output.report import dumps

    config = _config_args(args)
    variants = [variant(v) for v in args.variant] or list(VARIANTS)
    from tdxcheck.checker.analyses.apis.classes import CLASSES

    classes = [misuse_class(c) for c in args.cls] or list(CLASSES)
    limits = Limits(args.max_states, args.max_depth, args.time_limit)

    def show(name: str, d: dict[str, float]) -> None:
        if not args.quiet:
            print(f"apis {name}: {int(d['states']):,} states, queue {int(d['queue']):,}, "
                  f"depth {int(d['depth'])}, {d['seconds']:.0f}s", file=sys.stderr, flush=True)

    res = run_apis(config, variants=variants, classes=classes, faults=args.faults,
                   limits=limits, interleave=args.interleave, progress=show)
    cr = None
    if args.credit:
        cr = feature_credit(config, faults=args.faults, classes=classes, limits=limits,
                            pairs=False, progress=None if args.quiet else
                            (lambda n: print(f"apis credit: {n}", file=sys.stderr,
                                             flush=True)))
    files: list[str] = []
    if args.trace_out:
        files = rep.write_traces(res, Path(args.trace_out))
    if args.json:
        out = rep.apis_json(res)
        out["trace_files"] = files
        if cr is not None:
            out["credit"] = {**rep.credit_json(cr), "interleave": False}
        print(dumps(envelope("apis", out, config=config_json(config))))
    else:
        print(rep.apis_text(res, details=args.verbose))
        if cr is not None:
            print()
            if args.interleave:  # said, not silently dropped: credit runs are atomic
                print("feature credit: helpers run atomically here (--interleave applies "
                      "to the table above)")
            print(rep.credit_table(cr))
        if files:
            print(f"\nwrote {len(files)} trace file(s) under {args.trace_out}")
            if args.consequences:
                for f, lines in rep.consequences(files).items():
                    print(f"  {f}: " + ("; ".join(lines) if lines else "no consequence"))
    return EXIT_OK if all(r.complete for r in res.runs) else EXIT_INCOMPLETE


INTERNAL_HINT = "re-run with --debug for the traceback; please report it with the scenario"


def main(argv: Sequence[str] | None = None) -> int:
    import os
    import traceback

    from tdxcheck.checker.scenario import ScenarioError

    p = build_parser()
    args = p.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("TDXCHECK_DEBUG") == "1"
    if not getattr(args, "fn", None):
        p.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        _check_outputs(args)  # before any work: a bad path is bad input, not a traceback
        return int(args.fn(args))
    except ScenarioError as e:  # a line of the user's file
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except InputError as e:  # an option, a key=value, a name
        print(f"tdxcheck: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # pragma: no cover - `tdxcheck ... | head`
        return EXIT_OK
    except KeyboardInterrupt:  # pragma: no cover
        print("tdxcheck: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - anything else is a bug in tdxcheck, never bad input
        if debug:
            traceback.print_exc()
        what = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        print(f"tdxcheck: internal error: {what} ({INTERNAL_HINT})", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
