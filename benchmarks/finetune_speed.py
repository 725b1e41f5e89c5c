"""Few-shot fine-tuning speed of LiteMedSAM with and without the frozen-prefix cache, measured in one run.

Two parts (``--part``):

* ``steps``: one optimizer step at batch 2, 256², prompt-free LiteMedSAM on real Kvasir-SEG images, for
  linear_probe (decoder only), dka, lka, adapter, lora and full, uncached and cached (the steady state of a
  few-shot run, where every training view has been seen once). Each configuration runs in its own process so
  its peak resident memory (``VmHWM``, reset after the model is built) is its own. Ratios are to linear_probe
  uncached. With ``--device cuda`` the encoder's achieved TFLOP/s (bf16 autocast) is printed too.
* ``run``: the whole few-shot run a user makes, as bundle commands: 5 Kvasir-SEG training images (k-shot split,
  seed 0, 200 test images, 20 validation images), 30 epochs, validation every 2 epochs, then evaluation on the
  test set; for linear_probe and dka, uncached (``--cache False``), cached with an empty cache directory, and
  (``--warm``) cached with the directory the previous run filled, as every later run of a sweep with the same
  prefix finds it. Prints the times, the test Dice values and the ratios / differences.

    python -m benchmarks.finetune_speed                       # both parts, CPU
    python -m benchmarks.finetune_speed --part steps --device cuda
    python -m benchmarks.finetune_speed --part run --quick    # 2 epochs, 4 validation / 8 test images: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KVASIR = Path(os.environ.get("PIPELINE_SHARED_DATA", REPO.parent / "shared" / "data")) / "kvasir_seg"
STEP_METHODS = ("linear_probe", "dka", "lka", "adapter", "lora", "full")
RUN_METHODS = ("linear_probe", "dka")
ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)


def one_step_config(method: str, cached: bool, device: str, steps: int, threads: int | None) -> dict:
    """Median step time and peak memory of one (method, cache) configuration, in this process."""
    import numpy as np
    import torch
    from PIL import Image

    from pipeline.engine.task import segmentation_loss
    from pipeline.models import FeatureCache, build_backbone
    from pipeline.peft import apply_peft, param_groups

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    names = sorted(p.name for p in (KVASIR / "images").glob("*.jpg"))[:2]
    images, labels = [], []
    for name in names:
        image = np.asarray(Image.open(KVASIR / "images" / name).convert("RGB").resize((256, 256), Image.BILINEAR))
        mask = np.asarray(Image.open(KVASIR / "masks" / name).convert("L").resize((256, 256), Image.NEAREST)) > 127
        images.append(torch.from_numpy(image.copy()).permute(2, 0, 1).float())
        labels.append(torch.from_numpy(mask.copy())[None].long())
    images, labels = torch.stack(images).to(device), torch.stack(labels).to(device)

    model = build_backbone("litemedsam", prompt="none", num_classes=2)
    apply_peft(model, method, layers="middle")
    model.feature_cache = FeatureCache(enabled=cached)
    model.to(device).train()
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-4, adapter_lr=1e-3, head_lr=1e-4))
    loss_function = segmentation_loss(2)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> float:
        start = time.perf_counter()
        with autocast:
            loss = loss_function(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step()  # warm-up; fills the cache, as the first epoch of a run does
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _reset_peak()
    times = [step() for _ in range(steps)]
    result = {"method": method, "cached": cached, "step_s": statistics.median(times), "peak_mb": _peak_mb()}
    if device == "cuda":
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["encoder_tflops"] = _encoder_tflops(model, images)
    return result


def _encoder_tflops(model, images) -> float:
    """Achieved TFLOP/s of the image encoder's forward under bf16 autocast (FLOPs counted by PyTorch)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    encoder_input, _ = model.prepare(images)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        counter = FlopCounterMode(display=False)
        with counter:
            model.image_encoder(encoder_input)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            model.image_encoder(encoder_input)
        torch.cuda.synchronize()
    return counter.get_total_flops() * 10 / (time.perf_counter() - start) / 1e12


def steps_part(device: str, steps: int, threads: int | None) -> list[dict]:
    rows = []
    for method in STEP_METHODS:
        for cached in (False, True):
            command = [sys.executable, "-m", "benchmarks.finetune_speed", "--one", method, "--device", device,
                       "--steps", str(steps)] + (["--cached"] if cached else [])
            command += ["--threads", str(threads)] if threads else []
            out = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  measured {method} {'cached' if cached else 'uncached'}", file=sys.stderr, flush=True)
    base = next(r for r in rows if r["method"] == "linear_probe" and not r["cached"])["step_s"]
    full = {r["cached"]: r["peak_mb"] for r in rows if r["method"] == "full"}
    print(f"\nOne training step, LiteMedSAM prompt-free, batch 2, 256², {device}, median of {steps}")
    print(f"{'method':<14}{'cache':<8}{'step s':>9}{'× decoder-only':>16}{'peak MB':>10}{'× full':>8}")
    for r in rows:
        print(f"{r['method']:<14}{'yes' if r['cached'] else 'no':<8}{r['step_s']:>9.3f}{r['step_s'] / base:>16.2f}"
              f"{r['peak_mb']:>10.0f}{r['peak_mb'] / full[r['cached']]:>8.2f}"
              + (f"  encoder {r['encoder_tflops']:.1f} TFLOP/s" if "encoder_tflops" in r else ""))
    for cached in (False, True):
        dka = next(r for r in rows if r["method"] == "dka" and r["cached"] == cached)
        ratio = dka["peak_mb"] / full[cached]
        print(f"target: dka peak memory <= 0.5 x full ({'cached' if cached else 'uncached'}): {ratio:.2f} "
              f"{'holds' if ratio <= 0.5 else 'MISSED'}")
    return rows


