"""DSRG's region growing and losses beside the reference code, on hand-made tensors.

    python benchmarks/dsrg_side_by_side.py DSRG_CHECKOUT [--port DSRG_PYTORCH_CHECKOUT] [--cases 40]

``DSRG_CHECKOUT`` is a checkout of speedinghzl/DSRG. Its ``pylayers/pylayers/pylayers.py`` is imported
as it is, with stand-ins for what it imports but these checks never call (caffe's ``Layer`` base class,
cPickle, the CRF wrapper, scikit-learn); its Theano graphs run on PyTensor (Theano's maintained fork:
``pip install pytensor`` into any folder on PYTHONPATH; without it the loss checks are skipped).
``--port`` adds terenceylchow124/DSRG_PyTorch's ``utils/util_loss.py`` functions (read from the file,
not imported, as that module imports files the repository does not ship). Prints one line per check
with its maximum difference or its count of disagreeing labels; docs/dsrg.md records a run.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

from wsssbench.methods.dsrg import balanced_seed_loss, boundary_loss, grow_seeds, softmax_probs


def stub(name: str, **attrs) -> None:
    if name not in sys.modules:
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__dict__.update(attrs)


def load_reference(checkout: Path):
    """The reference ``pylayers`` module, with stand-ins for the imports the checks do not use."""
    try:
        import pytensor
        import pytensor.tensor as pt
        theano_t = types.ModuleType("theano.tensor")
        theano_t.__dict__.update({k: getattr(pt, k) for k in dir(pt) if not k.startswith("_")})
        theano_t.grad, theano_t.addbroadcast = pytensor.grad, lambda x, *axes: pt.specify_broadcastable(x, *axes)
        stub("theano", function=pytensor.function, shared=pytensor.shared, tensor=theano_t)
        sys.modules["theano.tensor"] = theano_t
    except ImportError:
        stub("theano", tensor=None)
        stub("theano.tensor")
    stub("caffe", Layer=object)
    sys.modules.setdefault("cPickle", pickle)
    stub("krahenbuhl2013", CRF=None)
    stub("sklearn")
    stub("sklearn.cluster", KMeans=None)
    folder = checkout / "pylayers" / "pylayers"
    sys.path.insert(0, str(folder))                       # CC_labeling_8
    spec = importlib.util.spec_from_file_location("dsrg_reference_pylayers", folder / "pylayers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_port(checkout: Path) -> dict:
    """The PyTorch port's seed step and losses, read from ``utils/util_loss.py`` (+ its ``CC_lab``)."""
    namespace = {"np": np, "torch": torch, "MIN_PROB": 1e-4}
    for path, names in ((checkout / "utils" / "util_dsrg.py", None),
                        (checkout / "utils" / "util_loss.py", {"single_generate_seed_step", "dsrg_seed_loss_layer",
                                                               "constrain_loss_layer", "softmax_layer"})):
        tree = ast.parse(path.read_text())
        keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                and (names is None or n.name in names)]
        exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def smooth(rng, shape, cells: int = 6) -> np.ndarray:
    """Smooth random fields: uniform noise on a coarse grid, bilinearly upsampled."""
    coarse = torch.from_numpy(rng.standard_normal((1, shape[0], cells, cells)).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False)[0].numpy()


def case(rng, c: int = 6, size: int = 41):
    """Image labels (background 1), overlapping 0/1 seeds and confident probabilities of one image."""
    labels = np.zeros(c, np.float32)
    labels[0] = 1
    labels[rng.choice(np.arange(1, c), size=rng.integers(1, 4), replace=False)] = 1
    seeds = (smooth(rng, (c, size, size)) > 1.0).astype(np.float32)
    seeds[labels == 0] *= rng.random() < 0.3                     # sometimes a seed of an absent class
    logits = 8 * smooth(rng, (c, size, size)) + rng.choice([0, 3]) * seeds + 4 * labels[:, None, None]
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    return labels, seeds, probs.astype(np.float32)


