"""Near-duplicate groups from visual features: re-encoded, resized or lightly cropped copies of a photo.

Two photos are duplicates when the cosine of their pooled backbone features reaches the threshold;
groups are the connected components of that relation (union-find), largest first. The default threshold
comes from ``python -m evaluation.duplicates`` (docs/results.md: precision/recall on generated near-duplicates of
real photos, with distinct photos of the same subject as the hard negatives).
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.80
NEIGHBOURS = 20  # Annoy candidates per photo in large collections; groups larger than this still join up
EXACT_BELOW = 5_000  # up to this many photos every pair is compared exactly


def similar_pairs(space, threshold: float, neighbours: int = NEIGHBOURS) -> list[tuple[int, int, float]]:
    """(i, j, cosine) with i < j and cosine >= threshold. ``space``: a Bundle (vectors unit length)."""
    vectors, n = space.vectors, len(space.vectors)
    pairs = []
    if n <= EXACT_BELOW:
        for start in range(0, n, 1024):
            block = np.asarray(vectors[start : start + 1024], dtype=np.float32)
            scores = block @ np.asarray(vectors, dtype=np.float32).T
            for a, b in zip(*np.nonzero(scores >= threshold)):
                i = start + int(a)
                if i < b:
                    pairs.append((i, int(b), float(scores[a, b])))
        return pairs
    for i in range(n):
        ids = space.annoy.get_nns_by_item(i, neighbours, search_k=space.search_k)
        scores = np.asarray(vectors[ids], dtype=np.float32) @ np.asarray(vectors[i], dtype=np.float32)
        pairs += [(i, j, float(s)) for j, s in zip(ids, scores) if j > i and s >= threshold]
    return pairs


def groups_from_pairs(n: int, pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    """Connected components with more than one member, largest first, members in row order."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    groups = [sorted(m) for m in members.values() if len(m) > 1]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def duplicate_groups(space, threshold: float = DEFAULT_THRESHOLD) -> list[list[tuple[str, float]]]:
    """Groups of near-duplicates as (item, cosine to the group's first item), largest group first."""
    groups = groups_from_pairs(len(space.vectors), similar_pairs(space, threshold))
    result = []
    for group in groups:
        first = np.asarray(space.vectors[group[0]], dtype=np.float32)
        scores = np.asarray(space.vectors[group], dtype=np.float32) @ first
        result.append([(space.items[i], float(s)) for i, s in zip(group, scores)])
    return result
