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

**Caching.** The harness caches each stage under a hash of its inputs' folders, the hooks it runs
and the config fields it may read. Fields are *owned* by the stage that first reads them
(:data:`STAGE_OWNERS`: ``cam_`` fields by the CAM stage, ``seg_`` fields by the segmenter, …); a
stage's key holds **every field that no later stage owns**. A field no stage claims (a method's
``block`` or ``base``) therefore joins the classifier's key and, through its folder, every later
stage's: a changed setting can retrain more than it must, never reuse a stale result. A classifier
stage of a method owns the fields of its ``prefix`` (``c2am_``), so ``cam`` and ``c2am`` with the same
base config share one base classifier. The hash names the hook functions a stage runs
(:func:`hook_id`), so methods sharing hooks and config share stages.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import pkgutil
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import UserError
from .metrics.wsol_preset import WSOL
from .registry import Registry

#: The stages in pipeline order with the config fields each owns (names or name prefixes); a field
#: matching several owners belongs to the last. ``classifier`` owns every field nobody else claims;
#: a method's classifier stages come right after it, owning their prefixes; ``evaluation`` owns the
#: scoring options and ``workers`` (no artifact depends on them) and the ``recipe`` label (the fields a
#: recipe sets are keyed by their own owners); ``rounds`` is the round count.
STAGE_OWNERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("classifier", ()),
    ("cams", ("cam_",)),
    ("expand", ("expansion", "rw_", "crf_", "saliency_")),     # saliency_: DSRG's background cues
    ("segmenter", ("seg_",)),
    ("evaluation", ("seed_", "pseudo_", "seg_protocol", "wsol_", "recipe", "workers")),
    ("next_round", ()),
    ("rounds", ("rounds",)),
)


