"""CONTA (Zhang et al., "Causal Intervention for Weakly-Supervised Semantic Segmentation", NeurIPS 2020).

Context adjustment wrapped around a baseline (``--set base=irnet``). Round 0 is the baseline itself;
each later round t (paper Sec. 3.2, Fig. 4):

1. the classifier sees [X, M_t] at a backbone block and trains with the multi-label soft margin (Eq. 2);
2. CAMs → seeds → the baseline's own expansion → pseudo-masks;
3. DeepLab-v2 trains on them and predicts every training image (X_m);
4. the confounder set C = {c_i}, c_i the average mask of class i, gives
   M_{t+1} = Σ_i α_i c_i P(c_i), α = softmax_i((W1 X_m)ᵀ(W2 c_i)/√n) (Eq. 3), W1 and W2 trained
   with the next round's classifier.

The paper leaves open the resolution of C, how X_m becomes a vector, the projections' form and
initialisation, and how [X, M] enters a block whose next layer expects the block's channels.
``docs/conta.md`` gives each choice with its source; in short:

- X_m is the segmentation model's foreground (its predicted mask ≠ background), c_i the mean over the
  training images labelled i of their binary class-i mask, both area-resized to ``conta_size``²
  (the paper's h × w; 32 = the block-5 side of IRN's 512 crop at stride 16);
- W1, W2 follow CONTA's ``segmentation/tools/m_t.py`` (``conta_attention="code"``): ``nn.Linear``
  with bias, n + 1 outputs (``embedding_size = 21`` on VOC), N(0, 0.02) weights, zero bias, scale
  √(n + 1); ``"paper"`` is Eq. 3 as printed (no bias, n outputs, √n);
- P(c_i) = 1/n (Sec. 3.2; the code loads a prior file that is not published), ``conta_prior=frequency``
  the class image frequencies;
- M lives in the image's frame: C is in full-image coordinates, and a per-pixel coordinate map
  (an extra input, cropped and flipped with the image) samples M into the crop the network sees;
- [X, M] followed by the next layer equals that layer on X plus a kernel on M, so M enters block b
  as ``x_b + K_b M`` (1×1, zero-initialised, so round t+1 starts from the baseline's network); at
  block 5 this is the concatenation into the classifier exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsssbench.errors import UserError
from wsssbench.io import atomic_path, save_figure, write_json
from wsssbench.methods_api import METHODS, CamConfig, Method

#: the baselines CONTA deploys on (paper Sec. 4.1; every one registered now)
BASES = ("irnet", "cam", "seam", "dsrg", "sec")
#: a base's own default round count where it is not ``rounds``'s (appendix 4.1: IRNet+CONTA and SEC+CONTA
#: "achieve the best performance at round = 3", Table A3's Round = 3 row)
BASE_ROUNDS = {"sec": 3,
               "dsrg": 2}     # appendix 4.1 and 4.2: DSRG+CONTA "achieve[s] the best ... at round = 2" (VOC, COCO)
BLOCKS = {"2": (2,), "3": (3,), "4": (4,), "5": (5,), "dense": (2, 3, 4, 5)}
MTS = ("adjusted", "seg_mask")
CONFOUNDERS = ("seg_mask", "pseudo_mask")


@dataclass
class ContaConfig(CamConfig):
    """The baseline's settings plus CONTA's; the defaults are the paper's (Sec. 4.2, appendix A1–A5)."""

    base: str = "irnet"                 # irnet | cam | seam | sec | dsrg: Table 2's four baselines and CAM
    block: str = "5"                    # 2 | 3 | 4 | 5 | dense: where [X, M_t] enters (Q3: block 5 best)
    mt: str = "adjusted"                # adjusted: Eq. 3's M_t | seg_mask: the segmentation mask itself (Q1)
    confounder: str = "seg_mask"        # seg_mask | pseudo_mask: what C averages (Q4: seg_mask better)
    conta_size: int = 32                # h = w of C, X_m and M (the paper gives none; see the module doc)
    conta_attention: str = "code"       # code: m_t.py's Linear layers | paper: Eq. 3 as printed
    conta_prior: str = "uniform"        # uniform: P(c_i) = 1/n (Sec. 3.2) | frequency: class image frequencies
    rounds: int = 3                     # Q2 / A2: round 3 is best for SEAM, IRNet and SEC; DSRG: 2
    saliency_dir: str | None = None     # base=dsrg: its saliency maps, one PNG per image id (docs/dsrg.md)
    # every other baseline setting (expansion, seed rule, protocols, ...) is the base's own (resolve)

    def resolve(self, given: set[str]) -> None:
        """Check CONTA's choices; take every baseline setting (CamConfig's fields but ``rounds``) from the
        base's own defaults unless ``--set`` gave it, so round 0 is the base run alone (same stages)."""
        if self.base not in BASES:
            raise UserError(f"--set base={self.base}: use one of {', '.join(BASES)}")
        for name, allowed in (("block", BLOCKS), ("mt", MTS), ("confounder", CONFOUNDERS),
                              ("conta_attention", ("code", "paper")), ("conta_prior", ("uniform", "frequency"))):
            if getattr(self, name) not in allowed:
                raise UserError(f"--set {name}={getattr(self, name)}: use one of {', '.join(allowed)}")
        if self.conta_size < 1:
            raise UserError(f"--set conta_size={self.conta_size}: must be at least 1")
        base = METHODS.get(self.base).config()
        for f in dataclasses.fields(CamConfig):
            if f.name not in given and f.name != "rounds":
                setattr(self, f.name, getattr(base, f.name))
        if "rounds" not in given:
            self.rounds = BASE_ROUNDS.get(self.base, self.rounds)
        if self.rounds and not self.seg_enabled:
            raise UserError("conta: X_m and the confounder set come from the segmentation model; "
                            "keep seg_enabled=true (or --set rounds=0 for the baseline alone)")


