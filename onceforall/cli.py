"""The ``onceforall`` command line."""

from __future__ import annotations

import argparse
import sys

import torch

__all__ = ["main"]


def _cmd_info(args: argparse.Namespace) -> int:
    """Print what a supernet family offers: its space, cost range and a few sampled subnets."""
    from onceforall import create_supernet

    net = create_supernet(args.family, num_classes=args.num_classes, in_channels=args.in_channels)
    space = net.space
    print(f"supernet {args.family}: {space.describe()}")
    rows = [("largest", space.largest()), ("smallest", space.smallest())]
    g = torch.Generator().manual_seed(args.seed)
    rows += [(f"sample {i}", space.sample(g)) for i in range(args.samples)]
    print(f"{'':10} {'MMACs':>8} {'params':>9}  arch")
    for label, arch in rows:
        print(f"{label:10} {net.macs(arch) / 1e6:8.2f} {net.num_params(arch):9,d}  {arch}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a supernet from a YAML config into a run directory."""
    from onceforall.config import load_config
    from onceforall.training import train

    config = load_config(args.config, args.overrides)
    path = train(
        config, args.out, resume=args.resume, force=args.force, progress=not args.no_progress
    )
    print(f"supernet: {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from onceforall import list_supernets

    parser = argparse.ArgumentParser(
        prog="onceforall",
        description="Train one supernet once, then specialize it for any device in seconds.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show a supernet family's space, costs and sample subnets")
    info.add_argument("--family", default="mbv3_small_images", choices=list_supernets())
    info.add_argument("--num-classes", type=int, default=10)
    info.add_argument("--in-channels", type=int, default=1)
    info.add_argument("--samples", type=int, default=5, help="random subnets to show")
    info.add_argument("--seed", type=int, default=0)
    info.set_defaults(func=_cmd_info)

    tr = sub.add_parser(
        "train",
        help="train a supernet with progressive shrinking (resumable; works under torchrun)",
        description="Train a supernet from a YAML config. Overrides: key=value with dotted keys, "
        "e.g. data.root=/data schedule.phases.0.epochs=2 device=cuda.",
    )
    tr.add_argument("config", help="YAML config (presets in configs/)")
    tr.add_argument("--out", required=True, help="run directory")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--force", action="store_true", help="delete the run in --out and start over")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.add_argument("overrides", nargs="*", metavar="key=value")
    tr.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come anywhere after the config (also after --out): argparse leaves
    # those it cannot place among the unknown arguments.
    args, unknown = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [u for u in unknown if "=" in u and not u.startswith("-")]
        unknown = [u for u in unknown if u not in args.overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"onceforall {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
