"""The reference implementation's supernets (mit-han-lab/once-for-all, the ``ofa`` package) in
onceforall: its trained weights loaded into our supernets, and its arch dicts translated.

The reference releases ImageNet supernets trained with progressive shrinking on many GPUs
(``ofa_mbv3_d234_e346_k357_w1.0`` and ``_w1.2``, ``ofa_proxyless_d234_e346_k357_w1.3``,
``ofa_resnet50``), saved by ``torch.save`` as ``{"state_dict": ...}``. Our ``mbv3``,
``proxyless`` and ``resnet50d`` families are its ``OFAMobileNetV3``, ``OFAProxylessNASNets`` and
``OFAResNets`` layer for layer, so :func:`from_reference` maps one onto the other by name and every
subnet computes what the reference's computes (tests/test_reference.py checks this against the
``ofa`` package itself). Search, latency tables, export and fine-tuning then work on those
weights: ``onceforall import-reference`` writes a run directory for them.

One departure: the reference's ProxylessNAS supernet has an elastic kernel size and expand ratio
in its last block, which ours fixes at the largest (see :mod:`onceforall.supernets.proxyless`);
that block's kernel transforms are dropped on import, and a reference arch dict must give it the
largest kernel and expand ratio.

Checkpoints are read with ``torch.load(weights_only=True)`` (plain tensors and containers only:
nothing is unpickled) or as safetensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from onceforall.arch import ArchConfig, SearchSpace
from onceforall.config import TrainConfig
from onceforall.predictors.accuracy import AccuracyPredictor
from onceforall.supernets import Supernet, create_supernet

__all__ = [
    "REFERENCE_FAMILIES",
    "arch_from_reference",
    "arch_to_reference",
    "detect_reference_family",
    "from_reference",
    "import_reference_run",
    "load_reference_state_dict",
    "predictor_from_reference",
    "reference_to_ours",
]

# Our family -> the reference's class.
REFERENCE_FAMILIES = {
    "mbv3": "OFAMobileNetV3",
    "proxyless": "OFAProxylessNASNets",
    "resnet50d": "OFAResNets",
}

# Reference module prefix -> ours, outside the blocks. The remainder of a key (after its
# reference wrappers are dropped: see _unwrap) is the same in both.
_HEADS: dict[str, tuple[tuple[str, str], ...]] = {
    "mbv3": (
        ("first_conv.conv", "stem.0"),
        ("first_conv.bn", "stem.1"),
        ("final_expand_layer.conv", "final_expand.0"),
        ("final_expand_layer.bn", "final_expand.1"),
        ("feature_mix_layer.conv", "feature_mix.0"),
        ("classifier.linear", "classifier"),
    ),
    "proxyless": (
        ("first_conv.conv", "stem.0"),
        ("first_conv.bn", "stem.1"),
        ("feature_mix_layer.conv", "final_expand.0"),
        ("feature_mix_layer.bn", "final_expand.1"),
        ("classifier.linear", "classifier"),
    ),
    "resnet50d": (
        ("input_stem.0.conv", "stem_conv0"),
        ("input_stem.0.bn", "stem_bn0"),
        ("input_stem.1.conv.conv", "stem_conv1"),  # a residual block around a conv-BN-ReLU
        ("input_stem.1.conv.bn", "stem_bn1"),
        ("input_stem.2.conv", "stem_conv2"),
        ("input_stem.2.bn", "stem_bn2"),
        ("classifier.linear", "classifier"),
    ),
}

# Inside a block: reference layer -> ours (MBConv blocks, then ResNet bottlenecks).
_BLOCK_LAYERS = (
    ("conv.inverted_bottleneck.conv", "expand_conv"),
    ("conv.inverted_bottleneck.bn", "expand_bn"),
    ("conv.depth_conv.conv", "depthwise"),
    ("conv.depth_conv.bn", "depthwise_bn"),
    ("conv.depth_conv.se.fc.reduce", "se.reduce_"),
    ("conv.depth_conv.se.fc.expand", "se.expand_"),
    ("conv.point_linear.conv", "project"),
    ("conv.point_linear.bn", "project_bn"),
    ("conv1.conv", "reduce"),
    ("conv1.bn", "reduce_bn"),
    ("conv2.conv", "conv"),
    ("conv2.bn", "conv_bn"),
    ("conv3.conv", "project"),
    ("conv3.bn", "project_bn"),
    ("downsample.conv", "shortcut"),
    ("downsample.bn", "shortcut_bn"),
)

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
_OUR_BLOCK = re.compile(r"^(first_block|last_block|stages\.\d+\.\d+)\.")
_MATRIX = re.compile(r"^(\d+)to(\d+)_matrix$")
_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def load_reference_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A reference checkpoint's tensors: a ``torch.save``d ``{"state_dict": ...}`` or bare state
    dict (read with ``weights_only=True``), or a safetensors file. A ``module.`` prefix (a
    checkpoint saved from DistributedDataParallel) is dropped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds something other than named tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for objects, RuntimeError for non-torch files
            raise ValueError(
                f"{path} is not a checkpoint of plain tensors (read with weights_only=True, never "
                f"unpickled): {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path} holds no state dict (expected {{'state_dict': {{name: tensor}}}}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries that are not named tensors: {bad[:5]}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def detect_reference_family(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Our family whose layout a reference state dict has.

    Raises:
        ValueError: the keys are none of the reference's supernets'.
    """
    if "input_stem.0.conv.conv.weight" in state_dict:
        return "resnet50d"
    if "final_expand_layer.conv.weight" in state_dict:
        return "mbv3"
    if "feature_mix_layer.bn.weight" in state_dict and "first_conv.conv.weight" in state_dict:
        return "proxyless"
    some = ", ".join(list(state_dict)[:3])
    raise ValueError(
        f"not a reference Once-for-All supernet (keys {some}, ...): expected the state dict of "
        f"one of {', '.join(REFERENCE_FAMILIES.values())} (the ofa package's ImageNet supernets)"
    )


