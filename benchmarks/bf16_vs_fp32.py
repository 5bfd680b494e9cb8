"""bf16 autocast vs float32 on a GPU: the same ``run`` twice, scores side by side.

``--device cuda`` trains the classifier and the segmenter under bf16 autocast with channels_last
(``stages/train_classifier.py``, ``stages/train_segmenter.py``). This script runs the method once as the
harness does and once with ``torch.autocast`` replaced by a no-op (float32 throughout), each in its own
``--out`` folder (the stage cache does not key on it), and prints every metric and its difference.

    python benchmarks/bf16_vs_fp32.py --out runs-amp                    # cam on synthetic tiny, seeds 0,1,2
    python benchmarks/bf16_vs_fp32.py --out runs-amp --method c2am --seeds 0
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from pathlib import Path

import torch


def scores(method: str, preset: str, seeds: list[int], out: Path, fp32: bool, sets: dict,
           device: str = "cuda") -> dict[str, list[float]]:
    from wsssbench.harness import run_method
    autocast = torch.autocast
    if fp32:
        torch.autocast = lambda *args, **kwargs: contextlib.nullcontext()     # noqa: E731 (read at call time)
    try:
        records = [run_method(method, dataset_options={"preset": preset}, device=device, seed=s, out=out,
                              overrides=dict(sets)) for s in seeds]
    finally:
        torch.autocast = autocast
    return {k: [r.metrics[k] for r in records] for k in records[0].metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="cam")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("runs-amp"))
    ap.add_argument("--device", default="cuda", help="cuda; cpu only as a smoke test (no autocast there: equal)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="key=value, as wsssbench run --set")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bf16_vs_fp32: no CUDA device visible to torch")
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = dict(item.split("=", 1) for item in args.sets)
    bf16 = scores(args.method, args.preset, seeds, args.out / "bf16", False, sets, args.device)
    fp32 = scores(args.method, args.preset, seeds, args.out / "fp32", True, sets, args.device)
    out = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "method": args.method, "preset": args.preset, "seeds": seeds,
           "bf16": bf16, "fp32": fp32,
           "mean_diff_bf16_minus_fp32": {k: statistics.fmean(b - f for b, f in zip(bf16[k], fp32[k])) for k in bf16},
           "max_abs_diff": {k: max(abs(b - f) for b, f in zip(bf16[k], fp32[k])) for k in bf16}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
