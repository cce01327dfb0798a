"""Elastic ops: layers that slice one maximum-size weight to the active choice.

Each op is a plain ``nn.Module`` whose ``forward`` takes the active choice as an argument; none
stores an active state of its own. The supernet holds the active arch and passes choices down.
Each op can also ``export`` itself at a choice to a standard ``torch.nn`` layer with copied weights.
"""

from onceforall.elastic.bottleneck import ElasticBottleneck
from onceforall.elastic.conv import ElasticConv2d, ElasticDepthwiseConv, ElasticPointwiseConv
from onceforall.elastic.mbconv import ElasticMBConv, MBConvParams
from onceforall.elastic.norm import ElasticBatchNorm2d
from onceforall.elastic.se import ElasticSE
from onceforall.elastic.utils import make_divisible

__all__ = [
    "ElasticBatchNorm2d",
    "ElasticBottleneck",
    "ElasticConv2d",
    "ElasticDepthwiseConv",
    "ElasticMBConv",
    "ElasticPointwiseConv",
    "ElasticSE",
    "MBConvParams",
    "make_divisible",
]
