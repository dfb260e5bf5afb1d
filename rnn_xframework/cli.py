"""The ``rnn-xframework`` command (also ``python -m rnn_xframework``); :data:`DESCRIPTION` is its help.

Progress goes to stderr (a rich bar on a terminal, a line per group otherwise), the report to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

from rnn_xframework.errors import RNNXError

if TYPE_CHECKING:
    from rnn_xframework.parity.report import ProgressFn, Result

PROG = "rnn-xframework"

DESCRIPTION = """\
The parity suite and the benchmarks of rnn_xframework.

  rnn-xframework parity [flags]              the matrix (forward, backward, training)
  rnn-xframework parity golden --write DIR   record golden vectors with TensorFlow
  rnn-xframework parity golden --check DIR   check installed backends against them
  rnn-xframework bench [flags]               benchmarks (rnn-xframework bench --help)
  rnn-xframework port MODEL.keras -o DIR     a Keras model as DIR/model.py + model.pt, parity checked

Exit status: 0 all passed, 1 a comparison failed, 2 bad flags or nothing to compare (one line
on stderr), 130 interrupted (Ctrl-C; a --json report is written marked "interrupted").
docs/parity.md describes every flag.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _output_file(text: str) -> str:
    """A path the report can be written to, checked before the run (not minutes later)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"needs a file path, got {text!r}")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a directory; give a file name, e.g. {text.rstrip('/') + '/report.json'!r}"
        )
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: directory {parent!r} is not writable")
    return text


def _common(sizes_default: object, orderings: Sequence[str]) -> argparse.ArgumentParser:
    from rnn_xframework.parity.report import DEVICES, DTYPES

    p = _Parser(add_help=False)
    p.add_argument("--backends", nargs="+", metavar="NAME", help="backends to test (default: every installed one)")
    p.add_argument("--devices", nargs="+", metavar="DEV", help=f"{' '.join(DEVICES)} (default: cpu, and cuda if seen)")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES), help="default: both")
    p.add_argument(
        "--orderings",
        nargs="+",
        metavar="ORD",
        help=f"{' '.join(orderings) or 'timestep layer, and each quick compile method'} "
        "(default: every one an installed backend has)",
    )
    p.add_argument("--json", metavar="PATH", type=_output_file, help="also write the report as JSON (atomically)")
    p.add_argument("--plain", action="store_true", help="plain-text table even when rich is installed")
    for name in ("batch", "steps", "features", "units", "layers"):
        default = getattr(sizes_default, name)
        p.add_argument(f"--{name}", type=_positive, default=default, help=f"default {default}")
    p.add_argument("--cells", nargs="+", metavar="KIND", help="cell types (default: every one a backend has)")
    p.add_argument("--seed", type=_non_negative, default=0, help="random problem seed, >= 0 (default 0)")
    return p


def all_orderings() -> list[str]:
    """Every ordering ``--orderings`` accepts here: ``timestep``, ``layer`` and each quick compile
    method of the installed backends (which imports them, torch first, without their import noise)."""
    from rnn_xframework import registry
    from rnn_xframework.parity.problem import orderings_for

    found: list[str] = []
    for name in sorted(registry.installed(), key=lambda n: n != "torch"):
        try:
            with without_import_noise():
                found += orderings_for(name)
        except ImportError:  # BackendUnavailableError: the framework cannot be used in this process
            continue
    return list(dict.fromkeys(found))


def build_parser(list_orderings: bool = False) -> argparse.ArgumentParser:
    """The command line. ``list_orderings=True`` imports the installed backends to name every
    ordering they accept in ``--help``; by default no framework is imported (the ``--orderings``
    help then names no compile method)."""
    from rnn_xframework.parity import CHECKS, Sizes
    from rnn_xframework.parity.golden import SIZES

    orderings = all_orderings() if list_orderings else []
    parser = _Parser(prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser(
        "parity",
        parents=[_common(Sizes(), orderings)],
        help="compare backends, orderings, devices and dtypes",
        prog=f"{PROG} parity",
    )
    p.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS), help="default: all four")
    golden = p.add_subparsers(dest="parity_command", parser_class=_Parser).add_parser(
        "golden",
        parents=[_common(SIZES, orderings)],
        help="write or check golden vectors",
        prog=f"{PROG} parity golden",
    )
    sub.add_parser("bench", add_help=False, help="time the library's methods against the frameworks' own")
    mode = golden.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DIR", help="record vectors with TensorFlow into DIR")
    mode.add_argument("--check", metavar="DIR", help="check the selected backends and devices against DIR")
    return parser


@contextlib.contextmanager
def progress_reporter(stream: TextIO | None = None) -> Iterator[ProgressFn]:
    """A :data:`~rnn_xframework.parity.report.ProgressFn` that shows progress on ``stream`` (stderr).

    On a terminal with rich installed: a progress bar, gone when the run ends (the report follows).
    Elsewhere (a pipe, a log file, CI): one line per finished group with its counts and the time so far.
    """
    from rnn_xframework.parity.report import FAIL, PASS, SKIP, rich_available

    stream = sys.stderr if stream is None else stream
    start = time.monotonic()
    if stream.isatty() and rich_available():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(file=stream), transient=True) as bar:
            task = bar.add_task("starting", total=None)

            def draw(index: int, total: int, label: str, results: Sequence[Result] | None) -> None:
                done = index if results is None else index + 1
                bar.update(task, total=total, completed=done, description=label)

            yield draw
        return

    def line(index: int, total: int, label: str, results: Sequence[Result] | None) -> None:
        if results is None:
            return
        statuses = [r.status for r in results]
        counts = ", ".join(f"{statuses.count(s)} {w}" for s, w in zip((PASS, FAIL, SKIP), WORDS, strict=True))
        elapsed = time.monotonic() - start
        print(f"{PROG} parity: [{index + 1}/{total}] {label}: {counts} ({elapsed:.0f} s)", file=stream, flush=True)

    yield line


WORDS = ("passed", "failed", "skipped")

FRAMEWORK_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
)
"""What TensorFlow's C++ code writes to stderr while it is imported, before its log level applies
(``TF_CPP_MIN_LOG_LEVEL`` does not reach it): once per shared library it loads, twice in all."""


@contextlib.contextmanager
def without_import_noise() -> Iterator[None]:
    """Run the block with file descriptor 2 captured; afterwards write back every captured line
    except :data:`FRAMEWORK_NOISE` (anything else, an error above all, still reaches the user)."""
    import tempfile

    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in FRAMEWORK_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()


def load_backends(names: Sequence[str] | None) -> None:
    """Import the selected backends (all installed ones for ``None``) before the run, torch first
    (it must precede TensorFlow in one process), TensorFlow's import noise filtered out."""
    from rnn_xframework import backends

    chosen = set(backends.installed())
    if names is not None:
        chosen &= {backends.canonical_name(n) for n in names}  # UnknownBackendError for a bad name
    for name in sorted(chosen, key=lambda n: n != "torch"):
        with without_import_noise():
            backends.get(name)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        build_parser(list_orderings=False).print_help()
        return 2
    if argv[:1] == ["bench"]:
        if importlib.util.find_spec("rich") is None:
            print(f"{PROG} bench: error: needs rich: pip install 'rnn_xframework[rich]'", file=sys.stderr)
            return 2
        from rnn_xframework.bench.harness import main as bench

        return bench(argv[1:])
    if argv[:1] == ["port"]:
        return port(argv[1:])
    from rnn_xframework import frameworks, parity

    frameworks.load("tensorflow")  # triton before TensorFlow (after it: RTLD_DEEPBIND); never raises
    args = build_parser(list_orderings=argv[:1] == ["parity"] and ("-h" in argv or "--help" in argv)).parse_args(argv)
    sizes = parity.Sizes(args.batch, args.steps, args.features, args.units, args.layers)
    prog = f"{PROG} parity"
    try:
        load_backends(args.backends)
        if getattr(args, "parity_command", None) == "golden" and args.write:
            paths = parity.write_golden(args.write, sizes, args.cells, args.dtypes, args.seed)
            print("\n".join(f"wrote {p} ({p.stat().st_size} bytes)" for p in paths))
            return 0
        if getattr(args, "parity_command", None) == "golden":
            with progress_reporter() as progress:
                report = parity.check_golden(
                    args.check, args.backends, args.devices, args.orderings, args.dtypes, progress
                )
        else:
            config = parity.Config(
                sizes, args.backends, args.devices, args.dtypes, args.cells, args.orderings, args.checks, args.seed
            )
            parity.plan(config)  # every flag checked before anything runs
            with progress_reporter() as progress:
                report = parity.run(config, progress)
    except KeyboardInterrupt as e:
        return _interrupted(e, args, prog)
    except (RNNXError, ImportError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    parity.print_report(report, plain=args.plain)
    if args.json:
        try:
            report.write_json(args.json)
        except OSError as e:  # the disk, after the run: one line, the old report left as it was
            print(f"{prog}: error: {e.strerror or e}", file=sys.stderr)
            return 2
    if not report.ran:  # an empty run must not pass
        skipped = report.counts()["SKIP"]
        print(
            f"{prog}: error: no comparison ran ({skipped} skipped): nothing in this selection runs here; "
            "widen --backends/--orderings/--devices/--cells",
            file=sys.stderr,
        )
        return 2
    return 0 if report.passed else 1


def _interrupted(e: KeyboardInterrupt, args: argparse.Namespace, prog: str) -> int:
    """Ctrl-C: say so, and write the finished groups' rows (if ``--json``) marked
    ``"interrupted": true, "passed": false``, so no report that looks complete and current is left."""
    report = getattr(e, "report", None)
    done, total = getattr(e, "progress", (0, 0))
    where = f" after {done} of {total} groups" if total else ""
    if args.json and report is not None:
        report.write_json(args.json)
        print(f"{prog}: interrupted{where}; {args.json} holds the finished groups, marked interrupted", file=sys.stderr)
    elif args.json:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.json)  # an older report there would look like this run's
        print(f"{prog}: interrupted{where}; no report written ({args.json} removed)", file=sys.stderr)
    else:
        print(f"{prog}: interrupted{where}", file=sys.stderr)
    return 130


