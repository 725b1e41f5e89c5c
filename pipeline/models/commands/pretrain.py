"""``python -m pipeline pretrain DATASET_DIR -o OUT [--split SPLIT.json] --minutes M | --steps N``: self-supervised
pretraining of Swin-UNETR's encoder on the dataset's own unlabelled volumes (:mod:`pipeline.models.swin_pretrain`).

The pool is every case of the folder except the split's test and validation cases: the split's training cases and
those it leaves unused, images only, labels never read. Test cases stay out so the test scores still describe
unseen cases; validation cases stay out because they choose the fine-tuned checkpoint. Without ``--split`` the
split is the bundles' default one (:func:`pipeline.engine.cases.load_split`), whose test set is the same as that of
every ``python -m pipeline split`` with the default ``--test-fraction``.

Writes ``OUT/model_swinvit.pt`` (the encoder in MONAI's layout, for a Swin-UNETR bundle's ``--checkpoint``) and
``OUT/pretrain.json`` (settings, pool, budget used and the loss terms of every step). The budget counts training
time only, from the first step: caching the volumes comes before it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError

RECORD = "pretrain.json"
FEATURE_SIZES = (12, 24)  # what a CPU or a single GPU pretrains in minutes to hours; 48 is MONAI's released size
PRESETS = ("mr_percentile", "ct_window")  # the volume presets; both map intensities to [0, 1]
LEARNING_RATE = 1e-4  # constant; see --lr
WEIGHT_DECAY = 1e-5  # the reference script's
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # the bundles' logging.conf format

logger = logging.getLogger("pipeline.pretrain")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset_dir", help="dataset folder of 3D volumes (MSD imagesTr/ + labelsTr/, or DICOM)")
    parser.add_argument("--split", help="split JSON (python -m pipeline split): its test and validation cases are "
                                        "left out; default: the bundles' default split of the folder")
    parser.add_argument("-o", "--output", required=True, help=f"folder for model_swinvit.pt and {RECORD}")
    parser.add_argument("--feature-size", type=int, default=12,
                        help="Swin embedding width, 12 or 24; fine-tune with the same --feature_size")
    parser.add_argument("--crop", type=int, default=64,
                        help="side of the random cubic crops: a multiple of 32, at least 64; smaller volumes are "
                             "zero-padded to it")
    parser.add_argument("--minutes", type=float, help="training time budget")
    parser.add_argument("--steps", type=int, help="optimiser step budget (with --minutes: whichever ends first)")
    parser.add_argument("--batch-size", type=int, default=2,
                        help="crops per step, at least 2 (the other crops are the contrastive negatives)")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE,
                        help="AdamW learning rate, constant (the reference uses 4e-4 after a 500-step warm-up, "
                             "which a budget in minutes cannot plan)")
    parser.add_argument("--preset", default="mr_percentile", help=f"intensity preset: {' or '.join(PRESETS)}")
    parser.add_argument("--seed", type=int, default=0, help="seeds the model, the crops, the views and the order")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's files in --output")


def check_arguments(args: argparse.Namespace) -> None:
    """Every argument that can be wrong is checked before the volumes are read, each with its own one line."""
    from pipeline.models.swin_pretrain import ENCODER_FILE, check_crop

    if args.feature_size not in FEATURE_SIZES:
        raise PipelineError(f"--feature-size {args.feature_size}: choose {' or '.join(map(str, FEATURE_SIZES))}")
    check_crop(args.crop)
    if args.minutes is None and args.steps is None:
        raise PipelineError("give a budget: --minutes and/or --steps")
    if args.minutes is not None and not args.minutes > 0:
        raise PipelineError(f"--minutes {args.minutes}: must be positive")
    if args.steps is not None and args.steps < 1:
        raise PipelineError(f"--steps {args.steps}: must be at least 1")
    if args.batch_size < 2:
        raise PipelineError(f"--batch-size {args.batch_size}: contrastive coding needs at least 2 crops per step")
    if not args.lr > 0:
        raise PipelineError(f"--lr {args.lr}: must be positive")
    if args.preset not in PRESETS:
        raise PipelineError(f"--preset {args.preset!r}: choose {' or '.join(PRESETS)}")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise PipelineError(f"--output {output} is a file, not a folder")
    if not args.overwrite and any((output / name).exists() for name in (ENCODER_FILE, RECORD)):
        raise PipelineError(f"--output {output} already holds a pretraining run; pass --overwrite to replace it")


def pretraining_pool(dataset_dir: str | Path, split: str | Path | None = None) -> tuple[list[dict], dict[str, int]]:
    """``[{"image": path}, ...]``: the split's training cases, then the folder's cases in no part of the split;
    and the count of each part, for the record."""
    from pipeline.data.datalist import build_datalist, resolve_paths
    from pipeline.engine.cases import load_split

    datalist = build_datalist(dataset_dir)
    if datalist["layout"] == "2d":
        raise PipelineError(f"{dataset_dir}: pretrain takes 3D volumes; this folder holds 2D images")
    parts = load_split(dataset_dir, split)
    in_split = {Path(case["image"]).resolve() for cases in parts.values() for case in cases}
    every = resolve_paths(datalist["training"], dataset_dir, f"the cases of {dataset_dir}")
    unused = [case for case in every if Path(case["image"]).resolve() not in in_split]
    pool = [{"image": case["image"]} for case in parts["training"] + unused]
    counts = {"training": len(parts["training"]), "unused": len(unused),
              "validation_left_out": len(parts["validation"]), "test_left_out": len(parts["test"])}
    return pool, counts


def _one_channel_volume(image):
    """The encoder takes one channel; several (stacked modalities) would fail deep inside it instead of here."""
    if image.ndim != 4 or image.shape[0] != 1:
        name = getattr(image, "meta", {}).get("filename_or_obj", "an image")
        raise PipelineError(f"{name}: pretrain takes one-channel 3D volumes, got shape {tuple(image.shape)} "
                            "(channel first)")
    return image


def crops(pool: list[dict], preset_name: str, crop: int, seed: int):
    """A dataset of one random ``crop``-cube per volume, intensities in [0, 1]. One crop per volume, so the other
    crops of a batch, the contrastive negatives, come from other volumes. The loaded and scaled volumes are cached;
    each epoch draws new crops, zero-padded (after cropping, so the cache holds the smaller unpadded volumes) along
    the sides where the volume is smaller than the crop."""
    from monai.data import CacheDataset
    from monai.transforms import Lambdad, RandSpatialCropd, SpatialPadd

    from pipeline.data.presets import Preprocessing, preset

    transforms = Preprocessing([
        preset(preset_name, keys=("image",)),
        Lambdad("image", _one_channel_volume),
        RandSpatialCropd("image", roi_size=(crop,) * 3, random_size=False),
        SpatialPadd("image", spatial_size=(crop,) * 3),
    ])
    transforms.set_random_state(seed)
    return CacheDataset(pool, transforms, progress=False)


def budget_spent(step: int, seconds: float, steps: int | None, minutes: float | None) -> bool:
    """Whether ``step`` steps in ``seconds`` used up the budget: ``steps`` or ``minutes``, whichever ends first."""
    return (steps is not None and step >= steps) or (minutes is not None and seconds >= minutes * 60)


def _forever(loader) -> Iterator[dict]:
    while True:
        yield from loader


def pretrain(args: argparse.Namespace, pool: list[dict], device) -> dict:
    """Train until the budget ends, save the encoder, and return the record of the run."""
    import torch
    from monai.data import DataLoader
    from monai.utils import set_determinism

    from pipeline.models.swin_pretrain import ENCODER_FILE, PretextLoss, PretextViews, SwinPretrainer, save_encoder

    set_determinism(seed=args.seed)
    started = time.perf_counter()
    dataset = crops(pool, args.preset, args.crop, args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=0,
                        generator=torch.Generator().manual_seed(args.seed))
    views = PretextViews(args.crop).set_random_state(args.seed + 1)  # a stream apart from the crops'
    model = SwinPretrainer(feature_size=args.feature_size).to(device).train()
    loss_function = PretextLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
    setup_seconds = time.perf_counter() - started
    limits = [] if args.steps is None else [f"{args.steps} steps"]
    limits += [] if args.minutes is None else [f"{args.minutes:g} min"]
    logger.info(f"pretraining the Swin encoder (feature size {args.feature_size}) on {len(pool)} volumes, "
                f"{args.crop}^3 crops, batch {args.batch_size}, {device}, budget {' and '.join(limits)}")
    losses: list[dict] = []
    started = time.perf_counter()
    for step, batch in enumerate(_forever(loader), start=1):
        first, second = views(batch["image"]), views(batch["image"])
        outputs = (model(first.masked.to(device)), model(second.masked.to(device)))
        terms = loss_function(outputs, (first, second))
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        values = {name: float(value.detach()) for name, value in terms.items()}
        if not math.isfinite(values["loss"]):
            raise PipelineError(f"step {step}: the pretraining loss is {values['loss']} ({values}); lower --lr")
        elapsed = time.perf_counter() - started
        losses.append({"step": step, "seconds": round(elapsed, 3), **{k: round(v, 6) for k, v in values.items()}})
        logger.info(f"step {step}{'' if args.steps is None else f'/{args.steps}'}: loss {values['loss']:.4f} "
                    f"(rotation {values['rotation']:.4f}, contrastive {values['contrastive']:.4f}, "
                    f"reconstruction {values['reconstruction']:.4f}), {elapsed / 60:.2f} min")
        if budget_spent(step, elapsed, args.steps, args.minutes):
            break
    encoder = save_encoder(model, Path(args.output) / ENCODER_FILE)
    return {"steps_run": len(losses), "train_seconds": round(elapsed, 3), "setup_seconds": round(setup_seconds, 3),
            "device": str(device), "encoder": encoder.name, "losses": losses}


def run(args: argparse.Namespace) -> int:
    import torch

    from pipeline.models.pretrained import sha256_of
    from pipeline.peft.checkpoint import atomic_write

    check_arguments(args)
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise PipelineError(f"--device {args.device!r}: {error}") from None
    pool, counts = pretraining_pool(args.dataset_dir, args.split)
    if len(pool) < args.batch_size:
        raise PipelineError(f"{args.dataset_dir}: {len(pool)} volumes to pretrain on, fewer than --batch-size "
                            f"{args.batch_size}")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    result = pretrain(args, pool, device)
    output = Path(args.output)
    settings = {key: value for key, value in vars(args).items() if not key.startswith("_") and key != "command"}
    record = {
        "settings": settings,
        "pool": {**counts, "images": [case["image"] for case in pool]},
        **result,
        "encoder_sha256": sha256_of(output / result["encoder"]),
    }
    atomic_write(output / RECORD, lambda stream: stream.write(json.dumps(record, indent=1).encode() + b"\n"))
    first, last = result["losses"][0]["loss"], result["losses"][-1]["loss"]
    logger.info(f"{output / result['encoder']}: {result['steps_run']} steps in {result['train_seconds'] / 60:.2f} min, "
                f"loss {first:.4f} -> {last:.4f}; record {output / RECORD}")
    return 0
