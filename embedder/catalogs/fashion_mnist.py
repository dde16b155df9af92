"""Fashion-MNIST from its four idx files (gzipped or not), and where to find them."""
from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from embedder.catalogs.base import Catalog, CatalogError, CatalogItem

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# (split, images file, labels file), train first.
FILES = (
    ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)
DEBIAN_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
# Where torchvision.datasets.FashionMNIST(download_dir, download=True) leaves the files.
TORCHVISION_SUBDIR = Path("FashionMNIST") / "raw"
IDX_UBYTE = 0x08


class FashionMnistCatalog(Catalog):
    """The 60,000 training then 10,000 test images, 28x28 gray, as one uint8 array."""

    kind = "fashion-mnist"
    default_image_size = 32
    has_titles = False

    def __init__(self, root: Path) -> None:
        root = Path(root)
        pixels, labels, items = [], [], []
        for split, images_name, labels_name in FILES:
            images = read_idx(find_idx_file(root, images_name), dimensions=3)
            split_labels = read_idx(find_idx_file(root, labels_name), dimensions=1)
            if len(images) != len(split_labels):
                raise CatalogError(
                    f"{root}: {images_name} holds {len(images)} images but {labels_name} {len(split_labels)} labels"
                )
            if len(split_labels) and split_labels.max() >= len(CLASS_NAMES):
                raise CatalogError(f"{find_idx_file(root, labels_name)}: label {split_labels.max()} is not 0..9")
            pixels.append(images)
            labels.append(split_labels)
            items += [
                CatalogItem(f"{split}-{row:05d}", f"{split}#{row}", int(label), split, "")
                for row, label in enumerate(split_labels.tolist())
            ]
        self.pixels = np.concatenate(pixels)
        self.labels = np.concatenate(labels).astype(np.int64)
        super().__init__(root, items, CLASS_NAMES)
        log.info("Fashion-MNIST at %s: %d images", root, len(items))

    def open_image(self, index: int) -> Image.Image:
        """The item's 28x28 image as RGB (the gray value in all three channels)."""
        return Image.fromarray(self.pixels[index]).convert("RGB")

    def fingerprints(self) -> list[str]:
        """A hash of each image's pixels: its images share one file, so the file's time says nothing."""
        return [hashlib.blake2b(row.tobytes(), digest_size=12).hexdigest() for row in self.pixels]


def find_idx_file(directory: Path, name: str) -> Path:
    """``name`` or ``name.gz`` in the directory (the uncompressed one first); CatalogError naming it if neither."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise CatalogError(f"{directory / name}(.gz) is missing: a Fashion-MNIST directory holds {', '.join(idx_names())}")


def idx_names() -> list[str]:
    """The four idx file names, without .gz."""
    return [name for _, images, labels in FILES for name in (images, labels)]


def read_idx(path: Path, dimensions: int) -> np.ndarray:
    """An idx file of unsigned bytes with the given number of dimensions; CatalogError naming the file if bad."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise CatalogError(f"{path}: the file is missing") from None
    except (OSError, EOFError, zlib.error) as error:  # zlib.error: a damaged deflate stream is no OSError
        raise CatalogError(f"{path}: cannot be read ({error}); download it again") from None
    header = 4 + 4 * dimensions
    magic = bytes([0, 0, IDX_UBYTE, dimensions])
    if len(data) < header or data[:4] != magic:
        raise CatalogError(
            f"{path}: not an idx file of {dimensions}-dimensional unsigned bytes "
            f"(magic number should be 0x{magic.hex()}, found 0x{data[:4].hex()})"
        )
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=dimensions, offset=4))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise CatalogError(
            f"{path}: the header promises {'x'.join(map(str, shape))} = {expected} bytes of data, "
            f"found {len(data) - header}; the file is truncated or damaged"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def has_fashion_mnist(directory: Path) -> bool:
    """Whether the directory holds all four idx files (gzipped or not)."""
    return all((directory / name).is_file() or (directory / f"{name}.gz").is_file() for name in idx_names())


def locate_fashion_mnist(
    root: Path | None,
    download_dir: Path,
    candidates: Sequence[Path] = DEBIAN_DIRS,
    download: Callable[[Path], None] | None = None,
) -> Path:
    """The directory of the four idx files: the configured root, the Debian package's, or a torchvision download."""
    if root is not None:
        root = Path(root)
        if not root.is_dir():
            raise CatalogError(f"catalog.root {root} is not a directory; point it at the four Fashion-MNIST idx files")
        for name in idx_names():
            find_idx_file(root, name)
        return root
    for candidate in candidates:
        if has_fashion_mnist(Path(candidate)):
            log.info("Fashion-MNIST found in %s", candidate)
            return Path(candidate)
    downloaded = Path(download_dir) / TORCHVISION_SUBDIR
    if has_fashion_mnist(downloaded):
        return downloaded
    reason = "torchvision did not leave the files there"
    try:
        (download or download_with_torchvision)(Path(download_dir))
    # Whatever stops the download (no torchvision, no network, a bad mirror) means: try the next way.
    except Exception as error:  # noqa: BLE001
        reason = f"{type(error).__name__}: {error}"
        log.warning("Fashion-MNIST download failed: %s", reason)
    if has_fashion_mnist(downloaded):
        return downloaded
    places = ", ".join(str(candidate) for candidate in candidates) or "no directory"
    raise CatalogError(
        "Fashion-MNIST not found: none of the four idx files in "
        f"{places}, and the download into {downloaded} failed ({reason}). Any one of these works:\n"
        "  1. install the Debian package: apt-get install dataset-fashion-mnist\n"
        "  2. set catalog.root (LOOKBOOK_CATALOG_ROOT, or --root) to a directory with "
        f"{', '.join(idx_names())} (or their .gz)\n"
        "  3. go online once, so that torchvision can download it into the artifacts directory"
    )


def download_with_torchvision(download_dir: Path) -> None:
    """Download the four files with torchvision into download_dir/FashionMNIST/raw."""
    from torchvision.datasets import FashionMNIST  # heavy, and only needed on this path

    download_dir.mkdir(parents=True, exist_ok=True)
    log.info("Downloading Fashion-MNIST with torchvision into %s", download_dir)
    FashionMNIST(str(download_dir), train=True, download=True)
