"""Tests for nic_core.data: decoding, folders, data-set discovery, patches, downloads.

Most tests use small images generated under tmp_path. The real Kodak tests read
$NIC_DATA or the shared data folder and are skipped when neither has it. Downloads only
ever talk to a local http.server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
import warnings
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from nic_core import data as D
from nic_core import download as DL
from nic_core.download import download
from nic_core.data import (
    IMAGE_EXTS,
    DataError,
    ImageFolderDataset,
    check_images,
    find_test_set,
    find_train_set,
    list_images,
    load_image,
    load_images,
    resolve_data_root,
    sample_images,
    split_train,
)

REPO = Path(__file__).resolve().parents[1]


def _real_root() -> Path:
    """A data root holding the real Kodak images, or skip."""
    candidates = [os.environ.get("NIC_DATA"), REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "kodak" / "kodim01.png").is_file():
            return Path(c)
    pytest.skip("real Kodak images not found (set NIC_DATA to a data root with kodak/)")


def _rng_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_float_rgb(t: torch.Tensor, h: int, w: int) -> None:
    assert t.dtype == torch.float32
    assert tuple(t.shape) == (3, h, w)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


# ----------------------------------------------------------------------------- real data


def test_real_kodak_images_load():
    root = _real_root()
    paths = list_images(root / "kodak")
    assert [p.name for p in paths] == [f"kodim{i:02d}.png" for i in range(1, 25)]
    portrait = {"kodim04", "kodim09", "kodim10", "kodim17", "kodim18", "kodim19"}
    for p in paths:
        t = load_image(p)
        h, w = (768, 512) if p.stem in portrait else (512, 768)
        _check_float_rgb(t, h, w)
        assert float(t.std()) > 0.05, f"{p.name} decoded to a flat image"


def test_embedded_kodak_hashes_match_shared_sha256sums():
    sums = _real_root() / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip(f"{sums} not found")
    table = {}
    for line in sums.read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        if rel.startswith("kodak/"):
            table[rel.split("/", 1)[1]] = digest
    assert DL.KODAK_SHA256 == table
    assert len(table) == 24


def test_find_test_set_on_real_root():
    root = _real_root()
    paths, desc = find_test_set("kodak", root)
    assert len(paths) == 24 and desc.startswith("Kodak (24 images")
    if (root / "div2k_valid" / "LR_x4").is_dir() and not (root / "div2k_valid" / "HR").is_dir():
        _, desc = find_test_set("div2k-valid", root)
        assert desc.startswith("DIV2K valid LR x4 (") and "of 100 images" in desc


# ----------------------------------------------------------------------------- decoding


def test_rgb_png_roundtrip_is_exact(tmp_path):
    arr = _rng_image(17, 23)
    t = load_image(_save(tmp_path / "a.png", arr))
    _check_float_rgb(t, 17, 23)
    assert torch.equal(t, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_grayscale_is_replicated(tmp_path):
    arr = np.array([[0, 128, 255]], dtype=np.uint8)
    t = load_image(_save(tmp_path / "g.png", arr))
    _check_float_rgb(t, 1, 3)
    expected = torch.tensor([0, 128, 255]) / 255
    for c in range(3):
        assert torch.allclose(t[c, 0], expected)


def test_rgba_and_la_drop_alpha(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[..., 3] = [[0, 255], [128, 7]]  # alpha must not change the colour
    t = load_image(_save(tmp_path / "rgba.png", rgba))
    _check_float_rgb(t, 2, 2)
    assert torch.allclose(t[:, 0, 0], torch.tensor([200, 100, 50]) / 255)
    assert torch.allclose(t[:, 1, 0], t[:, 0, 1])

    la = Image.fromarray(np.array([[[90, 0], [90, 255]]], dtype=np.uint8), mode="LA")
    la.save(tmp_path / "la.png")
    t = load_image(tmp_path / "la.png")
    _check_float_rgb(t, 1, 2)
    assert torch.allclose(t, torch.full((3, 1, 2), 90 / 255))


def test_palette_is_expanded(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    t = load_image(tmp_path / "p.png")
    _check_float_rgb(t, 1, 2)
    assert t[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert t[:, 0, 1].tolist() == [0.0, 0.0, 1.0]


def test_cmyk_is_converted(tmp_path):
    Image.new("CMYK", (3, 2), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    t = load_image(tmp_path / "c.tif")
    _check_float_rgb(t, 2, 3)
    assert t[:, 0, 0].tolist() == [1.0, 0.0, 0.0]  # no cyan, full magenta+yellow = red


SIXTEEN = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
SIXTEEN_EXPECTED = torch.tensor([0, 128, 255, 1]) / 255


def _write_16bit(path: Path, mode: str) -> Path:
    if mode == "I;16":
        im = Image.fromarray(SIXTEEN)
    elif mode == "I;16B":
        im = Image.frombytes("I;16B", (4, 1), SIXTEEN.astype(">u2").tobytes())
    else:
        im = Image.fromarray(SIXTEEN.astype(np.int32))
    im.save(path)
    return path


@pytest.mark.parametrize("mode,suffix", [("I;16", ".png"), ("I;16B", ".tif"), ("I", ".tif")])
def test_16bit_is_rescaled_not_clipped(tmp_path, mode, suffix):
    path = _write_16bit(tmp_path / f"x{suffix}", mode)
    assert Image.open(path).mode == mode
    t = load_image(path)
    _check_float_rgb(t, 1, 4)
    for c in range(3):
        assert torch.allclose(t[c, 0], SIXTEEN_EXPECTED), t[c, 0]


def test_float_mode_is_rejected(tmp_path):
    Image.fromarray(np.zeros((2, 2), dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match="f.tif"):
        load_image(tmp_path / "f.tif")


# ----------------------------------------------------------------------------- bad inputs


def _truncated(tmp_path: Path, name: str, **kw) -> Path:
    full = _save(tmp_path / ("full_" + name), _rng_image(64, 64), **kw)
    raw = full.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(raw[: len(raw) // 2])
    return cut


@pytest.mark.parametrize("name", ["cut.png", "cut.jpg"])
def test_truncated_files_raise_naming_the_file(tmp_path, name):
    path = _truncated(tmp_path, name)
    with pytest.raises(DataError, match=name):
        load_image(path)


def test_truncated_raises_even_if_someone_enabled_truncated_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = _truncated(tmp_path, "cut.jpg", quality=90)
    with pytest.raises(DataError, match="cut.jpg"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the global setting is restored


def test_garbage_missing_and_non_image_files_raise(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    note = tmp_path / "notes.txt"
    note.write_text("not an image")
    for path in (junk, note, tmp_path / "missing.png", tmp_path):
        with pytest.raises(DataError) as info:
            load_image(path)
        assert str(path) in str(info.value)


def test_list_images_filters_sorts_and_is_not_recursive(tmp_path):
    arr = _rng_image(4, 4)
    _save(tmp_path / "b.PNG", arr, format="PNG")
    _save(tmp_path / "a.JpG", arr, format="JPEG")
    _save(tmp_path / "c.webp", arr)
    _save(tmp_path / "sub" / "d.png", arr)
    _save(tmp_path / "._hidden.png", arr, format="PNG")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JpG", "b.PNG", "c.webp"]
    assert all(isinstance(p, Path) for p in list_images(str(tmp_path)))


def test_list_images_empty_and_missing_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError) as info:
        list_images(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "empty of images" in msg
    assert all(ext in msg for ext in IMAGE_EXTS)
    with pytest.raises(DataError, match="not found.*nope"):
        list_images(tmp_path / "nope")
    with pytest.raises(DataError, match="notes.txt"):
        list_images(tmp_path / "notes.txt")


# ----------------------------------------------------------------------------- discovery


def test_resolve_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("NIC_DATA", raising=False)
    assert resolve_data_root() == Path("data")
    assert resolve_data_root("") == Path("data")
    monkeypatch.setenv("NIC_DATA", "")
    assert resolve_data_root() == Path("data")
    monkeypatch.setenv("NIC_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root("") == tmp_path / "env"
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert not (tmp_path / "arg").exists()


def test_sample_images_splits():
    test, train, everything = sample_images("test"), sample_images("train"), sample_images("all")
    assert test and train
    assert not set(test) & set(train)
    assert everything == test + train
    assert [p.stem for p in test] == ["astronaut", "chelsea", "coffee"]
    for p in everything:
        t = load_image(p)
        assert min(t.shape[1:]) >= 256, p
        assert not torch.equal(t[0], t[1]), f"{p.name} is not a colour image"
    with pytest.raises(ValueError, match="train"):
        sample_images("val")


def test_find_test_set_falls_back_when_the_set_is_missing(tmp_path):
    root = tmp_path / "data_without_kodak"
    root.mkdir()
    with pytest.warns(UserWarning, match="FALLBACK"):
        paths, desc = find_test_set("kodak", root)
    assert paths == sample_images("test")
    assert desc.startswith("FALLBACK: scikit-image sample photos, not kodak")
    assert not desc.startswith("Kodak")
    assert str(root / "kodak") in desc


def test_a_given_data_folder_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    """A typo in data_root (or $NIC_DATA) must not silently evaluate on the fallback photos."""
    typo = tmp_path / "shraed" / "data"
    for find in (lambda: find_test_set("kodak", typo), lambda: find_train_set(typo)):
        with pytest.raises(FileNotFoundError, match=r"data folder .*shraed.* \(from data_root\)"):
            find()
    monkeypatch.setenv("NIC_DATA", str(typo))
    with pytest.raises(FileNotFoundError, match=r"from \$NIC_DATA"):
        find_test_set("kodak")
    monkeypatch.delenv("NIC_DATA")
    monkeypatch.chdir(tmp_path)  # nothing given and no data/ here: the fallback, with a warning
    with pytest.warns(UserWarning, match="FALLBACK"):
        find_train_set(None)


def test_find_test_set_falls_back_on_empty_folder_and_for_div2k(tmp_path):
    (tmp_path / "kodak").mkdir()
    with pytest.warns(UserWarning, match="FALLBACK"):
        _, desc = find_test_set("kodak", tmp_path)
    assert "has no images" in desc
    with pytest.warns(UserWarning, match="FALLBACK"):
        paths, desc = find_test_set("div2k-valid", tmp_path)
    assert desc.startswith("FALLBACK: scikit-image sample photos, not div2k-valid")
    assert paths == sample_images("test")


def test_find_test_set_uses_env_and_counts_partial_kodak(tmp_path, monkeypatch):
    for i in (2, 1, 3):
        _save(tmp_path / "kodak" / f"kodim{i:02d}.png", _rng_image(8, 8, i))
    monkeypatch.setenv("NIC_DATA", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths, desc = find_test_set()
    assert [p.name for p in paths] == ["kodim01.png", "kodim02.png", "kodim03.png"]
    assert desc.startswith("Kodak (3 of 24 images")


def test_div2k_prefers_hr_and_labels_lr(tmp_path):
    lr = tmp_path / "div2k_valid" / "LR_x4"
    for i in (801, 802):
        _save(lr / f"{i:04d}x4.png", _rng_image(8, 8, i))
    (tmp_path / "div2k_valid" / "HR").mkdir()  # present but empty: not used
    paths, desc = find_test_set("div2k-valid", tmp_path)
    assert [p.parent for p in paths] == [lr, lr]
    assert desc.startswith("DIV2K valid LR x4 (2 of 100 images")
    _save(tmp_path / "div2k_valid" / "HR" / "0801.png", _rng_image(32, 32))
    paths, desc = find_test_set("DIV2K_valid", tmp_path)
    assert [p.name for p in paths] == ["0801.png"]
    assert desc.startswith("DIV2K valid HR (1 of 100 images")


def test_find_test_set_samples_and_unknown_name(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths, desc = find_test_set("samples", tmp_path)
    assert paths == sample_images("test") and "FALLBACK" not in desc
    with pytest.raises(ValueError) as info:
        find_test_set("clic", tmp_path)
    assert all(n in str(info.value) for n in ("kodak", "div2k-valid", "samples"))


def test_find_train_set(tmp_path):
    _save(tmp_path / "train" / "x.jpg", _rng_image(8, 8), quality=95)
    _save(tmp_path / "train" / "y.png", _rng_image(8, 8))
    paths, desc = find_train_set(tmp_path)
    assert [p.name for p in paths] == ["x.jpg", "y.png"] and "2 images" in desc
    (tmp_path / "elsewhere").mkdir()
    with pytest.warns(UserWarning, match="FALLBACK"):
        paths, desc = find_train_set(tmp_path / "elsewhere")
    assert paths == sample_images("train") and desc.startswith("FALLBACK")


def test_load_images_names_order_and_limit(tmp_path):
    paths = [_save(tmp_path / f"{n}.png", _rng_image(5, 6, i)) for i, n in enumerate("cab")]
    out = load_images(paths)
    assert [n for n, _ in out] == ["c", "a", "b"]
    assert all(tuple(t.shape) == (3, 5, 6) for _, t in out)
    assert torch.equal(out[1][1], load_image(paths[1]))
    assert [n for n, _ in load_images(paths, limit=2)] == ["c", "a"]


# ----------------------------------------------------------------------------- patches


@pytest.fixture
def patch_images(tmp_path):
    return [
        _save(tmp_path / "small.png", _rng_image(20, 50, 1)),   # smaller than the patch
        _save(tmp_path / "large.png", _rng_image(150, 200, 2)),  # larger than the patch
        _save(tmp_path / "tiny.png", _rng_image(1, 3, 3)),      # far smaller
    ]


@pytest.mark.parametrize("train", [True, False])
def test_patches_have_exact_shape(patch_images, train):
    ds = ImageFolderDataset(patch_images, patch_size=64, train=train)
    assert len(ds) == 3
    for i in range(len(ds)):
        x = ds[i]
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, 64, 64)
        assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_eval_patch_is_the_centre_crop(patch_images):
    x = ImageFolderDataset(patch_images, patch_size=64, train=False)[1]
    full = load_image(patch_images[1])
    assert torch.equal(x, full[:, 43:107, 68:132])


def test_small_images_are_reflect_padded(patch_images):
    x = ImageFolderDataset(patch_images, patch_size=64, train=False)[0]
    full = load_image(patch_images[0])  # 20 x 50: 22 rows above, 7 columns left
    assert torch.equal(x[:, 22:42, 7:57], full)
    assert torch.equal(x[:, 21, 7:57], full[:, 1])  # mirrored about the edge row
    assert torch.equal(x[:, 22:42, 6], full[:, :, 1])  # mirrored about the edge column


def test_patches_reproducible_under_manual_seed(patch_images):
    ds = ImageFolderDataset(patch_images, patch_size=64)

    def draw(seed):
        torch.manual_seed(seed)
        return torch.stack([ds[1] for _ in range(5)])

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_dataloader_with_generator_is_reproducible(patch_images):
    ds = ImageFolderDataset(patch_images[:2], patch_size=64)

    def batches(seed):
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=True, generator=g,
                                             num_workers=1)
        return torch.cat([b for _ in range(2) for b in loader])

    assert torch.equal(batches(3), batches(3))


def test_flips_and_crops_vary(tmp_path):
    arr = _rng_image(64, 64, 5)
    path = _save(tmp_path / "exact.png", arr)
    ds = ImageFolderDataset([path], patch_size=64)
    base = load_image(path)
    variants = {
        "none": base, "h": base.flip(2), "v": base.flip(1), "hv": base.flip(1).flip(2)}
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        x = ds[0]
        match = [k for k, v in variants.items() if torch.equal(x, v)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(variants)

    big = _save(tmp_path / "big.png", _rng_image(200, 200, 6))
    ds = ImageFolderDataset([big], patch_size=64)
    assert len({ds[0].sum().item() for _ in range(10)}) > 1  # crops move around


def test_cache_keeps_decoded_images(tmp_path):
    path = _save(tmp_path / "c.png", _rng_image(70, 70))
    cached = ImageFolderDataset([path], patch_size=64, train=False, cache=True)
    uncached = ImageFolderDataset([path], patch_size=64, train=False, cache=False)
    first = cached[0]
    assert torch.equal(first, uncached[0])
    path.unlink()
    assert torch.equal(cached[0], first)
    with pytest.raises(DataError, match="c.png"):
        uncached[0]


@pytest.mark.parametrize("bad", [0, 32, 63, -256, 64.0, "256", True, None])
def test_bad_patch_size(patch_images, bad):
    with pytest.raises(ValueError, match="patch_size"):
        ImageFolderDataset(patch_images, patch_size=bad)


def test_dataset_accepts_folder_and_rejects_empty_list(tmp_path):
    _save(tmp_path / "a.png", _rng_image(64, 64))
    assert len(ImageFolderDataset(tmp_path, patch_size=64)) == 1
    with pytest.raises(DataError):
        ImageFolderDataset([], patch_size=64)


# ----------------------------------------------------------------------------- downloads


class _Server:
    """A local ThreadingHTTPServer serving one folder and recording requested paths."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        log = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                log.append(self.path.lstrip("/"))
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def serve():
    servers = []

    def start(root: Path) -> _Server:
        servers.append(_Server(root))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def small_remote(tmp_path, serve):
    """Three generated PNGs served locally, plus their sha256 manifest."""
    srv_dir = tmp_path / "srv"
    names = ["a.png", "b.png", "c.png"]
    manifest = {n: _sha(_save(srv_dir / n, _rng_image(16, 16, i))) for i, n in enumerate(names)}
    return serve(srv_dir), manifest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_skips_present_files(tmp_path, small_remote):
    server, manifest = small_remote
    dest = download("kodak", tmp_path / "root", base_url=server.url, manifest=manifest)
    assert dest == tmp_path / "root" / "kodak"
    assert _all_entries(dest) == ["a.png", "b.png", "c.png"]  # no temp files
    for n in manifest:
        assert (dest / n).read_bytes() == (server.root / n).read_bytes()
    assert sorted(server.requests) == ["a.png", "b.png", "c.png"]

    server.requests.clear()
    download("kodak", tmp_path / "root", base_url=server.url, manifest=manifest)
    assert server.requests == []  # all three already verified

    (dest / "b.png").write_bytes(b"damaged")
    download("kodak", tmp_path / "root", base_url=server.url, manifest=manifest)
    assert server.requests == ["b.png"]
    assert _sha(dest / "b.png") == manifest["b.png"]