def _base(ctx) -> Method:
    return METHODS.get(ctx.cfg.base)


# --- Eq. 3 and the classifier on [X, M_t] --------------------------------------------------------------


@functools.cache
def make_modules():
    """The torch modules ``(ContextAdjustment, ContextClassifier)``, defined once on first use so that
    registering the method does not import torch."""
    import torch
    nn, F = torch.nn, torch.nn.functional

    class ContextAdjustment(nn.Module):
        """Eq. 3: M = Σ_i α_i P(c_i) c_i, α = softmax_i((W1 X_m)ᵀ(W2 c_i) / √e), for X_m (B, hw) → (B, hw).

        ``confounders`` (n, h, w) and ``prior`` (n,) are buffers (saved with the model); ``attention``
        "code" is m_t.py's ``Wy``/``Wz`` (Linear with bias, e = n + 1 outputs, √e), "paper" the
        printed W1, W2 ∈ R^{n×hw} (no bias, e = n).
        """

        def __init__(self, confounders, prior, attention: str = "code"):
            super().__init__()
            n, h, w = confounders.shape
            code = attention == "code"
            self.embed = n + 1 if code else n
            self.W1 = nn.Linear(h * w, self.embed, bias=code)
            self.W2 = nn.Linear(h * w, self.embed, bias=code)
            for lin in (self.W1, self.W2):
                nn.init.normal_(lin.weight, std=0.02)                  # m_t.py: normal_(std=0.02)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            self.register_buffer("confounders", torch.as_tensor(confounders, dtype=torch.float32).reshape(n, -1))
            self.register_buffer("prior", torch.as_tensor(prior, dtype=torch.float32))
            self.size = (h, w)

        def attention(self, xm):
            """α (B, n): the softmax over the confounders of the scaled similarities."""
            scores = self.W1(xm) @ self.W2(self.confounders).t() / math.sqrt(self.embed)
            return F.softmax(scores, dim=1)

        def forward(self, xm):
            return (self.attention(xm) * self.prior) @ self.confounders

    class ContextClassifier(nn.Module):
        """The base classifier with M_t added at ``blocks`` (the base's ``backbone.stages`` and 1×1 ``classifier``).

        ``cams(x, conta_xm, conta_where)``: ``conta_xm`` (B, 1, H, W) the segmentation foreground in the
        frame of ``x``; ``conta_where`` (B, 3, H, W) each pixel's full-image coordinates (x, y in [-1, 1])
        and 1 inside the image, 0 in crop padding. ``adjust`` None: M is X_m itself (ablation Q1).
        """

        extra_input_names = ("conta_xm", "conta_where")      # the CAM stage passes them to cams/forward

        def __init__(self, base, adjust, blocks: tuple[int, ...], size: tuple[int, int]):
            super().__init__()
            self.backbone, self.classifier = base.backbone, base.classifier
            self.num_classes = base.num_classes
            self.classifier_context = adjust           # "classifier" prefix: new layers train at 10× (IRN)
            self.classifier_inject = nn.ModuleDict({
                str(b): nn.Conv2d(1, self.backbone.stage_channels[b - 1], 1, bias=False) for b in blocks})
            for conv in self.classifier_inject.values():
                nn.init.zeros_(conv.weight)
            self.blocks, self.size = tuple(blocks), tuple(size)

        def context_map(self, conta_xm, conta_where):
            """M_t (B, 1, H, W) in the frame of the input."""
            if conta_xm is None or conta_where is None:
                raise ValueError("CONTA's classifier needs conta_xm and conta_where (its extra inputs)")
            if self.classifier_context is None:
                return conta_xm
            xm = F.interpolate(conta_xm.float(), size=self.size, mode="area").flatten(1)
            m = self.classifier_context(xm).view(-1, 1, *self.size)
            grid = conta_where[:, :2].permute(0, 2, 3, 1).to(m.dtype)
            return F.grid_sample(m, grid, mode="bilinear", padding_mode="border",
                                 align_corners=False) * conta_where[:, 2:3]

        def cams(self, x, conta_xm=None, conta_where=None):
            m = self.context_map(conta_xm, conta_where)
            for b, block in enumerate(self.backbone.stages, start=1):
                x = block(x)
                if str(b) in self.classifier_inject:
                    x = x + self.classifier_inject[str(b)](
                        F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False).to(x.dtype))
            return self.classifier(x)

        def forward(self, x, conta_xm=None, conta_where=None):
            return self.cams(x, conta_xm, conta_where).mean((2, 3))

    return ContextAdjustment, ContextClassifier


