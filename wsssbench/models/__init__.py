"""Networks: backbones (``BACKBONES`` registry, ``build_backbone``) and the heads the stages train."""
from .backbones import BACKBONES, Backbone, build_backbone
from .heads import CAMClassifier

__all__ = ["BACKBONES", "Backbone", "CAMClassifier", "build_backbone"]
