"""Image data: locating data sets, decoding images, training patches, downloads.

Layout of a data root (``$NIC_DATA``, default ``./data``; see ``resolve_data_root``)::

    kodak/kodim01.png ... kodim24.png      test set (24 images)
    div2k_valid/HR/*.png                   DIV2K validation HR (optional)
    div2k_valid/LR_x4/*.png                DIV2K validation LR x4 (stand-in when HR is absent)
    train/*.jpg|*.png                      flat training folder

When a folder is missing, ``find_test_set`` / ``find_train_set`` fall back to a few
photographs shipped inside scikit-image, and say so loudly (description + warning), so a
notebook still runs end to end but never reports them as Kodak.

Command line::

    python -m nic_core.data download kodak --to DATA_ROOT [--base-url URL]
    python -m nic_core.data download div2k-valid --to DATA_ROOT
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import struct
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

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
    "load_images",
    "ImageFolderDataset",
    "KODAK_SHA256",
    "Remote",
    "REMOTES",
    "download",
    "main",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
TEST_SET_NAMES = ("kodak", "div2k-valid", "samples")
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


def _has_images(folder: Path) -> bool:
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
            has images, else ``<root>/div2k_valid/LR_x4``) or "samples" (scikit-image
            test photos). "_" is accepted for "-" and case is ignored.
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
    root = existing_data_root(data_root)
    if key == "kodak":
        folder = root / "kodak"
        if not _has_images(folder):
            return _fallback("kodak", f"{folder} {_folder_state(folder)}", "test")
        paths = list_images(folder)
        count = (f"{len(paths)} images" if len(paths) == KODAK_COUNT
                 else f"{len(paths)} of {KODAK_COUNT} images")
        return paths, f"Kodak ({count}, {folder})"
    hr, lr = root / "div2k_valid" / "HR", root / "div2k_valid" / "LR_x4"
    for folder, label in ((hr, "HR"), (lr, "LR x4")):
        if _has_images(folder):
            paths = list_images(folder)
            return paths, (f"DIV2K valid {label} ({len(paths)} of {DIV2K_VALID_COUNT} "
                           f"images, {folder})")
    return _fallback("div2k-valid", f"{hr} and {lr} {_folder_state(lr)}", "test")


def find_train_set(data_root: str | os.PathLike | None = None) -> tuple[list[Path], str]:
    """Locate the training images: ``<root>/train``, else the scikit-image train photos.

    Returns:
        (paths, description); the fallback description starts with "FALLBACK:" and a
        ``UserWarning`` is issued.
    """
    folder = existing_data_root(data_root) / "train"
    if not _has_images(folder):
        return _fallback("the train folder", f"{folder} {_folder_state(folder)}", "train")
    paths = list_images(folder)
    return paths, f"train folder {folder} ({len(paths)} images)"


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


# --------------------------------------------------------------------------- downloads

# sha256 of the 24 original Kodak PNGs (768x512 / 512x768), as in shared/data/SHA256SUMS.
KODAK_SHA256 = {
    "kodim01.png": "6b4fbe6f3e8e0e20150d5b0c32248bf072e22b5989d415f96f796c5b7004a70f",
    "kodim02.png": "1788370471429d992750a09caf6702ac74e56962447de02520d4b161738c0369",
    "kodim03.png": "b9c800ee568f0b18c983817df08d9f7f24a7ddb3abfdc31bde9234c4fde83137",
    "kodim04.png": "0c60c62599ad33fd78b29c36013fbe4120946f6c327c0ef0ec6983297fb48d23",
    "kodim05.png": "ccf694ceb6bbf431e0009ed0d5573a8ff0915095b69ddfb527b91d8325897f5e",
    "kodim06.png": "f4212cc927d1d579c712843cf8320c7eccb571e5ea80456022ffe99d67e9cd5d",
    "kodim07.png": "7cdd6d63ae0a245f6f9d983d740e11c6808c2efc24f8351aad9b5f676c27b55a",
    "kodim08.png": "5a6a089bdb47605287c00d89ebf2a5312981eb998c94b5853d917c93a9066cdb",
    "kodim09.png": "4d8d801592aeaf446978bbd1c83b76c498242d0f684769311a4e7248289500bf",
    "kodim10.png": "7aca487dc83db732a5690b7affe8558e9dadf5bb44a4589ba2b607480a07228b",
    "kodim11.png": "c7c02bd6e942d1181518e3ce2d97cf0451e4494a5e9d6ddee276940e4875d746",
    "kodim12.png": "df571f5e66d1aefd764ea77855e81e3be61528c34962a0fd1d50557502162c1e",
    "kodim13.png": "797949ce1152ef157ff0a1231c95cb8ed7641615e0b0f5f77f851a44aee19e8d",
    "kodim14.png": "08a1898d5702f32e7d9f94a94651d74a62cb9325475775a558b388c8d98f1846",
    "kodim15.png": "416c475f39b0eb9203ce7f77d2af8824f5bffc1a86a4605865017f04c41639b9",
    "kodim16.png": "5d03303693decdf7a1e1e930b5ca6684283aa80a9e7d8d6a842a74fa5f790640",
    "kodim17.png": "19d90e98e5835efae20a6e17e22e5ac6814ee2c8efb32d188ea4359abaf9f5bd",
    "kodim18.png": "83df267dfec61e9b9d3756c422502160b2fab595650c73a8b12940540ad09ec5",
    "kodim19.png": "86560efe85a13413b228ef7e42dde0d439b25a94fb8e2d6fb1dc1631cf48853b",
    "kodim20.png": "1ae187d92b3a4483b6717f7fd08592846ffdfc340c6424f6756627a27f3d8ea7",
    "kodim21.png": "26e193795108c4b5ec47206ae4ff07a353d2492947f7a7ae8d380e042b74027b",
    "kodim22.png": "627b76fccf714b4ddffb739b2eb63ba2817cf5b5a8e222079542dcf2cfdda939",
    "kodim23.png": "85c67d7ea758cb0604fb6980ab0c65091a2eefa7b3b50cbb1bc702a60206dfe5",
    "kodim24.png": "9f1c26df52217bd49f998a720a2ffeba41a535cf826f4ae32e355fb2b0bbc0fe",
}


@dataclass(frozen=True)
class Remote:
    """Where a data set is downloaded from and where it goes.

    Attributes:
        base_url: directory URL; each file is fetched from ``base_url + file name``.
        files: file name -> expected sha256, or None when unknown (the download is then
            kept but reported as UNVERIFIED together with the computed hash).
        dest: folder under the data root that receives the images.
        unzip: the files are zip archives, extracted atomically into ``dest``.
    """

    base_url: str
    files: Mapping[str, str | None]
    dest: str
    unzip: bool = False


REMOTES = {
    "kodak": Remote("http://r0k.us/graphics/kodak/kodak/", KODAK_SHA256, "kodak"),
    "div2k-valid": Remote("http://data.vision.ee.ethz.ch/cvl/DIV2K/",
                          {"DIV2K_valid_HR.zip": None}, "div2k_valid/HR", unzip=True),
}
_USER_AGENT = "nic_core-data/0.1 (python urllib)"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stream(url: str, out, timeout: float, label: str) -> str:
    """Copy ``url`` into the open file ``out``; return the sha256 of the bytes."""
    h = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:  # the server answered: not an offline problem
        raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError,
            http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not reach {url}: are you offline? ({reason}). Fetch the "
                        f"file on a machine with internet access and copy it into the "
                        f"data folder, or pass --base-url to use a mirror.") from e
    return h.hexdigest()


def _fetch(url: str, target: Path, sha256: str | None, timeout: float) -> None:
    """Download ``url`` to ``target`` atomically: temp file in the same folder, check
    sha256, then ``os.replace``. Nothing is left behind on any error."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _stream(url, out, timeout, target.name)
        if sha256 is None:
            print(f"UNVERIFIED: {target.name} has no expected sha256 in the manifest; "
                  f"computed sha256 = {actual}. Check the file, then add the hash.")
        elif actual != sha256.lower():
            raise DataError(f"sha256 mismatch for {target.name} (from {url}): expected "
                            f"{sha256}, got {actual}; the download was discarded")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _extract_zip(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` atomically (temp folder, then rename).

    A single top-level folder in the archive (e.g. ``DIV2K_valid_HR/``) is flattened.
    """
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)  # zipfile strips absolute paths and ".." components
        entries = list(tmp.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        if dest.is_dir():
            dest.rmdir()  # only an image-less, empty folder can get here
        os.replace(root, dest)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"cannot extract {archive} into {dest}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(name: str, to: str | os.PathLike, base_url: str | None = None,
             manifest: Mapping[str, str | None] | None = None, timeout: float = 30) -> Path:
    """Download a data set into the data root ``to`` (urllib only) and verify it.

    Files already present with the expected sha256 are skipped (files without a known
    hash, and an already extracted archive folder holding images, are kept as they are).
    Every file is written to a temporary file next to its target and renamed into place
    only after its sha256 checks out, so no partial file is ever left behind.

    Args:
        name: a key of ``REMOTES``: "kodak" or "div2k-valid".
        to: data root; the files go to ``to/<REMOTES[name].dest>``.
        base_url: replaces the directory part of every URL (mirror or local test server).
        manifest: file name -> sha256 (or None); replaces ``REMOTES[name].files``.
        timeout: socket timeout in seconds.

    Returns:
        The folder holding the images.

    Raises:
        ValueError: unknown ``name``.
        DataError: unreachable server ("are you offline?"), HTTP error, sha256 mismatch
            (names the file, expected and actual hash), or a bad archive.
    """
    if name not in REMOTES:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(REMOTES)}")
    remote = REMOTES[name]
    files = dict(remote.files if manifest is None else manifest)
    base = (base_url or remote.base_url).rstrip("/") + "/"
    dest = Path(to).expanduser() / remote.dest
    if remote.unzip and _has_images(dest):
        print(f"{dest} already holds images; not downloading {name} again "
              f"(delete the folder to force it)")
        return dest
    workdir = dest.parent if remote.unzip else dest
    workdir.mkdir(parents=True, exist_ok=True)
    for fname, sha in tqdm(files.items(), desc=f"download {name}", unit="file",
                           disable=len(files) < 2):
        target = workdir / fname
        present = target.is_file() and (sha is None or _sha256_file(target) == sha.lower())
        if not present:  # else: already there (and verified when a hash is known)
            _fetch(base + urllib.parse.quote(fname), target, sha, timeout)
        if remote.unzip:
            try:
                _extract_zip(target, dest)
            finally:
                if not present:  # keep an archive the user put there; drop our own
                    target.unlink()
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m nic_core.data",
                                     description="Data set utilities for nic_core.")
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download and verify a data set")
    dl.add_argument("name", choices=list(REMOTES))
    dl.add_argument("--to", default=None,
                    help="data root (default: $NIC_DATA, else ./data)")
    dl.add_argument("--base-url", default=None,
                    help="replace the directory URL the files are fetched from")
    dl.add_argument("--timeout", type=float, default=30, help="socket timeout, seconds")
    args = parser.parse_args(argv)
    try:
        folder = download(args.name, resolve_data_root(args.to), base_url=args.base_url,
                          timeout=args.timeout)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; no partial files were kept", file=sys.stderr)
        return 130
    print(f"{args.name}: {len(list_images(folder))} images in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