# --- hooks -----------------------------------------------------------------------------------------


def build_classifier(ctx):
    """Round 0: the base's classifier; later rounds: it on [X, M_t] (the confounders of ``ctx.inputs``)."""
    model = _base(ctx).build_classifier(ctx)
    if ctx.round == 0:
        return model
    adjustment, classifier = make_modules()
    cfg = ctx.cfg
    adjust = None
    if cfg.mt == "adjusted":
        with np.load(ctx.inputs["confounders"]) as z:
            adjust = adjustment(z["confounders"], z["prior"], cfg.conta_attention)
    return classifier(model, adjust, BLOCKS[cfg.block], (cfg.conta_size, cfg.conta_size))


def train_step(ctx, model, batch):
    """Round 0: the base's step; later rounds: Eq. 2, the multi-label soft margin of f(X, M_t)."""
    if ctx.round == 0:
        return _base(ctx).train_step(ctx, model, batch)
    import torch.nn.functional as F
    logits = model(batch["image"], batch["conta_xm"], batch["conta_where"])
    return F.multilabel_soft_margin_loss(logits, batch["labels"])


def extra_inputs(ctx, sample) -> dict:
    """Rounds after 0: X_m (the previous round's segmentation foreground) and the full-image coordinates."""
    if ctx.round == 0:
        return {}
    from PIL import Image
    path = Path(ctx.inputs["xm"]) / f"{sample.id}.png"
    if not path.is_file():
        raise UserError(f"conta: no segmentation prediction {path} for image {sample.id} (X_m)")
    pred = np.array(Image.open(path))
    return {"conta_xm": foreground(pred, ctx.dataset.has_background), "conta_where": image_frame(*pred.shape)}


def foreground(mask: np.ndarray, has_background: bool = True) -> np.ndarray:
    """(H, W) float32: 1 where ``mask`` holds a foreground class (not background 0, not ignore 255)."""
    fg = mask != 255
    if has_background:
        fg &= mask != 0
    return fg.astype(np.float32)


