"""The ``inception`` command: parse arguments, call the library, print. Nothing else."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import UserError


def _fmt_count(n: int) -> str:
    return f"{n / 1e6:,.2f}M" if n >= 1e6 else f"{n:,}"


def cmd_models(args: argparse.Namespace) -> int:
    from .models import get_model_info, list_models, model_summary

    if args.name:
        info = get_model_info(args.name)
        dc = info.data_config
        print(f"{info.name}: {info.description}")
        print(f"  parameters {info.params:,}   MACs {info.macs / 1e9:.2f} G at {dc.input_size[1]}x{dc.input_size[2]}")
        print(f"  input {dc.input_size[1]}x{dc.input_size[2]} (minimum {dc.min_input_size}x{dc.min_input_size}), "
              f"{dc.interpolation}, crop {dc.crop_pct}, mean {dc.mean}, std {dc.std}, features {info.num_features}")
        print()
        rows = model_summary(args.name)
        print(f"  {'block':<16} {'type':<18} {'output shape':<22} {'params':>12}")
        for name, kind, shape, params in rows:
            shown = "x".join(map(str, shape[1:])) if shape else "(train only)"
            print(f"  {name:<16} {kind:<18} {shown:<22} {params:>12,}")
        return 0
    print(f"{'model':<22} {'params':>10} {'GMACs':>7} {'input':>8} {'min':>5}  {'interp':<9} {'crop':>6}")
    for name in list_models():
        info = get_model_info(name)
        dc = info.data_config
        print(f"{name:<22} {_fmt_count(info.params):>10} {info.macs / 1e9:>7.2f} "
              f"{dc.input_size[1]:>4}x{dc.input_size[2]:<3} {dc.min_input_size:>5}  {dc.interpolation:<9} {dc.crop_pct:>6}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inception",
        description="Train, evaluate, export and deploy Inception-family image classifiers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"inception {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("models", help="list the models, or summarise one",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("name", nargs="?", default=None, help="a model name: print its blocks and output shapes")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
