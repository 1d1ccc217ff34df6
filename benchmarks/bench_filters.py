"""Filtered search at a million photos: what a folder or date filter costs and how much it finds.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_filters.py [OUT.json] [--n 1000000] [--queries 200]
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_filters.py OUT.json --space features --n 100000

The rows are bench_scale.py's rows of one space (the same seed: ConSE word vectors or pooled features of
the packaged photos and their edits, in bursts of near-copies), so that space's forest alone is built
(tuned as a build tunes it: trees and search_k to recall@10 >= 0.95 on unfiltered queries). The library's folders and
dates are independent of the pictures (``/lib/<0-9>/<0-99>``, 20 years), as in bench_scale.py. Filters:
kept fractions from 50% down to 1% (folders), a 1% date range, and ``subject_10pct``: the shots of a
random tenth of the base photos, a folder that holds one kind of picture (the kept rows are not spread
evenly around a query, which the forest's search_k / fraction assumes). Queries: midpoints of two rows.

For each filter: recall@10 against exact search over the kept rows, p50/p99 ms and the fewest results of

- ``exact``: the kept rows scanned exactly (what a filter below the crossover does);
- ``forest x M``: the forest asked for ``2k / fraction`` rows with search_k = M x the tuned search_k / the
  kept fraction (M = 0 is the policy before: search_k = max(tuned, 10 x rows asked for));
- ``before``: the policy before, i.e. ``exact`` up to 20,000 kept rows, else ``forest x0`` (whose fewest
  results omit the exact scan the policy fell back to when fewer than k were kept);
- ``shipped``: ``library.filters.filtered_nearest`` as the Searcher calls it.

The forest and the rows are kept in ``--work`` (default /var/tmp/bench-filters) so a second run skips the
build; the build's facts are recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_postgres import percentiles
from bench_scale import BASE_CACHE, DAYS, K, Shots, base_rows, path_of, timed

from indexing.ann.vectors import exact_top_k, normalise

MULTIPLES = (0, 0.5, 1, 2)  # forest search_k as multiples of tuned / fraction; 0: the policy before
EXACT_SUBSET_BEFORE = 20_000  # the policy before scanned this many kept rows or fewer exactly
DTYPES = {"words": np.float32, "features": np.float16}  # as the bundles store them


def filters(folder: np.ndarray, day: np.ndarray, photo: np.ndarray) -> dict[str, np.ndarray]:
    """Kept rows of each filter: folders /lib/<f // 100>/<f % 100> (f = row % 1000), days over 20 years, the
    rows whose base photo ``photo`` (a number per row) is one of a tenth of them."""
    out = {f"folder_{pct}pct": folder < pct * 10 for pct in (50, 20, 10, 5, 2, 1)}
    out["date_1pct"] = (day >= 3650) & (day < 3650 + DAYS // 100)
    out["subject_10pct"] = np.random.default_rng(3).random(photo.max() + 1)[photo] < 0.1
    return out


def library(space: str, n: int, work: Path) -> tuple[np.ndarray, dict, np.ndarray]:
    """The rows of ``space`` (memory-mapped), their tuned forest's facts (made once in ``work``) and each
    row's base photo."""
    from indexing.ann.forest import DEFAULT_N_TREES, build_tuned_forest
    from indexing.bundle.columns import FEATURE_TREES

    rows_file, facts_file = work / f"{space}_{n}.npy", work / f"{space}_forest_{n}.json"
    base = base_rows(Path(os.environ.get("WORDSIGHT_CACHE", Path.home() / ".cache/wordsight")) / "bench" / BASE_CACHE)
    shots = Shots(base, n, seed=0)
    if not facts_file.is_file():
        dtype = DTYPES[space]
        out = np.lib.format.open_memmap(rows_file, mode="w+", dtype=dtype, shape=(n, base[space].shape[-1]))
        for start, end in shots.chunks():
            out[start:end] = shots.rows(base[space], start, end, dtype)
        out.flush()
        started = time.perf_counter()
        annoy, facts = build_tuned_forest(np.load(rows_file, mmap_mode="r"), work / f"{space}_forest_{n}.ann", None, None,
                                          False, FEATURE_TREES if space == "features" else DEFAULT_N_TREES)  # fmt: skip
        annoy.unload()
        facts_file.write_text(json.dumps({**facts, "build_s": round(time.perf_counter() - started, 1)}))
    return np.load(rows_file, mmap_mode="r"), json.loads(facts_file.read_text()), shots.photo[shots.shot]


