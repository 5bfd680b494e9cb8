"""Networks: backbones (``BACKBONES`` registry, ``build_backbone``) and the heads the stages train."""
from . import resnet, resnet38, vgg  # noqa: F401  (register their backbones)
from .affinity import AffinityNet, affinity_matrix, edge_to_affinity
from .backbones import BACKBONES, Backbone, build_backbone
from .deeplab import DeepLabV2
from .heads import CAMClassifier
from .seam import SEAMClassifier
from .weights import load_weights

__all__ = ["BACKBONES", "AffinityNet", "Backbone", "CAMClassifier", "DeepLabV2", "SEAMClassifier",
           "affinity_matrix", "build_backbone", "edge_to_affinity", "load_weights"]
