"""Sharded builds: every rank of a ``torchrun`` launch embeds its share of the photos.

```
torchrun --nproc_per_node 4 -m indexing build-images ~/Photos --out indexes/photos
```

Rank 0 plans (``indexing.build.plan``) and broadcasts the files to embed; rank r embeds every
world_size-th of them and hands them to the writer (a part folder beside a bundle, rows of a database);
the skipped files are gathered on rank 0, which finishes the index exactly as one process would. For
several nodes building a bundle, the bundle's parent folder must be shared.

Only ``torch.distributed`` (gloo, CPU objects only) is used, for one broadcast and one gather: index
building never imports pytorch_lightning. Each rank runs the model on ``cuda:LOCAL_RANK`` when CUDA is there.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass

from foundation.sharding import share


@dataclass
class Shard:
    """This process's place in a build, and the two collective operations the build needs."""

    rank: int
    world_size: int
    broadcast: Callable[[object], object]  # returns rank 0's object on every rank
    gather: Callable[[object], list]  # every rank's object, in rank order (after every rank has given its own)


SINGLE = Shard(0, 1, lambda obj: obj, lambda obj: [obj])  # one process: the whole build


def from_environment() -> Shard | None:
    """A Shard when launched by torchrun (or any launcher setting RANK / WORLD_SIZE > 1), else None."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or "RANK" not in os.environ:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        # A rank with a larger share (or a slower GPU) may keep the others waiting for hours.
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))

    def broadcast(obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(obj) -> list:
        everyone: list = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, obj)
        return everyone

    return Shard(dist.get_rank(), dist.get_world_size(), broadcast, gather)


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


def my_share(items: list, shard: Shard) -> list:
    """The items this rank embeds: every world_size-th (``foundation.sharding.share``)."""
    return share(items, shard.rank, shard.world_size)