def measured(search, queries, truth: list[set]) -> dict:
    found, seconds = timed(search, queries)
    hits = [len(t & set(f)) / K for t, f in zip(truth, found)]
    return {"query_ms": percentiles(seconds), "recall_at_10": round(float(np.mean(hits)), 4),
            "min_results": min(len(f) for f in found)}  # fmt: skip


def forest_search(space, mask: np.ndarray, multiple: float):
    """The forest's answer under ``mask`` with search_k = ``multiple`` x tuned / kept fraction (0: the
    policy before), the kept rows among ``2k / fraction`` asked for re-ranked exactly (no fallback)."""
    fraction = mask.mean()
    fetch = int(K * np.ceil(1 / fraction) * 2)
    search_k = int(multiple * space.search_k / fraction) if multiple else max(space.search_k, fetch * 10)

    def search(q):
        ids = [i for i in space.annoy.get_nns_by_vector(q.tolist(), fetch, search_k=search_k) if mask[i]]
        scores = np.asarray(space.vectors[ids]) @ q
        return [ids[i] for i in np.argsort(-scores)[:K]]

    return search, search_k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default=str(HERE / "results/filters.json"),
                        help="where the results go as JSON (default benchmarks/results/filters.json)")  # fmt: skip
    parser.add_argument("--n", type=int, default=1_000_000, help="library rows (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=200, help="queries per filter (default 200)")
    parser.add_argument("--work", default="/var/tmp/bench-filters", help="where the rows and the forest are kept")
    parser.add_argument("--space", choices=tuple(DTYPES), default="words",
                        help="word vectors (50-d) or visual features (1280-d float16); default words")  # fmt: skip
    args = parser.parse_args()
    from annoy import AnnoyIndex

    from indexing.ann.reduced import reranked
    from indexing.bundle.core import Bundle
    from library.filters import filtered_nearest

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    vectors, forest, photo = library(args.space, args.n, work)
    annoy = AnnoyIndex(vectors.shape[1], "angular")
    annoy.load(str(work / f"{args.space}_forest_{args.n}.ann"))
    paths = [path_of(i) for i in range(args.n)]
    space = Bundle(work, {**forest, "kind": "images"}, paths, vectors, annoy)
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, args.n, size=(args.queries, 2))
    queries = normalise(np.asarray(vectors[pairs[:, 0]], np.float32) + np.asarray(vectors[pairs[:, 1]], np.float32))
    row = np.arange(args.n)
    kept = filters(row % 1000, rng.integers(0, DAYS, size=args.n), photo)
    result = {"space": args.space, "n": args.n, "queries": args.queries, "forest": forest,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "omp_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg": os.getloadavg()}}  # fmt: skip
    result["unfiltered_ms"] = percentiles(timed(lambda q: space.nearest(q, K), queries)[1])
    for name, mask in kept.items():
        rows = np.flatnonzero(mask)
        ids, _ = exact_top_k(vectors[rows], queries, K)
        truth = [set(r) for r in rows[ids].tolist()]
        entry = {"kept": len(rows), "exact": measured(lambda q, rows=rows: [r for r, _ in reranked(vectors, rows, q, K)], queries, truth)}
        for multiple in MULTIPLES:
            search, search_k = forest_search(space, mask, multiple)
            entry[f"forest x{multiple}"] = {"search_k": search_k, **measured(search, queries, truth)}
        entry["before"] = entry["exact" if len(rows) <= EXACT_SUBSET_BEFORE else "forest x0"]
        entry["shipped"] = measured(lambda q, mask=mask: [int(p[-11:-4]) for p, _ in filtered_nearest(space, q, K, mask)],
                                    queries, truth)  # fmt: skip
        result[name] = entry
        print(name, json.dumps(entry), file=sys.stderr, flush=True)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