def growing(ref, port, cases: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    disagree = port_disagree = grown = total = 0
    for _ in range(cases):
        labels, seeds, probs = case(rng)
        want = ref.generate_seed_step([labels, seeds.copy(), probs, 0.99, 0.85])
        got = grow_seeds(labels, seeds, probs, fg=0.85, bg=0.99)
        disagree += int((want != got).sum())
        grown += int((want != seeds).sum())
        total += want.size
        if port is not None:
            params = ([torch.from_numpy(labels).view(1, 1, -1), torch.from_numpy(seeds.transpose(1, 2, 0).copy()),
                       torch.from_numpy(probs.transpose(1, 2, 0).copy())], [0.85, 0.99])
            theirs = port["single_generate_seed_step"](params)[0].numpy().transpose(2, 0, 1)
            port_disagree += int((theirs != want).sum())
    print(f"region growing: {cases} images (6 classes, 41x41), {grown} of {total} seed entries grown by the "
          f"reference; ours differ from pylayers.generate_seed_step in {disagree} entries")
    if port is not None:
        print(f"  DSRG_PyTorch single_generate_seed_step differs from the reference in {port_disagree} entries "
              "(its label map does not start from the seeds)")


def losses(ref, port, cases: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    worst = {k: 0.0 for k in ("softmax", "seed loss", "seed grad", "boundary loss", "boundary grad (caffe)",
                              "boundary grad (P only)", "port seed loss", "port boundary loss")}
    have_theano = getattr(sys.modules["theano"], "function", None) is not None
    passed = 0.0            # the largest gradient entry CRFLayer.backward adds: what "caffe" vs "none" changes
    if have_theano:
        soft, seed_layer, con_layer = ref.SoftmaxLayer(), ref.BalancedSeedLossLayer(), ref.ConstrainLossLayer()
        soft.setup([0], [0])
        seed_layer.setup([0, 0], [0])
        con_layer.setup([0, 0], [0])
    for _ in range(cases):
        logits = torch.from_numpy((3 * rng.standard_normal((2, 5, 9, 9))).astype(np.float32))
        seeds = torch.from_numpy((rng.random((2, 5, 9, 9)) < 0.2).astype(np.float32))
        seeds[1, 0] = 0                                            # an image without background seeds
        q = torch.softmax(logits + torch.from_numpy(rng.standard_normal((2, 5, 9, 9)).astype(np.float32)), 1)
        q = q.clamp(min=1e-4)
        q = q / q.sum(1, keepdim=True)
        p = softmax_probs(logits).detach().requires_grad_(True)
        ours_seed = balanced_seed_loss(p, seeds)
        g_seed, = torch.autograd.grad(ours_seed, p)
        ours_con = boundary_loss(p, q, "caffe")
        g_con, = torch.autograd.grad(ours_con, p)
        g_con_p, = torch.autograd.grad(boundary_loss(p, q, "none"), p)
        pn, sn, qn = (t.detach().numpy().astype(np.float32) for t in (p, seeds, q))
        if have_theano:
            sm = soft.forward_theano(logits.numpy())
            worst["softmax"] = max(worst["softmax"], float(np.abs(np.maximum(sm, 1e-4) - pn).max()))
            theirs = float(seed_layer.forward_theano(pn, sn))
            worst["seed loss"] = max(worst["seed loss"], abs(theirs - ours_seed.item()))
            worst["seed grad"] = max(worst["seed grad"],
                                     float(np.abs(seed_layer.backward_theano(pn, sn) - g_seed.numpy()).max()))
            log_q = np.log(qn).astype(np.float32)
            worst["boundary loss"] = max(worst["boundary loss"],
                                         abs(float(con_layer.forward_theano(pn, log_q)) - ours_con.item()))
            d_p, d_logq = con_layer.backward_theano(pn, log_q)
            worst["boundary grad (caffe)"] = max(worst["boundary grad (caffe)"],
                                                 float(np.abs(d_p + (1 - qn) * d_logq - g_con.numpy()).max()))
            worst["boundary grad (P only)"] = max(worst["boundary grad (P only)"],
                                                  float(np.abs(d_p - g_con_p.numpy()).max()))
            passed = max(passed, float(np.abs((1 - qn) * d_logq).max()))
        if port is not None:
            theirs = port["dsrg_seed_loss_layer"](p.detach(), seeds)[0].item()
            worst["port seed loss"] = max(worst["port seed loss"], abs(theirs - ours_seed.item()))
            theirs = port["constrain_loss_layer"](p.detach(), np.log(qn)).item()
            worst["port boundary loss"] = max(worst["port boundary loss"], abs(theirs - ours_con.item()))
    if not have_theano:
        print("losses against pylayers.py: skipped (no pytensor on the path)")
    else:
        print(f"(CRFLayer.backward's pass-through adds up to {passed:.3g} to a gradient entry)")
    for name, value in worst.items():
        if (name.startswith("port") and port is None) or (not name.startswith("port") and not have_theano):
            continue
        print(f"{name}: max |ours - reference| = {value:.3g} over {cases} batches (2 x 5 classes x 9 x 9)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a checkout of speedinghzl/DSRG")
    parser.add_argument("--port", type=Path, help="a checkout of terenceylchow124/DSRG_PyTorch")
    parser.add_argument("--cases", type=int, default=40)
    args = parser.parse_args()
    ref = load_reference(args.checkout)
    port = load_port(args.port) if args.port else None
    growing(ref, port, args.cases)
    losses(ref, port, args.cases)


if __name__ == "__main__":
    main()
