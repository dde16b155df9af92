"""Training augmentation presets: uint8 pixels shaped like inference's, normalised per batch as inference does."""
import numpy as np
import pytest
import torch
from PIL import Image

from embedder.training.augment import PRESETS, preset_for, training_pixels
from embedder.transforms import Preprocessing, build_transform, normalize_batch


def garment(size: tuple[int, int] = (28, 28)) -> Image.Image:
    """A lopsided gray shape: flips and shifts change its pixels."""
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    pixels[4:20, 3:12] = 220
    pixels[6:10, 12:25] = 120
    return Image.fromarray(pixels, "L")


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("preprocessing", [Preprocessing(image_size=32, resize="squash", grayscale=True),
                                           Preprocessing(image_size=40, resize="pad")])
def test_every_preset_gives_uint8_pixels_of_the_inference_shape(preset, preprocessing):
    out = training_pixels(preset, preprocessing)(garment((60, 36)).convert("RGB"))
    size = preprocessing.image_size
    assert out.shape == (3, size, size) and out.dtype == torch.uint8


def test_without_augmentation_training_sees_exactly_what_inference_sees():
    preprocessing = Preprocessing(image_size=32, resize="squash", grayscale=True)
    images = [garment(), garment().rotate(90)]
    trained = normalize_batch(torch.stack([training_pixels("none", preprocessing)(image) for image in images]),
                              preprocessing)
    assert torch.equal(trained, torch.stack([build_transform(preprocessing)(image) for image in images]))


def test_the_fashion_mnist_preset_varies_the_image_and_keeps_it_in_range():
    preprocessing = Preprocessing(image_size=32, resize="squash", grayscale=True)
    augment = training_pixels("fashion-mnist", preprocessing)
    torch.manual_seed(0)
    outs = [augment(garment()) for _ in range(12)]
    assert len({out.numpy().tobytes() for out in outs}) > 1
    plain = training_pixels("none", preprocessing)(garment())
    # Flips and shifts of a pixel or two move the garment, they do not add ink.
    assert all(abs(int(out.sum()) - int(plain.sum())) < 0.35 * int(plain.sum()) for out in outs)


def test_catalogs_get_their_preset_and_unknown_presets_are_refused():
    assert preset_for("fashion-mnist") == "fashion-mnist" and preset_for("deepfashion") == "photo"
    with pytest.raises(ValueError, match="augmentation preset 'blur' is not one of none, fashion-mnist, photo"):
        training_pixels("blur", Preprocessing(image_size=32))
