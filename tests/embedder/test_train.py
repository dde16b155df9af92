import csv
import dataclasses
import math

import numpy as np
import pytest
import torch

import embedder.training.loop as training
from config import Config, ConfigError, EmbedderConfig, TrainConfig
from embedder.checkpoint import load_checkpoint
from embedder.inference.extract import embed_pil_images
from embedder.training.state import same_run
from embedder.transforms import build_transform
from indexer.evaluation.protocol import knn_top1
from tests.conftest import ColourCatalog


def small_config(tmp_path, **train) -> Config:
    return Config(
        embedder=EmbedderConfig(weights="none", embedding_size=16, image_size=32, batch_size=32, workers=0),
        train=TrainConfig(**{"epochs": 2, "classes_per_batch": 3, "images_per_class": 4, "lr": 1e-3,
                             "holdout_per_class": 2, "warmup_epochs": 0.0, "validate_every": 1.0, **train}),
        artifacts_dir=tmp_path,
    )


def test_learning_rate_warms_up_then_decays_by_steps_or_time():
    train = TrainConfig(epochs=10, lr=1.0, warmup_epochs=1.0, time_budget=100)
    assert training.learning_rate(train, 0, 10, 0) == pytest.approx(0.1)
    assert training.learning_rate(train, 9, 10, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.09)))
    assert training.learning_rate(train, 50, 10, 0) == pytest.approx(0.5)
    assert training.learning_rate(train, 20, 10, 50) == pytest.approx(0.5)  # half the time budget gone
    assert training.learning_rate(train, 20, 10, 100) == pytest.approx(0.0)
    by_steps = dataclasses.replace(train, time_budget=0, steps=40)
    assert training.learning_rate(by_steps, 20, 10, 0) == pytest.approx(0.5)  # half the 40 steps gone
    assert training.learning_rate(by_steps, 40, 10, 0) == pytest.approx(0.0)


def test_a_linear_schedule_falls_in_a_straight_line_to_zero():
    train = TrainConfig(epochs=10, lr=1.0, warmup_epochs=1.0, schedule="linear", steps=40)
    assert training.learning_rate(train, 4, 10, 0) == pytest.approx(0.5 * 0.9)  # warming up, 4 of 40 steps gone
    assert training.learning_rate(train, 10, 10, 0) == pytest.approx(0.75)
    assert training.learning_rate(train, 30, 10, 0) == pytest.approx(0.25)
    assert training.learning_rate(train, 40, 10, 0) == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="train.schedule"):
        TrainConfig(schedule="step")


def test_cpu_training_computes_the_small_maps_as_products_and_other_devices_do_not():
    from embedder.training.small_map_convs import SmallMapConv2d

    config = small_config(".")
    convolutions = [m for m in training.build_trainee(config, 3, "cpu").model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(type(m) is SmallMapConv2d for m in convolutions)
    meta = training.build_trainee(config, 3, "meta").model.modules()
    assert all(type(m) is torch.nn.Conv2d for m in meta if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_optimiser_updates_in_one_fused_kernel_where_torch_has_one(optimizer):
    config = small_config(".")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, optimizer=optimizer))
    assert training.build_trainee(config, 3, "cpu").optimizer.defaults["fused"] is True
    assert not training.build_trainee(config, 3, "meta").optimizer.defaults["fused"]
    # The same arithmetic: one fused step and one tensor at a time move the weights alike.
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(7, 5)) for _ in range(2)]
    twins = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    for group, fused in ((weights, True), (twins, False)):
        step = training.build_optimizer(config.train, group, fused=fused)
        for _ in range(3):
            for w in group:
                w.grad = torch.sin(w.detach() * 3)
            step.step()
    for w, twin in zip(weights, twins):
        torch.testing.assert_close(w, twin, rtol=1e-5, atol=1e-6)


