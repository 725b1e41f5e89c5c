"""Ignite handlers for the two checkpoints a bundle run writes, and the record of which run owns a run folder.

* :class:`AdapterCheckpoint`: the bundle's model, ``models/model.pt``: only the tensors that trained (adapters and
  head) plus the method/backbone metadata, via :func:`pipeline.peft.save_adapter`; written when validation improves.
* :class:`ResumeState`: everything a killed run needs to continue bit for bit where it stopped (trainable tensors,
  optimizer, scheduler, epoch/iteration, best metric, early-stopping counter, and every random state: Python's,
  NumPy's, torch's, CUDA's, each random transform's ``R`` and the data loader's generator), written atomically
  after every epoch (and every ``every_n_iterations`` iterations when asked) and loaded when the trainer starts.
  The frozen backbone is not in it: it is rebuilt from its own weights.
* :func:`claim_run_folder`: ``run.json``, the fingerprint of the run that owns an output folder, so a second run
  with other data, split, method or settings never continues or overwrites the first one's files by accident; and
  a lock held while the run trains, so a second process never trains the same folder at the same time.

Every file is read with ``torch.load(weights_only=True)``: a run folder is data, and unpickling arbitrary objects
from it would run whatever code they name. So the states are kept to tensors, numbers, strings, lists and dicts.
Under DDP only rank 0 writes; every rank loads.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import Randomizable, Transform

from pipeline.engine.distributed import is_main_process, unwrap
from pipeline.errors import PipelineError
from pipeline.options import flag
from pipeline.peft import METHODS, adapter_payload, atomic_save, atomic_write, build_method, trainable_state_dict

RUN_RECORD = "run.json"


class AdapterCheckpoint:
    """Save the adapter-only weights of ``network`` to ``path`` each time the evaluator's key metric improves, with
    the bundle's ``settings`` (its ``model_settings``) inside and a card JSON beside it (``model.json``: method,
    backbone and its weights' sha256, classes, training data, the metrics at save time;
    :func:`pipeline.engine.model_card.model_card`)."""

    def __init__(self, network: torch.nn.Module, path: str, settings: dict | None = None, data: dict | None = None,
                 split=None) -> None:
        self.network = network
        self.path = Path(path)
        self.settings, self.data, self.split = dict(settings or {}), data, split
        self._weights_sha256: str | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from pipeline.engine.model_card import model_card, weights_sha256

        improved = engine.state.best_metric_epoch == engine.state.epoch
        if not (improved and is_main_process()):
            return
        payload = adapter_payload(self.network, self.settings)
        atomic_save(payload, self.path)
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.settings.get("backbone"), self.settings.get("checkpoint"))
        metrics = {name: float(value) for name, value in engine.state.metrics.items()
                   if isinstance(value, (int, float))}
        card = model_card(payload, self.settings, self.data, self.split, {**metrics, "epoch": engine.state.epoch},
                          self._weights_sha256)
        text = json.dumps(card, indent=2) + "\n"
        atomic_write(self.path.with_suffix(".json"), lambda stream: stream.write(text.encode()))


def _numpy_state(generator) -> dict:
    """A NumPy ``RandomState``'s (or the global one's) state as tensors and numbers, which weights_only loads."""
    _, keys, position, has_gauss, cached = generator.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def _set_numpy_state(generator, state: dict) -> None:
    generator.set_state(("MT19937", state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["cached_gaussian"]))


def _global_rng_state() -> dict:
    version, internal, gauss = random.getstate()
    state = {"python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
             "numpy": _numpy_state(np.random), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    _set_numpy_state(np.random, state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def random_transforms(transform, _seen: set | None = None) -> list[Randomizable]:
    """Every object in a transform tree that draws from its own ``R``, in a fixed order: random transforms, the
    ``Compose`` lists holding them, and the transforms inside them (``RandGaussianNoised`` draws its noise from an
    inner ``RandGaussianNoise`` with a separate ``R``). Their states advance as batches are loaded, so a resume
    that skips them repeats the first epoch's random crops, flips or box jitter instead of continuing the
    sequence."""
    seen = set() if _seen is None else _seen
    if id(transform) in seen:
        return []
    seen.add(id(transform))
    if isinstance(transform, (list, tuple)):
        return [found for item in transform for found in random_transforms(item, seen)]
    if not isinstance(transform, Transform):
        return []
    found = [transform] if isinstance(transform, Randomizable) else []
    attributes = getattr(transform, "__dict__", {})
    for name in sorted(attributes):
        found += random_transforms(attributes[name], seen)
    return found


def _loader_generators(loader) -> list[torch.Generator]:
    """The explicit generators a data loader shuffles with (none: it then draws from torch's global state)."""
    sampler = getattr(loader, "sampler", None)
    found = [getattr(loader, "generator", None), getattr(sampler, "generator", None)]
    unique = []
    for generator in found:
        if generator is not None and all(generator is not other for other in unique):
            unique.append(generator)
    return unique


def _dataset_transforms(loader) -> list[Randomizable]:
    """The random transforms of the loader's dataset, whatever its attributes are called (``transform``, or a
    slice dataset's ``volume_transform`` and ``slice_transform``)."""
    attributes = getattr(getattr(loader, "dataset", None), "__dict__", {})
    return [t for name in sorted(attributes) for t in random_transforms(attributes[name])]


def _data_rng_state(loader) -> dict:
    transforms = _dataset_transforms(loader)
    return {"transforms": [_numpy_state(t.R) for t in transforms],
            "loader": [g.get_state() for g in _loader_generators(loader)]}


def _set_data_rng_state(loader, state: dict, path: Path) -> None:
    transforms = _dataset_transforms(loader)
    generators = _loader_generators(loader)
    if len(transforms) != len(state["transforms"]) or len(generators) != len(state["loader"]):
        raise PipelineError(f"resume state {path} was written with other training transforms than this run's; "
                            "pass --overwrite true to start afresh, or another --output_dir")
    for transform, saved in zip(transforms, state["transforms"], strict=False):
        _set_numpy_state(transform.R, saved)
    for generator, saved in zip(generators, state["loader"], strict=False):
        generator.set_state(saved)


def rng_state(loader=None) -> dict:
    """All random state a training run draws from: global generators plus the training data's own."""
    return {**_global_rng_state(), "data": _data_rng_state(loader)}


def set_rng_state(state: dict, loader=None, path: Path = Path("resume state")) -> None:
    _set_global_rng_state(state)
    _set_data_rng_state(loader, state["data"], path)


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete the ``.<name>.tmp`` files :func:`pipeline.peft.atomic_save` leaves when killed mid-write."""
    for path in Path(folder).glob(".*.tmp"):
        path.unlink(missing_ok=True)


def read_resume_state(path: str | Path) -> dict:
    """Load a resume state as plain tensors and numbers only; anything else is refused, never executed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors alike; the first line says which
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PipelineError(
            f"resume state {path} cannot be loaded as plain weights ({reason}); nothing in it was run: "
            "delete it or pass --overwrite true to start afresh"
        ) from None
    if not isinstance(state, dict) or not {"trainer", "network", "optimizer", "rng"} <= set(state):
        raise PipelineError(f"resume state {path} is not a resume state of this project; delete it or pass "
                            "--overwrite true to start afresh")
    return state


class ResumeState:
    """Write the full resume state to ``path`` after every epoch; restore it when the trainer starts.

    Attach it to the trainer after the ``ValidationHandler`` so the saved best metric includes that epoch's
    validation. ``evaluator`` and ``early_stop`` are optional: without them the best metric and the early-stopping
    counter are not carried over. ``every_n_iterations`` > 0 also saves within an epoch (long epochs lose at most
    that many iterations); such a state also keeps the random state the epoch started with, so the resumed run
    reloads the epoch's batches already trained on (without training on them) and continues with the very next.

    Each epoch's data iterator is created right after the previous epoch's state is saved (``engine.set_data``),
    which is also where a resumed run creates its first one. Left to ignite, a straight run would first exhaust the
    old iterator, and a sampler with its own generator draws once more on exhaustion: the resumed run would then
    shuffle differently.

    A run that an early stop ended stays ended: rerunning its command restores it and trains nothing, where it
    would otherwise train on past the stop and could replace the model it finished with.
    ``continue_stopped=True`` (the bundles pass ``--resume true``) trains it on, as asked.
    """

    def __init__(self, path: str, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 lr_scheduler=None, evaluator: Engine | None = None, early_stop=None,
                 every_n_iterations: int = 0, continue_stopped: bool = False) -> None:
        self.path = Path(path)
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.evaluator = evaluator
        self.early_stop = early_stop
        self.every_n_iterations = int(every_n_iterations or 0)
        self.continue_stopped = flag("resume", continue_stopped)
        self._loader = None
        self._epoch_start: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        if self.every_n_iterations > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self._save_within_epoch)

    def _stopper(self):
        """Ignite's ``EarlyStopping`` inside MONAI's handler (created once the trainer is set), or ``None``."""
        return getattr(self.early_stop, "_handler", None)

    def state(self, engine: Engine) -> dict:
        state = {
            "epoch": engine.state.epoch,
            "trainer": dict(engine.state_dict()),
            "network": trainable_state_dict(self.network),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self._loader),
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        if self.evaluator is not None:
            state["best_metric"] = float(self.evaluator.state.best_metric)
            state["best_metric_epoch"] = int(self.evaluator.state.best_metric_epoch)
        stopper = self._stopper()
        if stopper is not None:
            best = None if stopper.best_score is None else float(stopper.best_score)
            state["early_stop"] = {"counter": int(stopper.counter), "best_score": best}
        return state

    def save(self, engine: Engine) -> None:
        """The end-of-epoch state (``stopped``: an early stop ends the run here); then the next epoch's iterator,
        from the state just saved."""
        if is_main_process():
            atomic_save({**self.state(engine), "stopped": bool(engine.should_terminate)}, self.path)
        if engine.state.epoch < engine.state.max_epochs:
            self._epoch_start = rng_state(self._loader)
            self._set_sampler_epoch(engine.state.epoch + 1)
            engine.set_data(self._loader)

    def _set_sampler_epoch(self, epoch: int) -> None:
        """Tell a distributed sampler the epoch it is about to serve, as MONAI's workflow does when the epoch
        starts: an iterator made earlier (with workers, it draws its first indices at once) would else reshuffle
        as for the previous epoch."""
        sampler = getattr(self._loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def _save_within_epoch(self, engine: Engine) -> None:
        if engine.state.iteration % engine.state.epoch_length == 0:
            return  # the end of the epoch: ``save`` writes it after validation
        if is_main_process():
            atomic_save({**self.state(engine), "epoch_start_rng": self._epoch_start}, self.path)

    def load(self, engine: Engine) -> None:
        self._loader = engine.state.dataloader
        if is_main_process():
            remove_stale_temporaries(self.path.parent)
        if not self.path.is_file():
            self._epoch_start = rng_state(self._loader)
            return
        state = read_resume_state(self.path)
        own, saved = trainable_state_dict(self.network), state["network"]
        if set(own) != set(saved) or any(own[name].shape != saved[name].shape for name in own):
            raise PipelineError(
                f"resume state {self.path} was written by a run with other adapters or options than this one; "
                "pass another --output_dir (or --overwrite true) to start afresh"
            )
        unwrap(self.network).load_state_dict(state["network"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            if set(state["lr_scheduler"]) != set(self.lr_scheduler.state_dict()):
                raise PipelineError(
                    f"resume state {self.path} was written with another learning-rate schedule (an older version "
                    "of this bundle): pass --overwrite true to start afresh, or another --output_dir"
                )
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.evaluator is not None and "best_metric" in state:
            self.evaluator.state.best_metric = state["best_metric"]
            self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        if self._stopper() is not None and "early_stop" in state:
            self._stopper().counter = state["early_stop"]["counter"]
            self._stopper().best_score = state["early_stop"]["best_score"]
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(state["trainer"])
        engine.state.max_epochs = max_epochs
        done = engine.state.iteration % engine.state.epoch_length
        if done and "epoch_start_rng" in state:
            self._epoch_start = state["epoch_start_rng"]
            engine.state.dataloader = self._continue_epoch(self._epoch_start, engine.state.epoch + 1, done)
        set_rng_state(state["rng"], self._loader, self.path)
        if not done:
            self._epoch_start = state["rng"]
        where = f"epoch {engine.state.epoch}" + (f", iteration {engine.state.iteration}" if done else "")
        engine.logger.info(f"resumed from {self.path} at {where}")
        if state.get("stopped") and not self.continue_stopped:
            engine.logger.info(f"this run stopped early at epoch {engine.state.epoch}: nothing to train "
                               "(--resume true trains it on)")
            engine.terminate()

    def _continue_epoch(self, epoch_start: dict, epoch: int, done: int) -> _ContinuedEpoch:
        """Replay the interrupted epoch's first ``done`` batches from its starting random state, so the next batch
        is the one the killed run would have trained on; ignite then counts the epoch from ``done``."""
        set_rng_state(epoch_start, self._loader, self.path)
        self._set_sampler_epoch(epoch)
        iterator = iter(self._loader)
        for _ in range(done):
            next(iterator)
        return _ContinuedEpoch(self._loader, iterator)


class _ContinuedEpoch:
    """The training data for a run resumed within an epoch: the replayed iterator once, then the loader itself."""

    def __init__(self, loader, iterator) -> None:
        self.loader, self._iterator = loader, iterator

    def __iter__(self):
        iterator, self._iterator = self._iterator, None
        return iterator if iterator is not None else iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def with_resolved_options(record: dict) -> dict:
    """``record`` with its ``method_options`` as its ``method`` resolves them, every default spelt out: a run
    recorded as ``{}`` then equals one recorded with its defaults written, and a run of an older default differs
    from one of a newer default. Options the method no longer accepts are left as recorded (and so differ)."""
    method, options = record.get("method"), record.get("method_options")
    if method not in METHODS or not isinstance(options, dict):
        return record
    try:
        resolved = build_method(method, **options).options()
    except PipelineError:
        return record
    return {**record, "method_options": json.loads(json.dumps(resolved, default=str))}


DEFAULTS_BEFORE_RESOLVED_RECORDS = {"dka": {"init": "paper"}, "lka": {"init": "paper"}}
"""The defaults, where they have changed since, of the options a ``run.json`` written before records spelt every
option out (commit ``4bd28f6``) left unsaid: a ``dka: {}`` run of that time began from PyTorch's init."""


SETTINGS_BEFORE_RECORDED = {"warmup_steps": 0}
"""What a run did in a setting its ``run.json`` cannot name because the setting came later: before
``warmup_steps`` existed every bundle trained without a warmup."""


def with_recorded_options(record: dict) -> dict:
    """A stored record as :func:`with_resolved_options`, what it left unsaid read as of when it was written: a
    setting it lacks as :data:`SETTINGS_BEFORE_RECORDED`, and options, where it lacks any of its method's, with
    :data:`DEFAULTS_BEFORE_RESOLVED_RECORDS`. Reading it with today's defaults instead would take an old
    ``dka: {}`` run for one of today's (zero init), or a run without warmup for one with it: a silent relabelling."""
    record = {**SETTINGS_BEFORE_RECORDED, **record}
    method, options = record.get("method"), record.get("method_options")
    if method in METHODS and isinstance(options, dict) and not build_method(method).options().keys() <= options.keys():
        record = {**record, "method_options": {**DEFAULTS_BEFORE_RESOLVED_RECORDS.get(method, {}), **options}}
    return with_resolved_options(record)


def fingerprint(settings: dict) -> dict:
    """``settings`` as JSON-comparable values: the split becomes a hash of its content, the data folder absolute,
    the method's options resolved."""
    record = {}
    for key, value in settings.items():
        if key == "split":
            text = json.dumps(value, sort_keys=True, default=str)
            value = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        elif key == "dataset_dir" and value is not None:
            value = str(Path(value).resolve())
        record[key] = json.loads(json.dumps(value, default=str))
    return with_resolved_options(record)


def differences(old: dict, new: dict, most: int = 4) -> str:
    """The keys whose values differ, ``key: old there, new now``; a mapping (a method's options) by its differing
    entries only."""
    found = []
    for key in sorted(set(old) | set(new)):
        there, now = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(there, dict) and isinstance(now, dict):
            found += [f"{key}.{inner}: {there.get(inner, '(unset)')!r} there, {now.get(inner, '(unset)')!r} now"
                      for inner in sorted(set(there) | set(now)) if there.get(inner) != now.get(inner)]
        elif there != now:
            found.append(f"{key}: {there!r} there, {now!r} now")
    return "; ".join(found[:most])


LOCK_FILE = ".lock"
_held_locks: dict[Path, int] = {}  # run folder -> the open lock file, held until this process ends


def lock_run_folder(folder: Path) -> None:
    """Hold ``folder``'s lock for the rest of this process, or stop if another process holds it.

    Two processes training one folder (a sweep started twice, or a sweep restarted while the training it had
    started still runs) would overwrite each other's resume state and ``model.pt``. The OS releases the lock when
    the process ends, however it ends, so a killed run leaves nothing to clean up.
    """
    folder = folder.resolve()
    if folder in _held_locks:
        return
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise PipelineError(f"output_dir {folder} is being trained by another process (pid {holder}): wait for it "
                            "to end, or stop it, before training there") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, str(os.getpid()).encode(), 0)
    _held_locks[folder] = descriptor


def claim_run_folder(output_dir: str, settings: dict, resume: bool = False, overwrite: bool = False,
                     owned: tuple[str, ...] = ("split.json", "models/resume.pt", "models/model.pt")) -> dict:
    """Make ``output_dir`` this run's: record its fingerprint in ``run.json``, or refuse a folder another run owns.

    A folder whose ``run.json`` matches ``settings`` is this run's own (rerunning a killed command continues it).
    A folder written with other settings (or holding ``owned`` files without a ``run.json``) stops the run, so a
    split, a model or a resume state is never silently mixed with another run's, unless ``resume`` (continue it
    with the new settings: e.g. more epochs or another learning rate) or ``overwrite`` (delete its resume state and
    model and start afresh). Returns the fingerprint written.
    """
    from pipeline.data.datalist import write_json

    if resume and overwrite:
        raise PipelineError("pass either --resume true or --overwrite true, not both")
    folder = Path(output_dir)
    record_path = folder / RUN_RECORD
    record = fingerprint(settings)
    if record_path.is_file():
        try:
            previous = json.loads(record_path.read_text()).get("fingerprint", {})
        except (json.JSONDecodeError, AttributeError) as error:
            raise PipelineError(f"{record_path} is not a run record ({error}); delete it or pass another "
                                "--output_dir") from None
        conflict = differences(with_recorded_options(previous), with_recorded_options(record))
    else:
        leftovers = [name for name in owned if (folder / name).exists()]
        conflict = f"it holds {', '.join(leftovers)} of a run without {RUN_RECORD}" if leftovers else ""
    if conflict and not (resume or overwrite):
        raise PipelineError(
            f"output_dir {folder} belongs to another run ({conflict}): pass --resume true to continue it with "
            "these settings, --overwrite true to start afresh there, or another --output_dir"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        lock_run_folder(folder)
    if overwrite:
        for name in owned:
            if name != "split.json":
                (folder / name).unlink(missing_ok=True)
    write_json({"fingerprint": record}, record_path)
    return record