def test_download_rejects_corrupted_file_and_leaves_nothing(tmp_path, small_remote):
    server, manifest = small_remote
    good = manifest["b.png"]
    (server.root / "b.png").write_bytes(b"\x89PNG corrupted on the server")
    bad = _sha(server.root / "b.png")
    with pytest.raises(DataError) as info:
        download("kodak", tmp_path / "root", base_url=server.url, manifest=manifest)
    msg = str(info.value)
    assert "b.png" in msg and good in msg and bad in msg
    assert "b.png" not in _all_entries(tmp_path / "root" / "kodak")
    assert not [n for n in _all_entries(tmp_path / "root" / "kodak") if n.endswith(".part")]


def test_download_http_error_names_url(tmp_path, small_remote):
    server, manifest = small_remote
    with pytest.raises(DataError) as info:
        download("kodak", tmp_path, base_url=server.url, manifest={"missing.png": None})
    assert "HTTP 404" in str(info.value) and server.url + "missing.png" in str(info.value)
    assert _all_entries(tmp_path / "kodak") == []


def test_download_offline_is_a_clear_data_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/"
    with pytest.raises(DataError) as info:
        download("kodak", tmp_path, base_url=url, manifest={"a.png": "0" * 64}, timeout=5)
    assert "offline" in str(info.value) and url + "a.png" in str(info.value)
    assert _all_entries(tmp_path / "kodak") == []
    with pytest.raises(ValueError, match="kodak"):
        download("imagenet", tmp_path)