def image_frame(h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32: each pixel centre's (x, y) in [-1, 1] (``grid_sample``'s align_corners=False) and 1.

    >>> image_frame(1, 2)[0].tolist()
    [[-0.5, 0.0, 1.0], [0.5, 0.0, 1.0]]
    """
    ys = (2 * np.arange(h, dtype=np.float32) + 1) / h - 1
    xs = (2 * np.arange(w, dtype=np.float32) + 1) / w - 1
    out = np.ones((h, w, 3), np.float32)
    out[..., 0], out[..., 1] = xs[None, :], ys[:, None]
    return out


def expand(ctx, cams_dir: Path, out_dir: Path) -> None:
    """The base's expand hook (SEC's cues); a base without one gets the toolkit's ``expansion`` of the
    images whose CAMs ``cams_dir`` holds, in the harness's order (its classifier images, then the rest)."""
    hook = _base(ctx).expand
    if hook is not None:
        return hook(ctx, cams_dir, out_dir)
    from wsssbench.stages import expand as stage
    from wsssbench.stages.common import train_split
    ds, cfg = ctx.dataset, ctx.cfg
    have = {p.stem for p in Path(cams_dir).glob("*.npz")}
    images, seen = [], set()
    for sample in ds.samples(train_split(ds)) + ds.samples("train"):
        if sample.id in have and sample.id not in seen:
            images.append(sample)
            seen.add(sample.id)
    rule = {"alpha": cfg.seed_alpha} if cfg.seed_alpha is not None else {"threshold": cfg.seed_threshold}
    stage.run(ctx, cams_dir, images, Path(out_dir).parent, None, rule)


def refine_cams(ctx, model, image, cams):
    base = _base(ctx).refine_cams
    return cams if base is None else base(ctx, model, image, cams)


def build_segmenter(ctx):
    return _base(ctx).build_segmenter(ctx)


def seg_step(ctx, model, batch):
    return _base(ctx).seg_step(ctx, model, batch)


class ConfounderSet:
    """Running per-class sums of binary class masks at ``size``: c_i = the mean over images labelled i.

    >>> acc = ConfounderSet(num_fg=2, size=(2, 2))
    >>> acc.update(np.array([[1, 1], [0, 0]]), [1], has_background=True)
    >>> acc.update(np.array([[0, 1], [0, 1]]), [1], has_background=True)
    >>> acc.compute()[0].tolist(), acc.count.tolist()
    ([[0.5, 1.0], [0.0, 0.5]], [2, 0])
    """

    def __init__(self, num_fg: int, size: tuple[int, int]):
        self.size = tuple(size)
        self.sum = np.zeros((num_fg, *self.size), np.float64)
        self.count = np.zeros(num_fg, np.int64)

    def update(self, mask: np.ndarray, labels, has_background: bool = True) -> None:
        """Add one image: ``mask`` (H, W) of dataset label values, ``labels`` its image-level classes."""
        import torch
        import torch.nn.functional as F
        for label in labels:
            k = label - 1 if has_background else label
            binary = torch.from_numpy((mask == label).astype(np.float32))[None, None]
            self.sum[k] += F.interpolate(binary, size=self.size, mode="area")[0, 0].double().numpy()
            self.count[k] += 1

    def compute(self) -> np.ndarray:
        """(n, h, w) float32: the average masks; a class no image carries stays all-zero."""
        return (self.sum / np.maximum(self.count, 1)[:, None, None]).astype(np.float32)

    def prior(self, kind: str = "uniform") -> np.ndarray:
        """P(c_i): 1/n (paper Sec. 3.2) or each class's share of the labelled images (``frequency``)."""
        n = len(self.count)
        if kind == "uniform":
            return np.full(n, 1 / n, np.float32)
        return (self.count / max(self.count.sum(), 1)).astype(np.float32)


