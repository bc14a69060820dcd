"""Image data: locating data sets, decoding images, training patches (downloads: ``nic_core.download``).

Layout of a data root (``$NIC_DATA``, default ``./data``; see ``resolve_data_root``)::

    kodak/kodim01.png ... kodim24.png      test set (24 images)
    div2k_valid/HR/*.png                   DIV2K validation HR (optional)
    div2k_valid/LR_x4/*.png                DIV2K validation LR x4 (stand-in when HR is absent)
    train/*.jpg|*.png                      flat training folder

When a folder is missing, ``find_test_set`` / ``find_train_set`` fall back to a few
photographs shipped inside scikit-image, and say so loudly (description + warning), so a
notebook still runs end to end but never reports them as Kodak.

Downloads (``nic_core.download``)::

    python -m nic_core.data download kodak --to DATA_ROOT [--base-url URL]
    python -m nic_core.data download div2k-valid --to DATA_ROOT
"""

from __future__ import annotations

import os
import struct
import sys
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile
from tqdm.auto import tqdm

__all__ = [
    "IMAGE_EXTS",
    "DataError",
    "resolve_data_root",
    "load_image",
    "list_images",
    "sample_images",
    "find_test_set",
    "find_train_set",
    "split_train",
    "load_images",
    "ImageFolderDataset",
    "centre_crop",
    "check_images",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
TEST_SET_NAMES = ("kodak", "div2k-valid", "val", "samples")
VAL_EVERY = 25  # the validation split: every 25th training image by sorted name (24 of 600)
KODAK_COUNT = 24
DIV2K_VALID_COUNT = 100


class DataError(ValueError):
    """Bad input data: a missing/empty folder, an undecodable file, a failed download.

    The message always names the offending file, folder or URL.
    """


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """Return the data root folder (it need not exist).

    Precedence: the explicit ``data_root`` argument (unless None or ""), then the
    ``NIC_DATA`` environment variable (unless empty), then ``Path("data")``.
    A leading ``~`` is expanded.
    """
    if data_root is not None and str(data_root) != "":
        return Path(data_root).expanduser()
    env = os.environ.get("NIC_DATA", "")
    if env:
        return Path(env).expanduser()
    return Path("data")


def existing_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """:func:`resolve_data_root`, but a folder that was *given* (the argument or ``NIC_DATA``)
    and does not exist is an error: a typo must not silently train on the fallback photos.
    Only when nothing was given may ``data/`` be missing (then the fallbacks apply)."""
    root = resolve_data_root(data_root)
    given = data_root if data_root not in (None, "") else os.environ.get("NIC_DATA", "")
    if given and not root.is_dir():
        source = "data_root" if data_root not in (None, "") else "$NIC_DATA"
        raise FileNotFoundError(
            f"data folder {root} (from {source}) does not exist: fix the path, run "
            f"`python -m nic_core.data download kodak --to {root}` to fetch a data set, or leave "
            "data_root unset for the bundled scikit-image sample photos")
    return root


# --------------------------------------------------------------------------- decoding

# Errors PIL and its plugins raise for corrupt, truncated or non-image files.
# (UnidentifiedImageError, FileNotFoundError, PermissionError are OSErrors.)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_rgb_array(im: Image.Image, path: Path) -> np.ndarray:
    """Convert a decoded PIL image of any supported mode to an HxWx3 uint8 array."""
    if im.mode in _SIXTEEN_BIT_MODES:
        # 16-bit grayscale: rescale 0..65535 -> 0..255 (plain convert("L") would clip).
        # Mode "I" (32-bit int) is treated as 16-bit data, which is what it holds for PNG/TIFF.
        a = np.asarray(im).astype(np.float64)
        a = np.clip(np.rint(a * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode == "F":
        raise DataError(f"{path}: 32-bit float images (PIL mode F) are not supported")
    # L, LA, 1, P, PA, RGB, RGBA, CMYK, YCbCr, ...: PIL's conversion; alpha is dropped.
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _load_uint8(path: str | os.PathLike) -> torch.Tensor:
    """Decode ``path`` fully into a uint8 tensor [3, H, W]; see ``load_image``."""
    path = Path(path)
    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files must fail, not load half grey
    try:
        with Image.open(path) as im:
            im.load()
            arr = _to_rgb_array(im, path)
    except DataError:
        raise
    except _DECODE_ERRORS as e:
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Load an image file as a float32 RGB tensor [3, H, W] with values in [0, 1].

    Every mode is converted to 8-bit RGB first: grayscale (L, 1) is replicated to three
    channels; palette (P) is expanded; CMYK uses PIL's conversion; an alpha channel
    (LA, PA, RGBA, P with transparency) is *dropped*, not composited. 16-bit grayscale
    (modes I;16, I;16B, I, ...) is rescaled with round(v * 255 / 65535), so 65535 -> 1.0.
    Multi-frame files give their first frame. EXIF orientation is not applied.
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is forced off during the call (and restored).

    Raises:
        DataError: the file is missing, unreadable, not an image, truncated or corrupt
            (truncated files never load partially). The message names the file.
    """
    return _load_uint8(path).float().div_(255.0)


# --------------------------------------------------------------------------- folders


def _is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Sorted image files directly inside ``folder`` (not recursive).

    A file counts as an image when its extension is in ``IMAGE_EXTS`` (any case). Hidden
    files (name starting with ".", e.g. macOS "._x.png" leftovers) are ignored.

    Raises:
        DataError: the folder is missing, is not a folder, or holds no image files.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    paths = sorted(p for p in folder.iterdir() if _is_image_file(p))
    if not paths:
        raise DataError(f"folder {folder} is empty of images "
                        f"(accepted extensions: {', '.join(IMAGE_EXTS)})")
    return paths


def has_images(folder: Path) -> bool:
    return folder.is_dir() and any(_is_image_file(p) for p in folder.iterdir())


# Natural colour photographs >= 256 px per side shipped with scikit-image. Left out on
# purpose: grayscale (camera, moon, ...), synthetic (color, logo, chessboard), microscopy
# or medical (ihc, cell, retina), astronomy (hubble_deep_field) and tiny files.
SAMPLE_TEST = ("astronaut.png", "chelsea.png", "coffee.png")
SAMPLE_TRAIN = ("motorcycle_left.png", "motorcycle_right.png", "rocket.jpg")


def sample_images(split: str = "all") -> list[Path]:
    """Real sample photographs shipped inside the scikit-image package.

    Args:
        split: "test" (astronaut, chelsea, coffee), "train" (motorcycle_left,
            motorcycle_right - a stereo pair of one scene - and rocket) or "all".
            The split is fixed, so it is deterministic.

    Returns:
        Paths of the files present in the installed scikit-image (missing ones skipped).

    Raises:
        ValueError: unknown ``split``.
        DataError: scikit-image is not installed or none of the files exist.
    """
    names = {"test": SAMPLE_TEST, "train": SAMPLE_TRAIN, "all": SAMPLE_TEST + SAMPLE_TRAIN}
    if split not in names:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(names)}")
    try:
        import skimage.data
    except ImportError as e:
        raise DataError("scikit-image is not installed, so no sample photos exist") from e
    folder = Path(skimage.data.__file__).parent
    paths = [folder / n for n in names[split] if (folder / n).is_file()]
    if not paths:
        raise DataError(f"no scikit-image sample photos ({split}) found in {folder}")
    return paths


# --------------------------------------------------------------------------- data sets


def _fallback(what: str, reason: str, split: str) -> tuple[list[Path], str]:
    """Sample photos plus a loud description and warning that they stand in for ``what``."""
    paths = sample_images(split)
    desc = (f"FALLBACK: scikit-image sample photos, not {what} "
            f"({len(paths)} images; {reason})")
    warnings.warn(desc + ". Run `python -m nic_core.data download ...` or set NIC_DATA.",
                  UserWarning, stacklevel=3)
    return paths, desc


def _folder_state(folder: Path) -> str:
    return "has no images" if folder.is_dir() else "missing"


def find_test_set(name: str = "kodak",
                  data_root: str | os.PathLike | None = None) -> tuple[list[Path], str]:
    """Locate an evaluation set and describe honestly what was found.

    Args:
        name: "kodak" (``<root>/kodak``), "div2k-valid" (``<root>/div2k_valid/HR`` if it
            has images, else ``<root>/div2k_valid/LR_x4``), "val" (the validation split of
            ``<root>/train``, :func:`split_train`: for tuning, never Kodak) or "samples"
            (scikit-image test photos). "_" is accepted for "-" and case is ignored.
        data_root: see ``resolve_data_root``.

    Returns:
        (paths, description). A partial set says "n of N images". When the folder is
        missing or has no images, the scikit-image test photos are returned instead, with
        a description starting "FALLBACK:" and a ``UserWarning``.

    Raises:
        ValueError: unknown ``name``.
    """
    key = name.strip().lower().replace("_", "-")
    if key not in TEST_SET_NAMES:
        raise ValueError(f"unknown test set {name!r}; valid: {', '.join(TEST_SET_NAMES)}")
    if key == "samples":
        paths = sample_images("test")
        return paths, (f"scikit-image sample photos ({len(paths)} images: "
                       f"{', '.join(p.stem for p in paths)})")
    if key == "val":
        return find_train_set(data_root, split="val")
    root = existing_data_root(data_root)
    if key == "kodak":
        folder = root / "kodak"
        if not has_images(folder):
            return _fallback("kodak", f"{folder} {_folder_state(folder)}", "test")
        paths = list_images(folder)
        count = (f"{len(paths)} images" if len(paths) == KODAK_COUNT
                 else f"{len(paths)} of {KODAK_COUNT} images")
        return paths, f"Kodak ({count}, {folder})"
    hr, lr = root / "div2k_valid" / "HR", root / "div2k_valid" / "LR_x4"
    for folder, label in ((hr, "HR"), (lr, "LR x4")):
        if has_images(folder):
            paths = list_images(folder)
            return paths, (f"DIV2K valid {label} ({len(paths)} of {DIV2K_VALID_COUNT} "
                           f"images, {folder})")
    return _fallback("div2k-valid", f"{hr} and {lr} {_folder_state(lr)}", "test")


def split_train(paths: Sequence[Path], split: str) -> list[Path]:
    """The fixed train / validation split of the training images: "val" is every
    :data:`VAL_EVERY`-th image by sorted name (BSDS500 and Urban100 alike), "train" the rest,
    "all" every image (what the committed models were trained on)."""
    if split not in ("all", "train", "val"):
        raise ValueError(f"split must be all, train or val, got {split!r}")
    if split == "all":
        return list(paths)
    paths = sorted(paths)
    keep = split == "val"
    return [p for i, p in enumerate(paths) if (i % VAL_EVERY == VAL_EVERY - 1) == keep]


def find_train_set(data_root: str | os.PathLike | None = None,
                   split: str = "all") -> tuple[list[Path], str]:
    """Locate the training images: ``<root>/train``, else the scikit-image train photos.

    Args:
        split: "all", "train" (without the validation images) or "val" (:func:`split_train`).

    Returns:
        (paths, description); the fallback description starts with "FALLBACK:" and a
        ``UserWarning`` is issued.
    """
    folder = existing_data_root(data_root) / "train"
    if not has_images(folder):
        paths, desc = _fallback("the train folder", f"{folder} {_folder_state(folder)}", "train")
    else:
        paths, desc = list_images(folder), f"train folder {folder}"
    picked = split_train(paths, split)
    if not picked:
        raise DataError(f"the {split} split of {desc} is empty ({len(paths)} images; "
                        f"the validation split takes every {VAL_EVERY}th)")
    if split == "all":
        return picked, f"{desc} ({len(picked)} images)"
    return picked, f"{desc} ({split} split: {len(picked)} of {len(paths)} images)"


def centre_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size`` x ``size`` crop of a [3,H,W] image (the whole image when size is 0)."""
    if not size:
        return t
    h, w = t.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return t[:, top:top + size, left:left + size].contiguous()


def load_images(paths: Iterable[str | os.PathLike],
                limit: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """Decode images into ``(file stem, float tensor [3, H, W])`` pairs.

    Args:
        paths: image files, kept in the given order.
        limit: keep only the first ``limit`` paths (None: all).

    A tqdm progress bar is shown when there are more than 8 images.
    """
    paths = [Path(p) for p in paths]
    if limit is not None:
        paths = paths[:limit]
    bar = tqdm(paths, desc="loading images", unit="img", disable=len(paths) <= 8)
    return [(p.stem, load_image(p)) for p in bar]


# --------------------------------------------------------------------------- patches


def _pad_reflect(img: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect-pad a [3, H, W] tensor (evenly on both sides) to at least size x size."""
    _, h, w = img.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return img
    pad = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    # numpy reflects repeatedly, so even images smaller than half the patch work.
    return torch.from_numpy(np.pad(img.numpy(), pad, mode="reflect"))


class ImageFolderDataset(torch.utils.data.Dataset):
    """Fixed-size RGB patches from a list of image files.

    Every item is a float32 tensor [3, patch_size, patch_size] in [0, 1]. Images smaller
    than the patch along a side are first reflect-padded (never upscaled) to the patch
    size. ``train=True``: uniform random crop, then horizontal and vertical flips with
    probability 1/2 each; ``train=False``: centre crop, no flips. Randomness comes from
    torch's global RNG, so ``torch.manual_seed`` (main process) or a DataLoader
    ``generator`` (workers) makes it reproducible.

    With ``cache=True`` decoded images are kept as uint8 tensors (about 0.5 GB for the
    600-image train folder). Each DataLoader worker process fills its own cache.
    Measured on one CPU thread: decoding takes ~5 ms for a BSDS JPEG and ~65 ms for an
    Urban100 PNG, while a patch from the cache takes ~0.4 ms, so after the first epoch
    decoding is not the bottleneck; without the cache use several workers.

    Args:
        paths: image files, or a folder (then ``list_images(folder)`` is used).
        patch_size: side of the square patch, an int >= 64.
        train: random crop + flips (True) or centre crop (False).
        cache: keep decoded images in memory.

    Raises:
        ValueError: bad ``patch_size``.
        DataError: no paths; undecodable files raise DataError when first accessed.
    """

    def __init__(self, paths: Sequence[str | os.PathLike] | str | os.PathLike,
                 patch_size: int = 256, train: bool = True, cache: bool = True):
        if isinstance(paths, (str, os.PathLike)):
            paths = list_images(paths)
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 64:
            raise ValueError(f"patch_size must be an int >= 64, got {patch_size!r}")
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise DataError("ImageFolderDataset got an empty list of image paths")
        self.patch_size = patch_size
        self.train = train
        self.cache = cache
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, index: int) -> torch.Tensor:
        img = self._cache.get(index)
        if img is None:
            img = _load_uint8(self.paths[index])
            if self.cache:
                self._cache[index] = img
        return img

    def __getitem__(self, index: int) -> torch.Tensor:
        p = self.patch_size
        img = _pad_reflect(self._image(index), p)
        _, h, w = img.shape
        if self.train:
            top = int(torch.randint(0, h - p + 1, ()).item())
            left = int(torch.randint(0, w - p + 1, ()).item())
        else:
            top, left = (h - p) // 2, (w - p) // 2
        patch = img[:, top:top + p, left:left + p]
        if self.train:
            if torch.rand(()) < 0.5:
                patch = patch.flip(2)
            if torch.rand(()) < 0.5:
                patch = patch.flip(1)
        return patch.float().div_(255.0)


def check_images(paths: Iterable[str | os.PathLike], progress: bool = False) -> list[str]:
    """Decode every image of ``paths`` fully; return one message per file that fails (empty
    when all decode). For a folder just filled by a download or copied by hand."""
    bad = []
    for p in tqdm(list(paths), desc="check images", unit="img", disable=not progress):
        try:
            _load_uint8(p)
        except DataError as e:
            bad.append(str(e))
    return bad


if __name__ == "__main__":  # `python -m nic_core.data download ...`: nic_core.download's CLI
    from . import cli
    from .download import main  # not at the top: nic_core.download imports this module
    sys.exit(cli.run(main))
