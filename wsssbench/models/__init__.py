"""Networks: backbones (``BACKBONES`` registry, ``build_backbone``) and the heads the stages train."""
from . import resnet, resnet38, vgg  # noqa: F401  (register their backbones)
from .backbones import BACKBONES, Backbone, build_backbone
from .heads import CAMClassifier
from .weights import load_weights

__all__ = ["BACKBONES", "Backbone", "CAMClassifier", "build_backbone", "load_weights"]