def test_download_zip_unverified_is_extracted_atomically(tmp_path, serve, capsys):
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    archive = srv_dir / "DIV2K_valid_HR.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in (801, 802):
            buf = io.BytesIO()
            Image.fromarray(_rng_image(8, 8, i)).save(buf, format="PNG")
            zf.writestr(f"DIV2K_valid_HR/{i:04d}.png", buf.getvalue())
    server = serve(srv_dir)
    root = tmp_path / "root"
    dest = download("div2k-valid", root, base_url=server.url,
                    manifest={"DIV2K_valid_HR.zip": None})
    out = capsys.readouterr().out
    assert "UNVERIFIED" in out and _sha(archive) in out
    assert dest == root / "div2k_valid" / "HR"
    assert _all_entries(dest) == ["0801.png", "0802.png"]
    assert _all_entries(root / "div2k_valid") == ["HR"]  # no zip, no temp folder
    _, desc = find_test_set("div2k-valid", root)
    assert desc.startswith("DIV2K valid HR (2 of 100 images")

    server.requests.clear()
    download("div2k-valid", root, base_url=server.url, manifest={"DIV2K_valid_HR.zip": None})
    assert server.requests == []


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "nic_core.data", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_offline_exits_1_without_traceback(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/"
    proc = _cli("download", "kodak", "--to", str(tmp_path), "--base-url", url)
    assert proc.returncode == 1
    assert "offline" in proc.stderr and url in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_downloads_real_kodak_with_embedded_hashes(tmp_path, serve):
    server = serve(_real_root() / "kodak")
    proc = _cli("download", "kodak", "--to", str(tmp_path), "--base-url", server.url)
    assert proc.returncode == 0, proc.stderr
    assert "24 images" in proc.stdout
    assert _all_entries(tmp_path / "kodak") == sorted(DL.KODAK_SHA256)
    assert sorted(server.requests) == sorted(DL.KODAK_SHA256)


def test_check_images_names_every_file_that_does_not_decode(tmp_path):
    good = _save(tmp_path / "a.png", _rng_image(16, 16))
    (tmp_path / "b.png").write_bytes(good.read_bytes()[:60])  # truncated
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg at all")
    bad = check_images(list_images(tmp_path))
    assert len(bad) == 2 and "b.png" in bad[0] and "c.jpg" in bad[1]
    assert check_images([good]) == []


def test_download_refuses_an_unverified_file_that_does_not_decode(tmp_path, serve):
    """A file without a known sha256 (DIV2K's case) is kept only if it decodes."""
    srv = tmp_path / "srv"
    good = _save(srv / "a.png", _rng_image(16, 16))
    (srv / "x.png").write_bytes(good.read_bytes()[:70])
    server = serve(srv)
    with pytest.raises(DataError, match="cannot be read") as info:
        download("kodak", tmp_path / "root", base_url=server.url,
                 manifest={"a.png": _sha(good), "x.png": None})
    assert "x.png" in str(info.value) and "a.png" not in str(info.value)


def test_cli_download_of_an_archive_with_a_broken_image_exits_1(tmp_path, serve):
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    buf = io.BytesIO()
    Image.fromarray(_rng_image(8, 8)).save(buf, format="PNG")
    with zipfile.ZipFile(srv_dir / "DIV2K_valid_HR.zip", "w") as zf:
        zf.writestr("DIV2K_valid_HR/0801.png", buf.getvalue())
        zf.writestr("DIV2K_valid_HR/0802.png", buf.getvalue()[:40])
    server = serve(srv_dir)
    proc = _cli("download", "div2k-valid", "--to", str(tmp_path / "root"),
                "--base-url", server.url)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "0802.png" in proc.stderr and "0801.png" not in proc.stderr


def test_the_validation_split_is_fixed_and_disjoint(tmp_path):
    """Every 25th training image by name is held out for tuning (eval_set 'val'); 'train' is
    the rest; an order of the folder listing does not change which."""
    train = tmp_path / "train"
    train.mkdir()
    for i in range(60):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(train / f"im{i:03d}.png")
    tr, desc = find_train_set(tmp_path, "train")
    val, _ = find_train_set(tmp_path, "val")
    every, _ = find_train_set(tmp_path)
    assert [p.name for p in val] == ["im024.png", "im049.png"]
    assert len(tr) == 58 and not set(tr) & set(val) and set(tr) | set(val) == set(every)
    assert "train split: 58 of 60 images" in desc
    assert find_test_set("val", tmp_path)[0] == val
    assert split_train(list(reversed(every)), "val") == val
    for p in every[20:]:
        p.unlink()
    with pytest.raises(DataError, match="val split .* is empty"):
        find_train_set(tmp_path, "val")
    with pytest.raises(ValueError, match="split must be"):
        split_train(every, "test")
