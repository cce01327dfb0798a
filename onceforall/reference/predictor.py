"""The reference's accuracy predictor as ours: the same MLP over our arch encoding."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from onceforall.arch import SearchSpace
from onceforall.predictors.accuracy import AccuracyPredictor
from onceforall.reference.weights import load_reference_state_dict

__all__ = ["REFERENCE_IMAGE_SIZES", "predictor_from_reference"]

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
