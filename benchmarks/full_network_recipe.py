"""How far the full network gets in a CPU budget: one recipe change at a time, holdout accuracy.

    .venv/bin/python -m benchmarks.full_network_recipe [--epochs 1] [--no-augment]
        [--optimizer sgd|adamw] [--lr 0.2] [--batch-size 256] [--resolution 28]
        [--stage-strides 2,1,2,1,1] [--arch largest|smallest] [--kernel-size 3|5|7]
        [--threads 1] [--native-depthwise-grad] [--label-smoothing 0.1]

Trains one static subnet of ``mbv3_small_images`` (the quick preset's largest by default) on the
55,000 Fashion-MNIST training images with the trainer's loss (label smoothing 0.1 unless
``--label-smoothing``), cosine learning rate with a 0.1-epoch warm-up, and the trainer's
augmentation (random +-2 px translation and horizontal flip) unless ``--no-augment``, then
prints one JSON line: the settings, MACs, wall time, images/s and accuracy on the 5,000-image
holdout. ``--stage-strides`` rebuilds the family
with another downsampling pattern (same widths) to price more spatial resolution;
``--kernel-size`` gives every depthwise conv of the arch that kernel, to price the kernel choices.
Depthwise weight gradients are the trainer's (``onceforall.elastic.depthwise``: kernels wider
than 3 assembled from ``kh x 3`` pieces on CPU); ``--native-depthwise-grad`` prices PyTorch's
own, which on CPU costs far more for 5x5 and 7x7 kernels than for 3x3.

This is what chose the quick preset's full-network phase (``docs/results.md``): a static network
trains without elastic overhead, so runs with one thread each can go side by side on two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import time

import torch
import torch.nn.functional as F

from onceforall.data import DataConfig, augment_batch, load_data, resize_batch
from onceforall.elastic.depthwise import fast_depthwise_grad
from onceforall.supernets.mbconvnet import MBConvSupernet
from onceforall.supernets.mobilenetv3 import SMALL_IMAGES_LAYOUT
from onceforall.training.optim import weight_decay_groups


def _stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--weight-decay", type=float, default=3e-5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--stage-strides", default="2,1,2,1,1")
    parser.add_argument("--arch", choices=("largest", "smallest"), default="largest")
    parser.add_argument("--kernel-size", type=int, choices=(3, 5, 7), default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--native-depthwise-grad", action="store_true")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    strides = tuple(int(s) for s in args.stage_strides.split(","))
    layout = dataclasses.replace(SMALL_IMAGES_LAYOUT, stage_strides=strides)
    supernet = MBConvSupernet(
        layout, num_classes=10, in_channels=1, resolutions=(24, 28, 32), name="recipe"
    )
    arch = getattr(supernet.space, args.arch)()
    arch = dataclasses.replace(arch, resolution=args.resolution)
    if args.kernel_size is not None:
        kernels = tuple((args.kernel_size,) * len(stage) for stage in arch.kernel_sizes)
        arch = dataclasses.replace(arch, kernel_sizes=kernels)
    net = supernet.extract(arch).to(memory_format=torch.channels_last)

    data = load_data(DataConfig())
    xs, ys = _stack(data.train)
    hx, hy = _stack(data.holdout)
    groups = weight_decay_groups(net.named_parameters(), args.weight_decay)
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True, weight_decay=0)
    else:
        opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0)
    steps_per_epoch = len(xs) // args.batch_size
    total = max(1, int(args.epochs * steps_per_epoch))
    warmup = max(1, int(0.1 * steps_per_epoch))
    g = torch.Generator().manual_seed(args.seed)

    started, step, loss = time.perf_counter(), 0, torch.tensor(0.0)
    net.train()
    depthwise = contextlib.nullcontext() if args.native_depthwise_grad else fast_depthwise_grad(net)
    with depthwise:
        while step < total:  # bounded: each pass advances step by one per batch
            order = torch.randperm(len(xs), generator=g)
            for i in range(min(steps_per_epoch, total - step)):
                if step < warmup:
                    lr = args.lr * (step + 1) / warmup
                else:
                    progress = (step - warmup) / (total - warmup)
                    lr = 0.5 * args.lr * (1 + math.cos(math.pi * progress))
                for group in opt.param_groups:
                    group["lr"] = lr
                idx = order[i * args.batch_size : (i + 1) * args.batch_size]
                x = xs[idx] if args.no_augment else augment_batch(xs[idx], g)
                x = resize_batch(x, args.resolution).contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(net(x), ys[idx], label_smoothing=args.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
    seconds = time.perf_counter() - started

    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(hx), 1000):
            logits = net(resize_batch(hx[i : i + 1000], args.resolution))
            correct += int((logits.argmax(1) == hy[i : i + 1000]).sum())
    record = {
        **vars(args),
        "arch": str(arch),
        "macs": supernet.macs(arch),
        "train_s": round(seconds, 1),
        "images_per_s": round(total * args.batch_size / seconds, 1),
        "holdout_top1": round(100 * correct / len(hx), 2),
        "last_loss": round(float(loss.detach()), 4),
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
