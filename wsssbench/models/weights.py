"""Weights from local files only: torchvision's cache or a path. Never downloads."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..errors import UserError


def torchvision_cache_file(url: str) -> Path:
    """Where torchvision keeps a downloaded checkpoint: ``$TORCH_HOME/hub/checkpoints/<basename of url>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file; unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and a
    ``module.`` (DataParallel) prefix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; pass the path of a local .pth/.pt checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or non-torch file
        raise UserError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"weights file {path} holds no state dict (name → tensor); save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a local checkpoint into ``model`` strictly (every key and shape must match).

    A backbone first passes the file's keys through its ``adapt_state_dict`` (e.g. a ResNet drops
    torchvision's ``fc.*``), so an ImageNet checkpoint of the reference layout loads as is.
    """
    state = read_state_dict(path)
    adapt = getattr(model, "adapt_state_dict", None)
    if adapt is not None:
        state = adapt(state)
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state)
    return model


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """UserError naming a few missing / unexpected / mis-shaped keys, if any."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", shapes)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {what}: {', '.join(keys[:3])}{more}")
    if problems:
        raise UserError(f"weights file {source} does not fit {type(model).__name__}: {'; '.join(problems)}; "
                        "check that the file was saved from the same architecture")


def load_torchvision(model: nn.Module, name: str, url: str) -> nn.Module:
    """Load torchvision's ImageNet weights for ``name`` from the local cache, or explain where to put them."""
    path = torchvision_cache_file(url)
    if not path.is_file():
        raise UserError(f"torchvision weights for {name} are not in the cache: download {url} yourself and "
                        f"put it at {path} (wsssbench never downloads), or pass a local file instead")
    return load_weights(model, path)


def apply_pretrained(model: nn.Module, name: str, pretrained: str | os.PathLike | None,
                     url: str | None = None) -> nn.Module:
    """``None`` → keep the random init; ``"torchvision"`` → torchvision's cached file for ``url``;
    anything else → a local weights file."""
    if pretrained is None:
        return model
    if pretrained == "torchvision":
        if url is None:
            raise UserError(f"backbone {name!r} has no torchvision weights; use pretrained=None or a local "
                            "weights file")
        return load_torchvision(model, name, url)
    return load_weights(model, pretrained)
