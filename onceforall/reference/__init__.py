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

from onceforall.reference.archs import arch_from_reference, arch_to_reference
from onceforall.reference.predictor import REFERENCE_IMAGE_SIZES, predictor_from_reference
from onceforall.reference.run import import_reference_run
from onceforall.reference.weights import (
    REFERENCE_FAMILIES,
    detect_reference_family,
    from_reference,
    load_reference_state_dict,
    reference_to_ours,
)

__all__ = [
    "REFERENCE_FAMILIES",
    "REFERENCE_IMAGE_SIZES",
    "arch_from_reference",
    "arch_to_reference",
    "detect_reference_family",
    "from_reference",
    "import_reference_run",
    "load_reference_state_dict",
    "predictor_from_reference",
    "reference_to_ours",
]
