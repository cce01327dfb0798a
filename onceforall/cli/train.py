"""``onceforall info``, ``train`` and ``import-reference``: a supernet to specialize."""

from __future__ import annotations

import argparse

import torch

from onceforall.cli.common import whole


def _cmd_info(args: argparse.Namespace) -> int:
    """Print what a supernet family offers: its space, cost range and a few sampled subnets."""
    from onceforall import create_supernet

    # ``--family F`` is how earlier versions took it.
    if args.family and args.family_option and args.family != args.family_option:
        raise ValueError(f"two families given: {args.family} and --family {args.family_option}")
    family = args.family or args.family_option or "mbv3_small_images"
    num_classes, in_channels = args.num_classes, args.in_channels
    if num_classes is None or in_channels is None:
        # The data the family is made for: ImageNet for ImageNet-size inputs (the paper's
        # figures), else the embedded default, Fashion-MNIST.
        probe = create_supernet(family, num_classes=10)
        imagenet = max(probe.space.resolutions) >= 128
        if num_classes is None:
            num_classes = 1000 if imagenet else 10
        if in_channels is None:
            in_channels = 3 if imagenet else 1
    net = create_supernet(family, num_classes=num_classes, in_channels=in_channels)
    space = net.space
    channels = f"{in_channels} input channel{'' if in_channels == 1 else 's'}"
    print(f"supernet {family} ({num_classes} classes, {channels}): {space.describe()}")
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


def _cmd_import_reference(args: argparse.Namespace) -> int:
    """Turn a checkpoint of the reference implementation into a run directory."""
    from onceforall.config import load_config
    from onceforall.reference import REFERENCE_FAMILIES, import_reference_run

    config = load_config(args.config, args.overrides)
    net, path = import_reference_run(
        config,
        args.checkpoint,
        args.out,
        predictor=args.predictor,
        image_sizes=args.predictor_image_sizes,
        force=args.force,
    )
    space = net.space
    family = config.model.family
    width = net.config.get("width_mult")
    if config.model.width_mult not in (None, width):
        said = config.model.width_mult
        print(f"model.width_mult: {width}, the checkpoint's (the config said {said})")
    print(
        f"imported the reference {REFERENCE_FAMILIES[family]} as {family}: {path}\n"
        f"space: {space.describe()}\n"
        f"MACs {net.macs(space.smallest()) / 1e6:.1f}M to {net.macs(space.largest()) / 1e6:.1f}M"
        f"; next: onceforall search {args.out} --macs N (needs the data of data.root)"
    )
    if args.predictor:
        print(f"accuracy predictor: {args.predictor} (search uses it; no accuracy dataset)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``info``, ``train`` and ``import-reference``."""
    from onceforall import list_supernets

    info = sub.add_parser("info", help="show a supernet family's space, costs and sample subnets")
    families = list_supernets()
    info.add_argument(
        "family", nargs="?", choices=families, help="the family (default: mbv3_small_images)"
    )
    info.add_argument("--family", dest="family_option", choices=families, help=argparse.SUPPRESS)
    info.add_argument(
        "--num-classes", type=int, help="default: 1000 for ImageNet-size families, else 10"
    )
    info.add_argument(
        "--in-channels", type=int, help="default: 3 for ImageNet-size families, else 1"
    )
    info.add_argument("--samples", type=whole, default=5, help="random subnets to show")
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

    im = sub.add_parser(
        "import-reference",
        help="a run directory from a checkpoint of the reference implementation (mit-han-lab ofa)",
        description="Load a supernet the reference implementation trained (ofa_mbv3_d234_e346_"
        "k357_w1.0 or _w1.2, ofa_proxyless_d234_e346_k357_w1.3, ofa_resnet50: torch.save'd "
        "state dicts, read with weights_only=True) into a run directory that search, export, "
        "finetune and latency work on. CONFIG gives the family's choice sets and the data "
        "(e.g. configs/imagenet_mbv3.yaml data.root=/data/imagenet); the width multiplier is "
        "read off the checkpoint.",
    )
    im.add_argument("config", help="YAML config of the same family (presets in configs/)")
    im.add_argument("checkpoint", help="the reference's checkpoint (.pth, or .safetensors)")
    im.add_argument("--out", required=True, help="run directory to write")
    im.add_argument(
        "--predictor",
        help="the reference's accuracy predictor for this supernet (e.g. its tutorial's "
        "acc_predictor.pth): search then uses it instead of evaluating subnets",
    )
    im.add_argument(
        "--predictor-image-sizes",
        type=lambda t: [int(v) for v in t.split(",")],
        help="its encoder's image_size_list, comma-separated (default: 128-224 px in steps "
        "of 4, or the space's resolutions, whichever its input width implies)",
    )
    im.add_argument("--force", action="store_true", help="replace the run in --out")
    im.add_argument("overrides", nargs="*", metavar="key=value")
    im.set_defaults(func=_cmd_import_reference)
