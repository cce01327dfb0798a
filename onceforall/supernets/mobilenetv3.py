"""OFA-MobileNetV3 supernets (Cai et al., ICLR 2020, Sec. 4): ``mbv3`` for ImageNet-size inputs and
``mbv3_small_images`` for 28-32 px inputs such as Fashion-MNIST and CIFAR-10.

Layout: a hard-swish stem conv, one fixed inverted-residual block, five elastic stages of up to
four MBConv blocks (ReLU in the first two, hard swish after; squeeze-excite in stages 2, 4 and 5),
then the MobileNetV3 head (1x1 expand, global pool, 1x1 feature mix, classifier). The supernet
itself is :class:`~onceforall.supernets.mbconvnet.MBConvSupernet`.
"""

from __future__ import annotations

from dataclasses import replace

from onceforall.supernets.mbconvnet import MBConvLayout, register_mbconv_family

__all__ = ["IMAGENET_LAYOUT", "SMALL_IMAGES_LAYOUT"]

# The paper's ImageNet layout (the reference's base_stage_width / stride / act / se lists).
IMAGENET_LAYOUT = MBConvLayout(
    stem_channels=16,
    stem_stride=2,
    stem_act="hswish",
    first_block_channels=16,
    first_block_act="relu",
    stage_channels=(24, 40, 80, 112, 160),
    stage_strides=(2, 2, 2, 1, 2),
    stage_acts=("relu", "relu", "hswish", "hswish", "hswish"),
    stage_se=(False, True, False, True, True),
    last_block_channels=0,
    final_expand_channels=960,
    head_act="hswish",
    last_channels=1280,
)

# Same design for 28-32 px inputs: a stride-2 stem and two more stride-2 stages (total stride 8
# instead of 32, so a 28 px image ends at 4x4 as a 224 px one ends at 7x7), the elastic stages at
# 7x7 and 4x4, and narrower widths: about 13M MACs for the largest subnet at 28 px and 2.5M for the
# smallest, so a supernet trains in minutes on a 2-core CPU (measured in docs/results.md).
SMALL_IMAGES_LAYOUT = replace(
    IMAGENET_LAYOUT,
    stage_channels=(16, 24, 32, 48, 64),
    stage_strides=(2, 1, 2, 1, 1),
    final_expand_channels=256,
    last_channels=512,
)

register_mbconv_family(
    "mbv3",
    IMAGENET_LAYOUT,
    (128, 160, 192, 224),
    "The paper's OFA-MobileNetV3 (``width_mult`` 1.0 or 1.2) for ImageNet-size inputs.",
)
register_mbconv_family(
    "mbv3_small_images",
    SMALL_IMAGES_LAYOUT,
    (24, 28, 32),
    "OFA-MobileNetV3 for 28-32 px inputs (Fashion-MNIST, CIFAR-10): trains in minutes on a CPU.",
)
