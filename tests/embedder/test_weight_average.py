import pytest
import torch

import embedder.train as training
from embedder.checkpoint import load_checkpoint
from embedder.weight_average import ema_decay_at, weight_average
from indexer.evaluation import knn_top1
from tests.conftest import ColourCatalog
from tests.embedder.test_train import small_config


def test_the_average_follows_the_weights_and_batchnorm_statistics_as_a_reference_loop_does():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    averaged = weight_average(model, decay=0.9)
    reference = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for update in range(30):
        model.train()(torch.randn(8, 4))  # moves BatchNorm's running statistics
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        averaged.update_parameters(model)
        beta = ema_decay_at(0.9, update) if update else 0.0  # the first update copies
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                reference[name] = beta * reference[name] + (1 - beta) * tensor
            else:
                reference[name] = tensor.clone()
    for name, tensor in averaged.module.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-5, atol=1e-6)
    assert int(averaged.n_averaged) == 30


def test_the_decay_ramps_up_to_its_setting():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90) == pytest.approx(0.91)
    assert ema_decay_at(0.999, 100_000) == 0.999


def test_training_with_an_average_validates_and_keeps_the_average(tmp_path, monkeypatch):
    catalog = ColourCatalog(count=48)  # 24 training rows: 2 steps an epoch
    config = small_config(tmp_path, epochs=2, ema_decay=0.5)
    validated = []
    real_validator = training.Validator.__call__
    monkeypatch.setattr(training.Validator, "__call__",
                        lambda self, model: (validated.append(model), real_validator(self, model))[1])
    training.train(config, knn_top1, catalog=catalog)
    modules = torch.load(tmp_path / "train" / "last.pt", weights_only=True)["modules"]
    assert int(modules["averaged"]["n_averaged"]) == 4
    # Each validation saw the average (its own copy of the network), and the checkpoint kept is the
    # average, not the last step's weights, which differ from it.
    assert len(validated) == 2 and all(model is validated[0] for model in validated)
    name = "trunk.conv1.weight"
    kept = load_checkpoint(tmp_path / "embedder.pt").model.state_dict()[name]
    torch.testing.assert_close(kept, modules["averaged"]["module." + name])
    torch.testing.assert_close(kept, validated[-1].state_dict()[name])
    assert not torch.allclose(kept, modules["model"][name])
    # The run's last weights (the average's) are kept too, as an ingredient for a weight soup.
    final = load_checkpoint(tmp_path / "train" / training.FINAL_CHECKPOINT_NAME).model.state_dict()[name]
    torch.testing.assert_close(final, modules["averaged"]["module." + name])


def test_an_interrupted_run_resumes_its_average_and_other_decays_are_other_runs(tmp_path, monkeypatch):
    catalog = ColourCatalog(count=48)
    config = small_config(tmp_path, epochs=2, ema_decay=0.5)
    real_step, steps = training.train_step, []

    def interrupt_in_step_4(*args):
        steps.append(1)
        if len(steps) == 4:
            raise KeyboardInterrupt  # the state saved at the end of epoch 1 holds 2 updates
        return real_step(*args)

    monkeypatch.setattr(training, "train_step", interrupt_in_step_4)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, knn_top1, catalog=catalog)
    monkeypatch.setattr(training, "train_step", real_step)
    report = training.train(config, knn_top1, catalog=catalog)
    assert report.resumed_from_step == 2 and report.steps == 4
    modules = torch.load(tmp_path / "train" / "last.pt", weights_only=True)["modules"]
    assert int(modules["averaged"]["n_averaged"]) == 4  # 2 restored + 2 new, not a fresh average
    assert training.run_identity(config, catalog)["train"]["ema_decay"] == 0.5
    assert "ema_decay" not in training.run_identity(small_config(tmp_path), catalog)["train"]
