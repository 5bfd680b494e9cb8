#!/usr/bin/env bash
# The GPU figures of docs/scale.md in one command, on one CUDA machine with the package installed:
#   1. classifier training throughput: the harness step vs a bare torchvision ResNet-50 step (goal ratio >= 0.8)
#   2. `wsssbench run cam` on the synthetic voc-shape preset end to end, timed (goal < 30 min on one H100/H200;
#      generating the preset's 13,495 images is timed apart, it happens once per machine)
#   2b. `wsssbench run irnet --recipe paper` (IRN's pipeline as its code runs it) on voc-shape, timed
#   3. bf16 autocast vs float32: the mIoU difference on tiny
#   4. with two or more GPUs: `run cam --nproc 2` on tiny beside one process
# Usage: benchmarks/gpu_check.sh [OUT]     (default gpu-check/; every figure lands in OUT/*.json and OUT/log.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch, wsssbench; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'wsssbench', wsssbench.__version__)"
# the papers' VOC settings (benchmarks/bench_train_throughput.py VOC_LIKE), ResNet-50 from random initialisation
VOC=(--set backbone=resnet50 --set cls_output_stride=16 --set cls_rescale=0.64,1.28
     --set cam_scales=1.0,0.5,1.5,2.0 --set cls_size=448 --set seg_size=321)

echo "== 1. throughput (voc-shape, 448 px, batch 16; data loading included)"
python -c "from wsssbench.data import get_dataset; import time; t=time.time(); get_dataset('synthetic', preset='voc-shape'); print(f'voc-shape ready in {time.time()-t:.0f} s')"
python benchmarks/bench_train_throughput.py --device cuda --preset voc-shape --size 448 --batch 16 --steps 50 \
    | tee "$OUT/throughput.json"

echo "== 2. run cam on voc-shape, end to end"
start=$(date +%s)
python -m wsssbench run cam --preset voc-shape --device cuda --out "$OUT/runs-voc" --json "${VOC[@]}" \
    > "$OUT/run_cam_voc_shape.json"
echo "run cam voc-shape: $(( $(date +%s) - start )) s wall (per-stage seconds in $OUT/run_cam_voc_shape.json timings)"
python -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: d[k] for k in ('seed_miou','pseudo_miou','seg_miou')}, d['timings'])" \
    "$OUT/run_cam_voc_shape.json"

echo "== 2b. run irnet --recipe paper on voc-shape (IRN's pipeline to the step: classifier, CAMs, boundary net, walk,"
echo "       DeepLab-v2 as deeplab-pytorch; random init unless WEIGHTS=resnet50-19c8e357.pth is set), timed"
start=$(date +%s)
python -m wsssbench run irnet --recipe paper --preset voc-shape --device cuda \
    --out "$OUT/runs-voc-paper" --json ${WEIGHTS:+--weights "$WEIGHTS"} > "$OUT/run_cam_paper_voc_shape.json"
echo "run irnet --recipe paper voc-shape: $(( $(date +%s) - start )) s wall (per stage: $OUT/run_cam_paper_voc_shape.json)"

echo "== 3. bf16 autocast vs float32 on tiny (cam, seeds 0,1,2)"
python benchmarks/bf16_vs_fp32.py --out "$OUT/runs-amp" | tee "$OUT/bf16_vs_fp32.json"

gpus=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -ge 2 ]; then
    echo "== 4. DDP: run cam --nproc 2 on tiny beside one process"
    python -m wsssbench run cam --device cuda --out "$OUT/runs-ddp1" --json > "$OUT/ddp_1.json"
    python -m wsssbench run cam --device cuda --out "$OUT/runs-ddp2" --json --nproc 2 > "$OUT/ddp_2.json"
    python -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); print({k: (a[k], b[k]) for k in ('seed_miou','pseudo_miou','seg_miou')})" \
        "$OUT/ddp_1.json" "$OUT/ddp_2.json"
else
    echo "== 4. DDP on GPUs skipped: $gpus GPU(s) visible (NCCL runs one process per GPU)"
fi