def test_the_curve_zooms_the_accuracy_axis_onto_the_validations():
    from embedder.training.state import accuracy_axis_range

    assert accuracy_axis_range([0.872, 0.919, 0.917]) == pytest.approx((0.822, 1.0))
    assert accuracy_axis_range([0.02, 0.3]) == (0.0, 1.0)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    catalog = ColourCatalog(count=48)
    config = small_config(".")
    trainee = training.build_trainee(config, 3, "cpu")
    transform = build_transform(training.catalog_preprocessing(config.embedder, catalog))
    batch = torch.stack([transform(catalog.open_image(i)) for i in range(12)])
    labels = torch.tensor([catalog.items[i].label for i in range(12)])
    losses = [training.train_step(trainee, batch, labels, 1.0, amp=False)["loss"] for _ in range(8)]
    assert losses[-1] < 0.7 * losses[0]


def test_training_writes_best_checkpoint_metrics_and_curve(tmp_path):
    config = small_config(tmp_path)
    report = training.train(config, knn_top1, catalog=ColourCatalog(count=48))
    assert report.stopped_because == "epochs done" and report.steps > 0 and 0 <= report.best_top1 <= 1
    loaded = load_checkpoint(tmp_path / "embedder.pt")
    assert loaded.preprocessing.image_size == 32 and loaded.model.embedding_size == 16
    rows = list(csv.DictReader(open(tmp_path / "train" / "metrics.csv")))
    assert len(rows) == 2 and {"loss", "val_top1", "images_per_second"} <= set(rows[0])
    assert (tmp_path / "train" / "training-curve.png").read_bytes()[:4] == b"\x89PNG"
    # The loss curve has points between validations (every step here: 2 steps an epoch), whose means
    # are the validations' rows.
    trace = list(csv.DictReader(open(tmp_path / "train" / "loss.csv")))
    assert [int(row["step"]) for row in trace] == [1, 2, 3, 4]
    for epoch, row in enumerate(rows):
        points = trace[2 * epoch: 2 * epoch + 2]
        for key in ("loss", "triplet", "aux"):
            assert float(row[key]) == pytest.approx(np.mean([float(point[key]) for point in points]))


def test_interrupted_training_resumes_at_the_saved_step_and_schedule(tmp_path, monkeypatch):
    catalog = ColourCatalog(count=48)  # 24 training rows: 2 steps an epoch, a validation and a save each
    config = small_config(tmp_path, epochs=3)
    seen_lr = []
    real_step = training.train_step

    def record(trainee, *args):
        seen_lr.append(trainee.optimizer.param_groups[0]["lr"])
        if len(seen_lr) == 4:
            raise KeyboardInterrupt  # during step 4: steps 1-2 were saved, step 3 is lost
        return real_step(trainee, *args)

    monkeypatch.setattr(training, "train_step", record)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, knn_top1, catalog=catalog)
    interrupted = list(seen_lr)
    seen_lr.clear()
    monkeypatch.setattr(training, "train_step", lambda trainee, *args: (seen_lr.append(
        trainee.optimizer.param_groups[0]["lr"]), real_step(trainee, *args))[1])
    report = training.train(config, knn_top1, catalog=catalog)
    assert report.resumed_from_step == 2 and report.steps == 6
    # The schedule continues where it stopped: step 3 gets the learning rate it had the first time.
    assert seen_lr[:2] == pytest.approx(interrupted[2:4])
    assert len(seen_lr) == 4
    # The loss curve goes on from the saved state: each step once, the lost step 3 as retrained.
    trace = list(csv.DictReader(open(tmp_path / "train" / "loss.csv")))
    assert [int(row["step"]) for row in trace] == [1, 2, 3, 4, 5, 6]
    # A finished run is not trained further.
    again = training.train(config, knn_top1, catalog=catalog)
    assert again.steps == 6 and again.stopped_because == "epochs done"


def test_other_settings_do_not_resume(tmp_path):
    catalog = ColourCatalog(count=48)
    training.train(small_config(tmp_path, epochs=1), knn_top1, catalog=catalog)
    report = training.train(small_config(tmp_path, epochs=1, margin=0.3), knn_top1, catalog=catalog)
    assert report.resumed_from_step == 0


