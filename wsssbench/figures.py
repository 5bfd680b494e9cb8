"""The per-run figure: for a few images, the image, its CAMs, seeds, pseudo-mask and ground truth."""
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


def run_figure(dataset, inputs: dict, path: Path) -> Path:
    """Write the grid: rows = images; columns = image, CAM (max over classes), seeds, pseudo-mask, GT."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    samples, pal = inputs["samples"], palette()
    rule = {k: inputs[k] for k in ("threshold", "alpha") if k in inputs}    # the run's seed rule
    rule_name = f"t={rule['threshold']}" if "threshold" in rule else f"α={rule['alpha']}"
    cols = ("image", "CAM (max)", f"seeds ({rule_name})", "pseudo-mask", "ground truth")
    fig, axes = plt.subplots(len(samples), len(cols), figsize=(2 * len(cols), 2 * len(samples)), squeeze=False)
    for row, sample in zip(axes, samples):
        image = dataset.load_image(sample)
        cam = load_cams(Path(inputs["cams"]) / f"{sample.id}.npz")
        seeds = seeds_from_cams(cam.cams, cam.keys, **rule)
        heat = cam.cams.max(0) if len(cam.cams) else np.zeros(image.shape[:2])
        mask = np.array(Image.open(Path(inputs["masks"]) / f"{sample.id}.png"))
        shown = (image, None, pal[seeds], pal[mask], pal[dataset.load_mask(sample)])
        for ax, what, title in zip(row, shown, cols):
            if what is None:
                ax.imshow(image)
                ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            else:
                ax.imshow(what)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(sample.id, fontsize=7)
    for ax, title in zip(axes[0], cols):
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def rounds_figure(rounds: list[dict], path: Path, title: str = "") -> Path:
    """mIoU (and, on the synthetic benchmark, context confusion) per round of a multi-round run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