def port(argv: Sequence[str]) -> int:
    """``rnn-xframework port MODEL.keras -o DIR``: write ``DIR/model.py`` and ``DIR/model.pt``
    (:func:`rnn_xframework.to_torch_source`), then run :func:`rnn_xframework.compare` on a probe
    batch and print it. Exit 0 on a match, 1 on a mismatch, 2 on an unsupported layer or a bad file."""
    p = _Parser(prog=f"{PROG} port", description=port.__doc__)
    p.add_argument("model", help="a Keras model file (.keras), loaded in Keras's safe mode")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="where model.py and model.pt go")
    p.add_argument("--masks", choices=("right-padded", "any"), default="right-padded", help="see xf.to_torch")
    p.add_argument("--steps", type=_positive, default=1, help="SGD steps of the parity check (default 1)")
    p.add_argument("--plain", action="store_true", help="plain-text table")
    args = p.parse_args(argv)
    from rnn_xframework import frameworks

    frameworks.load("torch")  # triton the safe way, before or after TensorFlow
    import torch  # noqa: F401

    import rnn_xframework as xf
    from rnn_xframework.parity.report import print_report

    try:
        with without_import_noise():
            import keras  # noqa: F401
        module = xf.to_torch(args.model, masks=args.masks)
        py, pt = xf.to_torch_source(args.model, args.output, masks=args.masks)
    except FileNotFoundError as e:
        print(f"{PROG} port: error: no such file: {e.filename or e}", file=sys.stderr)
        return 2
    except (RNNXError, OSError, ValueError) as e:
        print(f"{PROG} port: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {py} and {pt}")
    spec = importlib.util.spec_from_file_location("ported_model", py)
    written = importlib.util.module_from_spec(spec)  # the file just written, not the live module
    spec.loader.exec_module(written)
    del module
    report = xf.compare(args.model, written.load(), steps=args.steps, show=False, masks=args.masks)
    print_report(report, plain=args.plain)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