def scripted_validations(monkeypatch, scores):
    """Validations return ``scores`` in turn (then the last one again) rather than measuring."""
    scores = list(scores)
    monkeypatch.setattr(training.Validator, "__call__", lambda self, model: scores.pop(0) if len(scores) > 1 else scores[0])


def test_early_stopping_counts_only_from_its_share_of_the_schedule(tmp_path, monkeypatch):
    catalog = ColourCatalog(count=48)  # 2 steps an epoch, a validation each: at 1/6, 2/6 ... 6/6 of the schedule
    scripted_validations(monkeypatch, [0.5, 0.4])
    report = training.train(small_config(tmp_path / "a", epochs=6, early_stopping=2, early_stopping_after=0.0),
                            knn_top1, catalog=catalog)
    assert report.stopped_because == "early stopping" and report.steps == 6 and report.best_step == 2
    # From half-way only: the validation at 2/6 is passed over, those at 3/6 and 4/6 count.
    scripted_validations(monkeypatch, [0.5, 0.4])
    report = training.train(small_config(tmp_path / "b", epochs=6, early_stopping=2, early_stopping_after=0.5),
                            knn_top1, catalog=catalog)
    assert report.stopped_because == "early stopping" and report.steps == 8
    # Off by default.
    scripted_validations(monkeypatch, [0.5, 0.4])
    report = training.train(small_config(tmp_path / "c", epochs=6), knn_top1, catalog=catalog)
    assert report.stopped_because == "epochs done" and report.steps == 12


def test_a_tie_keeps_the_later_model_and_does_not_reset_the_patience(tmp_path, monkeypatch):
    scripted_validations(monkeypatch, [0.5, 0.4, 0.5])
    report = training.train(small_config(tmp_path, epochs=6, early_stopping=2, early_stopping_after=0.0),
                            knn_top1, catalog=ColourCatalog(count=48))
    assert report.stopped_because == "early stopping" and report.steps == 6 and report.best_step == 6
    assert torch.load(tmp_path / "embedder.pt", weights_only=True)["training"]["step"] == 6


def test_a_run_that_early_stopping_ended_goes_on_when_given_more_patience(tmp_path, monkeypatch):
    catalog = ColourCatalog(count=48)
    scripted_validations(monkeypatch, [0.5, 0.4])
    stopped = training.train(small_config(tmp_path, epochs=6, early_stopping=2, early_stopping_after=0.0),
                             knn_top1, catalog=catalog)
    assert stopped.stopped_because == "early stopping" and stopped.steps == 6
    same = training.train(small_config(tmp_path, epochs=6, early_stopping=2, early_stopping_after=0.0),
                          knn_top1, catalog=catalog)
    assert same.stopped_because == "early stopping" and same.steps == 6
    more = training.train(small_config(tmp_path, epochs=6, early_stopping=0), knn_top1, catalog=catalog)
    assert more.resumed_from_step == 6 and more.steps == 12 and more.stopped_because == "epochs done"


def test_a_state_saved_with_the_stopping_settings_in_its_identity_still_resumes(tmp_path):
    # States saved before early_stopping left the identity hold it; they are the same run.
    config = small_config(tmp_path, epochs=1)
    catalog = ColourCatalog(count=48)
    current = training.run_identity(config, catalog)
    assert "early_stopping" not in current["train"]
    older = {**current, "train": {**current["train"], "early_stopping": 5}}
    assert same_run(older, current, training.STOPPING_SETTINGS)
    assert not same_run(older, current)
    assert not same_run({**current, "train": {**current["train"], "margin": 0.3}}, current, training.STOPPING_SETTINGS)
    newer_setting = {**current, "train": {key: value for key, value in current["train"].items() if key != "margin"}}
    assert not same_run(newer_setting, current, training.STOPPING_SETTINGS)


