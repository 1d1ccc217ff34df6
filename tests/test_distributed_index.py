"""Sharded image-index embedding: N ranks (torchrun) build the same bundle as one process.

The real thing: ``torchrun --standalone --nproc_per_node 2 -m indexing build-images`` (gloo, CPU) with the
checkpoint trained on the messy folder. The logic (planning on rank 0, --update, errors reaching every
rank) is also run with ranks as threads and the fake embedder, in milliseconds.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from indexing.__main__ import main as indexing_main
from indexing.build.driver import build_image_index
from indexing.bundle import BundleError, open_bundle
from indexing.bundle.layout import STATS
from tests.fakes import COLOURS, colour_space, thread_shard, write_colour_images
from tests.reliability_helpers import run_python, trained  # noqa: F401 - session fixture


def assert_same_bundle(one, many):
    a, b = open_bundle(one), open_bundle(many)
    assert a.items == b.items
    np.testing.assert_allclose(np.asarray(a.vectors), np.asarray(b.vectors), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a.array(STATS), b.array(STATS))
    assert a.manifest["skipped"] == b.manifest["skipped"] and a.manifest["count"] == b.manifest["count"]


def test_torchrun_two_processes_build_the_same_index_as_one(trained, tmp_path, capfd):  # noqa: F811
    args = ["build-images", str(trained.messy), "--checkpoint", str(trained.checkpoint), "--batch-size", "4"]
    assert indexing_main([*args, "--out", str(tmp_path / "one")]) == 3  # the messy folder: files skipped
    capfd.readouterr()
    result = run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "-m", "indexing", *args, "--out", str(tmp_path / "two")], timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]  # 0, not 3, under torchrun (see docs/training.md)
    assert "Traceback" not in result.stderr and result.stderr.count("skipped ") == 1
    assert_same_bundle(tmp_path / "one", tmp_path / "two")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # the ranks' parts are cleaned up


class ThreadRanks:
    """Ranks as threads: a barrier and a broadcast through shared memory, as torch.distributed gives them."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size, timeout=30)
        self.box: dict = {}

    def shard(self, rank: int):
        return thread_shard(rank, self.world_size, self.barrier, self.box)

    def run(self, build) -> list:
        """``build(shard)`` on every rank at once; each rank's result or exception."""
        results: list = [None] * self.world_size

        def rank_main(rank):
            try:
                results[rank] = build(self.shard(rank))
            except Exception as err:  # noqa: BLE001 - handed back to the test
                results[rank] = err

        threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(self.world_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a rank hangs"
        return results


@pytest.mark.parametrize("world_size", [2, 3])
def test_sharded_build_and_update_match_one_process(world_size, tmp_path):
    space = colour_space(tmp_path)
    photos = tmp_path / "photos"
    write_colour_images(photos)
    (photos / "broken.png").write_bytes(b"not a png")
    one, many = tmp_path / "one", tmp_path / "many"

    def sharded(**options):
        return ThreadRanks(world_size).run(
            lambda shard: build_image_index([photos], many, space.embedder, progress=False, shard=shard, **options)
        )

    build_image_index([photos], one, space.embedder, progress=False)
    report, *others = sharded()
    assert others == [None] * (world_size - 1) and len(report.skipped) == 1
    assert_same_bundle(one, many)

    write_colour_images(tmp_path / "more", names=("cyan",))
    shutil.move(tmp_path / "more" / "cyan.png", photos / "another_cyan.png")
    Image.new("RGB", (30, 30), COLOURS["purple"]).save(photos / "green.png")  # changed
    (photos / "blue.png").unlink()
    space.embedder.embedded.clear()
    report, *_ = sharded(update=True)
    assert sorted(p.rsplit("/", 1)[1] for p in space.embedder.embedded) == ["another_cyan.png", "broken.png",
                                                                         "green.png"]  # fmt: skip
    assert (report.embedded, report.reused, report.removed) == (2, 6, 1)
    build_image_index([photos], one, space.embedder, progress=False, update=True)
    assert_same_bundle(one, many)


def test_a_planning_error_reaches_every_rank(tmp_path):
    space = colour_space(tmp_path)
    (tmp_path / "empty").mkdir()
    results = ThreadRanks(2).run(
        lambda shard: build_image_index([tmp_path / "empty"], tmp_path / "idx", space.embedder, shard=shard)
    )
    assert all(isinstance(r, BundleError) and "no images found" in str(r) for r in results)
