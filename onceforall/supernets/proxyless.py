"""OFA-ProxylessNAS supernets (the reference's ``OFAProxylessNASNets``): ``proxyless`` for
ImageNet-size inputs and ``proxyless_small_images`` for 28-32 px inputs.

Layout: a ReLU6 stem conv, one fixed inverted-residual block (kernel 3, expand 1), five elastic
stages of up to four MBConv blocks (ReLU6, no squeeze-excite; elastic kernel size, expand ratio
and depth), one more MBConv block, then the ProxylessNAS head: a 1x1 conv with batch norm and
ReLU6, global pool, classifier (no feature mix after the pool, unlike MobileNetV3).

One departure from the reference: there the final block (320 channels) is a sixth stage of depth
one whose kernel size and expand ratio are elastic. A :class:`~onceforall.arch.SearchSpace` gives
every stage the same depth choices, so that block is fixed here instead, at the largest kernel
size and expand ratio: the largest subnet is the reference's, and every subnet runs that block.
"""

from __future__ import annotations

from dataclasses import replace

from onceforall.supernets.mbconvnet import MBConvLayout, register_mbconv_family

__all__ = ["IMAGENET_LAYOUT", "SMALL_IMAGES_LAYOUT"]

# The reference's ImageNet layout: base_stage_width [32, 16, 24, 40, 80, 96, 192, 320, 1280],
# stride_stages [2, 2, 2, 1, 2, 1], ReLU6 throughout, batch norm epsilon 1e-3.
IMAGENET_LAYOUT = MBConvLayout(
    stem_channels=32,
    stem_stride=2,
    stem_act="relu6",
    first_block_channels=16,
    first_block_act="relu6",
    stage_channels=(24, 40, 80, 96, 192),
    stage_strides=(2, 2, 2, 1, 2),
    stage_acts=("relu6",) * 5,
    stage_se=(False,) * 5,
    last_block_channels=320,
    final_expand_channels=1280,
    head_act="relu6",
    last_channels=0,
    bn_eps=1e-3,
)

# Same design for 28-32 px inputs, downsampled as mbv3_small_images is (a stride-2 stem and two
# stride-2 stages: a 28 px image ends at 4x4 as a 224 px one ends at 7x7) with narrower widths:
# about 14M MACs for the largest subnet at 28 px and 4M for the smallest (the fixed last block
# is 1.3M of those), 0.7M parameters, so a supernet trains in minutes on a 2-core CPU.
SMALL_IMAGES_LAYOUT = replace(
    IMAGENET_LAYOUT,
    stage_channels=(16, 24, 32, 48, 64),
    stage_strides=(2, 1, 2, 1, 1),
    last_block_channels=96,
    final_expand_channels=384,
)

register_mbconv_family(
    "proxyless",
    IMAGENET_LAYOUT,
    (128, 160, 192, 224),
    "OFA-ProxylessNAS for ImageNet-size inputs (the reference ships ``width_mult`` 1.3).",
)
register_mbconv_family(
    "proxyless_small_images",
    SMALL_IMAGES_LAYOUT,
    (24, 28, 32),
    "OFA-ProxylessNAS for 28-32 px inputs (Fashion-MNIST, CIFAR-10): trains in minutes on a CPU.",
)
