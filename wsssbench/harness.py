"""Run a method through the stages: classifier → CAMs → seeds → pseudo-masks → segmentation (or WSOL).

Every stage is cached under ``<out>/cache/<stage>-<hash>`` (:mod:`wsssbench.stages.cache`), keyed by
the config fields it reads, the hooks it runs and its inputs' folders, so an interrupted run resumes
where it stopped and runs sharing a prefix (``cam`` and ``c2am`` with one base config) share it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from . import distributed
from .data import get_dataset
from .errors import UserError
from .io import out_folder
from .methods_api import METHODS, Context, Method, hook_id, make_config, stage_fields
from .records import RunRecord
from .stages.cache import cached, cached_ranks, key_hash


def run_method(method: str, *, dataset: str = "synthetic", dataset_options: dict | None = None,
               root: str | Path | None = None, overrides: dict[str, str] | None = None, seed: int = 0,
               out: Path = Path("runs"), device: str = "cpu", progress: bool = False) -> RunRecord:
    """Run ``method`` on ``dataset`` with ``--set`` ``overrides``; write and return its run record."""
    m = METHODS.get(method)
    cfg = make_config(m, overrides)
    out = out_folder(out)
    _check_config(cfg, device)
    distributed.init(device)
    progress = progress and distributed.is_main()
    options = dict(dataset_options or {})
    ds = get_dataset(dataset, root, **options)
    ds_key = dataset_key(dataset, ds)
    run = _Run(m, cfg, ds, ds_key, seed, device, Path(out), progress)
    with run.progress_ctx(), _cpu_threads(device):
        metrics, protocols, artifacts, extra, rounds = run.wsol() if ds.task == "localization" else run.segmentation()
    from .stages.train_classifier import pretrained_source
    preset = ds_key.get("generation", {}).get("preset")
    record = RunRecord(method=method, dataset=dataset, dataset_preset=preset,
                       config=dataclasses.asdict(cfg), seed=seed, metrics=metrics, protocols=protocols,
                       pretrained=pretrained_source(cfg), device=device, timings=run.timings,
                       artifacts={k: str(v) for k, v in artifacts.items()}, extra=extra, rounds=rounds)
    checksums = weights_checksums(cfg)
    if checksums:
        record.extra["weights_sha256"] = checksums
    generation = ds_key.get("generation")
    if generation:
        record.extra["generation"] = generation
    if distributed.active():
        record.extra["world_size"] = distributed.world()
    if not distributed.is_main():       # rank 0 writes the figures and the record
        return record
    tag = "-".join(str(p) for p in (dataset, preset, _confounding_tag(generation)) if p)
    stem = Path(out) / "records" / method / tag / f"{key_hash(record.config)}-seed{seed}"
    if ds.task != "localization":
        from .figures import run_figure
        record.artifacts["figure"] = str(run_figure(ds, run.figure_inputs, stem.with_suffix(".png")))
        if len(rounds) > 1:
            from .figures import rounds_figure, rounds_masks_figure
            record.artifacts["rounds_figure"] = str(rounds_figure(rounds, stem.with_name(stem.name + "-rounds.png"),
                                                                  f"{method} on {tag}, seed {seed}"))
            record.artifacts["rounds_masks_figure"] = str(rounds_masks_figure(
                ds, run.figure_inputs, stem.with_name(stem.name + "-rounds-masks.png")))
    record.write(stem.with_suffix(".json"))
    record.artifacts["record"] = str(stem.with_suffix(".json"))
    return record


def _confounding_tag(generation: dict | None) -> str | None:
    """``c0.5`` when a synthetic run's confounding is not its preset's default (records of each level apart)."""
    if not generation:
        return None
    from .data.synthetic import get_preset
    default = get_preset(generation["preset"]).confounding
    return None if generation["confounding"] == default else f"c{generation['confounding']:g}"


def dataset_key(name: str, ds) -> dict:
    """The data a run reads, as resolved: the reader, its folder and, for the synthetic benchmark, the
    generation options it was made with (so ``--dataset synthetic`` and ``--preset tiny`` key alike)."""
    key = {"name": name, "root": str(Path(ds.root).resolve())}
    manifest = getattr(ds, "manifest", None)
    if manifest is not None:
        key["generation"] = {k: manifest[k] for k in ("preset", "seed", "confounding")}
    return key


@contextlib.contextmanager
def _cpu_threads(device: str):
    """CPU runs use ``WSSSBENCH_THREADS`` torch threads (default 1): on a shared machine one thread is
    many times faster than oversubscribed cores, and a fixed count keeps float sums, hence numbers,
    the same from run to run on one machine (not across CPU instruction sets)."""
    import os

    import torch
    before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("WSSSBENCH_THREADS", "1")))
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: settings that are fractions of a max-normalised map, and settings that must be positive
FRACTIONS = ("seed_threshold", "rw_conf_fg", "rw_conf_bg", "rw_bg_threshold", "wsol_threshold")
POSITIVE = ("cls_lr", "rw_lr", "seg_lr", "rw_beta", "crf_alpha", "seed_alpha", "cam_scales", "cls_rescale",
            "seg_scales")


def _check_config(cfg, device: str) -> None:
    """Every setting in its range before anything runs: a bad value is one line, never a number."""
    from .stages.expand import EXPANSIONS, RW_METHODS
    if cfg.expansion not in EXPANSIONS:
        raise UserError(f"--set expansion={cfg.expansion}: use one of {', '.join(EXPANSIONS)}")
    if cfg.rw_method not in RW_METHODS:
        raise UserError(f"--set rw_method={cfg.rw_method}: use one of {', '.join(RW_METHODS)}")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: use cpu or cuda")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    for name in ("cls_epochs", "cls_batch_size", "cls_size", "rw_batch_size", "seg_batch_size", "seg_size",
                 "seg_iter_size", "seg_lr_every"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--set {name}={getattr(cfg, name)}: must be at least 1")
    for name in FRACTIONS:
        if not 0 <= getattr(cfg, name) <= 1:
            raise UserError(f"--set {name}={getattr(cfg, name)}: must be in [0, 1] (a fraction of the CAM's max, "
                            "e.g. 0.15)")
    for name in POSITIVE:
        values = getattr(cfg, name)
        if any(v is not None and v <= 0 for v in (values if isinstance(values, tuple) else (values,))):
            raise UserError(f"--set {name}={values}: must be positive")
    for name in ("cls_weight_decay", "seg_weight_decay"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--set {name}={getattr(cfg, name)}: must be 0 or more")
    if cfg.workers is not None and cfg.workers < 0:
        raise UserError(f"--set workers={cfg.workers}: must be 0 (load in the main process) or more")
    if cfg.rounds < 0:
        raise UserError(f"--set rounds={cfg.rounds}: must be 0 (the baseline alone) or more")
    if distributed.active():
        distributed.check_batches(cfg, distributed.world())


class _Run:
    """One (method, config, dataset, seed): runs the stages in order, each through the cache."""

    def __init__(self, method: Method, cfg, ds, ds_key, seed: int, device: str, out: Path, progress: bool):
        self.method, self.cfg, self.ds, self.ds_key = method, cfg, ds, ds_key
        self.seed, self.device, self.cache = seed, device, out / "cache"
        self.show = progress
        self.progress = None
        self.timings: dict[str, float] = {}
        self.figure_inputs: dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def progress_ctx(self):
        if not self.show:
            yield
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        # stderr: stdout carries only the requested output (a table, CSV, JSON)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=False, console=Console(stderr=True)) as p:
            self.progress = p
            yield

    def ctx(self, round_: int = 0, inputs: dict | None = None) -> Context:
        return Context(self.cfg, self.ds, self.device, self.seed, round_, dict(inputs or {}))

    def stage(self, name: str, key: dict, build, collective: bool = True) -> Path:
        """Run one cached stage with python, numpy and torch seeded (so what it builds depends on its key alone);
        time it; turn an out-of-memory error into one line. Under torchrun a ``collective`` build runs on
        every rank (DDP training, sharded inference), any other on rank 0 alone (:func:`cached_ranks`)."""
        import torch
        from .stages.common import seed_everything
        start = time.perf_counter()
        seed_everything(self.seed)
        try:
            path, was_cached = (cached_ranks(self.cache, name, key, build, collective) if distributed.active()
                                else cached(self.cache, name, key, build))
        except torch.cuda.OutOfMemoryError:
            raise UserError(f"stage {name}: out of GPU memory; lower its batch size (--set cls_batch_size=..., "
                            "rw_batch_size=..., seg_batch_size=...)") from None
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        if self.progress is not None:
            self.progress.console.print(f"[green]✓[/] {name} {'(cached) ' if was_cached else ''}"
                                        f"[dim]{path}[/]")
        return path

    def samples(self, split: str, need_masks: bool = False) -> list:
        if split not in self.ds.split_names():
            raise UserError(f"{self.ds.name or self.ds_key['name']}: no split {split!r} in {self.ds.root}; "
                            f"this layout has {', '.join(self.ds.split_names())}")
        samples = self.ds.samples(split)
        if need_masks and any(s.mask is None for s in samples):
            raise UserError(f"{self.ds_key['name']}: split {split!r} has images without ground-truth masks "
                            f"({self.ds.describe_gt(split)}); the harness scores seeds and masks on it")
        if not samples:
            raise UserError(f"{self.ds_key['name']}: split {split!r} is empty ({self.ds.root})")
        return samples

    def load_classifier(self, ctx: Context, folder: Path):
        import torch
        model = self.method.build_classifier(ctx)
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
        return model.to(self.device).eval()

    # ------------------------------------------------------------------ stages
    def fields(self, stage: str) -> dict:
        return stage_fields(self.cfg, stage, self.method)

    def classifier(self, samples, round_: int = 0, inputs: dict | None = None) -> tuple[Path, Context]:
        """The base classifier, then the method's further classifier stages; the last one's folder."""
        import torch
        from .stages import train_classifier
        m, ctx = self.method, self.ctx(round_, inputs)
        key = {"data": self.ds_key, "config": self.fields("classifier"), "seed": self.seed, "device": self.device,
               "hooks": [hook_id(m.build_classifier), hook_id(m.train_step), hook_id(m.extra_inputs)],
               "round": round_, "inputs": {k: self.cache_name(v) for k, v in ctx.inputs.items()}, **_world()}

        def build(tmp: Path) -> None:
            train_classifier.run(ctx, m, samples, tmp, self.progress)
        folder = self.stage("classifier", key, build)
        for extra in m.classifier_stages:
            prev = folder
            key = {"previous": prev.name, "stage": extra.name, "hook": hook_id(extra.run),
                   "config": self.fields(extra.name), **_world()}

            def build_extra(tmp: Path, prev=prev, extra=extra) -> None:
                model = self.load_classifier(ctx, prev)
                extra.run(ctx, model, tmp)
                if distributed.is_main():
                    torch.save(model.state_dict(), tmp / "model.pt")
            folder = self.stage(f"classifier-{extra.name}", key, build_extra)
        return folder, ctx

    def cache_name(self, path: Path) -> str:
        """A path as a cache key: relative to the cache folder when inside it (keys survive moving ``--out``)."""
        path = Path(path)
        return str(path.relative_to(self.cache)) if path.is_relative_to(self.cache) else str(path.resolve())

    def cams(self, clf: Path, ctx: Context, images: list, scored: list, val: list) -> Path:
        """CAMs of ``images`` in ``all/``, of ``val`` in ``val/``; ``train/`` links the scored split's files."""
        from .stages import infer_cams
        key = {"classifier": clf.name, "config": self.fields("cams"),
               "hook": hook_id(self.method.refine_cams), "images": _ids_hash(images), "val": _ids_hash(val)}

        def build(tmp: Path) -> None:
            model = self.load_classifier(ctx, clf)
            infer_cams.run(ctx, self.method, model, images, tmp / "all", self.progress, "CAMs train")
            if val:
                infer_cams.run(ctx, self.method, model, val, tmp / "val", self.progress, "CAMs val")
            distributed.barrier()       # every rank's shard written
            if distributed.is_main():
                link_subset(tmp / "all", tmp / "train", scored, ".npz")
        return self.stage("cams", key, build)

    def evaluation(self, name: str, inputs: Path, params: dict, fn) -> dict:
        """Score an artifact folder once (``params``: the scoring options); the result is cached."""
        from .io import write_json
        key = {"inputs": inputs.name, "what": name, "params": params, "data": self.ds_key}

        def build(tmp: Path) -> None:
            result = fn()               # every rank scores its shard; the counts are summed over ranks
            if distributed.is_main():
                write_json(tmp / "result.json", result)
        folder = self.stage(f"eval-{name}", key, build)
        return json.loads((folder / "result.json").read_text())

    def seed_rule(self) -> dict:
        """The seed rule: the SEAM/CPN power background when ``seed_alpha`` is set, else IRN's threshold."""
        cfg = self.cfg
        return {"alpha": cfg.seed_alpha} if cfg.seed_alpha is not None else {"threshold": cfg.seed_threshold}

    def expand(self, ctx: Context, cams: Path, images: list, scored: list) -> Path:
        """Pseudo-masks of ``images`` in ``masks/`` (``train/`` links the scored split's)."""
        from .stages import expand
        m, cfg = self.method, self.cfg
        # the seeds are the masks of expansion "none", and a method's own expansion may start from them:
        # those also read the seed_ settings
        reads_seeds = m.expand is not None or cfg.expansion == "none"
        config = self.fields("expand") | ({k: v for k, v in vars(cfg).items() if k.startswith("seed_")}
                                          if reads_seeds else {})
        key = {"cams": cams.name, "config": config,
               "seed": self.seed, "hook": hook_id(m.expand), "images": _ids_hash(images),
               **(_world() if m.expand is None and cfg.expansion == "rw" else {})}     # rw trains a net

        def build(tmp: Path) -> None:
            if m.expand is None:
                expand.run(ctx, cams / "all", images, tmp, self.progress, self.seed_rule())     # sharded
            elif distributed.is_main():         # a method's own expansion runs on rank 0 alone
                m.expand(ctx, cams / "all", tmp / "masks")
            distributed.barrier()
            if distributed.is_main():
                link_subset(tmp / "masks", tmp / "train", scored, ".png")
        return self.stage("expand", key, build)

    def segmenter(self, ctx: Context, train: list, cams: Path, masks: Path, val: list) -> Path:
        """The segmentation model trained on ``masks``; its predictions of val (and train, if the method asks)."""
        from .stages import train_segmenter
        m = self.method
        predict = {"pred": val, **({"pred_train": train} if m.segment_train else {})}
        key = {"masks": masks.parent.name, "cams": cams.name, "config": self.fields("segmenter"), "seed": self.seed,
               "device": self.device, "hooks": [hook_id(m.build_segmenter), hook_id(m.seg_step),
                                                hook_id(m.extra_inputs)],
               "predict": {k: _ids_hash(v) for k, v in predict.items()}, **_world()}

        def build(tmp: Path) -> None:
            train_segmenter.run(ctx, m, train, masks, cams / "all", predict, tmp, self.progress)
        return self.stage("segmenter", key, build)

    def next_round(self, ctx: Context, artifacts: dict[str, Path]) -> dict[str, Path]:
        """The method's ``next_round`` as a cached stage: round t's artifacts in, round t+1's inputs out."""
        from .io import write_json
        m = self.method
        key = {"round": ctx.round, "artifacts": {k: self.cache_name(v) for k, v in artifacts.items()},
               "config": self.fields("next_round"), "hook": hook_id(m.next_round)}

        def build(tmp: Path) -> None:
            made = m.next_round(ctx, artifacts, tmp)
            outside = [str(v) for v in made.values() if not Path(v).resolve().is_relative_to(tmp.resolve())]
            if outside:
                raise ValueError(f"{m.name}.next_round returned paths outside its folder: {', '.join(outside)}")
            write_json(tmp / "inputs.json", {k: str(Path(v).resolve().relative_to(tmp.resolve()))
                                             for k, v in made.items()})
        folder = self.stage(f"round{ctx.round + 1}-inputs", key, build, collective=False)
        return {k: folder / v for k, v in json.loads((folder / "inputs.json").read_text()).items()}

    def segmentation(self):
        from .metrics.segmentation import evaluate_masks, evaluate_seeds
        from .stages.common import train_split
        classifier_split = train_split(self.ds)
        train = self.samples(classifier_split)
        scored = self.samples("train", need_masks=True)
        val = self.samples("val", need_masks=True) if self.cfg.seg_enabled else []
        cfg, m = self.cfg, self.method
        if cfg.rounds and m.next_round is None:
            raise UserError(f"{m.name}: rounds={cfg.rounds} needs a next_round hook; use --set rounds=0")
        seen = {s.id for s in train}
        images = train + [s for s in scored if s.id not in seen]     # VOC/synthetic: train ⊂ train_aug
        inputs: dict[str, Path] = {}
        rounds, views = [], []          # views: each round's scored CAMs and pseudo-masks, for the figures
        for round_ in range(cfg.rounds + 1):
            clf, ctx = self.classifier(train, round_, inputs)
            cams = self.cams(clf, ctx, images, scored, val)
            seeds = self.evaluation("seeds", cams, {**self.seed_rule(), "protocol": cfg.seed_protocol},
                                    lambda: evaluate_seeds(self.ds, "train", cams / "train", **self.seed_rule(),
                                                           protocol=cfg.seed_protocol))
            expanded = self.expand(ctx, cams, images, scored)
            pseudo = self.evaluation("pseudo", expanded, {"protocol": cfg.pseudo_protocol}, lambda: evaluate_masks(
                self.ds, "train", expanded / "train", protocol=cfg.pseudo_protocol))
            artifacts = {"classifier": clf, "cams": cams, "masks": expanded / "masks"}
            seg = None
            if cfg.seg_enabled:
                seg_dir = self.segmenter(ctx, train, cams, expanded / "masks", val)
                seg = self.evaluation("segmentation", seg_dir, {"protocol": cfg.seg_protocol}, lambda: evaluate_masks(
                    self.ds, "val", seg_dir / "pred", protocol=cfg.seg_protocol))
                artifacts.update(segmenter=seg_dir, predictions=seg_dir / "pred")
                if m.segment_train:
                    artifacts["train_predictions"] = seg_dir / "pred_train"
            entry = {"round": round_, "seed_miou": seeds["miou"], "pseudo_miou": pseudo["miou"],
                     "seg_miou": seg["miou"] if seg else None,
                     "artifacts": {k: str(artifacts[k]) for k in ("cams", "masks", "predictions") if k in artifacts}}
            for name, result in (("seed", seeds), ("pseudo", pseudo), ("seg", seg)):
                if result and result.get("context_confusion"):    # the synthetic benchmark's context hits
                    entry[f"{name}_context_confusion"] = result["context_confusion"]["mean"]
            rounds.append(entry)
            views.append({"cams": cams / "train", "masks": expanded / "train"})
            if round_ < cfg.rounds:
                inputs = self.next_round(ctx, artifacts)
        self.figure_inputs = {"samples": scored[:6], **views[-1], "rounds": views, **self.seed_rule()}
        metrics = {"seed_miou": seeds["miou"], "pseudo_miou": pseudo["miou"]}
        protocols = {"seed_miou": seeds.get("protocol", cfg.seed_protocol),
                     "pseudo_miou": pseudo.get("protocol", cfg.pseudo_protocol)}
        extra = {"seed_iou": seeds.get("iou"), "pseudo_iou": pseudo.get("iou"), "expansion": cfg.expansion,
                 "splits": {"classifier": classifier_split, "seeds": "train", "segmentation": "val"}}
        for name, result in (("seed", seeds), ("pseudo", pseudo), ("seg", seg)):
            if result and "context_confusion" in result:
                extra[f"{name}_context_confusion"] = result["context_confusion"]
        if seg is not None:
            metrics["seg_miou"] = seg["miou"]
            protocols["seg_miou"] = seg.get("protocol", cfg.seg_protocol)
            extra["seg_iou"] = seg.get("iou")
        return metrics, protocols, artifacts, extra, rounds

    def wsol(self):
        from .metrics.localization import evaluate_wsol
        from .stages import wsol
        names = self.ds.split_names()
        split = "test" if "test" in names else "val"
        clf, ctx = self.classifier(self.samples("train"))
        samples = self.samples(split)
        key = {"classifier": clf.name, "config": self.fields("cams"), "hook": hook_id(self.method.wsol_maps),
               "split": split}
        maps = self.stage("wsol-maps", key, lambda tmp: wsol.run(ctx, self.method, self.load_classifier(ctx, clf),
                                                                 samples, tmp, self.progress))
        cfg = self.cfg
        result = self.evaluation("wsol", maps, {k: v for k, v in vars(cfg).items() if k.startswith("wsol_")},
                                 lambda: evaluate_wsol(self.ds, split, maps, protocol=cfg.wsol_protocol,
                                                       frame=cfg.wsol_frame, threshold=cfg.wsol_threshold))
        keys = ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known", "maxboxacc_v2")
        metrics = {k: result[k] for k in keys if result.get(k) is not None}
        rule = f"{result.get('protocol', cfg.wsol_protocol)}/{result.get('frame', cfg.wsol_frame)}"
        # MaxBoxAccV2 (wsolevaluation): the protocol's boxes at every θ, the best θ per IoU δ 30/50/70, averaged
        protocols = {k: f"{rule}, best θ per δ" if k == "maxboxacc_v2" else rule for k in metrics}
        extra = {k: result[k] for k in ("maxboxacc", "maxboxacc_v2", "best_threshold") if k in result}
        return metrics, protocols, {"classifier": clf, "maps": maps}, extra, [{"round": 0, **metrics}]


