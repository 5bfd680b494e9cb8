"""SEC's losses beside a reference port's, on the same hand-made tensors.

    python benchmarks/sec_side_by_side.py /path/to/SEC_pytorch     # a checkout of halbielee/SEC_pytorch

The port's ``utils/util_loss.py`` transcribes kolesman/SEC's ``pylayers/pylayers/pylayers.py`` (the Caffe
layers, whose Theano expressions need Caffe to run) line by line; its functions are imported from the
checkout and run on the tensors ours get: the smoothed softmax, the seed, expand and constrain losses
(values and gradients with respect to the scores), and the CRF layer. The port's ``krahenbuhl2013``
extension (the bundled dense CRF, compiled with Eigen) is shimmed by pydensecrf, which wraps the same
Krähenbühl 2013 code with the same kernel defaults, with the reference's unary (−scores) and potentials.
Prints one line per check with the largest absolute difference; docs/sec.md records them.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsssbench.methods import sec as ours  # noqa: E402
from wsssbench.stages.common import MEAN, STD  # noqa: E402


def crf_shim() -> types.ModuleType:
    """``krahenbuhl2013.CRF`` (the reference's CRF/krahenbuhl2013/CRF.py) on pydensecrf: unary −scores,
    bilateral weight 10, xy 80/scale, rgb 13; Gaussian weight 3, xy 3/scale."""
    import pydensecrf.densecrf as dcrf

    def CRF(image, unary, maxiter=10, scale_factor=1.0):
        h, w, n = unary.shape
        d = dcrf.DenseCRF2D(w, h, n)
        d.setUnaryEnergy(np.ascontiguousarray(-unary.reshape(-1, n).T, dtype=np.float32))
        d.addPairwiseGaussian(sxy=3 / scale_factor, compat=3)
        d.addPairwiseBilateral(sxy=80 / scale_factor, srgb=13, compat=10,
                               rgbim=np.ascontiguousarray(image.astype(np.uint8)))
        return np.array(d.inference(maxiter)).T.reshape(h, w, n)

    mod = types.ModuleType("krahenbuhl2013")
    mod.CRF = CRF
    return mod


def load_port(checkout: Path):
    sys.modules["krahenbuhl2013"] = crf_shim()
    spec = importlib.util.spec_from_file_location("sec_port_loss", checkout / "utils" / "util_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tensors(seed: int = 0, batch: int = 3, classes: int = 21, side: int = 41):
    """Scores, image-level labels (the port's (B, 1, 1, C) layout and ours), one-hot cues and 321² images."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, classes, side, side, generator=g, dtype=torch.float64) * 3
    labels = torch.zeros(batch, classes - 1, dtype=torch.float64)
    for b in range(batch):
        labels[b, torch.randperm(classes - 1, generator=g)[: b + 1]] = 1
    mask = torch.full((batch, side, side), 255, dtype=torch.long)
    for b in range(batch):
        mask[b, :8] = 0                                         # background cues at the top
        for k, c in enumerate(labels[b].nonzero()[:, 0].tolist()):
            mask[b, 12 + 6 * k: 16 + 6 * k, 5:30] = c + 1       # a band per present class
    images = torch.randint(0, 256, (batch, 3, 321, 321), generator=g).double()
    return scores, labels, mask, images


def grad_of(fn, scores):
    x = scores.clone().requires_grad_(True)
    value = fn(x)
    value.backward()
    return value.detach(), x.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", type=Path, help="a checkout of halbielee/SEC_pytorch")
    args = parser.parse_args()
    port = load_port(args.checkout)
    scores, labels, mask, images = tensors()
    stat = torch.cat([torch.ones(len(labels), 1, dtype=labels.dtype), labels], 1)[:, None, None, :]
    cues = ours.one_hot_cues(mask, scores.shape[1], scores.shape[-2:]).double()

    rows = []

    def compare(name, a, b):
        rows.append((name, float((a - b).abs().max())))

    compare("smoothed softmax", ours.smoothed_softmax(scores), port.softmax_layer(scores))
    for name, mine, theirs in (
            ("seed loss", lambda x: ours.seed_loss(ours.smoothed_softmax(x), cues),
             lambda x: port.seed_loss_layer(port.softmax_layer(x), cues)),
            ("expand loss", lambda x: ours.expand_loss(ours.smoothed_softmax(x), labels),
             lambda x: port.expand_loss_layer(port.softmax_layer(x), stat, scores.shape[1] - 1))):
        (v1, g1), (v2, g2) = grad_of(mine, scores), grad_of(theirs, scores)
        compare(name, v1, v2)
        compare(f"{name} d/dscores", g1, g2)

    # CRF layer: the port's on the 321² caffe-style images (BGR minus its mean pixel), ours on the same
    # pixels (RGB, normalised as the harness does) resized to 41² and turned to BGR
    scores32 = scores.float()
    caffe = images.flip(1) - torch.tensor([104.0, 117.0, 123.0], dtype=torch.float64).view(1, 3, 1, 1)
    theirs = port.crf_layer(scores32, caffe, iternum=10)
    rgb = (images / 255 - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        STD, dtype=torch.float64).view(1, 3, 1, 1)
    small = ours.images_at(rgb.float(), scores.shape[-2:])
    port_small = np.round(port.zoom(caffe.numpy(), (1, 1, 41 / 321, 41 / 321), order=1)
                          + np.array([104.0, 117.0, 123.0])[None, :, None, None]).transpose(0, 2, 3, 1)
    compare("CRF input image (uint8 BGR levels)", torch.from_numpy(small.astype(np.float64)),
            torch.from_numpy(np.ascontiguousarray(port_small)))
    mine = ours.crf_log_probs(scores32, small)
    compare("CRF log-probs (ours: unary -log softmax clipped 1e-5)", mine.double(), torch.from_numpy(theirs))
    mild = scores32 / 4                                   # no probability below pydensecrf's 1e-5 clip
    compare("CRF log-probs, scores/4 (no clipped unary)", ours.crf_log_probs(mild, small).double(),
            torch.from_numpy(port.crf_layer(mild, caffe, iternum=10)))
    crf = torch.from_numpy(theirs)
    (v1, g1) = grad_of(lambda x: ours.constrain_loss(ours.smoothed_softmax(x), crf), scores)
    (v2, g2) = grad_of(lambda x: port.constrain_loss_layer(port.softmax_layer(x), theirs), scores)
    compare("constrain loss", v1, v2)
    compare("constrain loss d/dscores", g1, g2)

    width = max(len(n) for n, _ in rows)
    for name, diff in rows:
        print(f"{name:<{width}}  max |diff| {diff:.3g}")


if __name__ == "__main__":
    main()