def _bundle(configs: list[str], **overrides) -> float:
    from pipeline.engine.bundle_run import bundle_command

    command = bundle_command(REPO / "bundles" / "litemedsam_dka_polyp" / "configs", configs, **overrides)
    start = time.perf_counter()
    log = Path(overrides["output_dir"]) / f"{configs[-1]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stream:
        if subprocess.run(command, cwd=REPO, env=ENV, stdout=stream, stderr=subprocess.STDOUT).returncode:
            raise SystemExit(f"bundle run failed; see {log}")
    return time.perf_counter() - start


def run_part(quick: bool, warm: bool, work: Path, methods: list[str], epochs: int) -> list[dict]:
    from pipeline.data.datalist import build_datalist, write_json
    from pipeline.data.splits import make_splits
    from pipeline.experiments.sweep import foreground_dice

    split = make_splits(build_datalist(KVASIR), seeds=[0], k_shots=[5], test_fraction=0.2, val_fraction=0.025)
    split = next(iter(split.values()))
    if quick:
        split["validation"], split["test"] = split["validation"][:4], split["test"][:8]
    split_path = write_json(split, work / "split.json")
    epochs = 2 if quick else epochs
    variants = [("no", False), ("cold", True)] + ([("warm", True)] if warm else [])
    rows = []
    for method in methods:
        for cache, cached in variants:
            out = work / f"{method}_{cache}"
            common = {"dataset_dir": KVASIR, "split": split_path, "output_dir": out, "cache": cached}
            if cached:  # warm: a later sweep run with the same prefix finds the cold run's entries on disk
                common["cache_dir"] = work / f"{method}_cache"
            train_s = _bundle(["train.json"], method=method, max_epochs=epochs, val_interval=2, **common)
            eval_s = _bundle(["train.json", "evaluate.json"], **common)
            dice = foreground_dice(json.loads((out / "eval" / "summary.json").read_text()))
            rows.append({"method": method, "cache": cache, "train_s": train_s, "eval_s": eval_s, "dice": dice})
            print(f"  ran {method} cache={cache}: {train_s + eval_s:.0f} s", file=sys.stderr, flush=True)
    print(f"\nWhole few-shot run: {len(split['training'])} training, {len(split['validation'])} validation, "
          f"{len(split['test'])} test images, {epochs} epochs, validation every 2 (box-prompted LiteMedSAM bundle; "
          "cache cold = empty cache directory, warm = the directory a previous run with the same prefix filled)")
    print(f"{'method':<14}{'cache':<7}{'train s':>9}{'eval s':>9}{'total s':>9}{'× faster':>10}{'test Dice':>11}")
    for r in rows:
        plain = next(p for p in rows if p["method"] == r["method"] and p["cache"] == "no")
        speedup = (plain["train_s"] + plain["eval_s"]) / (r["train_s"] + r["eval_s"])
        r["speedup"], r["delta"] = speedup, abs(plain["dice"] - r["dice"])
        print(f"{r['method']:<14}{r['cache']:<7}{r['train_s']:>9.0f}{r['eval_s']:>9.0f}"
              f"{r['train_s'] + r['eval_s']:>9.0f}{speedup:>10.2f}{r['dice']:>11.5f}")
    for method, target in (("linear_probe", 8.0), ("dka", 1.5)):
        for r in (r for r in rows if r["method"] == method and r["cache"] != "no"):
            verdict = "holds" if r["speedup"] >= target and r["delta"] <= 1e-4 else "MISSED"
            print(f"target: {method} >= {target:g}x faster with |delta Dice| <= 1e-4, cache {r['cache']}: "
                  f"{r['speedup']:.2f}x, |delta| {r['delta']:.1e} {verdict}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("steps", "run", "all"), default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per configuration (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="run part: 2 epochs and a few evaluation images")
    parser.add_argument("--methods", nargs="+", choices=RUN_METHODS, default=list(RUN_METHODS),
                        help="run part: the methods to run")
    parser.add_argument("--epochs", type=int, default=30, help="run part: training epochs")
    parser.add_argument("--warm", action="store_true", help="run part: add a cached run whose cache directory a "
                        "previous run with the same prefix filled (every later run of a sweep)")
    parser.add_argument("--work", help="folder for the run part's outputs (default: a temporary folder)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help="torch threads in the steps part (default: torch's choice)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_step_config(args.one, args.cached, args.device, args.steps, args.threads)))
        return
    if not KVASIR.is_dir():
        raise SystemExit(f"error: the real data folder {KVASIR} is missing")
    if args.part in ("steps", "all"):
        steps_part(args.device, args.steps, args.threads)
    if args.part in ("run", "all"):
        with tempfile.TemporaryDirectory() as temporary:
            run_part(args.quick, args.warm, Path(args.work or temporary), args.methods, args.epochs)


if __name__ == "__main__":
    main()