@dataclass
class CamConfig:
    """The CAM baseline's configuration, the base of every method's config.

    Protocol values (scales, thresholds, random-walk parameters) follow IRN and the papers, with the
    source beside each. Training lengths are sized for the CPU default (synthetic ``tiny``, ``small``
    backbone); the paper's value is in the comment, to be set with ``--set`` on real data.
    """

    recipe: str = "tiny"                # the named recipe the settings started from (``run --recipe``; Method.recipes)
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
    cls_optimizer: str = "sgd"          # CLS_OPTIMIZERS: "sgd": momentum 0.9 + weight decay (the paper's intent); "irn": as IRN's
    #                                   code does (misc/torchutils.py PolyOptimizer: momentum = cls_weight_decay)
    cls_augment: str = "toolkit"        # "toolkit": bilinear rescale of the normalised image; "irn": IRN's
    #                                   (voc12/dataloader.py): integer long side, PIL bicubic on uint8, then normalise;
    #                                   "seam": SEAM's (train_SEAM.py): PIL resize + ColorJitter(0.3, 0.3, 0.3, 0.1)
    cls_frozen_blocks: int = 0          # leading backbone blocks that never train (IRN resnet50_cam.Net: 3, detach after layer2)
    cls_fixed_bn: bool = False          # BatchNorm always on its running statistics (IRN net/resnet50.py FixedBatchNorm)
    # --- CAM inference (IRN step/make_cam.py)
    cam_scales: tuple[float, ...] = (2.0, 3.0)   # IRN (1.0, 0.5, 1.5, 2.0) on ~500-px VOC (C2AM's repo adds 2.5,
    #                                   3.0); tiny's 64-px images give 4x4 maps at 0.5: seeds 30.0 vs 18.8 mIoU
    cam_flip: bool = True               # IRN: each scale with its horizontal flip
    cam_arithmetic: str = "toolkit"     # "toolkit": bilinear input rescale, maps resized straight to H x W; "irn":
    #                                   IRN's make_cam.py (PIL bicubic on uint8, maps to strided_up_size, cropped)
    # --- seeds (IRN step/eval_cam.py)
    seed_threshold: float = 0.15        # IRN cam_eval_thres 0.15; C2AM sweeps 0.13-0.20
    seed_alpha: float | None = None     # set: background (1 - max CAM)^alpha instead of the threshold
    #                                   (SEAM infer_SEAM.py / CPN: alpha 16; CONTA appendix 3.1)
    seed_protocol: str = "irn"          # evaluation preset of wsssbench.metrics.segmentation
    # --- expansion: "rw" (IRN's random walk), "psa" (PSA's AffinityNet walk, SEAM's; methods/seam.py),
    # "crf" (dense CRF on CAMs), "none" (the seeds themselves).
    # IRN uses "rw"; on tiny from random init its boundary net learns little (pseudo-mask mIoU 21.3
    # rw vs 55.5 crf vs 33.2 none, same CAMs), so the CPU default is "crf": --set expansion=rw for IRN's.
    expansion: str = "crf"
    rw_conf_fg: float = 0.30            # IRN conf_fg_thres 0.30 (C2AM Table 3: 0.38)
    rw_conf_bg: float = 0.05            # IRN conf_bg_thres 0.05 (C2AM Table 3: 0.10)
    rw_beta: float = 10.0               # IRN beta 10 (CONTA appendix: 8 or 10)
    rw_exp_times: int = 8               # IRN exp_times 8: t = 2^8 = 256 iterations
    rw_method: str = "sparse"           # sparse: 2^k sparse products (fast, O(hw·r²) memory) | dense: IRN's
    #                                   k squarings of the dense (hw × hw) matrix (its exact arithmetic)
    rw_radius: int = 5                  # IRN: radius 5 at inference (CONTA appendix: 5 / 10)
    rw_bg_threshold: float = 0.25       # IRN sem_seg_bg_thres 0.25 (C2AM Table 3: 0.21)
    rw_epochs: int = 3                  # IRN irn_num_epoches 3 on VOC train_aug
    rw_train_images: int | None = 200   # affinity net trained on the first N classifier images; IRN: all (None)
    rw_lr: float = 0.1                  # IRN irn_learning_rate 0.1
    rw_batch_size: int = 16             # IRN irn_batch_size 32
    # "toolkit" | "irn" (IRN's code; docs/recipes.md "IRN's boundary net and walk"):
    rw_pairs: str = "toolkit"           # loss pairs: every in-image pair | irn: PathIndex's (interior sources only)
    rw_augment: str = "toolkit"         # whole image squashed to cls_size² | irn: rescale 0.5-1.5, crop, labels 255
    rw_optimizer: str = "sgd"           # momentum 0.9 | irn: PolyOptimizer's momentum slot (momentum = 1e-4)
    rw_infer: str = "toolkit"           # edge of the image, walk resized | irn: zero-pad to cls_size², flip
    #                                     average of the logits, walk upsampled x4 and cropped
    crf_alpha: float = 4.0              # SEAM infer_SEAM.py: bg = (1 - max cam)^alpha, alpha 4 ("la")
    # --- segmentation (kazuto1011/deeplab-pytorch voc12.yaml as CONTA/C2AM ran it)
    pseudo_protocol: str = "irn"        # evaluation preset for the pseudo-masks (IRN eval_sem_seg.py)
    seg_enabled: bool = True            # train and evaluate the segmentation model
    seg_backbone: str | None = None     # DeepLab's backbone; None: the classifier's (papers: resnet101)
    seg_weights: str | None = None      # its weights file; None: ``weights`` if seg_backbone is the classifier's
    seg_iterations: int = 300           # CONTA 20k, C2AM 30k iterations
    seg_batch_size: int = 8             # CONTA 5 x 2, C2AM 10 x 2
    seg_lr: float = 0.01                # deeplab-pytorch 2.5e-4 with pretrained ResNet-101 (poly 0.9)
    seg_weight_decay: float = 5e-4      # deeplab-pytorch 5e-4
    seg_optimizer: str = "sgd"          # SEG_OPTIMIZERS: "sgd": one group, momentum 0.9 (the toolkit's DeepLab)
    seg_lr_step: int = 0                # 0: poly 0.9 (deeplab-pytorch); N: lr / 10 every N iterations (Caffe
    #                                   "step" policy, gamma 0.1: SEC every 2,000, DSRG every 2,000)
    seg_size: int = 64                  # training crop side (deeplab-pytorch crop 321)
    seg_lr_every: int = 1               # the poly lr changes every N iterations (deeplab-pytorch LR_DECAY 10)
    seg_iter_size: int = 1              # batches whose gradients add up to one step (deeplab-pytorch ITER_SIZE 2)
    seg_scales: tuple[float, ...] = ()  # (): each image resized to seg_size² (toolkit); else deeplab-pytorch's
    #                                   augmentation: a scale drawn from this list, padding (mask 255), a random
    #                                   seg_size² crop, flip (voc12.yaml SCALES 0.5-1.5; C2AM 0.5-2.0)
    seg_fixed_bn: bool = False          # BatchNorm on its running statistics (deeplab-pytorch freeze_bn)
    seg_loss: str = "ce"                # "ce": cross-entropy ignoring 255; "deeplab": the same, labels resized by
    #                                   PIL's rule (deeplab-pytorch); "balanced": background and foreground pixels
    #                                   averaged apart, then halved (C2AM segmentation/main.py)
    seg_crf: bool = False               # post-CRF (10 iters, Gaussian w3 xy1, bilateral w4 xy67 rgb3)
    seg_protocol: str = "deeplab"       # evaluation preset for the segmentation stage
    # --- multi-round methods: the rounds after round 0 (the baseline), each made by next_round; the run
    # records rounds + 1 entries (CONTA Table 1 / A1: "Baseline", "Round = 1" ... "Round = 4"; default 3)
    rounds: int = 0
    # --- WSOL (clovaai/wsolevaluation)
    wsol_protocol: str = WSOL.protocol
    wsol_frame: str = WSOL.frame
    wsol_threshold: float = WSOL.threshold
    # --- data loading (no artifact depends on it)
    workers: int | None = None          # DataLoader workers of the streamed stages; None: from the core count


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
    Global CAM) into ``workdir``. The stage owns the config fields starting with ``prefix`` (they stay
    out of the base classifier's key); the harness caches the result under the previous classifier's
    folder, every field no later stage owns, and ``run``'s name.
    """

    name: str
    prefix: str
    run: Callable[[Context, Any, Path], None]


@dataclass(frozen=True)
class Recipe:
    """A named set of config settings a method is run with (``wsssbench run METHOD --recipe NAME``).

    ``settings`` are ``(field, value)`` pairs applied before ``--set`` (which still wins); the
    config's ``recipe`` field records the name. ``tiny`` (no settings: the CPU defaults) is every
    method's, built in. See docs/recipes.md.
    """

    name: str
    summary: str
    settings: tuple[tuple[str, Any], ...] = ()


#: the recipe every method has: its config's defaults.
TINY = Recipe("tiny", "the CPU defaults (synthetic tiny, small backbone)")

#: the values the choice fields accept (the optimiser fields accept their registries' names).
CHOICES = {"cls_augment": ("toolkit", "irn", "seam"), "cam_arithmetic": ("toolkit", "irn"),
           "seg_loss": ("ce", "deeplab", "balanced"), "rw_pairs": ("toolkit", "irn"),
           "rw_augment": ("toolkit", "irn"), "rw_optimizer": ("sgd", "irn"), "rw_infer": ("toolkit", "irn")}


def _default(name: str) -> Callable:
    """A lazily imported default hook (the CAM baseline), so this module imports without torch."""
    module, attr = name.rsplit(".", 1)

    def hook(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)
    hook.__qualname__ = name
    hook.__module__ = "wsssbench.methods_api"
    return hook


#: Classifier optimisers (``--set cls_optimizer=NAME``): ``fn(model, lr, weight_decay) -> torch.optim.Optimizer``
#: whose param groups each carry ``base_lr``, the learning rate the poly schedule scales. A method registers
#: its reference code's optimiser here from its own module (SEAM/PSA's four parameter groups, CI-CAM's Adam).
CLS_OPTIMIZERS: Registry[Callable] = Registry("classifier optimiser", loader=lambda: METHODS._load())
CLS_OPTIMIZERS.add("sgd", _default("wsssbench.stages.train_classifier.sgd_optimizer"))
CLS_OPTIMIZERS.add("irn", _default("wsssbench.stages.train_classifier.irn_optimizer"))

#: Segmenter optimisers (``--set seg_optimizer=NAME``), the same signature; the schedule is ``seg_lr_step``'s.
SEG_OPTIMIZERS: Registry[Callable] = Registry("segmenter optimiser", loader=lambda: METHODS._load())
SEG_OPTIMIZERS.add("sgd", _default("wsssbench.stages.train_segmenter.sgd_optimizer"))
SEG_OPTIMIZERS.add("deeplab", _default("wsssbench.stages.train_segmenter.deeplab_optimizer"))


@dataclass(frozen=True)
class Method:
    """A registered method: its config and the hooks that make it differ from the CAM baseline.

    Hooks (each ``None`` or a default means "as the CAM baseline"):

    - ``build_classifier(ctx) -> nn.Module``: a module with ``forward(x) -> logits (B, num_fg)`` and
      ``cams(x) -> raw class maps (B, num_fg, h, w)`` (the CAM stage applies ReLU, scales, flips and
      normalisation), as :class:`wsssbench.models.CAMClassifier`; parameters whose names start with
      ``classifier`` train at 10× the learning rate (IRN). Its ``backbone`` is a
      :class:`wsssbench.models.Backbone`: ``stages`` (the five blocks), ``forward_stages(x)``,
      ``stage_channels`` and ``stage_strides``, which is where a wrapper concatenates a map at a block.
    - ``train_step(ctx, model, batch) -> loss``: ``batch`` has ``image`` (B,3,H,W normalised),
      ``labels`` (B, num_fg multi-hot), ``index`` and the ``extra_inputs``; SEAM/CPN build their views here.
    - ``classifier_stages``: further training stages after the base classifier (C2AM).
    - ``refine_cams(ctx, model, image, cams) -> cams``: CAM refinement (SEAM's PCM, CPN's PRCM);
      ``cams`` are (k, H, W) for the image's label keys, before max-normalisation.
    - ``expand(ctx, cams_dir, out_dir) -> None``: write one PNG pseudo-mask per image into ``out_dir``
      (IRNet, DSRG); ``None``: the config's ``expansion`` ("rw" | "crf" | "none").
    - ``build_segmenter(ctx) -> nn.Module``: the segmentation model, with ``outputs(x)`` (what the loss
      reads) and ``forward(x) -> (B, C, h, w)`` class scores; default DeepLab-v2 on ``seg_backbone``.
    - ``seg_step(ctx, model, batch) -> loss``: ``batch`` has ``image``, ``labels`` (image-level),
      ``mask`` (the pseudo-mask, 255 = ignore), ``cams`` (B, num_fg, S, S: the CAM cues, zero for absent
      classes), ``index`` and the ``extra_inputs``, all cropped and flipped together; default
      cross-entropy ignoring 255 (SEC's and DSRG's losses replace it).
    - ``segment_train``: the segmenter also predicts the training images (``train_predictions``,
      CONTA's confounder set).
    - ``extra_inputs(ctx, sample) -> dict[str, np.ndarray]``: per-image arrays of the image's height and
      width (``(H, W)`` or ``(H, W, C)``; DSRG's saliency, CPN's superpixels), rescaled (integers:
      nearest, floats: bilinear), flipped and cropped with the image in every training batch; a
      classifier naming some of them in its ``extra_input_names`` also gets those, by keyword, in
      ``cams`` and ``forward`` at CAM inference (CONTA's context inputs).
    - ``next_round(ctx, artifacts, workdir) -> dict[str, Path]``: multi-round methods (CONTA): from
      round t's artifacts (``classifier``, ``cams``, ``masks``, ``segmenter``, ``predictions``,
      ``train_predictions``) write round t+1's inputs into ``workdir`` (a cached stage of its own) and
      name them; they reach round t+1's hooks as ``ctx.inputs``.
    - ``round_fields``: config fields only rounds after the first read (CONTA's ``block``); the
      ``next_round`` stage owns them, so changing one keeps round 0 and rebuilds from round 1 on.
    - ``wsol_maps(ctx, model, image) -> (scores, maps)``: localization maps for WSOL (NL-CCAM).
    - ``recipes``: named settings (:class:`Recipe`) besides the built-in ``tiny``, e.g. ``paper``.

    A method built on another (CONTA on IRNet, CPN on SEAM) is made with :func:`derive`.
    """

    name: str
    config: type[CamConfig]
    summary: str
    build_classifier: Callable = _default("wsssbench.stages.train_classifier.build_cam_classifier")
    train_step: Callable = _default("wsssbench.stages.train_classifier.multilabel_step")
    classifier_stages: tuple[ClassifierStage, ...] = ()
    refine_cams: Callable | None = None
    expand: Callable | None = None
    build_segmenter: Callable = _default("wsssbench.stages.train_segmenter.build_deeplab")
    seg_step: Callable = _default("wsssbench.stages.train_segmenter.cross_entropy_step")
    segment_train: bool = False
    extra_inputs: Callable | None = None
    next_round: Callable | None = None
    round_fields: tuple[str, ...] = ()
    wsol_maps: Callable = _default("wsssbench.stages.wsol.cam_maps")
    recipes: tuple[Recipe, ...] = ()

    def recipe(self, name: str) -> Recipe:
        """The recipe called ``name``: ``tiny`` or one of ``recipes``; a UserError names the others."""
        known = {r.name: r for r in (TINY, *self.recipes)}
        if name not in known:
            raise UserError(f"{self.name} has no recipe {name!r}; recipes: {', '.join(known)}")
        return known[name]


#: the registered methods; the first look-up imports every module of ``wsssbench.methods`` (each registers
#: itself), so a method module may be imported first, alone, and still find the methods it builds on.
METHODS: Registry[Method] = Registry("method", loader=lambda: _discover())


def derive(base: Method, *, name: str, config: type[CamConfig], summary: str, **hooks) -> Method:
    """A method built on ``base``: its hooks and classifier stages unless ``hooks`` replaces them.

    ``config`` must subclass ``base.config``, so the base's fields are carried (and keyed) as they are.
    A replacing hook may call the base's (``base.train_step(ctx, model, batch)``) and add to it.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class WrapConfig(CamConfig):
    ...     block: int = 5
    >>> m = derive(METHODS.get("cam"), name="wrap", config=WrapConfig, summary="CAM with a block")
    >>> m.train_step is METHODS.get("cam").train_step, m.config().block
    (True, 5)
    """
    if not issubclass(config, base.config):
        raise TypeError(f"{name}: its config {config.__name__} must subclass {base.name}'s {base.config.__name__}")
    return dataclasses.replace(base, name=name, config=config, summary=summary, **hooks)


def hook_id(fn: Callable | None) -> str | None:
    """A hook's stable name for cache keys: module + qualified name; a ``functools.partial`` adds its
    arguments and a callable instance its state, so two differently configured hooks never share a key.

    >>> import functools, operator
    >>> hook_id(functools.partial(operator.add, 2))
    'functools.partial(_operator.add, [2], {})'
    """
    if fn is None:
        return None
    if isinstance(fn, functools.partial):
        return f"functools.partial({hook_id(fn.func)}, {_state(list(fn.args))}, {_state(fn.keywords)})"
    if isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)):
        bound = getattr(fn, "__self__", None)
        name = f"{fn.__module__}.{fn.__qualname__}"
        return name if bound is None or isinstance(bound, types.ModuleType) else f"{name}@{hook_id(bound)}"
    cls = type(fn)
    state = dataclasses.asdict(fn) if dataclasses.is_dataclass(fn) else getattr(fn, "__dict__", {})
    return f"{cls.__module__}.{cls.__qualname__}({_state(state)})"


def _state(obj: Any) -> str:
    """Canonical JSON of hook arguments (callables by their :func:`hook_id`)."""
    import json
    return json.dumps(obj, sort_keys=True, default=lambda o: hook_id(o) if callable(o) else str(o))


def make_config(method: Method, overrides: dict[str, str] | None = None) -> CamConfig:
    """The method's config with ``--set key=value`` overrides parsed by the field types. A ``recipe``
    override applies that recipe's settings first, so the other overrides win over them. A config with
    a ``resolve(given)`` method then fills the defaults that depend on other settings (CONTA's
    ``expansion`` follows its ``base``), ``given`` being the names the overrides and the recipe set.

    >>> from wsssbench.methods_api import METHODS, make_config
    >>> make_config(METHODS.get("cam"), {"seed_threshold": "0.2", "cam_scales": "1,0.5"}).cam_scales
    (1.0, 0.5)
    >>> cfg = make_config(METHODS.get("cam"), {"recipe": "paper", "cls_epochs": "1"})
    >>> cfg.recipe, cfg.backbone, cfg.cls_epochs
    ('paper', 'resnet50_irn', 1)
    >>> make_config(METHODS.get("cam"), {"nope": "1"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    wsssbench.errors.UserError: cam has no setting 'nope'; settings: backbone, cam_arithmetic, ...
    """
    cfg = method.config()
    types_ = typing.get_type_hints(method.config)
    overrides = dict(overrides or {})
    recipe = method.recipe(overrides.pop("recipe", cfg.recipe))
    for key, value in recipe.settings:
        setattr(cfg, key, value)
    cfg.recipe = recipe.name
    for key, text in overrides.items():
        if key not in types_:
            raise UserError(f"{method.name} has no setting {key!r}; settings: {', '.join(sorted(types_))}")
        setattr(cfg, key, parse_value(types_[key], str(text), key))
    check_choices(cfg)
    if hasattr(cfg, "resolve"):
        cfg.resolve({"recipe", *dict(recipe.settings), *overrides})
    return cfg


def check_choices(cfg: CamConfig) -> None:
    """One UserError for a choice field (:data:`CHOICES`) set to a value it does not take."""
    choices = {**CHOICES, "cls_optimizer": CLS_OPTIMIZERS.names(), "seg_optimizer": SEG_OPTIMIZERS.names()}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise UserError(f"--set {name}={getattr(cfg, name)}: use one of {', '.join(allowed)}")


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
        value = typ(text)
    except ValueError:
        raise UserError(f"--set {key}={text}: not a valid {getattr(typ, '__name__', typ)}") from None
    if typ is float and not math.isfinite(value):
        raise UserError(f"--set {key}={text}: not a finite number")
    return value


def stage_order(method: Method | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """:data:`STAGE_OWNERS` with ``method``'s classifier stages after the base classifier and its
    ``round_fields`` given to the next-round stage."""
    extras = [(st.name, (st.prefix,)) for st in method.classifier_stages] if method else []
    rounds = method.round_fields if method else ()
    owners = [(stage, claims + rounds if stage == "next_round" else claims) for stage, claims in STAGE_OWNERS]
    return [owners[0], *extras, *owners[1:]]


def field_owner(name: str, order: list[tuple[str, tuple[str, ...]]]) -> str:
    """The stage that owns config field ``name``: the last one claiming it, else the classifier."""
    owners = [stage for stage, claims in order if any(name.startswith(c) for c in claims)]
    return owners[-1] if owners else order[0][0]


def stage_fields(cfg: CamConfig, stage: str, method: Method | None = None) -> dict[str, Any]:
    """The config fields ``stage``'s key holds: every field that no later stage owns.

    >>> cfg = CamConfig()
    >>> "cls_lr" in stage_fields(cfg, "classifier"), "cam_scales" in stage_fields(cfg, "classifier")
    (True, False)
    >>> "cls_lr" in stage_fields(cfg, "segmenter"), "seed_threshold" in stage_fields(cfg, "segmenter")
    (True, False)
    """
    order = stage_order(method)
    names = [s for s, _ in order]
    if stage not in names:
        raise KeyError(f"no stage {stage!r}; stages: {', '.join(names)}")
    later = set(names[names.index(stage) + 1:])
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if field_owner(f.name, order) not in later}


def _discover() -> None:
    """Import every module of ``wsssbench.methods``; each registers its adapter on import."""
    from . import methods
    for mod in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"{methods.__name__}.{mod.name}")
