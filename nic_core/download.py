"""Downloading the test sets (urllib only) and verifying them: sha256 per file where known, and
every image decodes (``nic_core.data.check_images``), so a download never leaves a file that
fails later in a notebook.

Command line (also ``python -m nic_core.data download ...``)::

    python -m nic_core.download download kodak --to DATA_ROOT [--base-url URL]
    python -m nic_core.download download div2k-valid --to DATA_ROOT
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from tqdm.auto import tqdm

from . import cli
from .data import DataError, has_images, check_images, list_images, resolve_data_root

__all__ = ["KODAK_SHA256", "Remote", "REMOTES", "download", "main"]

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


def sha256_file(path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (downloads, the zoo's SHA256SUMS)."""
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
            (names the file, expected and actual hash), a bad archive, or an image in the
            folder that does not decode (each named; the check runs after every download).
    """
    if name not in REMOTES:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(REMOTES)}")
    remote = REMOTES[name]
    files = dict(remote.files if manifest is None else manifest)
    base = (base_url or remote.base_url).rstrip("/") + "/"
    dest = Path(to).expanduser() / remote.dest
    if remote.unzip and has_images(dest):
        print(f"{dest} already holds images; not downloading {name} again "
              f"(delete the folder to force it)")
        files = {}
    workdir = dest.parent if remote.unzip else dest
    workdir.mkdir(parents=True, exist_ok=True)
    for fname, sha in tqdm(files.items(), desc=f"download {name}", unit="file",
                           disable=len(files) < 2):
        target = workdir / fname
        present = target.is_file() and (sha is None or sha256_file(target) == sha.lower())
        if not present:  # else: already there (and verified when a hash is known)
            _fetch(base + urllib.parse.quote(fname), target, sha, timeout)
        if remote.unzip:
            try:
                _extract_zip(target, dest)
            finally:
                if not present:  # keep an archive the user put there; drop our own
                    target.unlink()
    bad = check_images(list_images(dest), progress=True)
    if bad:
        raise DataError(f"{len(bad)} image(s) in {dest} cannot be read; delete them and run the "
                        "download again:\n  " + "\n  ".join(bad))
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
    sys.exit(cli.run(main))
