"""Run figures: for a few images, the image, its CAMs, seeds, pseudo-mask and ground truth; across rounds."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .cams import load_cams
from .data.voc import voc_palette
from .io import save_figure
from .metrics.segmentation import seeds_from_cams


def palette() -> np.ndarray:
    """VOC's colour map as a (256, 3) lookup, so class colours match the usual pictures; 255 is white."""
    cmap = np.array(voc_palette(), np.uint8).reshape(256, 3)
    cmap[255] = 255
    return cmap


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _seed_rule(inputs: dict) -> tuple[dict, str]:
    """The run's seed rule (threshold or background power) and its short name."""
    rule = {k: inputs[k] for k in ("threshold", "alpha") if k in inputs}
    return rule, (f"t={rule['threshold']}" if "threshold" in rule else f"α={rule['alpha']}")


def _views(sample, cams_dir: Path, masks_dir: Path, rule: dict) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """One image's CAM heat map (max over classes; None without classes), seeds and pseudo-mask."""
    from PIL import Image

    cam = load_cams(Path(cams_dir) / f"{sample.id}.npz")
    heat = cam.cams.max(0) if len(cam.cams) else None
    mask = np.array(Image.open(Path(masks_dir) / f"{sample.id}.png"))
    return heat, seeds_from_cams(cam.cams, cam.keys, **rule), mask


def _grid(plt, rows: int, cols: tuple[str, ...]):
    fig, axes = plt.subplots(rows, len(cols), figsize=(2 * len(cols), 2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, title in zip(axes[0], cols):
        ax.set_title(title, fontsize=8)
    return fig, axes


def run_figure(dataset, inputs: dict, path: Path) -> Path:
    """Write the grid: rows = images; columns = image, CAM (max over classes), seeds, pseudo-mask, GT."""
    plt, pal = pyplot(), palette()
    rule, rule_name = _seed_rule(inputs)
    cols = ("image", "CAM (max)", f"seeds ({rule_name})", "pseudo-mask", "ground truth")
    fig, axes = _grid(plt, len(inputs["samples"]), cols)
    for row, sample in zip(axes, inputs["samples"]):
        image = dataset.load_image(sample)
        heat, seeds, mask = _views(sample, inputs["cams"], inputs["masks"], rule)
        row[0].imshow(image)
        row[1].imshow(image)
        row[1].imshow(np.zeros(image.shape[:2]) if heat is None else heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        for ax, what in zip(row[2:], (seeds, mask, dataset.load_mask(sample))):
            ax.imshow(pal[what])
        row[0].set_ylabel(sample.id, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def rounds_masks_figure(dataset, inputs: dict, path: Path) -> Path:
    """Seeds and pseudo-masks of a few training images across the rounds of a multi-round run: rows =
    images; columns = image, ground truth, then each round's seeds and pseudo-mask (round 0 = baseline)."""
    plt, pal = pyplot(), palette()
    rule, rule_name = _seed_rule(inputs)
    cols = ("image", "ground truth") + tuple(f"round {t}: {what}" for t in range(len(inputs["rounds"]))
                                             for what in (f"seeds ({rule_name})", "pseudo-mask"))
    fig, axes = _grid(plt, len(inputs["samples"]), cols)
    for row, sample in zip(axes, inputs["samples"]):
        row[0].imshow(dataset.load_image(sample))
        row[1].imshow(pal[dataset.load_mask(sample)])
        for t, view in enumerate(inputs["rounds"]):
            _, seeds, mask = _views(sample, view["cams"], view["masks"], rule)
            row[2 + 2 * t].imshow(pal[seeds])
            row[3 + 2 * t].imshow(pal[mask])
        row[0].set_ylabel(sample.id, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def rounds_figure(rounds: list[dict], path: Path, title: str = "") -> Path:
    """mIoU (and, on the synthetic benchmark, context confusion) per round of a multi-round run."""
    plt = pyplot()
    xs = [r["round"] for r in rounds]
    confusion = [k for k in ("seed", "pseudo", "seg") if any(f"{k}_context_confusion" in r for r in rounds)]
    fig, axes = plt.subplots(1, 2 if confusion else 1, figsize=(9 if confusion else 4.8, 3.2), squeeze=False)
    for key, label in (("seed_miou", "seeds"), ("pseudo_miou", "pseudo-masks"), ("seg_miou", "segmentation")):
        ys = [r.get(key) for r in rounds]
        if any(y is not None for y in ys):
            axes[0, 0].plot(xs, ys, marker="o", label=label)
    axes[0, 0].set(xlabel="round (0 = baseline)", ylabel="mIoU (%)", xticks=xs)
    axes[0, 0].legend(fontsize=8)
    for key in confusion:
        axes[0, 1].plot(xs, [r.get(f"{key}_context_confusion") for r in rounds], marker="o", label=key)
    if confusion:
        axes[0, 1].set(xlabel="round (0 = baseline)", ylabel="context confusion (%)", xticks=xs)
        axes[0, 1].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
