"""Labelled photos of registry packages: only images unpacked, fetched once, missing ones left out."""

from __future__ import annotations

import io
import tarfile
import zipfile

from evaluation import package_photos
from evaluation.package_photos import COMPLETE, Package, package_files, photo_name, unpack_images


def _tarball(path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_wheel_gives_only_its_images(tmp_path):
    with zipfile.ZipFile(tmp_path / "x-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("x/data/photo.JPG", b"jpeg")
        wheel.writestr("x/__init__.py", b"")
    assert unpack_images(tmp_path / "x-1.0-py3-none-any.whl", tmp_path / "out") == 1
    assert [p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")] == ["x/data/photo.JPG"]


def test_an_npm_tarball_loses_its_package_prefix_and_never_writes_outside(tmp_path):
    _tarball(tmp_path / "x-1.0.0.tgz", {"package/assets/a.png": b"png", "package/index.js": b"",
                                         "package/../../evil.png": b"png", "/tmp/evil.png": b"png"})  # fmt: skip
    assert unpack_images(tmp_path / "x-1.0.0.tgz", tmp_path / "out") == 1
    assert (tmp_path / "out" / "assets" / "a.png").read_bytes() == b"png"
    assert not (tmp_path / "evil.png").exists()


def test_photo_names_keep_the_folder_apart():
    assert photo_name("templates/cal2/moon.jpg") != photo_name("templates/br2/moon.jpg")


def test_fetched_packages_are_read_from_the_cache_and_missing_photos_left_out(tmp_path, monkeypatch):
    monkeypatch.setenv("WORDSIGHT_CACHE", str(tmp_path))
    packages = {"kept": Package("npm", "kept", "1.0.0", "MIT"), "gone": Package("pypi", "gone", "2.0", "MIT")}
    root = tmp_path / "packages" / "npm" / "kept-1.0.0"
    (root / "a").mkdir(parents=True)
    (root / "a" / "dog.jpg").write_bytes(b"jpeg")
    (root / COMPLETE).write_text("npm kept-1.0.0.tgz 1 images (MIT)\n")
    monkeypatch.setattr(package_photos.shutil, "which", lambda name: None)  # no client: nothing is fetched
    labels = {"pets": {("kept", "a/dog.jpg"): ["dog"], ("kept", "a/cat.jpg"): ["cat"], ("gone", "b/x.png"): ["x"]}}
    assert list(package_files(labels, packages)) == [("pets", "a/dog.jpg", root / "a" / "dog.jpg", ["dog"])]
