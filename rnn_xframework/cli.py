"""``rnn-xframework`` (also ``python -m rnn_xframework``): the parity suite.

    rnn-xframework parity [flags]                  the matrix (forward, backward, training)
    rnn-xframework parity golden --write DIR       record golden vectors with TensorFlow
    rnn-xframework parity golden --check DIR       check installed backends against them
    rnn-xframework bench [flags]                   benchmarks (rnn-xframework bench --help)

Exit status: 0 all passed, 1 a comparison failed, 2 bad flags (one line on stderr).
docs/parity.md describes every flag.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from rnn_xframework.errors import RNNXError

PROG = "rnn-xframework"


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


def _common(sizes_default: object) -> argparse.ArgumentParser:
    from rnn_xframework.parity.report import DEVICES, DTYPES

    p = _Parser(add_help=False)
    p.add_argument("--backends", nargs="+", metavar="NAME", help="backends to test (default: every installed one)")
    p.add_argument("--devices", nargs="+", metavar="DEV", help=f"{' '.join(DEVICES)} (default: cpu, and cuda if seen)")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES), help="default: both")
    p.add_argument("--orderings", nargs="+", metavar="ORD", help="timestep layer torchscript (default: all)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.add_argument("--plain", action="store_true", help="plain-text table even when rich is installed")
    for name in ("batch", "steps", "features", "units", "layers"):
        default = getattr(sizes_default, name)
        p.add_argument(f"--{name}", type=_positive, default=default, help=f"default {default}")
    p.add_argument("--cells", nargs="+", metavar="KIND", help="cell types (default: every one a backend has)")
    p.add_argument("--seed", type=int, default=0, help="random problem seed (default 0)")
    return p


def build_parser() -> argparse.ArgumentParser:
    from rnn_xframework.parity import CHECKS, Sizes
    from rnn_xframework.parity.golden import SIZES

    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser(
        "parity",
        parents=[_common(Sizes())],
        help="compare backends, orderings, devices and dtypes",
        prog=f"{PROG} parity",
    )
    p.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS), help="default: all three")
    golden = p.add_subparsers(dest="parity_command", parser_class=_Parser).add_parser(
        "golden", parents=[_common(SIZES)], help="write or check golden vectors", prog=f"{PROG} parity golden"
    )
    sub.add_parser("bench", add_help=False, help="time the library's methods against the frameworks' own")
    mode = golden.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DIR", help="record vectors with TensorFlow into DIR")
    mode.add_argument("--check", metavar="DIR", help="check the selected backends and devices against DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        if importlib.util.find_spec("rich") is None:
            print(f"{PROG} bench: error: needs rich: pip install 'rnn_xframework[rich]'", file=sys.stderr)
            return 2
        from rnn_xframework.bench.harness import main as bench

        return bench(argv[1:])
    from rnn_xframework import frameworks, parity

    frameworks.import_triton_first()  # before any TensorFlow: rnn_xframework.frameworks
    args = build_parser().parse_args(argv)
    sizes = parity.Sizes(args.batch, args.steps, args.features, args.units, args.layers)
    prog = f"{PROG} parity"
    try:
        if getattr(args, "parity_command", None) == "golden" and args.write:
            paths = parity.write_golden(args.write, sizes, args.cells, args.dtypes, args.seed)
            print("\n".join(f"wrote {p} ({p.stat().st_size} bytes)" for p in paths))
            return 0
        if getattr(args, "parity_command", None) == "golden":
            report = parity.check_golden(args.check, args.backends, args.devices, args.orderings, args.dtypes)
        else:
            config = parity.Config(
                sizes, args.backends, args.devices, args.dtypes, args.cells, args.orderings, args.checks, args.seed
            )
            parity.plan(config)  # every flag checked before anything runs
            report = parity.run(config)
    except (RNNXError, ImportError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    parity.print_report(report, plain=args.plain)
    if args.json:
        report.write_json(args.json)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
