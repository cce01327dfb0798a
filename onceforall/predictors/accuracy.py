"""Accuracy predictor: a subnet's holdout accuracy in microseconds instead of seconds.

The paper's MLP on ``space.encode(arch)`` (3 hidden ReLU layers) predicting top-1 accuracy in
percent, fit on an accuracy dataset (:mod:`onceforall.predictors.accuracy_dataset`) and saved in
the run directory as ``accuracy_predictor.safetensors`` (weights) + ``accuracy_predictor.json``
(encoding size, search space, target normalisation, held-out metrics, provenance). Never pickled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.data import DataBundle
from onceforall.predictors.accuracy_dataset import _dist, build_accuracy_dataset
from onceforall.supernets import Supernet
from onceforall.training.checkpoint import atomic_write, save_weights

__all__ = [
    "PREDICTOR_META",
    "PREDICTOR_WEIGHTS",
    "AccuracyPredictor",
    "ensure_predictor",
    "fit_accuracy_predictor",
]

PREDICTOR_WEIGHTS = "accuracy_predictor.safetensors"
PREDICTOR_META = "accuracy_predictor.json"


# ----------------------------------------------------------------------------- the predictor


def _mlp(d_in: int, hidden: Sequence[int], seed: int) -> nn.Sequential:
    """Linear-ReLU stack initialised like ``nn.Linear`` but from its own generator (the global
    RNG is neither used nor advanced)."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for d_out in (*hidden, 1):
        lin = nn.utils.skip_init(nn.Linear, d_in, d_out)
        nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=g)
        nn.init.uniform_(lin.bias, -1 / math.sqrt(d_in), 1 / math.sqrt(d_in), generator=g)
        layers += [lin, nn.ReLU()]
        d_in = d_out
    return nn.Sequential(*layers[:-1])


