"""A run directory made from a reference checkpoint (``onceforall import-reference``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onceforall.config import TrainConfig
from onceforall.data import data_shape
from onceforall.reference.predictor import predictor_from_reference
from onceforall.reference.weights import (
    REFERENCE_FAMILIES,
    detect_reference_family,
    from_reference,
    load_reference_state_dict,
)
from onceforall.supernets import Supernet

__all__ = ["import_reference_run"]


def import_reference_run(
    config: TrainConfig,
    checkpoint: str | Path,
    run_dir: str | Path,
    *,
    predictor: str | Path | None = None,
    image_sizes: Sequence[int] | None = None,
    force: bool = False,
) -> tuple[Supernet, Path]:
    """Write a run directory holding a reference checkpoint's supernet, as ``onceforall train``
    would have left it: ``config.yaml`` (``config`` with the checkpoint's width multiplier in
    place of its own) and ``supernet.safetensors``. ``onceforall search``, ``export``,
    ``finetune`` and ``latency`` then work on it, with ``config.data`` (the data the supernet
    was trained on, for BN recalibration and accuracy: ImageNet for the released supernets) and
    ``config.model``'s choice sets.

    With ``predictor`` (the reference's accuracy predictor for this supernet, see
    :func:`predictor_from_reference`; ``image_sizes`` its encoder's), the run also holds it as
    its accuracy predictor, and search uses it instead of evaluating hundreds of subnets.

    Returns:
        The supernet and its weights file.

    Raises:
        ValueError: the checkpoint is not a reference supernet, not of ``config.model``'s family,
            or its classes or input channels are not those of ``config.data`` (where they can be
            told without loading it: a built-in dataset, or an ImageFolder's class folders).
        FileExistsError: ``run_dir`` is not empty and ``force`` is not set.
    """
    from dataclasses import replace

    from onceforall.config import save_config
    from onceforall.training.checkpoint import (
        IMPORT_HEADER,
        SUPERNET_FILE,
        model_record,
        prepare_run_dir,
        save_weights,
    )

    sd = load_reference_state_dict(checkpoint)
    family = detect_reference_family(sd)
    model = config.model
    if model.family != family:
        raise ValueError(
            f"{checkpoint} holds a reference {REFERENCE_FAMILIES[family]} ({family} here) but the "
            f"config's model.family is {model.family!r}: use configs/imagenet_{family}.yaml or "
            f"pass model.family={family}"
        )
    kw = {k: v for k, v in model.family_kwargs().items() if k != "width_mult"}
    net = from_reference(sd, family=family, **kw)
    _check_data(config, net.num_classes, net.in_channels)
    acc = None
    if predictor is not None:
        acc = predictor_from_reference(predictor, net.space, image_sizes)
        acc.info["source"] = str(Path(predictor).resolve())
    width = net.config.get("width_mult")
    if width is not None:  # the checkpoint's, whatever the config (a preset's default) said
        config = replace(config, model=replace(model, width_mult=width))
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, config, resume=False, force=force)
    header = (
        f"{IMPORT_HEADER} from {Path(checkpoint).resolve()}\n"
        "# (the reference implementation's supernet; no training ran here)\n"
    )
    save_config(config, run_dir / "config.yaml", header)
    meta = {
        "num_classes": net.num_classes,
        "in_channels": net.in_channels,
        "family": family,
        "model": model_record(config),
        "source": str(Path(checkpoint).resolve()),
    }
    if acc is not None:
        acc.save(run_dir)
    return net, save_weights(net, run_dir / SUPERNET_FILE, meta)


def _check_data(config: TrainConfig, num_classes: int, in_channels: int) -> None:
    """Refuse data whose classes or channels cannot be the checkpoint's, where that is known
    without loading it. (An ImageFolder root that is not there yet is left for search to report:
    a run may be imported on one machine and specialized on another.)"""
    data = config.data
    if (shape := data_shape(data)) is None:
        return
    classes, channels = shape
    where = f"data.dataset={data.dataset}"
    if data.dataset == "imagefolder":
        where = f"{Path(data.root).expanduser() / 'train'} ({classes} class folders)"
    if (classes, channels) != (num_classes, in_channels):
        raise ValueError(
            f"the checkpoint classifies {num_classes} classes of {in_channels}-channel images but "
            f"{where} has {classes} of {channels}: give the data it was trained on (ImageNet "
            "for the reference's released supernets: data.dataset=imagefolder data.root=DIR)"
        )
