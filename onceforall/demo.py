"""``onceforall demo``: train once on Fashion-MNIST, deploy three specialized models, report.

The whole promise in one command, on a 2-core CPU with no GPU and no internet: progressive
shrinking trains one supernet, an accuracy predictor and this machine's ONNX Runtime latency table
are built, the Pareto front is searched, three latency budgets (tight, middle, loose, chosen from
the measured range) each get the most accurate subnet that fits, and those are exported to ONNX
with model cards and evaluated on the test set through onnxruntime alone. Re-running is cheap: a
finished run is reused, an interrupted one resumed, and every built artifact is kept.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onceforall.config import load_config
from onceforall.data import resize_batch
from onceforall.export import export_subnet
from onceforall.files import check_writable
from onceforall.predictors.latency_validation import round_validation
from onceforall.run import Run, train_or_reuse
from onceforall.specialize import Specializer
from onceforall.training.bn import batches
from onceforall.training.checkpoint import atomic_write, is_run_dir

__all__ = ["PRESETS", "DemoSettings", "preset_config", "run_demo"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class DemoSettings:
    """What a demo preset trains and how much it measures."""

    config: str  # preset file in configs/
    accuracy_samples: int  # subnets evaluated for the accuracy predictor
    latency_warmup: int
    latency_repeats: int
    front_points: int  # archs of the front measured for the plot
    # The accuracy dataset's measurement: fewer images than the library's defaults (which use
    # the whole holdout) keep the demo's predictor stage to minutes, at the price of noisier
    # labels (about 0.8 pp at 2,000 images), which the search tolerates.
    calibration_images: int = 500
    eval_images: int = 2000
    # Random subnets the latency table's build times in the same rounds as its layers: the
    # table's own error on this machine, reported beside the picks.
    latency_validate: int = 20

    def specializer(self, run: Run, backend: str, *, progress: bool = True) -> Specializer:
        """The specializer the demo uses on ``run``: it finds the accuracy predictor and latency
        table the demo built there and reuses them (other settings would build new ones)."""
        return Specializer(
            run,
            backend,
            accuracy_samples=self.accuracy_samples,
            progress=progress,
            latency_warmup=self.latency_warmup,
            latency_repeats=self.latency_repeats,
            latency_validate=self.latency_validate,
            accuracy_settings={
                "calibration_images": self.calibration_images,
                "eval_images": self.eval_images,
            },
        )


PRESETS = {
    "quick": DemoSettings("fashion_mnist_quick.yaml", 400, 10, 50, 8),
    "smoke": DemoSettings("smoke.yaml", 60, 3, 10, 5, latency_validate=4),
}
BUDGETS = (("tight", 0.15), ("middle", 0.5), ("loose", 0.85))  # fractions of the latency range


def preset_config(preset: str, family: str | None = None) -> tuple[Path, list[str]]:
    """The config file a demo preset trains for ``family`` (the preset's own by default), and the
    overrides that set the family.

    A schedule names choice values (expand ratio 6, say), so not every family can run every
    preset's. A preset therefore has variants: configs whose names hold the preset config's name
    parts in order (``fashion_mnist_resnet_quick.yaml`` for ``fashion_mnist_quick.yaml``). The
    first whose schedule fits the family's space trains, preferring the variant made for the family.

    Raises:
        ValueError: when no variant's schedule fits, naming the reasons.
    """
    path = CONFIG_DIR / PRESETS[preset].config
    if family is None:
        return path, []
    import torch

    from onceforall.supernets import create_supernet
    from onceforall.training.schedule import resolve_phases

    parts = path.stem.split("_")

    def is_variant(p: Path) -> bool:
        it = iter(p.stem.split("_"))
        return all(part in it for part in parts)  # a subsequence, in order

    def fit(p: Path) -> str:
        config = load_config(p, overrides)
        try:  # a model option the family lacks (kernel sizes for OFA-ResNet) or a phase's choice
            with torch.device("meta"):  # only the space is needed: no weights
                net = create_supernet(family, num_classes=10, **config.model.family_kwargs())
            resolve_phases(config, net.space)
        except ValueError as exc:
            return f"{p.name}: {exc}"
        return ""

    overrides = [f"model.family={family}"]
    variants = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p != path and is_variant(p))
    own = [p for p in variants if load_config(p).model.family == family]
    errors = []
    for candidate in [*own, path, *(p for p in variants if p not in own)]:
        error = fit(candidate)
        if not error:
            return candidate, overrides
        errors.append(error)
    raise ValueError(f"no schedule of preset {preset!r} fits {family}: " + "; ".join(errors))


def _ort_test_accuracy(onnx_path: Path, run: Run, resolution: int) -> float:
    """Top-1 (%) of an exported model on the test split, run by onnxruntime alone: the images go
    through the card's preprocessing (resize to the resolution; normalized by the dataset)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in batches(run.data.test, 500):
        x = resize_batch(x, resolution).numpy().astype(np.float32)
        (logits,) = session.run(None, {"input": x})
        correct += int((logits.argmax(1) == y.numpy()).sum())
        total += len(y)
    return 100.0 * correct / total


# Written first into a demo's directory: the files in a directory holding it (or a finished
# demo's results.json) are the demo's own, to reuse or replace on a re-run.
_MARKER = ".onceforall-demo"


def _is_demo_dir(out: Path) -> bool:
    """The mark, a finished demo's results.json, or only the run/ an interrupted demo of a
    version without the mark left (its training continues)."""
    if (out / _MARKER).is_file():
        return True
    try:
        results = json.loads((out / "results.json").read_text())
        if isinstance(results, dict) and {"preset", "picks", "commands"} <= results.keys():
            return True
    except (OSError, ValueError):
        pass
    return [p.name for p in out.iterdir()] == ["run"] and is_run_dir(out / "run")


def _claim(out: Path) -> None:
    """Make ``out`` the demo's directory, refusing one that holds anything else: the demo
    replaces its report, plots and models on every run, and must not replace a user's files."""
    check_writable(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not _is_demo_dir(out):
        raise FileExistsError(
            f"--out {out} is not empty and is not a directory `onceforall demo` wrote (no "
            f"{_MARKER}, no demo's results.json, no run/ of onceforall train): the demo would "
            "replace files there; choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).touch()


def run_demo(
    out: str | Path = "runs/demo",
    preset: str = "quick",
    *,
    family: str | None = None,
    backend: str = "onnxruntime",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary (also ``out/results.json``).

    Writes ``out/run/`` (the trained supernet, predictor, latency table), ``out/models/<budget>/``
    (``model.onnx`` + ``card.json``), ``out/pareto.png``, ``out/training.png``, ``out/summary.md``
    and ``out/report.html``. ``family`` (a name from ``list_supernets()``) replaces the preset's
    ``model.family``, with the preset's schedule where it fits the family (see
    :func:`preset_config`).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} unknown; choose from {', '.join(PRESETS)}")
    settings = PRESETS[preset]
    out = Path(out)
    config_path, overrides = preset_config(preset, family)
    _claim(out)
    timings: dict[str, float] = {}

    t = time.monotonic()
    run, how = train_or_reuse(load_config(config_path, overrides), out / "run", progress=progress)
    print(how)
    timings["train"] = time.monotonic() - t

    spec = settings.specializer(run, backend, progress=progress)
    t = time.monotonic()
    spec.predictor  # noqa: B018 - build (or load) now, to time it
    timings["accuracy_predictor"] = time.monotonic() - t
    t = time.monotonic()
    table = spec.latency_table
    timings["latency_table"] = time.monotonic() - t
    check = round_validation(table)  # None for a table reused from before it was recorded

    # ---- the front, and three budgets across the range the table predicts
    t = time.monotonic()
    lo = float(table.predict(run.net.space.smallest()))
    hi = float(table.predict(run.net.space.largest()))
    chosen = []
    for label, frac in BUDGETS:
        budget = lo + frac * (hi - lo)
        # A tighter budget's pick fits every looser one: given as a seed, the looser budget's
        # pick is never less accurate than it (an evolution on its own may miss it).
        earlier = [c.arch for _, _, c in chosen]
        best = spec.search(spec.constraints(latency_ms=budget), top_k=1, seed=0, seeds=earlier)[0]
        chosen.append((label, budget, best))
    # The picks seed the front, so the plotted front is never behind a budget's answer.
    front = spec.pareto(seed=0, seeds=[c.arch for _, _, c in chosen])
    timings["search"] = time.monotonic() - t

    t = time.monotonic()
    spread = front.spread(settings.front_points)  # fewer when the front is shorter
    # The front's points and the picks in one set of interleaved rounds: every plotted time
    # compares with every other under one drift, and the table's fitting subnets (the drift's
    # reference) are exported and timed once rather than once per set.
    measured = spec.measure(
        [c.arch for c in spread] + [c.arch for _, _, c in chosen],
        [f"front {i + 1}" for i in range(len(spread))] + [label for label, _, _ in chosen],
    )
    front_picks, picks = measured[: len(spread)], measured[len(spread) :]
    # The machine's speed while the picks were timed against the table's build: the latency
    # predictions above are off by about this factor when it moved (load, clock, a busy host).
    drift = picks[0].latency_drift if picks else None
    timings["measure"] = time.monotonic() - t

    # ---- export each pick to ONNX with its card, evaluate through onnxruntime alone
    t = time.monotonic()
    rows = []
    for (label, budget, _), pick in zip(chosen, picks, strict=True):
        model_dir = out / "models" / label
        card = export_subnet(
            run, pick.arch, "onnx", model_dir, backend=backend, force=True, threads=spec.threads
        )
        ort_acc = _ort_test_accuracy(model_dir / card["file"], run, card["resolution"])
        rows.append(
            {
                **pick.to_dict(),
                "budget_ms": budget,
                "test_accuracy": ort_acc,
                "torch_test_accuracy": card["test_accuracy"],
                "card_latency_ms": card["latency_ms"],
                "file": str(model_dir / card["file"]),
            }
        )
    timings["export_and_test"] = time.monotonic() - t

    from onceforall.report import plot_pareto, plot_training, write_report

    plot_pareto(front, front_picks, out / "pareto.png", objective="latency_ms", highlight=picks)
    plot_training(run.path, out / "training.png")
    summary = {
        "preset": preset,
        "family": run.config.model.family,
        "backend": backend,
        "run_dir": str(run.path),
        "latency_range_ms": [lo, hi],
        "latency_drift": drift,
        "latency_check": None
        if check is None
        else {"n": len(check.rows), "mape": check.mape, "spearman": check.spearman},
        "picks": rows,
        "front": [c.to_dict() for c in front.front],
        "front_measured": [p.to_dict() for p in front_picks],
        "timings_s": timings,
        "commands": _commands(run, config_path, overrides, backend, rows),
    }
    atomic_write(out / "results.json", (json.dumps(summary, indent=1) + "\n").encode())
    write_report(out, summary)
    return summary


def _commands(
    run: Run, config: Path, overrides: list[str], backend: str, rows: list[dict]
) -> list[str]:
    q = shlex.quote
    cmds = [
        " ".join(["onceforall train", q(str(config)), "--out", q(str(run.path)), *overrides]),
        f"onceforall latency build {q(str(run.path))} --backend {backend}",
        f"onceforall search {q(str(run.path))} --pareto --backend {backend}",
    ]
    for r in rows:
        cmds.append(
            f"onceforall search {q(str(run.path))} --backend {backend} "
            f"--latency-ms {r['budget_ms']:.4f} --top 1"
        )
        model_dir = Path(r["file"]).parent
        cmds.append(
            f"onceforall export {q(str(run.path))} --arch {q(r['arch'])} --format onnx "
            f"--out {q(str(model_dir))} --backend {backend}"
        )
    return cmds