def _unwrap(rest: str) -> str:
    """A layer's key below its reference prefix, without the dynamic layers' extra wrapper: its
    ``conv.weight`` / ``bn.weight`` / ``linear.weight`` are ``weight`` here, and a kernel
    transform ``7to5_matrix`` is ``transforms.7to5``."""
    m = _MATRIX.match(rest)
    if m:
        return f"transforms.{m[1]}to{m[2]}"
    head, _, leaf = rest.rpartition(".")
    if head in ("conv", "bn", "linear") and leaf in _LEAVES:
        return leaf
    return rest


def _map_layer(key: str, table: Sequence[tuple[str, str]]) -> str | None:
    for ref, ours in table:
        if key.startswith(ref + "."):
            rest = _unwrap(key[len(ref) + 1 :])
            return ours + rest if ours.endswith("_") else f"{ours}.{rest}"
    return None


def reference_to_ours(
    state_dict: Mapping[str, torch.Tensor], net: Supernet
) -> dict[str, torch.Tensor]:
    """The reference state dict under ``net``'s names (``net`` is a supernet of the same
    family and widths: :func:`from_reference` builds it).

    Raises:
        ValueError: a key with no counterpart, a missing one, or a shape that differs, named.
    """
    family = detect_reference_family(state_dict)
    ours = net.state_dict()
    blocks = list(dict.fromkeys(m[1] for k in ours if (m := _OUR_BLOCK.match(k))))
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m:
            i = int(m[1])
            inner = _map_layer(m[2], _BLOCK_LAYERS)
            name = f"{blocks[i]}.{inner}" if inner is not None and i < len(blocks) else None
        else:
            name = _map_layer(key, _HEADS[family])
        if name is None:
            unknown.append(key)
        elif name in ours:
            out[name] = value
        elif not (family == "proxyless" and name.startswith("last_block.depthwise.transforms.")):
            unknown.append(key)  # (our ProxylessNAS last block has a fixed kernel: no transforms)
    missing = [k for k in ours if k not in out]
    if unknown or missing:
        raise ValueError(
            f"the checkpoint does not match the {family} supernet built for it: "
            + "; ".join(
                f"{what} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
                for what, keys in (("keys it has no place for", unknown), ("missing", missing))
                if keys
            )
        )
    shapes = [
        f"{k} {tuple(v.shape)} (ours {tuple(ours[k].shape)})"
        for k, v in out.items()
        if v.shape != ours[k].shape
    ]
    if shapes:
        raise ValueError(
            f"shapes differ from the {family} supernet built for the checkpoint (another width "
            f"multiplier, largest expand ratio or number of classes?): {'; '.join(shapes[:4])}"
        )
    return out


