"""The embedding store on real files: append-only parts, concurrent savers, the old single file, killed saves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.embedding_store import EmbeddingStore, ScoreError, text_key

ROOT = Path(__file__).resolve().parents[1]


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def keys(n: int, tag: str = "") -> list[str]:
    return [text_key(f"{tag} text {i}") for i in range(n)]


def part_names(store: EmbeddingStore) -> list[str]:
    return sorted(p.name for p in store.path.iterdir())


def stored_frame(store: EmbeddingStore) -> pl.DataFrame:
    """Every row of every part, read with polars (what another tool sees)."""
    return pl.concat([pl.read_ipc(p) for p in sorted(store.path.glob("part-*.arrow"))])


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_round_trip_reopen_and_the_format(tmp_path):
    store = EmbeddingStore(tmp_path / "emb" / "m.parquet")
    assert len(store) == 0 and store.dim is None and "a" not in store
    data = vectors(5)
    store.add(["a", "b", "c"], data[:3])
    assert np.array_equal(store.get(["c", "a"]), data[[2, 0]])  # unsaved rows are readable
    store.save()
    store.add(["c", "d", "e", "d"], data[[2, 3, 4, 3]])  # c is stored, d repeats: two new rows
    store.save()
    store.save()  # nothing new: no part
    assert part_names(store) == ["part-000001.arrow", "part-000002.arrow"]
    assert sorted(p.name for p in store.path.parent.iterdir()) == [".lock", "m.parquet"]  # no temp left

    again = EmbeddingStore(store.path)
    assert len(again) == 5 and again.dim == 8 and "e" in again and "f" not in again
    again.add(["g"], data[:1])
    assert again.contains(["f", "e", "g", "a"]).tolist() == [False, True, True, True]
    assert again.contains([]).tolist() == []
    assert np.array_equal(again.get(["e", "a", "g", "d", "b", "c", "a"]), data[[4, 0, 0, 3, 1, 2, 0]])
    assert again.get([]).shape == (0, 8) and len(again) == 6
    with pytest.raises(KeyError):
        again.get(["a", "f"])
    frame = stored_frame(store)  # the single file's columns, one row per key
    assert frame.schema == {"key": pl.String, "embedding": pl.Array(pl.Float32, 8)}
    assert frame["key"].to_list() == ["a", "b", "c", "d", "e"]
    assert EmbeddingStore(tmp_path / "emb" / "m.parquet").index_bytes == 5 * (32 + 8 + 4)


CONCURRENT_SAVER = """
import sys, time, numpy as np
from curation.embedding_store import EmbeddingStore, text_key
path, tag, go = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = EmbeddingStore(path)
while time.time() < go:
    time.sleep(0.005)
for batch in range(40):
    # Each adds its own texts and texts the other adds too, saving every batch.
    own = [text_key(f"{tag} {batch} {i}") for i in range(20)]
    shared = [text_key(f"shared {batch} {i}") for i in range(5)]
    texts = own + shared
    store.add(texts, np.array([[len(t) % 7, batch, i, 0] for i, t in enumerate(texts)], np.float32))
    store.save()
