import dataclasses

import pytest
import torch

from embedder.checkpoint import (
    CheckpointError,
    catalog_preprocessing,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from embedder.model import EmbeddingNet
from embedder.training.soup import average_checkpoints, check_output, make_soup, recalibrate_batchnorm
from indexer.evaluation.protocol import knn_top1
from tests.conftest import ColourCatalog
from tests.embedder.test_train import small_config


def ingredients(tmp_path, config, catalog, count=2):
    preprocessing = catalog_preprocessing(config.embedder, catalog)
    paths = []
    for seed in range(count):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"ingredient-{seed}.pt")
        save_checkpoint(paths[-1], EmbeddingNet(embedding_size=16), preprocessing, origin=f"seed {seed}")
    return paths


def test_the_soup_is_the_mean_of_the_weights(tmp_path):
    config, catalog = small_config(tmp_path), ColourCatalog()
    paths = ingredients(tmp_path, config, catalog, count=3)
    soup = average_checkpoints(paths).model.state_dict()
    weights = [read_checkpoint(path)["state_dict"] for path in paths]
    for name in ("trunk.conv1.weight", "projection.weight", "trunk.bn1.running_var"):
        torch.testing.assert_close(soup[name], sum(w[name] for w in weights) / 3)
    assert torch.equal(soup["trunk.bn1.num_batches_tracked"], weights[0]["trunk.bn1.num_batches_tracked"])


def test_checkpoints_that_do_not_fit_together_are_named(tmp_path):
    config, catalog = small_config(tmp_path), ColourCatalog()
    paths = ingredients(tmp_path, config, catalog)
    other = tmp_path / "other-size.pt"
    preprocessing = dataclasses.replace(catalog_preprocessing(config.embedder, catalog), image_size=48)
    save_checkpoint(other, EmbeddingNet(embedding_size=16), preprocessing, origin="x")
    with pytest.raises(CheckpointError, match="other-size.pt cannot be averaged"):
        average_checkpoints([paths[0], other])
    wider = tmp_path / "wider.pt"
    save_checkpoint(wider, EmbeddingNet(embedding_size=32), catalog_preprocessing(config.embedder, catalog), "x")
    with pytest.raises(CheckpointError, match="wider.pt cannot be averaged"):
        average_checkpoints([paths[0], wider])
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints(paths[:1])


def test_a_checkpoint_from_before_a_setting_averages_with_one_that_names_its_default(tmp_path):
    config, catalog = small_config(tmp_path), ColourCatalog()
    paths = ingredients(tmp_path, config, catalog)
    older = read_checkpoint(paths[1])
    del older["model_args"]["stem"]  # as written before embedder.stem existed
    torch.save(older, paths[1])
    assert average_checkpoints(paths).model.stem == "imagenet"
    save_checkpoint(paths[0], EmbeddingNet(embedding_size=16, stem="small"), catalog_preprocessing(config.embedder,
                                                                                                   catalog), "x")
    with pytest.raises(CheckpointError, match="cannot be averaged"):
        average_checkpoints(paths)


def test_batchnorm_statistics_become_the_mean_of_the_batches():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, momentum=0.3))
    batches = [torch.randn(8, 4) * (1 + i) + i for i in range(3)]
    with torch.no_grad():
        hidden = [model[0](batch) for batch in batches]
    assert recalibrate_batchnorm(model, batches) == 24
    norm = model[1]
    torch.testing.assert_close(norm.running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack([h.var(0, unbiased=True) for h in hidden]).mean(0))
    assert norm.momentum == 0.3 and not model.training


def test_make_soup_recalibrates_validates_and_saves(tmp_path):
    config, catalog = small_config(tmp_path), ColourCatalog(count=48)
    paths = ingredients(tmp_path, config, catalog)
    output = tmp_path / "soup.pt"
    report = make_soup(config, paths, output, knn_top1, catalog=catalog)
    assert set(report.ingredients_val_top1) == {str(p) for p in paths} and 0 <= report.val_top1 <= 1
    assert report.recalibration_images == 24  # the training rows (the val split is validated on)
    saved = read_checkpoint(output)
    assert saved["soup"]["ingredients"] == [str(p) for p in paths] and saved["soup"]["val_top1"] == report.val_top1
    plain = average_checkpoints(paths).model.state_dict()["trunk.bn1.running_mean"]
    recalibrated = load_checkpoint(output).model.state_dict()["trunk.bn1.running_mean"]
    assert not torch.allclose(plain, recalibrated)


def test_a_checkpoint_that_is_not_an_ingredient_is_not_overwritten(tmp_path):
    config, catalog = small_config(tmp_path), ColourCatalog()
    paths = ingredients(tmp_path, config, catalog)
    best = tmp_path / "embedder.pt"
    best.write_bytes(b"the trained model")
    with pytest.raises(CheckpointError, match="--replace"):
        check_output(best, paths, replace=False)
    check_output(best, paths, replace=True)
    check_output(paths[0], paths, replace=False)  # averaging into one of the ingredients loses nothing new
    check_output(tmp_path / "new.pt", paths, replace=False)
