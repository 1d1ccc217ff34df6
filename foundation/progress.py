"""Progress bars on stderr for work over many images; none for a single one.

tqdm (with the importlib.metadata it reads its version from) takes ~35 ms to import, a twentieth of a
one-photo cold start, which shows no bar anyway: it is imported only when a bar is shown.
"""

from __future__ import annotations

import sys


class NoBar:
    """The bar when there is nothing to show: the calls a tqdm bar takes, doing nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str = "img", enabled: bool = True):
    """A tqdm bar over ``total`` items on stderr, or a NoBar when disabled or for fewer than 2 items."""
    if not enabled or total < 2:
        return NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