@dataclass
class AccuracyPredictor:
    """MLP from ``space.encode(arch)`` to holdout top-1 accuracy (percent).

    Targets are standardised internally (``target_mean``, ``target_std``). Build one with
    :func:`fit_accuracy_predictor`, or :meth:`load` a saved one.

    Args:
        space: the search space whose encoding is the input.
        hidden: hidden layer widths. The paper uses (400, 400, 400); 256 fits as well here
            (5-fold CV on the quick Fashion-MNIST run: RMSE 0.342 vs 0.346 pp) at about half
            the cost per prediction (the MLP part of 10^4 predictions: 53 vs 108 ms on one core).
        seed: initialisation and mini-batch order.
    """

    space: SearchSpace
    hidden: tuple[int, ...] = (256, 256, 256)
    seed: int = 0
    target_mean: float = 0.0
    target_std: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # provenance: dataset settings, fit options
    # Holdout accuracies measured for the accuracy dataset's archs (set by ensure_predictor; not
    # saved with the predictor: the dataset file holds them).
    measured: dict[ArchConfig, float] = field(default_factory=dict, repr=False)
    # (the MLP's parameters and their version counters, their float64 copies): see predict.
    _weights64: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.hidden or min(self.hidden) <= 0:
            raise ValueError(f"hidden={self.hidden} must be one or more positive widths")
        self.mlp = _mlp(self.space.encoding_size, self.hidden, self.seed).eval()

    def encode(self, archs: Sequence[ArchConfig | str]) -> torch.Tensor:
        """``(len(archs), space.encoding_size)`` float32, equal to ``space.encode_batch``."""
        return self.space.encode_batch(archs)

    def fit(
        self,
        archs: Sequence[ArchConfig],
        accuracies: Sequence[float] | np.ndarray,
        *,
        epochs: int = 50,
        batch_size: int = 128,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
    ) -> AccuracyPredictor:
        """Train on all of ``archs``: AdamW, cosine learning rate, MSE on standardised targets.
        Deterministic for a given ``seed`` (and thread count)."""
        y = torch.as_tensor(np.asarray(accuracies, dtype=np.float64), dtype=torch.float32)
        if y.ndim != 1 or len(y) != len(archs) or len(y) < 2:
            raise ValueError(
                f"need one accuracy per arch and at least 2 archs, got {len(archs)} archs and "
                f"accuracies of shape {tuple(y.shape)}"
            )
        if not torch.isfinite(y).all():
            raise ValueError("accuracies contain NaN or inf")
        x = self.encode(archs)
        self.target_mean, self.target_std = float(y.mean()), float(y.std()) or 1.0
        t = (y - self.target_mean) / self.target_std
        self.mlp = _mlp(self.space.encoding_size, self.hidden, self.seed)
        g = torch.Generator().manual_seed(self.seed + 1)
        opt = torch.optim.AdamW(self.mlp.parameters(), lr=lr, weight_decay=weight_decay)
        steps = epochs * math.ceil(len(y) / batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
        )
        self.mlp.train()
        # Mini-batch matmuls this small gain nothing from intra-op threads, and on a busy machine
        # the threads' synchronisation made a fit 5-100x slower (measured 0.1 s vs 0.7-10 s).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for _ in range(epochs):
                for idx in torch.randperm(len(y), generator=g).split(batch_size):
                    loss = nn.functional.mse_loss(self.mlp(x[idx]).squeeze(1), t[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
        finally:
            torch.set_num_threads(threads)
        self.mlp.eval()
        return self

    @torch.inference_mode()
    def predict_encoded(self, x: torch.Tensor) -> np.ndarray:
        """Predicted accuracy (%) of encoded archs ``x``: ``(N, encoding_size)`` -> ``(N,)``."""
        if x.ndim != 2 or x.shape[1] != self.space.encoding_size:
            raise ValueError(f"x must be (N, {self.space.encoding_size}), got {tuple(x.shape)}")
        # In float64: a float32 product rounds differently for different batch sizes (by about
        # 1e-7 relative), so an arch's prediction would depend on the batch it came in, and a
        # search's scores, its picks' reported accuracy and predict([arch]) would disagree in
        # the last digits (a pick could then seem beaten by itself on a front).
        weights = self._float64_weights()
        out = torch.func.functional_call(self.mlp, weights, (x.double(),))
        return out.squeeze(1).numpy() * self.target_std + self.target_mean

    def _float64_weights(self) -> dict[str, torch.Tensor]:
        """The MLP's weights in float64, converted again only when training or loading changed
        them (their version counters)."""
        params = dict(self.mlp.named_parameters())
        # The parameter objects themselves (fit builds a new MLP) and their versions (an
        # optimizer step or load_state_dict changes them in place).
        state = [(p, p._version) for p in params.values()]
        cached = self._weights64
        if (
            cached is None
            or len(cached[0]) != len(state)
            or any(p is not q or v != w for (p, v), (q, w) in zip(cached[0], state, strict=True))
        ):
            cached = (state, {k: p.detach().double() for k, p in params.items()})
            self._weights64 = cached
        return cached[1]

    def predict(self, archs: Sequence[ArchConfig | str]) -> np.ndarray:
        """Predicted accuracy (%) of each arch: shape ``(len(archs),)`` float64.

        Raises:
            ValueError: for an arch outside :attr:`space`.
        """
        return self.predict_encoded(self.encode(archs))

    def accuracy(self, archs: Sequence[ArchConfig | str]) -> np.ndarray:
        """What the searches maximize: the measured holdout accuracy (%) for an arch of
        :attr:`measured`, the prediction for any other.

        A measurement is the better estimate, and on a small supernet it can matter: an MLP fit
        on a few hundred subnets smooths over archs that training favours (the sandwich rule
        trains the largest and smallest subnets on every step, so they sit well above their
        neighbours), and would otherwise steer the search past a measured arch that beats its
        pick.
        """
        archs = [self.space.validate(a) if isinstance(a, str) else a for a in archs]
        out = self.predict(archs)
        if self.measured:
            for i, arch in enumerate(archs):
                value = self.measured.get(arch)
                if value is not None:
                    out[i] = value
        return out

    def best_measured(self) -> list[ArchConfig]:
        """The measured archs, most accurate first (seeds for a search's first population)."""
        return sorted(self.measured, key=self.measured.__getitem__, reverse=True)

    def score(self, archs: Sequence[ArchConfig], accuracies: Sequence[float]) -> dict[str, float]:
        """RMSE (percentage points) and Kendall tau of the predictions against ``accuracies``."""
        from scipy.stats import kendalltau

        pred, y = self.predict(archs), np.asarray(accuracies, dtype=np.float64)
        tau = float(kendalltau(pred, y).statistic) if len(y) > 1 else float("nan")
        return {"rmse": float(np.sqrt(np.mean((pred - y) ** 2))), "kendall_tau": tau}

    # ------------------------------------------------------------------ files
    def save(self, run_dir: str | Path) -> Path:
        """Write ``accuracy_predictor.safetensors`` and ``.json`` (last: it marks a whole save)
        into ``run_dir``; returns the JSON path."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_weights(self.mlp, run_dir / PREDICTOR_WEIGHTS)
        meta = {
            "format": 1,
            "encoding_size": self.space.encoding_size,
            "space": {
                k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.space).items()
            },
            "hidden": list(self.hidden),
            "seed": self.seed,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "metrics": self.metrics,
            "info": self.info,
        }
        return atomic_write(run_dir / PREDICTOR_META, json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, run_dir: str | Path, space: SearchSpace) -> AccuracyPredictor:
        """Load a predictor saved by :meth:`save` for archs of ``space``.

        Raises:
            FileNotFoundError: no predictor in ``run_dir``.
            ValueError: it was fit for another space (the encoding would be meaningless).
        """
        from safetensors.torch import load_file

        run_dir = Path(run_dir)
        meta_path, weights = run_dir / PREDICTOR_META, run_dir / PREDICTOR_WEIGHTS
        if not meta_path.is_file() or not weights.is_file():
            raise FileNotFoundError(
                f"no accuracy predictor in {run_dir} ({PREDICTOR_META} + {PREDICTOR_WEIGHTS}); "
                "build one with onceforall.predictors.ensure_predictor (`onceforall search` does)"
            )
        meta = json.loads(meta_path.read_text())
        saved_space = SearchSpace(**meta["space"])
        if meta["encoding_size"] != space.encoding_size or saved_space != space:
            raise ValueError(
                f"{meta_path} was fit for archs encoded as {meta['encoding_size']} features "
                f"({saved_space.describe()}) but this supernet's space encodes them as "
                f"{space.encoding_size} ({space.describe()}). It belongs to another supernet or "
                f"space: delete {PREDICTOR_META} and {PREDICTOR_WEIGHTS} from {run_dir} and "
                "rebuild it with ensure_predictor (or `onceforall search`)."
            )
        pred = cls(
            space,
            tuple(meta["hidden"]),
            int(meta["seed"]),
            float(meta["target_mean"]),
            float(meta["target_std"]),
            meta["metrics"],
            meta["info"],
        )
        pred.mlp.load_state_dict(load_file(str(weights)), strict=True)
        return pred


def fit_accuracy_predictor(
    space: SearchSpace,
    archs: Sequence[ArchConfig],
    accuracies: Sequence[float] | np.ndarray,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    hidden: Sequence[int] = (256, 256, 256),
    **fit_options: Any,
) -> AccuracyPredictor:
    """Fit a predictor on a seeded ``1 - test_fraction`` of the archs and score it on the rest.

    Args:
        space: the search space.
        archs, accuracies: the accuracy dataset (``AccuracyDataset.archs``/``.accuracies``).
        test_fraction: held-out share used for ``metrics`` (0: fit on everything, no metrics).
        seed: split, initialisation and batch order.
        hidden: hidden widths.
        **fit_options: ``epochs``, ``batch_size``, ``lr``, ``weight_decay`` of
            :meth:`AccuracyPredictor.fit`.

    Returns:
        The predictor; ``metrics`` holds ``rmse`` (pp) and ``kendall_tau`` on the held-out archs,
        ``n_train``, ``n_test`` and ``fit_seconds``.
    """
    y = np.asarray(accuracies, dtype=np.float64)
    if len(y) != len(archs):
        raise ValueError(f"{len(archs)} archs but {len(y)} accuracies: give one per arch")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction} must be in [0, 1)")
    n_test = max(2, round(len(y) * test_fraction)) if test_fraction else 0
    if len(y) - n_test < 2:
        raise ValueError(
            f"{len(y)} archs are too few to fit and test on; build a larger accuracy dataset "
            "(onceforall search --samples N: hundreds make a useful predictor)"
        )
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).tolist()
    test, train = perm[:n_test], perm[n_test:]
    pred = AccuracyPredictor(space, tuple(hidden), seed)
    start = time.perf_counter()
    pred.fit([archs[i] for i in train], y[train], **fit_options)
    fit_seconds = time.perf_counter() - start
    metrics = pred.score([archs[i] for i in test], y[test]) if n_test else {}
    pred.metrics = {**metrics, "n_train": len(train), "n_test": n_test, "fit_seconds": fit_seconds}
    pred.info = {"test_fraction": test_fraction, "fit_options": fit_options}
    return pred


def ensure_predictor(
    run_dir: str | Path,
    net: Supernet,
    data: DataBundle,
    *,
    n: int = 1000,
    seed: int = 0,
    calibration_images: int = 2000,
    eval_images: int | None = None,
    batch_size: int = 250,
    test_fraction: float = 0.2,
    rank: int | None = None,
    world: int | None = None,
    progress: bool = True,
) -> AccuracyPredictor:
    """The run's accuracy predictor: measure the missing part of the accuracy dataset, then load
    the saved predictor if it was fit on exactly this dataset, else fit and save one. Either way
    it carries the dataset's measurements (:attr:`AccuracyPredictor.measured`). A predictor
    imported into the run (``onceforall import-reference --predictor``) is used as it is, with
    no dataset: delete its files to build one of the run's own.

    Arguments are those of :func:`build_accuracy_dataset` and :func:`fit_accuracy_predictor`.
    Under torchrun every rank evaluates its share; rank 0 saves.

    Raises:
        ValueError: the cached dataset was measured with other settings (see the message).
    """
    run_dir = Path(run_dir)
    try:
        saved = AccuracyPredictor.load(run_dir, net.space)
    except (FileNotFoundError, ValueError):
        saved = None
    if saved is not None and saved.info.get("imported"):
        # Fit elsewhere (onceforall.reference.predictor_from_reference): no dataset to measure.
        return saved
    ds = build_accuracy_dataset(
        net,
        data,
        run_dir,
        n,
        seed=seed,
        calibration_images=calibration_images,
        eval_images=eval_images,
        batch_size=batch_size,
        rank=rank,
        world=world,
        progress=progress,
    )
    if not ds.complete:  # simulated ranks without a process group: another rank is missing
        raise ValueError(f"{len(ds)} of {n} archs measured; run the other ranks, then retry")
    wanted = {"dataset": ds.settings, "n": len(ds), "test_fraction": test_fraction}
    if saved is not None and {k: saved.info.get(k) for k in wanted} == wanted:
        saved.measured = dict(zip(ds.archs, ds.accuracies.tolist(), strict=True))
        return saved
    # Missing, or fit for something else: the dataset is current, so refit over it.
    pred = fit_accuracy_predictor(
        net.space, ds.archs, ds.accuracies, test_fraction=test_fraction, seed=seed
    )
    pred.info.update(wanted)
    if (rank if rank is not None else _dist()[0]) == 0:
        pred.save(run_dir)
    pred.measured = dict(zip(ds.archs, ds.accuracies.tolist(), strict=True))
    return pred