def weights_checksums(cfg) -> dict[str, str]:
    """SHA-256 of each local weights file the config names (``weights``, ``seg_weights``), so a record says
    exactly which file (SEAM's MXNet conversion, IRN's ResNet-50) its numbers started from."""
    from .io import file_sha256
    names = ("weights", "seg_weights")
    return {n: file_sha256(getattr(cfg, n)) for n in names
            if getattr(cfg, n, None) not in (None, "torchvision") and Path(getattr(cfg, n)).is_file()}


def _world() -> dict:
    """The key entry of a stage that trains: the torchrun world size when above 1 (N ranks train another model
    than one process: other shuffles, per-rank BatchNorm), nothing in a plain run (keys as before)."""
    return {"world": distributed.world()} if distributed.active() else {}


def _ids_hash(samples) -> str:
    return key_hash({"ids": [s.id for s in samples]})


def link_subset(src: Path, dst: Path, samples, suffix: str) -> None:
    """``dst/<id><suffix>`` hard-linked (or copied) from ``src`` for each sample: a split's view of a folder."""
    import os
    import shutil
    for sample in samples:
        target = dst / f"{sample.id}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / f"{sample.id}{suffix}", target)
        except OSError:
            shutil.copy2(src / f"{sample.id}{suffix}", target)