# Width multipliers to try when a checkpoint's is not given: the reference's released ones first.
_WIDTHS = (1.0, 1.2, 1.3, 1.1, 1.4, 1.5, 0.75, 0.5)


def from_reference(
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    family: str | None = None,
    width_mult: float | None = None,
    **family_kwargs: Any,
) -> Supernet:
    """Our supernet holding a reference checkpoint's weights (eval mode).

    Args:
        source: a checkpoint file (:func:`load_reference_state_dict`) or its state dict.
        family: ``mbv3``, ``proxyless`` or ``resnet50d``; detected from the keys when omitted.
        width_mult: the checkpoint's width multiplier (``mbv3``, ``proxyless``); found from the
            tensor shapes when omitted.
        **family_kwargs: further ``create_supernet`` options, e.g. ``resolutions``. The kernel
            sizes default to those the checkpoint's transforms imply; the classes and input
            channels are the checkpoint's.

    Raises:
        ValueError: not a reference supernet, another family than ``family``, or no width
            multiplier that fits (the message names what differs).
    """
    sd = source if isinstance(source, Mapping) else load_reference_state_dict(source)
    detected = detect_reference_family(sd)
    if family is not None and family != detected:
        raise ValueError(
            f"the checkpoint is a reference {REFERENCE_FAMILIES[detected]} ({detected} here), "
            f"not {family}: use family {detected!r}"
        )
    classifier = sd["classifier.linear.linear.weight" if detected == "resnet50d" else
                    "classifier.linear.weight"]  # fmt: skip
    stem = sd[_stem_key(detected)]
    kw: dict[str, Any] = {"num_classes": classifier.shape[0], "in_channels": stem.shape[1]}
    if detected != "resnet50d":
        kw["kernel_sizes"] = family_kwargs.pop("kernel_sizes", None) or _kernel_sizes(sd)
    kw.update(family_kwargs)
    widths = [width_mult] if width_mult is not None else list(_WIDTHS)
    if detected == "resnet50d":
        if width_mult is not None:
            kw["width_mult"] = width_mult
        widths = [None]
    error: ValueError | None = None
    for w in widths:
        net = create_supernet(detected, **kw, **({} if w is None else {"width_mult": w}))
        try:
            mapped = reference_to_ours(sd, net)
        except ValueError as exc:
            error = error or exc
            continue
        net.load_state_dict(mapped, strict=True)
        return net.eval()
    assert error is not None
    if width_mult is None and detected != "resnet50d":
        raise ValueError(f"{error} (tried width multipliers {', '.join(map(str, _WIDTHS))})")
    raise error