def next_round(ctx, artifacts: dict[str, Path], workdir: Path) -> dict[str, Path]:
    """Step 4: the confounder set from round t's segmentation predictions (or pseudo-masks) and X_m."""
    from PIL import Image

    from wsssbench.harness import link_subset
    from wsssbench.stages.common import train_split
    cfg, ds = ctx.cfg, ctx.dataset
    if "train_predictions" not in artifacts:
        raise UserError("conta: the segmentation stage made no training-image predictions (X_m)")
    train = ds.samples(train_split(ds))
    source = artifacts["train_predictions"] if cfg.confounder == "seg_mask" else artifacts["masks"]
    acc = ConfounderSet(ctx.num_fg, (cfg.conta_size, cfg.conta_size))
    for sample in train:
        acc.update(np.array(Image.open(Path(source) / f"{sample.id}.png")), sample.labels, ds.has_background)
    confounders = acc.compute()
    names = fg_class_names(ds)
    with atomic_path(workdir / "confounders.npz") as tmp:
        np.savez(tmp, confounders=confounders, prior=acc.prior(cfg.conta_prior), count=acc.count,
                 class_names=np.array(names))
    plot_confounders(confounders, names, workdir / "confounders.png", ctx.round + 1)
    # X_m of every image the next round's classifier and CAM stage see: training predictions, and the
    # validation predictions for the val CAMs
    link_subset(Path(artifacts["train_predictions"]), workdir / "xm", train, ".png")
    val_pred = Path(artifacts.get("predictions", ""))
    if val_pred.is_dir():
        val = [s for s in ds.samples("val") if (val_pred / f"{s.id}.png").is_file()]
        link_subset(val_pred, workdir / "xm", val, ".png")
    if ctx.round > 0:
        plot_context_maps(ctx, artifacts["classifier"], train[:4], workdir / f"m_round{ctx.round}.png")
    write_json(workdir / "confounders.json", {"round": ctx.round + 1, "source": cfg.confounder,
                                              "images_per_class": acc.count.tolist(), "class_names": names})
    return {"confounders": workdir / "confounders.npz", "xm": workdir / "xm"}


def fg_class_names(ds) -> list[str]:
    names = list(ds.class_names)
    return names[1:] if ds.has_background else names


# --- figures ---------------------------------------------------------------------------------------


def plot_confounders(confounders: np.ndarray, names, path: Path, round_: int) -> Path:
    """The confounder set C as a grid of class maps (paper Fig. 3c)."""
    from wsssbench.figures import pyplot
    plt = pyplot()
    cols = min(5, len(confounders))
    rows = -(-len(confounders) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name, c in zip(axes.flat, names, confounders):
        ax.imshow(c, cmap="viridis", vmin=0, vmax=max(float(c.max()), 1e-6))
        ax.set_title(name, fontsize=8)
    fig.suptitle(f"confounder set C for round {round_} (class-average masks)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def plot_context_maps(ctx, classifier_dir: Path, samples, path: Path) -> Path:
    """Round t's M_t for a few training images: image, X_m, M_t (full frame)."""
    import torch

    from wsssbench.figures import pyplot

    from wsssbench.stages.common import extra_tensors
    model = build_classifier(ctx)
    model.load_state_dict(torch.load(Path(classifier_dir) / "model.pt", map_location="cpu", weights_only=True))
    plt = pyplot()
    fig, axes = plt.subplots(len(samples), 3, figsize=(6, 2 * len(samples)), squeeze=False)
    with torch.no_grad():
        for row, sample in zip(axes, samples):
            image = ctx.dataset.load_image(sample)
            ex = extra_tensors(lambda s: extra_inputs(ctx, s), sample, image.shape[:2])
            m = model.context_map(ex["conta_xm"][None], ex["conta_where"][None])[0, 0].numpy()
            for ax, what, title in zip(row, (image, ex["conta_xm"][0].numpy(), m), ("image", "$X_m$", "$M_t$")):
                ax.imshow(what, **({} if what is image else {"cmap": "viridis"}))
                ax.set_title(title, fontsize=8)
                ax.axis("off")
    fig.suptitle(f"round {ctx.round}: the context maps the classifier saw", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


METHODS.add("conta", Method(
    name="conta",
    config=ContaConfig,
    summary="CONTA: back-door context adjustment around a baseline, round by round (Zhang et al. 2020)",
    build_classifier=build_classifier,
    train_step=train_step,
    refine_cams=refine_cams,
    expand=expand,
    build_segmenter=build_segmenter,
    seg_step=seg_step,
    segment_train=True,
    extra_inputs=extra_inputs,
    next_round=next_round,
    round_fields=("block", "mt", "confounder", "conta_"),
))
