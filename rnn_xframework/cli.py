"""``rnn-xframework`` (also ``python -m rnn_xframework``): the parity report."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from rnn_xframework import backends, parity
from rnn_xframework.errors import RNNXError


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnn-xframework", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("parity", help="compare every installed backend and ordering with the NumPy reference")
    defaults = parity.Sizes()
    for field in ("batch", "steps", "features", "units", "layers"):
        p.add_argument(
            f"--{field}", type=_positive, default=getattr(defaults, field), help=f"default {getattr(defaults, field)}"
        )
    p.add_argument("--backends", nargs="+", default=None, help="default: every installed backend")
    p.add_argument("--dtypes", nargs="+", choices=sorted(parity.TOLERANCE), default=["float32", "float64"])
    p.add_argument("--device", default="cpu", help="torch device for the torch backend (cpu, cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    sizes = parity.Sizes(args.batch, args.steps, args.features, args.units, args.layers)
    try:
        names = [backends.canonical_name(b) for b in args.backends] if args.backends else None
        for name in names or []:
            backends.get(name)
        results = parity.run(sizes, names, args.dtypes, args.device, args.seed)
    except (RNNXError, ImportError) as e:
        parser.exit(2, f"rnn-xframework: error: {e}\n")
    print(parity.format_table(results, sizes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sizes": vars(sizes), "results": [r.as_dict() for r in results]}, f, indent=2)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
