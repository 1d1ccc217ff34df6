"""JPEG draft decoding (foundation.images.open_image(min_side=...)), the numpy transform, decoding workers."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from foundation.images import BadImage, draft_scale, load_input, open_image, split_readable
from foundation.workers import DecodePool, default_workers
from models.preprocess import pixel_transform
from tests.bad_inputs import make_bad_input_folder


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus mild noise: compresses like a photo, and downscaling keeps its content."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8))


def save_jpeg(im: Image.Image, path, **options):
    im.save(path, "JPEG", quality=90, **options)
    return path


@pytest.mark.parametrize(("size", "min_side", "scale"), [((800, 600), 64, 8), ((800, 600), 100, 4),
                                                          ((800, 600), 224, 2), ((800, 600), 400, 1),
                                                          ((600, 800), 150, 4), ((800, 90), 64, 1),
                                                          ((40, 20), 32, 1)])  # fmt: skip
def test_draft_decodes_at_the_smallest_scale_covering_min_side(tmp_path, size, min_side, scale):
    path = save_jpeg(photo(*size), tmp_path / "p.jpg")
    assert draft_scale(*size, min_side) == scale
    im = open_image(path, min_side=min_side)
    assert im.mode == "RGB"
    assert im.size == (-(-size[0] // scale), -(-size[1] // scale))
    assert min(im.size) >= min_side or scale == 1  # covered, or already too small: decoded in full
    if scale < 8:  # the next scale down would no longer cover min_side
        assert min(size[0] // (2 * scale), size[1] // (2 * scale)) < min_side


def test_draft_keeps_exif_orientation_and_converts_cmyk(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    rotated = save_jpeg(photo(800, 400), tmp_path / "rot.jpg", exif=exif.tobytes())
    assert open_image(rotated).size == (400, 800)
    assert open_image(rotated, min_side=64).size == (100, 200)  # 1/4 scale (400 // 64 = 6), then rotated
    cmyk = photo(800, 600).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", "JPEG", quality=90)
    full, draft = open_image(tmp_path / "cmyk.jpg"), open_image(tmp_path / "cmyk.jpg", min_side=64)
    assert draft.mode == "RGB" and draft.size == (100, 75)
    # the same colours as the full decode, averaged down
    assert np.abs(np.asarray(full.resize(draft.size, Image.BOX), float) - np.asarray(draft, float)).mean() < 4


def test_drafted_network_input_matches_the_full_decode(tmp_path):
    path = save_jpeg(photo(1600, 1200), tmp_path / "big.jpg")
    transform = pixel_transform("efficientnet_lite0", 96)
    full, draft = transform(open_image(path)), load_input(path, transform)
    assert draft.shape == full.shape == (3, 96, 96)
    assert np.abs(draft - full).mean() < 0.02  # inputs span about -1..1
    cosine = float((draft * full).sum() / np.linalg.norm(draft) / np.linalg.norm(full))
    assert cosine > 0.999


def test_png_and_small_jpegs_are_decoded_in_full(tmp_path):
    photo(800, 600).save(tmp_path / "p.png")
    assert open_image(tmp_path / "p.png", min_side=64).size == (800, 600)
    save_jpeg(photo(100, 80), tmp_path / "small.jpg")
    assert open_image(tmp_path / "small.jpg", min_side=64).size == (100, 80)


def test_every_bad_input_has_the_same_outcome_with_draft_decoding(tmp_path):
    expected = make_bad_input_folder(tmp_path)
    for rel in expected:
        outcomes = []
        for min_side in (None, 8, 64):
            try:
                outcomes.append(("ok", open_image(tmp_path / rel, min_side=min_side).mode))
            except BadImage as error:
                outcomes.append(("skip", str(error)))
        assert outcomes[0] == outcomes[1], rel
        assert outcomes[0][0] == expected[rel], rel


def test_load_input_returns_bad_images_and_split_readable_separates_them(tmp_path):
    (tmp_path / "text.jpg").write_text("not a photo")
    save_jpeg(photo(64, 48), tmp_path / "ok.jpg")
    transform = pixel_transform("resnet18", 32)
    items = [load_input(tmp_path / name, transform) for name in ("ok.jpg", "text.jpg", "ok.jpg")]
    good, bad = split_readable(items)
    assert [pos for pos, _ in good] == [0, 2] and bad == [(1, "not an image")]
    assert good[0][1].shape == (3, 32, 32) and good[0][1].dtype == np.float32


def _square(x):
    if x == 13:
        raise ValueError("boom")
    return x * x


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_decode_pool_keeps_order_and_reuses_workers(workers):
    with DecodePool(_square, workers, chunk=3, min_cost=0) as pool:
        assert list(pool.map(range(12))) == [x * x for x in range(12)]
        assert pool.active_workers == workers
        pids = {p.pid for p in pool._procs}
        assert list(pool.map([5, 1])) == [25, 1]
        assert {p.pid for p in pool._procs} == pids  # the same processes serve the next map


def test_cheap_items_are_decoded_in_this_process():
    with DecodePool(_square, 2) as pool:
        assert list(pool.map(range(10))) == [x * x for x in range(10)]
        assert pool.active_workers == 0


def test_decode_pool_reports_a_worker_error_and_recovers():
    with DecodePool(_square, 2, chunk=2, min_cost=0) as pool:
        with pytest.raises((RuntimeError, ValueError), match="boom"):  # from a worker, or decoded here
            list(pool.map(range(20)))
        partial = pool.map(range(100))
        assert next(partial) == 0  # abandoned after one item: its other tasks are dropped, not returned
        assert list(pool.map(range(4))) == [0, 1, 4, 9]


def test_decode_pool_is_bounded():
    """A consumer that stops reading holds the workers back: only 2 x workers tasks get submitted."""
    submitted = []

    def items():
        for x in range(1000):
            submitted.append(x)
            yield x

    with DecodePool(_square, 2, chunk=4, min_cost=0) as pool:
        it = pool.map(items())
        next(it)
        # the tasks in flight, one decoded here while waiting, and the one being filled
        assert pool.max_tasks == 4 and len(submitted) <= (pool.max_tasks + 3) * 4  # + the timed first task
    with DecodePool(_square, 1, chunk=4, ahead=64) as pool:
        assert pool.max_tasks == 16  # one network batch of 64 in flight


def test_default_workers_leaves_a_core_for_the_network():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_workers() == max(1, cores - 1)


def test_jpeg_bytes_roundtrip_sanity():
    buf = io.BytesIO()
    photo(16, 16).save(buf, "JPEG")
    assert buf.getvalue()[:3] == b"\xff\xd8\xff"


def test_feature_cache_key_changes_only_where_draft_decoding_changes_pixels(tmp_path):
    import hashlib

    from datamodules.feature_cache import CACHE_FORMAT, cache_key
    from datamodules.sources import ImageFolder
    from models.backbones import image_transform

    transform = image_transform("efficientnet_lite0", 32)
    for name, suffix in (("png", ".png"), ("jpeg", ".jpg")):
        (tmp_path / name / "cat").mkdir(parents=True)
        photo(200, 150).save(tmp_path / name / "cat" / f"a{suffix}")
    pngs, jpegs = ImageFolder(tmp_path / "png"), ImageFolder(tmp_path / "jpeg")

    def before(source):  # the key as computed before draft decoding existed
        parts = [f"format={CACHE_FORMAT}", "backbone-id", repr(transform), source.fingerprint()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]

    assert cache_key("backbone-id", transform, pngs) == before(pngs)  # same pixels, same key: cache reused
    assert cache_key("backbone-id", transform, jpegs) != before(jpegs)  # JPEGs may now decode at a DCT scale
    assert pngs.decoding() == "" and jpegs.decoding() == "jpeg-draft"


def test_workers_end_when_the_main_process_is_killed(tmp_path):
    """A SIGKILLed build (tests/test_crash_safety.py does that) must not leave its decoders running."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, sys, time\n"
        "from foundation.workers import DecodePool\n"
        "pool = DecodePool(abs, 2, min_cost=0)\n"
        "list(pool.map(range(8)))\n"
        "print(' '.join(str(p.pid) for p in pool._procs), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