def test_time_budget_stops_training(tmp_path):
    report = training.train(small_config(tmp_path, epochs=50, time_budget=1), knn_top1, catalog=ColourCatalog(count=48))
    assert report.stopped_because == "time budget" and report.steps < 50 * 3


def test_a_step_count_ends_training_and_its_schedule(tmp_path):
    report = training.train(small_config(tmp_path, epochs=50, steps=5), knn_top1, catalog=ColourCatalog(count=48))
    assert report.stopped_because == "steps done" and report.steps == 5
    last = list(csv.DictReader(open(tmp_path / "train" / "metrics.csv")))[-1]
    assert int(last["step"]) == 5 and float(last["lr"]) < 0.2 * 1e-3  # the cosine ran out with the steps


def test_only_a_run_from_random_weights_starts_its_stem_from_the_catalog_s_patches(tmp_path, monkeypatch):
    from embedder.model import EmbeddingNet

    calls, original = [], EmbeddingNet.start_stem_from_patches
    monkeypatch.setattr(EmbeddingNet, "start_stem_from_patches",
                        lambda self, images: calls.append(tuple(images.shape)) or original(self, images))
    catalog = ColourCatalog(count=48)
    training.train(small_config(tmp_path / "random", epochs=50, steps=2), knn_top1, catalog=catalog)
    assert calls == [(24, 3, 32, 32)]  # every training row: fewer than STEM_IMAGES
    # Going on from a checkpoint keeps its stem.
    config = small_config(tmp_path / "tuned", epochs=50, steps=2)
    config = dataclasses.replace(config, embedder=dataclasses.replace(
        config.embedder, weights=str(tmp_path / "random" / "embedder.pt")))
    training.train(config, knn_top1, catalog=catalog)
    assert calls == [(24, 3, 32, 32)]


def test_frozen_layers_do_not_change(tmp_path):
    config = small_config(tmp_path, freeze="layer3", epochs=1)
    trainee = training.build_trainee(config, 3, "cpu")
    before = trainee.model.trunk.layer2[0].conv1.weight.clone()
    catalog = ColourCatalog(count=12)
    transform = build_transform(training.catalog_preprocessing(config.embedder, catalog))
    batch = torch.stack([transform(catalog.open_image(i)) for i in range(12)])
    training.train_step(trainee, batch, torch.tensor([it.label for it in catalog.items]), 1.0, amp=False)
    assert torch.equal(before, trainee.model.trunk.layer2[0].conv1.weight)
    assert not any(p.requires_grad for p in trainee.model.trunk.layer3.parameters())
    assert all(p.requires_grad for p in trainee.model.trunk.layer4.parameters())


def test_a_damaged_state_is_kept_and_said_and_the_better_checkpoint_survives_the_new_run(tmp_path, monkeypatch,
                                                                                      caplog):
    from embedder.checkpoint import file_sha256, read_checkpoint

    catalog = ColourCatalog(count=48)
    training.train(small_config(tmp_path), knn_top1, catalog=catalog)
    best = tmp_path / "embedder.pt"
    kept_sha, kept_top1 = file_sha256(best), read_checkpoint(best)["training"]["val_top1"]
    (tmp_path / "train" / "last.pt").write_bytes(b"cut off mid-write")
    # The run that starts over validates worse than the one whose state was lost.
    monkeypatch.setattr(training.Validator, "__call__", lambda self, model: kept_top1 - 0.25)
    report = training.train(small_config(tmp_path), knn_top1, catalog=catalog)
    assert report.resumed_from_step == 0 and report.steps > 0
    assert (tmp_path / "train" / "last.pt.damaged").read_bytes() == b"cut off mid-write"
    assert any("is damaged" in r.message and "STARTS OVER" in r.message for r in caplog.records if r.levelname == "WARNING")
    assert file_sha256(best) == kept_sha  # the earlier, better checkpoint was not overwritten
    # Another catalog is another run: its checkpoint replaces the earlier one as before.
    training.train(small_config(tmp_path), knn_top1, catalog=ColourCatalog(count=40), restart=True)
    assert file_sha256(best) != kept_sha
