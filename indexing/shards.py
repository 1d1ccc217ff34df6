"""Sharded image embedding: every rank of a ``torchrun`` launch embeds its share, rank 0 writes one bundle.

```
torchrun --nproc_per_node 4 -m indexing build-images ~/Photos --out indexes/photos --checkpoint CKPT
```

Rank 0 lists the collection (and, with ``--update``, decides what is new) and broadcasts the paths to embed;
rank r embeds every world_size-th of them into a part folder (``vectors.npy``, ``paths.json``, renamed into
place when complete) beside the bundle; after a barrier rank 0 streams the parts into the bundle in sorted
path order, exactly as one process would. For several nodes the bundle's parent folder must be shared.

Only ``torch.distributed`` (gloo, CPU objects only) is used, for one broadcast and one barrier: index
building never imports pytorch_lightning. Each rank runs the model on ``cuda:LOCAL_RANK`` when CUDA is there.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foundation.atomic import remove_stale, temp_path, temp_prefix, write_atomic
from foundation.sharding import chunks, share
from indexing.bundle import RowWriter

PARTS_TAG = "shards"


@dataclass
class Shard:
    """This process's place in a sharded build, and the two collective operations the build needs."""

    rank: int
    world_size: int
    barrier: Callable[[], None]
    broadcast: Callable[[object], object]  # returns rank 0's object on every rank


def from_environment() -> Shard | None:
    """A Shard when launched by torchrun (or any launcher setting RANK / WORLD_SIZE > 1), else None."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or "RANK" not in os.environ:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        # A rank with a larger share (or a slower GPU) may keep the others at the barrier for hours.
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))

    def broadcast(obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    return Shard(dist.get_rank(), dist.get_world_size(), dist.barrier, broadcast)


def close() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def local_device() -> str:
    """``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return "cpu"


def parts_folder(out: str | os.PathLike) -> Path:
    """A fresh scratch folder name beside the bundle (chosen by rank 0, broadcast to the others)."""
    return temp_path(Path(out).absolute(), PARTS_TAG)


def remove_stale_parts(out: str | os.PathLike) -> None:
    """Delete part folders of killed sharded builds of ``out`` (rank 0 on this host, process gone)."""
    out = Path(out).absolute()
    remove_stale(out.parent, temp_prefix(out, PARTS_TAG))


def my_share(paths: list[str], shard: Shard) -> list[str]:
    """The paths this rank embeds: every world_size-th (``foundation.sharding.share``)."""
    return share(paths, shard.rank, shard.world_size)


def write_part(folder: Path, rank: int, paths: list[str], embed, dim: int, chunk: int = 1024) -> None:
    """Embed ``paths`` with ``embed`` (a ChunkedEmbedder) into ``folder/rank<r>``, streaming, atomically.

    Vectors go out as they are (the bundle normalises them), with ordinary writes (no SIGBUS on a full disk).
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp, done = folder / f".rank{rank}.tmp", folder / f"rank{rank}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rows = RowWriter(tmp / "vectors.npy", len(paths), dim, normalised=False)
    kept: list[str] = []
    for part in chunks(paths, chunk):
        fresh = embed(part)
        good = [p for p in part if p in fresh]
        if good:
            rows.append(np.stack([fresh[p] for p in good]))
            kept += good
    rows.close()
    write_atomic(tmp / "paths.json", json.dumps({"paths": kept, "skipped": embed.skipped}))
    os.replace(tmp, done)


class ShardParts:
    """The ranks' parts as the ChunkedEmbedder interface: ``parts(paths) -> {path: vector}``, ``.skipped``.

    Skips are reported in the order the paths are asked for, so the bundle's skip list matches one process.
    """

    def __init__(self, folder: Path, world_size: int):
        self.folder = folder
        self.vectors: list[np.ndarray] = []
        self.where: dict[str, tuple[int, int]] = {}
        self.reasons: dict[str, str] = {}
        for rank in range(world_size):
            part = folder / f"rank{rank}"
            listing = json.loads((part / "paths.json").read_text())
            self.vectors.append(np.load(part / "vectors.npy", mmap_mode="r"))
            self.where.update({path: (rank, row) for row, path in enumerate(listing["paths"])})
            self.reasons.update(dict(map(tuple, listing["skipped"])))
        self.skipped: list[tuple[str, str]] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.vectors.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __call__(self, paths: list[str]) -> dict[str, np.ndarray]:
        found = {}
        for path in paths:
            if path in self.where:
                rank, row = self.where[path]
                found[path] = np.asarray(self.vectors[rank][row])
            elif path in self.reasons:
                self.skipped.append((path, self.reasons[path]))
        return found
