"""The reference's supernet state dicts as our supernets: names mapped, shapes checked.

See :mod:`onceforall.reference` for what is loaded and why it is exact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from onceforall.supernets import Supernet, create_supernet

__all__ = [
    "REFERENCE_FAMILIES",
    "detect_reference_family",
    "from_reference",
    "load_reference_state_dict",
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


def _stem_key(family: str) -> str:
    """The key of a reference supernet's first conv weight (its input channels)."""
    return "input_stem.0.conv.conv.weight" if family == "resnet50d" else "first_conv.conv.weight"
