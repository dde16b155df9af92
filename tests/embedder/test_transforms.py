import numpy as np
import pytest
import torch
from PIL import Image

from embedder.transforms import Preprocessing, build_pixel_transform, build_transform, normalize_batch


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


@pytest.mark.parametrize("grayscale", [False, True])
@pytest.mark.parametrize("resize", ["pad", "squash", "center-crop"])
def test_pixel_transform_then_batch_normalisation_is_bit_for_bit_build_transform(resize, grayscale):
    """build-index converts and normalises a whole batch at once; queries go through build_transform one by one."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((40, 30), (32, 32), (17, 50))]
    preprocessing = Preprocessing(image_size=24, resize=resize, grayscale=grayscale)
    pixels = torch.stack([build_pixel_transform(preprocessing)(image) for image in images])
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 3, 24, 24)
    expected = torch.stack([build_transform(preprocessing)(image) for image in images])
    assert torch.equal(normalize_batch(pixels, preprocessing), expected)


def test_gray_catalogs_resize_one_channel_with_the_same_result_as_three():
    from torchvision import transforms as T

    from embedder.transforms import to_gray3

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8))
    preprocessing = Preprocessing(image_size=32, resize="squash", grayscale=True)
    three_channels = T.Compose([to_gray3, T.Resize((32, 32), antialias=True), T.ToTensor(),
                                T.Normalize(preprocessing.mean, preprocessing.std)])
    assert torch.equal(build_transform(preprocessing)(image), three_channels(image))


def test_an_absurdly_long_image_is_letterboxed_within_bounded_memory(tmp_path):
    """A 100 × 390,000 PNG is under the upload's pixel limit, but padded to a square of its long side it
    would need 456 GB: the transform must shrink it first. Run where the address space allows ~1.5 GB more."""
    import subprocess
    import sys

    script = """
import resource, re
from PIL import Image
from embedder.transforms import Preprocessing, build_pixel_transform
transform = build_pixel_transform(Preprocessing(224))
image = Image.new("L", (100, 390_000), 200).convert("RGB")
size = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 1536 * 2**20, resource.RLIM_INFINITY))
pixels = transform(image)
print(tuple(pixels.shape), int(pixels[:, :, 112].float().mean()), int(pixels[:, 112, :3].float().mean()))
"""
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    shape, garment, border = child.stdout.split(") ")[0] + ")", *child.stdout.split(") ")[1].split()
    assert shape == "(3, 224, 224)"
    # The strip (far thinner than a pixel now) still lightens the middle column over the mean-colour border.
    assert int(garment) > int(border)
