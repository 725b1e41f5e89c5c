"""``training.json``: the budget, cost and per-epoch curves of a training run, continued across a resume."""

from __future__ import annotations

import json

import torch
from ignite.engine import Engine, Events

from pipeline.engine.record import TrainingRecord
from pipeline.machine import machine


def _engines(losses, val_scores, val_every=2):
    """A trainer yielding ``losses`` (2 per epoch) and an evaluator whose key metric is ``val_scores[epoch]``,
    run every ``val_every`` epochs as the ValidationHandler does."""
    network = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    network[0].requires_grad_(False)
    values = iter(losses)
    trainer = Engine(lambda engine, batch: {"loss": torch.tensor(next(values))})

    def validate(engine, batch):
        return None

    evaluator = Engine(validate)
    evaluator.state.key_metric_name = "val_mean_dice"
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1.0, -1

    @evaluator.on(Events.EPOCH_COMPLETED)
    def score(engine):
        score = val_scores.get(trainer.state.epoch, 0.0)
        engine.state.metrics["val_mean_dice"] = score
        if score > engine.state.best_metric:
            engine.state.best_metric, engine.state.best_metric_epoch = score, trainer.state.epoch

    @trainer.on(Events.EPOCH_COMPLETED(every=val_every))
    def run_validation(engine):
        evaluator.run([0], max_epochs=1)
        evaluator.state.epoch = engine.state.epoch  # as MONAI's ValidationHandler sets it

    return network, trainer, evaluator


def test_record_has_budget_cost_and_curves(tmp_path):
    network, trainer, evaluator = _engines([4.0, 2.0, 1.0, 1.0, 0.5, 0.5], {2: 0.4})
    TrainingRecord(str(tmp_path / "training.json"), network, evaluator).attach(trainer)
    trainer.run([[0], [1]], max_epochs=3)
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["trainable_parameters"] == 3, "the frozen layer's 8 parameters are not counted"
    assert (record["epochs_run"], record["iterations_run"], record["max_epochs"], record["device"]) == (3, 6, 3, "cpu")
    assert [c["train_loss"] for c in record["curves"]] == [3.0, 1.0, 0.5]
    assert [c["val_metric"] for c in record["curves"]] == [None, 0.4, None]
    assert [c["iteration"] for c in record["curves"]] == [2, 4, 6]
    assert (record["best_val_metric"], record["best_val_epoch"]) == (0.4, 2)
    assert record["train_seconds"] > 0
    assert record["machine"] == machine(torch.device("cpu"))


def test_a_run_resumed_on_another_machine_names_both(tmp_path):
    path = tmp_path / "training.json"
    curves = [{"epoch": 1, "iteration": 2, "train_loss": 1.0, "val_metric": None}]

    def resume(earlier):
        path.write_text(json.dumps({"train_seconds": 1.0, "curves": curves, "machine": earlier}))
        network, trainer, evaluator = _engines([1.0] * 2, {})
        trainer.add_event_handler(Events.STARTED, lambda engine: setattr(engine.state, "epoch", 1))
        TrainingRecord(str(path), network, evaluator).attach(trainer)
        trainer.run([[0], [1]], max_epochs=2)
        return json.loads(path.read_text())["machine"]

    here = machine(torch.device("cpu"))
    assert resume(here) == here
    assert resume("GPU X, torch 1") == f"GPU X, torch 1; resumed on {here}"
    assert resume(f"GPU X, torch 1; resumed on {here}") == f"GPU X, torch 1; resumed on {here}", \
        "resumed again where it last ran: named once"


def test_a_resumed_run_continues_the_record_up_to_its_epoch(tmp_path):
    path = tmp_path / "training.json"
    previous = {"train_seconds": 100.0, "curves": [{"epoch": e, "iteration": 2 * e, "train_loss": 1.0,
                                                    "val_metric": None} for e in (1, 2, 3)]}
    path.write_text(json.dumps(previous))
    network, trainer, evaluator = _engines([1.0] * 4, {})

    @trainer.on(Events.STARTED)  # attached first, as ResumeState is: the run continues after epoch 2
    def resumed(engine):
        engine.state.epoch, engine.state.iteration = 2, 4

    TrainingRecord(str(path), network, evaluator).attach(trainer)
    trainer.run([[0], [1]], max_epochs=4)
    record = json.loads(path.read_text())
    assert [c["epoch"] for c in record["curves"]] == [1, 2, 3, 4], "the unsaved epoch 3 is replaced, not repeated"
    assert record["train_seconds"] > 100.0


def test_a_fresh_run_starts_a_fresh_record(tmp_path):
    path = tmp_path / "training.json"
    path.write_text(json.dumps({"train_seconds": 100.0, "curves": [{"epoch": 1}]}))
    network, trainer, evaluator = _engines([1.0, 1.0], {})
    TrainingRecord(str(path), network, evaluator).attach(trainer)
    trainer.run([[0], [1]], max_epochs=1)
    record = json.loads(path.read_text())
    assert [c["epoch"] for c in record["curves"]] == [1] and record["train_seconds"] < 100.0


def test_only_a_run_that_ended_says_it_completed(tmp_path):
    """Spent budget and early stop complete a run; a run killed mid-way (an exception here) never says so."""
    spent, stopped, killed = (tmp_path / f"{name}.json" for name in ("spent", "stopped", "killed"))
    network, trainer, evaluator = _engines([1.0] * 4, {})
    TrainingRecord(str(spent), network, evaluator).attach(trainer)
    trainer.run([[0], [1]], max_epochs=2)
    assert json.loads(spent.read_text())["completed"] is True

    network, trainer, evaluator = _engines([1.0] * 8, {})
    TrainingRecord(str(stopped), network, evaluator).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda engine: engine.terminate())  # an early stop
    trainer.run([[0], [1]], max_epochs=4)
    record = json.loads(stopped.read_text())
    assert (record["completed"], record["epochs_run"]) == (True, 2)

    network, trainer, evaluator = _engines([1.0] * 8, {})
    TrainingRecord(str(killed), network, evaluator).attach(trainer)

    def kill(engine):
        raise KeyboardInterrupt

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), kill)
    try:
        trainer.run([[0], [1]], max_epochs=4)
    except KeyboardInterrupt:
        pass
    record = json.loads(killed.read_text())
    assert record["epochs_run"] == 1 and "completed" not in record


def test_a_run_that_never_overlapped_a_validation_label_ends_with_a_warning(tmp_path, caplog):
    for scores, warned in (({2: 0.0}, True), ({2: 0.01}, False)):
        network, trainer, evaluator = _engines([1.0] * 4, scores)
        TrainingRecord(str(tmp_path / "training.json"), network, evaluator).attach(trainer)
        caplog.clear()
        with caplog.at_level("WARNING", logger="pipeline.engine.record"):
            trainer.run([[0], [1]], max_epochs=2)
        assert ("best validation Dice of 0" in caplog.text) is warned, scores
