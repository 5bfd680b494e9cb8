"""The method adapter API: a method is a config dataclass plus hooks the harness calls.

A method is one file in ``methods/`` that registers a :class:`Method`::

    @dataclass
    class C2AMConfig(CamConfig):
        c2am_epochs: int = 5          # C2AM Table 4

    METHODS.add("c2am", Method(name="c2am", config=C2AMConfig,
                               summary="...", classifier_stages=(ClassifierStage("c2am", "c2am_", run),)))

Every hook has a default, and the defaults are the CAM baseline (Zhou et al. 2016, IRN's recipe), so
``methods/cam.py`` overrides nothing. Hooks receive a :class:`Context` (config, dataset, device,
round, upstream artifacts) so their signatures stay stable as methods need more.

**Caching.** The harness caches each stage under a hash of the config fields the stage reads and of
its inputs. A stage reads the fields whose names start with its prefix (:data:`STAGE_PREFIXES`) plus
``backbone``/``weights``; a method's own fields join a stage's hash by taking that prefix (a
``cls_``-field changes the base classifier; a ``c2am_``-field only the C2AM stage). The hash also
names the hook functions a stage runs (module + qualified name), so ``cam`` and ``c2am`` with the
same base config share the one base classifier.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import UserError
from .metrics.wsol_preset import WSOL
from .registry import Registry

#: stage name → the prefix of the config fields that stage reads (besides ``backbone``, ``weights``).
STAGE_PREFIXES = {
    "classifier": "cls_",
    "cams": "cam_",
    "seeds": "seed_",
    "expand": ("rw_", "crf_", "expansion"),
    "segmenter": "seg_",
    "wsol": "wsol_",
}


@dataclass
class CamConfig:
    """The CAM baseline's configuration, the base of every method's config.

    Protocol values (scales, thresholds, random-walk parameters) follow IRN and the papers, with the
    source beside each. Training lengths are sized for the CPU default (synthetic ``tiny``, ``small``
    backbone); the paper's value is in the comment, to be set with ``--set`` on real data.
    """

    backbone: str = "small"             # CPU default; the papers use resnet50 (IRN, C2AM) / resnet38 (SEAM)
    weights: str | None = None          # local weights file; None: torchvision's cache if present, else random init
    # --- classifier (IRN step/train_cam.py: SGD, poly lr 0.1, wd 1e-4, batch 16, 5 epochs, crop 512)
    cls_size: int = 64                  # training crop side (IRN: crop 512)
    cls_rescale: tuple[float, ...] = (1.0, 1.0)  # long side -> cls_size x U(lo, hi), then crop; IRN resize_long
    #                                   320-640 on ~500-px VOC ~ (0.64, 1.28); off for tiny (seed mIoU 17.0 vs 18.8)
    cls_output_stride: int = 8          # IRN 16 (ResNet-50 strides 2,2,2,1); 8 gives tiny's 64-px images 8x8 CAMs
    cls_epochs: int = 5                 # IRN: 5 epochs on VOC train_aug
    cls_batch_size: int = 16            # IRN cam_batch_size 16
    cls_lr: float = 0.1                 # IRN cam_learning_rate 0.1 (head 10x, as IRN's trainable_parameters)
    cls_weight_decay: float = 1e-4      # IRN cam_weight_decay 1e-4
    cls_workers: int = 0                # DataLoader worker processes (0: load in the main process)
    # --- CAM inference (IRN step/make_cam.py)
    cam_scales: tuple[float, ...] = (2.0, 3.0)   # IRN (1.0, 0.5, 1.5, 2.0) on ~500-px VOC (C2AM's repo adds 2.5,
    #                                   3.0); tiny's 64-px images give 4x4 maps at 0.5: seeds 30.0 vs 18.8 mIoU
    cam_flip: bool = True               # IRN: each scale with its horizontal flip
    # --- seeds (IRN step/eval_cam.py)
    seed_threshold: float = 0.15        # IRN cam_eval_thres 0.15; C2AM sweeps 0.13-0.20
    seed_protocol: str = "irn"          # evaluation preset of wsssbench.metrics.segmentation
    # --- expansion: "rw" (IRN's random walk), "crf" (dense CRF on CAMs), "none" (the seeds themselves).
    # IRN uses "rw"; on tiny from random init its boundary net learns little (pseudo-mask mIoU 21.3
    # rw vs 55.5 crf vs 33.2 none, same CAMs), so the CPU default is "crf": --set expansion=rw for IRN's.
    expansion: str = "crf"
    rw_conf_fg: float = 0.30            # IRN conf_fg_thres 0.30 (C2AM Table 3: 0.38)
    rw_conf_bg: float = 0.05            # IRN conf_bg_thres 0.05 (C2AM Table 3: 0.10)
    rw_beta: float = 10.0               # IRN beta 10 (CONTA appendix: 8 or 10)
    rw_exp_times: int = 8               # IRN exp_times 8: t = 2^8 = 256 iterations
    rw_radius: int = 5                  # IRN: radius 5 at inference (CONTA appendix: 5 / 10)
    rw_bg_threshold: float = 0.25       # IRN sem_seg_bg_thres 0.25 (C2AM Table 3: 0.21)
    rw_epochs: int = 3                  # IRN irn_num_epoches 3 on VOC train_aug
    rw_train_images: int | None = 200   # affinity net trained on the first N classifier images; IRN: all (None)
    rw_lr: float = 0.1                  # IRN irn_learning_rate 0.1
    rw_batch_size: int = 16             # IRN irn_batch_size 32
    crf_alpha: float = 4.0              # SEAM infer_SEAM.py: bg = (1 - max cam)^alpha, alpha 4 ("la")
    # --- segmentation (kazuto1011/deeplab-pytorch voc12.yaml as CONTA/C2AM ran it)
    seg_enabled: bool = True            # train and evaluate the segmentation model
    seg_iterations: int = 300           # CONTA 20k, C2AM 30k iterations
    seg_batch_size: int = 8             # CONTA 5 x 2, C2AM 10 x 2
    seg_lr: float = 0.01                # deeplab-pytorch 2.5e-4 with pretrained ResNet-101 (poly 0.9)
    seg_weight_decay: float = 5e-4      # deeplab-pytorch 5e-4
    seg_size: int = 64                  # training crop side (deeplab-pytorch crop 321)
    seg_crf: bool = False               # post-CRF (10 iters, Gaussian w3 xy1, bilateral w4 xy67 rgb3)
    seg_protocol: str = "deeplab"       # evaluation preset for the segmentation stage
    # --- multi-round methods (CONTA: 3 rounds)
    rounds: int = 1
    # --- WSOL (clovaai/wsolevaluation)
    wsol_protocol: str = "wsolevaluation"
    wsol_frame: str = "224"
    wsol_threshold: float = WSOL.threshold


@dataclass
class Context:
    """What a hook may read: the resolved config, the dataset, where and with what to compute."""

    cfg: CamConfig
    dataset: Any                         # wsssbench.data.Dataset
    device: str = "cpu"
    seed: int = 0
    round: int = 0                       # multi-round methods: 0, 1, ...
    inputs: dict[str, Path] = field(default_factory=dict)   # upstream artifacts (e.g. previous round's masks)

    @property
    def num_fg(self) -> int:
        """Number of foreground classes (the classifier's outputs)."""
        from .data.base import num_fg
        return num_fg(self.dataset)


@dataclass(frozen=True)
class ClassifierStage:
    """A training stage after the base classifier (C2AM: Global CAM, then training with adjusted scores).

    ``run(ctx, model, workdir)`` continues training ``model`` in place; it may write artifacts (the
    Global CAM) into ``workdir``. The harness caches the result under the hash of the previous
    classifier, the config fields starting with ``prefix``, and ``run``'s name.
    """

    name: str
    prefix: str
    run: Callable[[Context, Any, Path], None]


def _default(name: str) -> Callable:
    """A lazily imported default hook (the CAM baseline), so this module imports without torch."""
    module, attr = name.rsplit(".", 1)

    def hook(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)
    hook.__qualname__ = name
    hook.__module__ = "wsssbench.methods_api"
    return hook


@dataclass(frozen=True)
class Method:
    """A registered method: its config and the hooks that make it differ from the CAM baseline.

    Hooks (each ``None`` or a default means "as the CAM baseline"):

    - ``build_classifier(ctx) -> nn.Module``: a module with ``forward(x) -> logits (B, num_fg)`` and
      ``cams(x) -> raw class maps (B, num_fg, h, w)`` (the CAM stage applies ReLU, scales, flips and
      normalisation), as :class:`wsssbench.models.CAMClassifier`; parameters whose names start with
      ``classifier`` train at 10× the learning rate (IRN).
    - ``train_step(ctx, model, batch) -> loss``: ``batch`` has ``image`` (B,3,H,W normalised),
      ``labels`` (B, num_fg multi-hot), ``index``; SEAM/CPN build their views here.
    - ``classifier_stages``: further training stages after the base classifier (C2AM).
    - ``refine_cams(ctx, model, image, cams) -> cams``: CAM refinement (SEAM's PCM, CPN's PRCM);
      ``cams`` are (k, H, W) for the image's label keys, before max-normalisation.
    - ``expand(ctx, cams_dir, out_dir) -> None``: write one PNG pseudo-mask per image into ``out_dir``
      (IRNet, DSRG); ``None``: the config's ``expansion`` ("rw" | "crf" | "none").
    - ``next_round(ctx, artifacts) -> dict[str, Path]``: multi-round methods (CONTA): from round t's
      artifacts (``masks``, ``segmenter``, ``cams``) make the inputs of round t+1's classifier,
      handed to ``build_classifier`` as ``ctx.inputs``.
    - ``wsol_maps(ctx, model, image) -> (scores, maps)``: localization maps for WSOL (NL-CCAM).
    """

    name: str
    config: type[CamConfig]
    summary: str
    build_classifier: Callable = _default("wsssbench.stages.train_classifier.build_cam_classifier")
    train_step: Callable = _default("wsssbench.stages.train_classifier.multilabel_step")
    classifier_stages: tuple[ClassifierStage, ...] = ()
    refine_cams: Callable | None = None
    expand: Callable | None = None
    next_round: Callable | None = None
    wsol_maps: Callable = _default("wsssbench.stages.wsol.cam_maps")


METHODS: Registry[Method] = Registry("method")


def hook_id(fn: Callable | None) -> str | None:
    """A hook's stable name for cache keys (module + qualified name)."""
    return None if fn is None else f"{fn.__module__}.{fn.__qualname__}"


def make_config(method: Method, overrides: dict[str, str] | None = None) -> CamConfig:
    """The method's config with ``--set key=value`` overrides parsed by the field types.

    >>> from wsssbench.methods_api import METHODS, make_config
    >>> make_config(METHODS.get("cam"), {"seed_threshold": "0.2", "cam_scales": "1,0.5"}).cam_scales
    (1.0, 0.5)
    >>> make_config(METHODS.get("cam"), {"nope": "1"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    wsssbench.errors.UserError: cam has no setting 'nope'; settings: backbone, cam_flip, ...
    """
    cfg = method.config()
    types_ = typing.get_type_hints(method.config)
    for key, text in (overrides or {}).items():
        if key not in types_:
            raise UserError(f"{method.name} has no setting {key!r}; settings: {', '.join(sorted(types_))}")
        setattr(cfg, key, parse_value(types_[key], str(text), key))
    return cfg


def parse_value(typ: Any, text: str, key: str = "value") -> Any:
    """Parse ``text`` as ``typ`` (bool, int, float, str, ``X | None``, ``tuple[X, ...]``)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", ""):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(inner[0], text, key)
    if origin is tuple:
        return tuple(parse_value(args[0], part.strip(), key) for part in text.split(",") if part.strip())
    try:
        if typ is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        return typ(text)
    except ValueError:
        raise UserError(f"--set {key}={text}: not a valid {getattr(typ, '__name__', typ)}") from None


def stage_fields(cfg: CamConfig, stage: str) -> dict[str, Any]:
    """The config fields ``stage`` reads: those with its prefix, plus ``backbone`` and ``weights``."""
    prefixes = STAGE_PREFIXES[stage]
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    out = {"backbone": cfg.backbone, "weights": cfg.weights}
    for f in dataclasses.fields(cfg):
        if f.name.startswith(prefixes):
            out[f.name] = getattr(cfg, f.name)
    return out


def _discover() -> None:
    """Import every module of ``wsssbench.methods``; each registers its adapter on import."""
    from . import methods
    for mod in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"{methods.__name__}.{mod.name}")


_discover()
