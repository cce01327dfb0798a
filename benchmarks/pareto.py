"""The searched Pareto front vs a hand-scaled family and torchvision's MobileNetV3-Small.

    .venv/bin/python -m benchmarks pareto [--quick] [--backend onnxruntime] [--seeds 3]

Three sets of networks, each point's accuracy measured on the test set and its latency measured
end to end on this CPU (ONNX Runtime by default, batch 1, one thread, median of repeats):

- **searched front**: NSGA-II on the run's accuracy predictor and this machine's latency table,
  ``--front-points`` archs spread along it, extracted with BN recalibration;
- **hand-scaled family**: archs of the same supernet with every network choice scaled together
  (all smallest, all middle, all largest kernel / expand ratio / depth), each at every
  resolution, extracted the same way: what scaling a network by hand (a width/depth multiplier
  times an input size) gives, from the same weights;
- **MobileNetV3-Small** (torchvision, ``width_mult`` 1.0) adapted to the input: stem conv with the
  dataset's channels and stride 1 instead of 2 (on 28-32 px images the original's 32x downsampling
  would leave less than one pixel), the dataset's classes, trained from scratch at the largest
  resolution with the supernet's whole budget in gradient-images (as ``benchmarks scratch`` (d));
  mean ± standard deviation over seeds.

Target: every hand-scaled point and MobileNetV3-Small is dominated by the front (some front point
is at least as accurate at no more latency). Writes ``OUT/pareto.png``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from benchmarks.common import Settings, budget, specializer, supernet_run, uniform_family
from benchmarks.reporting import (
    cached,
    fmt_mean_std,
    machine,
    machine_line,
    md_table,
    mean_std,
    rel,
)
from onceforall.predictors import measure_latency
from onceforall.run import Run
from onceforall.training.bn import accuracy, recalibrate_bn
from onceforall.training.checkpoint import load_weights, save_weights
from onceforall.training.finetune import train_subnet_loop

NAME = "pareto"
CAPPED = " (**--quick: training capped**, not the supernet's budget)"


def mobilenet_v3_small(in_channels: int, num_classes: int, resolution: int) -> nn.Module:
    """torchvision's MobileNetV3-Small for small images: ``in_channels`` input channels and, for
    inputs under 64 px, a stride-1 stem (the original stem's stride 2 plus four stride-2 blocks
    would shrink 28 px to under one pixel)."""
    from torchvision.models import mobilenet_v3_small as tv_small

    model = tv_small(weights=None, num_classes=num_classes)
    old = model.features[0][0]
    stride = 1 if resolution < 64 else 2
    model.features[0][0] = nn.Conv2d(
        in_channels, old.out_channels, old.kernel_size, stride, old.padding, bias=False
    )
    nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    return model


def count_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of convolutions and linear layers for one input of ``shape``."""
    total = 0

    def conv(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        total += out[0].numel() * k

    def linear(m: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in hooks:
        h.remove()
    return total


def _latency(settings: Settings, model: nn.Module, shape: tuple[int, ...]) -> float:
    return measure_latency(
        model.cpu().eval(),
        shape,
        settings.backend,
        threads=1,
        warmup=max(3, settings.latency_repeats // 5),
        repeats=settings.latency_repeats,
    )


def _subnet_point(settings: Settings, run: Run, arch, label: str) -> dict[str, Any]:
    sub = run.subnet(arch)
    shape = (1, run.net.in_channels, arch.resolution, arch.resolution)
    return {
        "label": label,
        "arch": str(arch),
        "macs": run.net.macs(arch),
        "test": run.accuracy(sub, arch, "test"),
        "latency_ms": _latency(settings, sub, shape),
    }


def train_mobilenet(settings: Settings, run: Run, b: dict[str, Any]) -> dict[str, Any]:
    """MobileNetV3-Small from scratch, one run per seed (cached), with the supernet's budget."""
    data = run.data
    res = max(run.net.space.resolutions)
    shape = (1, data.in_channels, res, res)
    lr = run.config.schedule.phases[0].lr
    epochs = settings.scratch_epochs(b["epoch_equivalents"])
    seeds = []
    for seed in range(settings.seeds):
        name = f"mbv3_small_{epochs:.3f}ep_s{seed}.safetensors"
        weights = settings.work / "pareto" / run.path.name / name

        def train(seed=seed, weights=weights) -> dict[str, Any]:
            torch.manual_seed(1000 + seed)
            m = mobilenet_v3_small(data.in_channels, data.num_classes, res)
            m.to(memory_format=torch.channels_last)
            info = train_subnet_loop(
                m,
                run,
                res,
                epochs=epochs,
                lr=lr,
                seed=seed,
                progress=settings.progress,
                desc=f"MobileNetV3-Small scratch, seed {seed}",
            )
            # torchvision's batch norm momentum is 0.01: after a short run the running statistics
            # are still mostly their initial values. Recompute them exactly, as for every subnet.
            recalibrate_bn(m, SimpleNamespace(resolution=res), run.calibration_batches())
            weights.parent.mkdir(parents=True, exist_ok=True)
            save_weights(m, weights)
            acc = accuracy(m, data.test, res, batch_size=run.config.eval_batch_size)
            return {**info, "seed": seed, "test": acc, "weights": str(weights)}

        seeds.append(cached(weights.with_suffix(".json"), train))
    model = load_weights(mobilenet_v3_small(data.in_channels, data.num_classes, res), weights)
    return {
        "label": "MobileNetV3-Small (scratch)",
        "resolution": res,
        "lr": lr,
        "epochs": epochs,
        "capped": epochs < b["epoch_equivalents"],
        "macs": count_macs(model, shape),
        "params": sum(p.numel() for p in model.parameters()),
        "test": mean_std([s["test"] for s in seeds])[0],
        "test_runs": seeds,
        "latency_ms": _latency(settings, model, shape),
    }


def dominated(point: dict[str, Any], front: list[dict[str, Any]]) -> bool:
    """Some front point is at least as accurate at no more latency."""
    return any(f["latency_ms"] <= point["latency_ms"] and f["test"] >= point["test"] for f in front)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for key, style, label in (
        ("front", "o-", "searched front (extracted + BN)"),
        ("uniform", "s", "hand-scaled family (same supernet)"),
    ):
        pts = sorted(result[key], key=lambda p: p["latency_ms"])
        ax.plot([p["latency_ms"] for p in pts], [p["test"] for p in pts], style, label=label, ms=5)
    mb = result["mobilenet"]
    ax.errorbar(
        [mb["latency_ms"]],
        [mb["test"]],
        yerr=[mean_std([s["test"] for s in mb["test_runs"]])[1]],
        fmt="*",
        ms=12,
        label="MobileNetV3-Small, scratch, same budget",
    )
    ax.set_xlabel(f"latency (ms, {result['backend']}, batch 1, 1 thread)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(settings: Settings) -> tuple[dict[str, Any], str]:
    sn = supernet_run(settings)
    b = budget(sn.config, sn.data, sn.net.space)
    spec = specializer(settings, sn)
    front = spec.pareto(seed=0)
    spread = front.spread(settings.front_points)
    front_pts = [
        {**_subnet_point(settings, sn, c.arch, f"front {i + 1}"), "predicted": c.score}
        for i, c in enumerate(spread)
    ]
    uniform = [
        _subnet_point(settings, sn, arch, label) for label, arch in uniform_family(sn.net.space)
    ]
    mb = train_mobilenet(settings, sn, b)
    for p in [*uniform, mb]:
        p["dominated_by_front"] = dominated(p, front_pts)
    result = {
        "name": NAME,
        "command": settings.command(NAME),
        "machine": machine(),
        "config": rel(settings.config),
        "run_dir": rel(sn.path),
        "backend": settings.backend,
        "budget": b,
        "seeds": settings.seeds,
        "front": front_pts,
        "front_size": len(front.front),
        "uniform": uniform,
        "mobilenet": mb,
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    plot(result, settings.out / "pareto.png")
    result["plot"] = str(settings.out / "pareto.png")
    return result, markdown(result)


def markdown(result: dict[str, Any]) -> str:
    def row(p: dict[str, Any], kind: str, test: str | None = None) -> list[str]:
        dom = p.get("dominated_by_front")
        return [
            kind,
            p["label"],
            f"{p['macs'] / 1e6:.2f}",
            f"{p['latency_ms']:.3f}",
            test or f"{p['test']:.2f}",
            "" if dom is None else ("yes" if dom else "**no**"),
        ]

    mb = result["mobilenet"]
    rows = [row(p, "front") for p in result["front"]]
    rows += [row(p, "hand-scaled") for p in result["uniform"]]
    rows.append(row(mb, "outside", fmt_mean_std([s["test"] for s in mb["test_runs"]])))
    table = md_table(
        ["set", "net", "MMACs", "latency ms", "test top-1 %", "dominated by front"], rows, "llrrrl"
    )
    beaten = [p["label"] for p in [*result["uniform"], mb] if not p["dominated_by_front"]]
    verdict = (
        "**Target met**: the front dominates every hand-scaled arch and MobileNetV3-Small."
        if not beaten
        else f"**Target missed** for {', '.join(beaten)}: no front point is both as fast and as "
        "accurate. What would close it: a better-trained supernet (its front is only as good "
        "as its subnets) and a less noisy accuracy predictor (more, and more precisely "
        "measured, subnets in its dataset), so the search does not trade real accuracy for "
        "predicted."
    )
    b = result["budget"]
    capped = CAPPED if mb.get("capped") else ""
    return f"""## Pareto front vs a hand-scaled family and MobileNetV3-Small

`{result["command"]}` — supernet `{result["config"]}` (`{result["run_dir"]}`), NSGA-II front of
{result["front_size"]} archs (predicted accuracy vs this machine's {result["backend"]} latency
table), {len(result["front"])} spread along it; every network measured: test top-1 after BN
recalibration, end-to-end latency ({result["backend"]}, batch 1, 1 thread, median). Hand-scaled
family: every network choice of the same supernet scaled together, at each resolution.
MobileNetV3-Small (torchvision, stride-1 stem, {mb["params"]:,} parameters, {mb["resolution"]} px)
trained from scratch with the supernet's budget ({b["gradient_images"]:,} gradient-images =
{mb["epochs"]:.2f} epochs, lr {mb["lr"]:g}), mean ± standard deviation over
{result["seeds"]} seed(s){capped}.
Plot: [pareto.png](pareto.png).

{table}

{verdict}

{machine_line(result["machine"])}
"""