def _kernel_sizes(sd: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """The kernel sizes a reference MBConv checkpoint's blocks have: the largest from a
    depthwise weight, the others from the transforms (``7to5_matrix``, ``5to3_matrix``)."""
    sizes: set[int] = set()
    for key, value in sd.items():
        m = _MATRIX.match(key.rpartition(".")[2])
        if m:
            sizes.update((int(m[1]), int(m[2])))
        elif key.endswith("depth_conv.conv.conv.weight"):
            sizes.add(value.shape[-1])
    if not sizes:
        raise ValueError("no elastic depthwise layer in the checkpoint: not an OFA MBConv supernet")
    return tuple(sorted(sizes))


# The image sizes of the reference's accuracy predictors (its tutorial's, and train_ofa_net.py's
# elastic resolution): 128 to 224 px in steps of 4.
REFERENCE_IMAGE_SIZES = tuple(range(128, 225, 4))


def predictor_from_reference(
    source: str | Path | Mapping[str, torch.Tensor],
    space: SearchSpace,
    image_sizes: Sequence[int] | None = None,
) -> AccuracyPredictor:
    """The reference's accuracy predictor for an MBConv supernet (its ``AccuracyPredictor``
    state dict, e.g. the tutorial's ``acc_predictor.pth`` for ``ofa_mbv3_d234_e346_k357_w1.2``)
    as our :class:`~onceforall.predictors.AccuracyPredictor` over ``space``: the same MLP, its
    first layer's columns reordered to our encoding (both are one-hot kernel size and expand
    ratio per block slot plus a one-hot resolution, in other orders), its output in percent.
    It predicts what the reference's predicts for every arch of ``space``.

    Args:
        image_sizes: the resolutions of its encoder (``MobileNetArchEncoder.image_size_list``);
            by default 128-224 px in steps of 4 or the space's own, whichever the width of its
            first layer implies.

    Raises:
        ValueError: not a reference accuracy predictor, one for another space (block slots,
            kernel sizes, expand ratios), or ``space`` has a resolution it never saw.
    """
    sd = source if isinstance(source, Mapping) else load_reference_state_dict(source)
    firsts = [k for k in sd if re.fullmatch(r"layers\.\d+\.0\.weight", k)]
    if not firsts or "base_acc" not in sd or space.stem_depths:
        raise ValueError(
            "not a reference accuracy predictor for an MBConv supernet (expected the keys "
            "layers.N.0.weight, layers.N.weight and base_acc of ofa.nas.accuracy_predictor."
            "AccuracyPredictor)"
        )
    n_layers = len(firsts)
    head = sd[f"layers.{n_layers}.weight"]
    nk, ne, slots = len(space.kernel_sizes), len(space.expand_ratios), space.num_slots
    n_dim = sd["layers.0.0.weight"].shape[1]
    n_res = n_dim - slots * (nk + ne)
    if image_sizes is None:
        for candidate in (REFERENCE_IMAGE_SIZES, space.resolutions):
            if len(candidate) == n_res:
                image_sizes = candidate
                break
        else:
            raise ValueError(
                f"the predictor reads {n_dim} features: {slots} block slots x ({nk} kernel sizes "
                f"+ {ne} expand ratios) leave {n_res} for the resolution; pass the image sizes "
                "its encoder was built with (image_size_list)"
            )
    image_sizes = [int(r) for r in image_sizes]
    if len(image_sizes) != n_res:
        raise ValueError(
            f"{len(image_sizes)} image sizes given but the predictor has {n_res} resolution "
            f"features (of {n_dim}): it was built for another space ({slots} block slots, "
            f"kernel sizes {space.kernel_sizes}, expand ratios {space.expand_ratios}?)"
        )
    unseen = [r for r in space.resolutions if r not in image_sizes]
    if unseen:
        raise ValueError(
            f"the predictor never saw resolutions {unseen} (its: {image_sizes}); restrict the "
            "space's resolutions to those (model.resolutions)"
        )
    # Our feature j is the reference's feature cols[j]. Theirs: the resolutions, then every
    # slot's kernel one-hot, then every slot's expand one-hot (choices ascending, as ours).
    cols: list[int] = []
    for i in range(slots):
        cols += [n_res + i * nk + c for c in range(nk)]
        cols += [n_res + slots * nk + i * ne + c for c in range(ne)]
    cols += [image_sizes.index(r) for r in space.resolutions]
    hidden = tuple(int(sd[f"layers.{i}.0.weight"].shape[0]) for i in range(n_layers))
    pred = AccuracyPredictor(
        space, hidden, target_mean=float(sd["base_acc"]) * 100, target_std=100.0
    )
    linears = [m for m in pred.mlp if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears[:-1]):
            w = sd[f"layers.{i}.0.weight"]
            lin.weight.copy_(w[:, cols] if i == 0 else w)
            lin.bias.copy_(sd[f"layers.{i}.0.bias"])
        linears[-1].weight.copy_(head)
        linears[-1].bias.zero_()
    pred.info = {"imported": "reference accuracy predictor", "image_sizes": image_sizes}
    return pred


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
    place of its own) and
    ``supernet.safetensors``. ``onceforall search``, ``export``, ``finetune`` and ``latency``
    then work on it, with ``config.data`` (the data the supernet was trained on, for BN
    recalibration and accuracy: ImageNet for the released supernets) and ``config.model``'s
    choice sets.

    With ``predictor`` (the reference's accuracy predictor for this supernet, see
    :func:`predictor_from_reference`; ``image_sizes`` its encoder's), the run also holds it as
    its accuracy predictor, and search uses it instead of evaluating hundreds of subnets.

    Returns:
        The supernet and its weights file.

    Raises:
        ValueError: the checkpoint is not a reference supernet, or not of ``config.model``'s
            family (the message says which setting to change).
        FileExistsError: ``run_dir`` is not empty and ``force`` is not set.
    """
    from dataclasses import replace

    from onceforall.config import save_config
    from onceforall.training.checkpoint import SUPERNET_FILE, prepare_run_dir, save_weights

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
        f"# imported by `onceforall import-reference` from {Path(checkpoint).resolve()}\n"
        "# (the reference implementation's supernet; no training ran here)\n"
    )
    save_config(config, run_dir / "config.yaml", header)
    meta = {
        "num_classes": net.classifier.out_features,
        "in_channels": int(sd[_stem_key(family)].shape[1]),
        "family": family,
        "source": str(Path(checkpoint).resolve()),
    }
    if acc is not None:
        acc.save(run_dir)
    return net, save_weights(net, run_dir / SUPERNET_FILE, meta)


def _stem_key(family: str) -> str:
    return "input_stem.0.conv.conv.weight" if family == "resnet50d" else "first_conv.conv.weight"


# ----------------------------------------------------------------------------- arch dicts


def _slots(space: SearchSpace) -> list[int]:
    """Block slots per stage in the reference's flat per-block lists: each stage's most blocks."""
    return list(space.stage_max_depths)


def arch_to_reference(space: SearchSpace, arch: ArchConfig) -> dict[str, Any]:
    """``arch`` as the reference's arch dict, as its search code writes them and its
    ``set_active_subnet(**d)`` takes them (``image_size``: the resolution):

    - MBConv families: ``ks`` and ``e`` per block slot (slots a stage skips take the largest
      choice; ProxylessNAS's last block is one more slot at the largest), ``d`` per stage;
    - OFA-ResNet: ``d`` (first the stem: the largest depth choice runs all its layers, another
      skips one; then each stage's blocks beyond its base depth), ``e`` per block slot, ``w`` as
      indices into the width choices.
    """
    arch = space.validate(arch)
    if space.stem_depths:
        return _resnet_to_reference(space, arch)
    ks, es = [], []
    for s, n in enumerate(_slots(space)):
        d = arch.depths[s]
        ks += [*arch.kernel_sizes[s], *[max(space.kernel_sizes)] * (n - d)]
        es += [*arch.expand_ratios[s], *[max(space.expand_ratios)] * (n - d)]
    return {
        "ks": ks,
        "e": [_number(e) for e in es],
        "d": list(arch.depths),
        "image_size": arch.resolution,
    }


def arch_from_reference(
    space: SearchSpace, config: Mapping[str, Any], resolution: int | None = None
) -> ArchConfig:
    """The reference's arch dict (:func:`arch_to_reference`'s keys; the resolution as
    ``image_size``, or ``r``, a number or one-element list; else ``resolution``, else the
    space's largest) as ours.

    Raises:
        ValueError: a missing key, a list of the wrong length, or a choice outside ``space``.
    """
    res = config.get("image_size", config.get("r", resolution))
    if isinstance(res, Sequence) and not isinstance(res, str):
        res = res[0] if len(res) == 1 else None
    if res is None:
        res = max(space.resolutions)
    if space.stem_depths:
        return _resnet_from_reference(space, config, int(res))
    slots = _slots(space)
    ks, es, d = _lists(config, {"ks": sum(slots), "e": sum(slots), "d": len(slots)}, extra=1)
    kernels, expands, start = [], [], 0
    for s, n in enumerate(slots):
        kernels.append(ks[start : start + d[s]])
        expands.append(es[start : start + d[s]])
        start += n
    tops = (("ks", ks, max(space.kernel_sizes)), ("e", es, max(space.expand_ratios)))
    for key, values, top in tops:
        if len(values) > start and float(values[start]) != float(top):
            raise ValueError(
                f"{key}[{start}] (the ProxylessNAS last block) is {values[start]}: our proxyless "
                f"supernet fixes that block at its largest ({_number(top)})"
            )
    return space.arch(int(res), d, kernels, expands)


def _lists(config: Mapping[str, Any], lengths: dict[str, int], extra: int = 0) -> list[list]:
    """``config``'s lists of the given lengths (up to ``extra`` more entries allowed)."""
    out = []
    for key, n in lengths.items():
        if key not in config:
            raise ValueError(f"the reference arch dict has no {key!r} (keys: {sorted(config)})")
        value = config[key]
        value = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
        if value is None or not n <= len(value) <= n + extra:
            raise ValueError(f"{key!r} must be a list of {n} values, got {config[key]!r}")
        out.append(value)
    return out


def _resnet_to_reference(space: SearchSpace, arch: ArchConfig) -> dict[str, Any]:
    slots = _slots(space)
    es: list[float] = []
    for s, n in enumerate(slots):
        running = arch.expand_ratios[s]
        es += [*running, *[max(space.expand_ratios)] * (n - len(running))]
    stem = max(space.depths) if arch.stem_depth == max(space.stem_depths) else min(space.depths)
    return {
        "d": [stem, *(d - b for d, b in zip(arch.depths, space.base_depths, strict=True))],
        "e": [_number(e) for e in es],
        "w": [space.width_mults.index(w) for w in arch.width_mults],
        "image_size": arch.resolution,
    }


def _resnet_from_reference(space: SearchSpace, config: Mapping[str, Any], res: int) -> ArchConfig:
    slots = _slots(space)
    d, es, w = _lists(config, {"d": len(slots) + 1, "e": sum(slots), "w": space.num_widths})
    try:
        widths = [space.width_mults[int(i)] for i in w]
    except (IndexError, ValueError, TypeError):
        raise ValueError(
            f"'w' holds indices into the width choices {space.width_mults}, got {w}"
        ) from None
    stem = max(space.stem_depths) if d[0] == max(space.depths) else min(space.stem_depths)
    depths = [b + int(x) for b, x in zip(space.base_depths, d[1:], strict=True)]
    expands, start = [], 0
    for s, n in enumerate(slots):
        expands.append(es[start : start + depths[s]])
        start += n
    return space.arch(res, depths, [(3,) * len(e) for e in expands], expands, widths, stem)


def _number(x: float) -> int | float:
    """4.0 -> 4 (the reference writes integer expand ratios as ints)."""
    return int(x) if float(x).is_integer() else float(x)
