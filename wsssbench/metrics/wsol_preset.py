"""The WSOL scoring defaults, in one place: ``evaluate_wsol``, ``wsssbench eval wsol`` and the method
config (``wsol_threshold``) read them. Standard library only, so the method API still imports without
numpy, OpenCV or torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WsolPreset:
    """How score maps are scored unless an option or a config field says otherwise."""

    protocol: str = "wsolevaluation"    # box protocol: clovaai/wsolevaluation@96f4b88
    frame: str = "224"                  # the protocol's 224x224 frame (``native``: each map's own size)
    threshold: float = 0.2              # CAM threshold θ of Top-k and GT-known loc (the CAM paper's)


WSOL = WsolPreset()