"""


def test_two_processes_saving_at_once_lose_nothing_and_store_each_key_once(tmp_path):
    path = tmp_path / "emb" / "m.parquet"
    import time

    go = time.time() + 1.5
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    savers = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_SAVER, str(path), tag, str(go)], env=env, stderr=subprocess.PIPE, text=True)
        for tag in ("one", "two")
    ]
    for saver in savers:
        assert saver.wait(timeout=120) == 0, saver.stderr.read()
    store = EmbeddingStore(path)
    expected = {text_key(f"{tag} {b} {i}") for tag in ("one", "two") for b in range(40) for i in range(20)}
    expected |= {text_key(f"shared {b} {i}") for b in range(40) for i in range(5)}
    assert len(store) == len(expected) == 1800 and all(key in store for key in expected)
    frame = stored_frame(store)
    assert frame.height == 1800 and frame["key"].n_unique() == 1800  # no key in two parts
    assert store.n_parts <= EmbeddingStore.max_parts
    # Each row is the vector its key was added with.
    shared = [text_key(f"shared 7 {i}") for i in range(5)]
    assert np.array_equal(store.get(shared)[:, 1:3], [[7, 20 + i] for i in range(5)])


def write_single_file(path: Path, keys_: list[str], data: np.ndarray) -> None:
    """A store as the single-file version wrote it (its `_frame`, then write_parquet)."""
    frame = pl.DataFrame(
        {
            "key": pl.Series("key", keys_, dtype=pl.String),
            "embedding": pl.Series("embedding", data, dtype=pl.Array(pl.Float32, data.shape[1])),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)


def test_an_old_single_file_store_is_read_bit_for_bit_and_migrated_on_save(tmp_path):
    path = tmp_path / "embeddings" / "model.parquet"
    old_keys, data = keys(50), vectors(50, 384)
    data[3, 5] = np.float32(np.nextafter(np.float32(1), np.float32(2)))  # a value one ulp from 1
    write_single_file(path, old_keys, data)
    original = pl.read_parquet(path)

    store = EmbeddingStore(path)
    assert len(store) == 50 and store.dim == 384
    assert store.get(old_keys).view(np.uint32).tolist() == data.view(np.uint32).tolist()

    store.add(keys(3, "new"), vectors(3, 384, seed=1))
    store.save()
    assert path.is_dir() and part_names(store) == ["part-000000.arrow", "part-000001.arrow"]
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "model.parquet"]
    assert pl.read_ipc(path / "part-000000.arrow").equals(original)  # the old table, bit for bit
    again = EmbeddingStore(path)
    assert len(again) == 53
    assert again.get(old_keys).view(np.uint32).tolist() == data.view(np.uint32).tolist()
    assert np.array_equal(again.get(keys(3, "new")), vectors(3, 384, seed=1))


def test_a_migration_killed_halfway_is_read_and_finished_by_the_next_save(tmp_path):
    path = tmp_path / "embeddings" / "model.parquet"
    write_single_file(path, keys(10), vectors(10))
    # Killed after renaming the old file aside, with its staged directory left behind.
    os.replace(path, path.with_name("model.parquet.legacy"))
    (path.parent / ".tmp-model.parquet-999-deadbeef").mkdir()
    store = EmbeddingStore(path)
    assert len(store) == 10 and np.array_equal(store.get(keys(10)), vectors(10))
    store.add(["x"], vectors(1, seed=3))
    store.save()
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "model.parquet"]
    assert len(EmbeddingStore(path)) == 11

    # Killed after its last rename: the old file is still aside; readers ignore it, a save removes it.
    write_single_file(path.with_name("model.parquet.legacy"), keys(10), vectors(10))
    assert len(EmbeddingStore(path)) == 11
    store.add(["y"], vectors(1, seed=4))
    store.save()
    assert not path.with_name("model.parquet.legacy").exists() and len(EmbeddingStore(path)) == 12


KILLED_SAVER = """
import os, signal, sys, numpy as np
from curation.embedding_store import EmbeddingStore, text_key
store = EmbeddingStore(sys.argv[1])
store.add([text_key("killed")], np.ones((1, 8), np.float32))
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # killed between writing the part and renaming it
store.save()
"""


def test_a_save_killed_before_its_rename_leaves_the_store_readable(tmp_path):
    store = EmbeddingStore(tmp_path / "emb" / "m.parquet")
    store.add(keys(4), vectors(4))
    store.save()
    killed = run_python(KILLED_SAVER.replace("sys.argv[1]", repr(str(store.path))))
    assert killed.returncode == -9
    leftovers = [p.name for p in store.path.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1  # the written part, never renamed

    after = EmbeddingStore(store.path)
    assert len(after) == 4 and text_key("killed") not in after
    assert np.array_equal(after.get(keys(4)), vectors(4))
    after.add([text_key("killed")], np.ones((1, 8), np.float32))
    after.save()  # the lock was freed with the process; the leftover is swept
    assert part_names(after) == ["part-000001.arrow", "part-000002.arrow"]
    assert len(EmbeddingStore(store.path)) == 5


def test_many_parts_are_merged_and_merging_drops_keys_a_killed_merge_left_twice(tmp_path):
    store = EmbeddingStore(tmp_path / "m.parquet")
    store.max_parts = 6
    all_keys, data = keys(300), vectors(300)
    reader = None
    for batch in range(30):
        store.add(all_keys[batch * 10 : (batch + 1) * 10], data[batch * 10 : (batch + 1) * 10])
        store.save()
        if batch == 4:
            reader = EmbeddingStore(store.path)  # holds maps of parts the merges remove
        assert store.n_parts <= 6
    assert len(store) == 300 and np.array_equal(store.get(all_keys[::-1]), data[::-1])
    assert np.array_equal(reader.get(all_keys[:50]), data[:50])  # its parts were removed: its maps still read
    reader.add(keys(2, "reader"), vectors(2, seed=5))
    reader.save()  # sees the merged parts, indexes them afresh
    assert len(reader) == 302 and np.array_equal(reader.get(all_keys), data)

    # A merge killed after publishing its part and before removing the merged ones: keys twice on disk.
    first = sorted(store.path.glob("part-*.arrow"))[0]
    shutil.copy(first, store.path / "part-000900.arrow")
    twice = EmbeddingStore(store.path)
    assert len(twice) == 302 and np.array_equal(twice.get(all_keys), data)
    twice.max_parts = 2
    twice.add(["z"], vectors(1, seed=6))
    twice.save()
    frame = stored_frame(twice)
    assert frame.height == frame["key"].n_unique() == 303
    # The merging store renumbered its index in place: the same rows, from the merged part.
    assert twice.n_parts == 1 and len(twice) == 303
    assert np.array_equal(twice.get(all_keys + ["z"]), np.concatenate([data, vectors(1, seed=6)]))
    assert np.array_equal(twice.get(keys(2, "reader")), vectors(2, seed=5))


def test_wrong_dimensions_and_damaged_parts_are_one_line_naming_the_file(tmp_path):
    store = EmbeddingStore(tmp_path / "emb" / "m.parquet")
    store.add(keys(3), vectors(3))
    store.save()
    with pytest.raises(ScoreError, match=r"m\.parquet: holds 8-d embeddings, not 4-d"):
        EmbeddingStore(store.path).add(["f"], np.zeros((1, 4), np.float32))

    other = EmbeddingStore(tmp_path / "other.parquet")
    other.add(keys(2, "other"), vectors(2, 4))
    other.save()
    stray = store.path / "part-000007.arrow"
    shutil.copy(other.path / "part-000001.arrow", stray)
    with pytest.raises(ScoreError) as error:
        EmbeddingStore(store.path)
    assert str(error.value) == f"{stray}: holds 4-d embeddings, but {store.path} holds 8-d"
    stray.unlink()

    part = store.path / "part-000001.arrow"
    part.write_bytes(part.read_bytes()[:200])
    with pytest.raises(ScoreError, match=rf"^{part}: damaged embedding part \(.*\); move it away") as error:
        EmbeddingStore(store.path)
    assert "\n" not in str(error.value)

    broken = tmp_path / "old.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(ScoreError, match=rf"^{broken}: damaged embedding table"):
        EmbeddingStore(broken)


def test_keys_sharing_the_searched_prefix_are_told_apart(tmp_path):
    # The index searches the digests' first 8 bytes: keys equal there must still find their own rows.
    same_start = [f"{'ab' * 8}{i:048x}" for i in (5, 1, 3, 2, 4)]
    others = keys(20)
    store = EmbeddingStore(tmp_path / "m.parquet")
    store.add(same_start[:3] + others, vectors(23))
    store.save()
    store.add(same_start[3:], vectors(2, seed=1))
    store.save()
    again = EmbeddingStore(store.path)
    expected = np.concatenate([vectors(23)[:3], vectors(2, seed=1)])
    assert np.array_equal(again.get(same_start), expected)
    assert np.array_equal(again.get(others), vectors(23)[3:])
    assert again.contains(same_start + [f"{'ab' * 8}{9:048x}"]).tolist() == [True] * 5 + [False]


def test_merges_of_parts_of_random_sizes_keep_every_row_in_place(tmp_path):
    # Parts of uneven sizes: the merged ones are scattered among those kept, and the index is renumbered.
    rng = np.random.default_rng(11)
    store = EmbeddingStore(tmp_path / "m.parquet")
    store.max_parts = 4
    store.merge_batch_bytes = 2000  # about 20 rows: batches of 10 rows and more are copied as they are, smaller ones combined
    all_keys, data = keys(1500), vectors(1500)
    added = 0
    for _ in range(60):
        size = int(rng.integers(1, 40))
        repeat = rng.choice(added, min(added, 3), replace=False) if added else np.zeros(0, int)  # some stored already
        rows = np.concatenate([repeat, np.arange(added, added + size)]).astype(int)
        store.add([all_keys[i] for i in rows], data[rows])
        store.save()
        added += size
        probe = rng.choice(added, min(added, 50), replace=False)
        assert np.array_equal(store.get([all_keys[i] for i in probe]), data[probe])
    assert len(store) == added and store.n_parts <= 4
    assert np.array_equal(EmbeddingStore(store.path).get(all_keys[:added]), data[:added])
    assert stored_frame(store).height == added


FULL_DISK_SAVER = """
import os, resource, signal, sys, numpy as np
from curation.embedding_store import EmbeddingStore, ScoreError, text_key
store = EmbeddingStore(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
store.add([text_key(str(i)) for i in range(1000)], np.ones((1000, 384), np.float32))
try:
    store.save()
except ScoreError as error:
    print(error)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print(sorted(os.listdir(store.path)), len(store))
store.save()  # the rows were kept: room again, they are saved
"""


def test_a_write_that_fails_is_one_line_naming_the_part_and_loses_nothing(tmp_path):
    store = EmbeddingStore(tmp_path / "m.parquet")
    store.add([text_key("first")], np.ones((1, 384), np.float32))
    store.save()
    done = run_python(FULL_DISK_SAVER.replace("sys.argv[1]", repr(str(store.path))))
    assert done.returncode == 0, done.stderr
    message, listing = done.stdout.strip().splitlines()
    assert message.startswith(f"{store.path / 'part-000002.arrow'}: cannot write embeddings (") and "File too large" in message
    assert listing == "['part-000001.arrow'] 1001"  # no temp left; the unsaved rows still held
    assert len(EmbeddingStore(store.path)) == 1001
