import pytest
import torch
from PIL import Image

from embedder.transforms import Preprocessing, build_transform


@pytest.mark.parametrize("resize", ["squash", "pad", "center-crop"])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
def test_any_mode_and_shape_becomes_normalised_square(resize, mode):
    transform = build_transform(Preprocessing(image_size=40, resize=resize))
    out = transform(Image.new(mode, (90, 50)))
    assert out.shape == (3, 40, 40) and out.dtype == torch.float32


def test_grayscale_preprocessing_makes_equal_channels():
    transform = build_transform(Preprocessing(image_size=32, resize="squash", grayscale=True))
    out = transform(Image.new("RGB", (28, 28), (200, 10, 10)))
    # Same gray value in all channels before normalisation; undo it to compare.
    mean, std = torch.tensor(Preprocessing(32).mean), torch.tensor(Preprocessing(32).std)
    raw = out * std[:, None, None] + mean[:, None, None]
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[1], raw[2], atol=1e-5)


def test_padding_is_zero_after_normalisation():
    transform = build_transform(Preprocessing(image_size=32, resize="pad"))
    out = transform(Image.new("RGB", (64, 16), (255, 255, 255)))
    assert out[:, 0, :].abs().max() < 0.03  # the letterbox band is the mean colour
    assert out[:, 16, :].min() > 1.0  # the white image itself


def test_preprocessing_round_trip_and_unknown_mode():
    p = Preprocessing(image_size=64, resize="squash", grayscale=True)
    assert Preprocessing.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="resize"):
        Preprocessing(image_size=64, resize="stretch")
