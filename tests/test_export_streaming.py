"""The export writes a version's files as its batches come (curation.dataset_files.DatasetFiles): what is checked is
that the streamed files are the ones `datasets` itself writes, whatever the shards.

On a real workspace (talks 19-24, talks 439-440 with silent answers, and *Nan Yar?*: three sources, so
several batches), deduplicated and critiqued offline:
- a version cut into many shards and written a source at a time has the same id, manifest, rows,
  seed.jsonl and card as one written in one shard; `load_from_disk`, `load_dataset("parquet")` and
  `verify` read it;
- dataset/state.json and dataset_info.json are byte for byte what `save_to_disk` writes for the
  same rows, and the Parquet schema metadata what `to_parquet` writes;
- a copy of 0 rows loads as 0 rows with the features;
- a big source built in slices (`row_chunks`, never cutting a conversation) gives the same version;
- the card's examples, kept as rows stream by, are the ones chosen from all the rows;
- the disk filling up at any point of the streamed writing is one clear error, and nothing is left.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from critic.offline import OfflineCritic
from critic.stage import run_critique
from curation import dataset_files, export
from curation.dedup import run_dedup
from curation.dataset_files import DatasetFiles
from curation.export import CardExamples, ExportConfig, export_version
from curation.versions import DATASET_DIR, PARQUET_DIR, SEED_NAME, VERSIONS_DIR, ExportError, list_versions, verify_version
from curation.workspace import Workspace

DATA = Path(__file__).parent / "data"
SFT = ExportConfig(name="talks", include_unreviewed=True)
PRETRAIN = ExportConfig(name="text", kind="pretrain", include_unreviewed=True, include_answers_in_pretrain=True)
WHEN = "2026-01-01T00:00:00+00:00"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def built(new_workspace) -> Path:
    workspace = new_workspace("streamed")
    licence = "published freely by its publisher"
    workspace.ingest([DATA / "talks-19-24.txt"], "dialogue", title="Talks with Sri Ramana Maharshi", licence=licence)
    workspace.ingest([DATA / "talks-excerpt.txt"], "dialogue", title="Talks 439-440", licence=licence)
    workspace.ingest([DATA / "nan-yar-excerpt.txt"], "prose", title="Nan Yar?", licence=licence)
    run_dedup(workspace, progress=False)
    run_critique(workspace, OfflineCritic(), progress=False)
    return workspace.root


def copy_of(built: Path, directory: Path) -> Workspace:
    return Workspace.open(shutil.copytree(built, directory, ignore=shutil.ignore_patterns(VERSIONS_DIR)))


def saved_rows(version: Path) -> list[dict]:
    from datasets import load_from_disk

    return load_from_disk(str(version / DATASET_DIR)).to_list()


def parquet_rows(version: Path) -> list[dict]:
    from datasets import load_dataset

    return load_dataset("parquet", data_dir=str(version / PARQUET_DIR), split="train", cache_dir=str(version.parent.parent / "hf")).to_list()


@pytest.mark.parametrize("config", [SFT, PRETRAIN], ids=["sft", "pretrain"])
def test_a_version_in_many_shards_is_the_version_in_one(built: Path, tmp_path: Path, monkeypatch, config: ExportConfig):
    from datasets import config as datasets_config

    whole = export_version(copy_of(built, tmp_path / "whole"), config, created_at=WHEN)
    # Every source written on its own, and a new shard for each write, in both copies.
    monkeypatch.setattr(dataset_files, "WRITE_BYTES", 1)
    monkeypatch.setattr(dataset_files, "PARQUET_SHARD_BYTES", 1)
    monkeypatch.setattr(datasets_config, "MAX_SHARD_SIZE", 1)
    sharded_workspace = copy_of(built, tmp_path / "sharded")
    sharded = export_version(sharded_workspace, config, created_at=WHEN)

    assert sharded.version_id == whole.version_id and sharded.n_rows == whole.n_rows > 0
    assert (sharded.path / "manifest.json").read_bytes() == (whole.path / "manifest.json").read_bytes()
    assert (sharded.path / "README.md").read_bytes() == (whole.path / "README.md").read_bytes()
    if config.kind == "sft":
        assert (sharded.path / SEED_NAME).read_bytes() == (whole.path / SEED_NAME).read_bytes()
    n_sources = len({record["source_id"] for record in json.loads((whole.path / "manifest.json").read_text())["items"]})
    assert n_sources == (2 if config.kind == "sft" else 3)  # Nan Yar? is prose: no conversations
    arrow_names = sorted(p.name for p in (sharded.path / DATASET_DIR).glob("*.arrow"))
    parquet_names = sorted(p.name for p in (sharded.path / PARQUET_DIR).iterdir())
    assert arrow_names == [f"data-{i:05d}-of-{n_sources:05d}.arrow" for i in range(n_sources)]
    assert parquet_names == [f"train-{i:05d}-of-{n_sources:05d}.parquet" for i in range(n_sources)]
    assert [f["filename"] for f in json.loads((sharded.path / DATASET_DIR / "state.json").read_text())["_data_files"]] == arrow_names
    assert sorted(p.name for p in (whole.path / DATASET_DIR).iterdir()) == ["data-00000-of-00001.arrow", "dataset_info.json", "state.json"]

    rows = saved_rows(whole.path)
    assert len(rows) == whole.n_rows and saved_rows(sharded.path) == rows
    assert parquet_rows(whole.path) == rows and parquet_rows(sharded.path) == rows
    assert verify_version(sharded_workspace, sharded.version_id) == []


@pytest.mark.parametrize("config", [SFT, PRETRAIN], ids=["sft", "pretrain"])
def test_a_version_built_in_slices_of_a_few_items_is_the_version_built_a_source_at_a_time(
    built: Path, tmp_path: Path, monkeypatch, config: ExportConfig
):
    whole = export_version(copy_of(built, tmp_path / "whole"), config, created_at=WHEN)
    monkeypatch.setattr(export, "ROWS_PER_CHUNK", 2)  # sft: a slice ends where its conversations do, so most hold more
    sliced = export_version(copy_of(built, tmp_path / "sliced"), config, created_at=WHEN)
    assert sliced.version_id == whole.version_id
    for name in ("manifest.json", "README.md", *([SEED_NAME] if config.kind == "sft" else [])):
        assert (sliced.path / name).read_bytes() == (whole.path / name).read_bytes(), name
    assert saved_rows(sliced.path) == saved_rows(whole.path)
    assert parquet_rows(sliced.path) == parquet_rows(whole.path)


def test_row_chunks_never_cut_a_conversation(built: Path):
    import polars as pl

    pairs = Workspace.open(built).items().filter(pl.col("kind") == "pair")
    biggest = pairs.group_by("source_id").len().sort("len")["source_id"][-1]
    talks = pairs.filter(pl.col("source_id") == biggest)
    assert talks["conversation_id"].n_unique() > 3
    for rows in (1, 2, 5, talks.height):
        chunks = list(export.row_chunks(talks, whole_conversations=True, rows=rows))
        assert pl.concat(chunks).equals(talks)
        seen: set[str] = set()
        for chunk in chunks:
            conversations = set(chunk["conversation_id"].to_list())
            assert not conversations & seen, rows
            seen |= conversations
            assert chunk.height >= min(rows, talks.height) or chunk is chunks[-1]
        texts = list(export.row_chunks(talks, whole_conversations=False, rows=rows))
        assert [c.height for c in texts[:-1]] == [rows] * (len(texts) - 1) and pl.concat(texts).equals(talks)


@pytest.mark.parametrize("config", [SFT, PRETRAIN], ids=["sft", "pretrain"])
def test_the_streamed_files_are_what_datasets_writes(built: Path, tmp_path: Path, config: ExportConfig):
    from datasets import Dataset, load_from_disk
    from datasets.table import InMemoryTable

    version = export_version(copy_of(built, tmp_path / "ws"), config, created_at=WHEN).path
    loaded = load_from_disk(str(version / DATASET_DIR))
    fingerprint = json.loads((version / DATASET_DIR / "state.json").read_text())["_fingerprint"]
    assert fingerprint == json.loads((version / "manifest.json").read_text())["digest"][:16]
    # What the export wrote before it streamed: the whole table in memory, saved by datasets.
    dataset = Dataset(InMemoryTable(loaded.data.table), info=loaded.info, split="train", fingerprint=fingerprint)
    dataset.save_to_disk(str(tmp_path / "saved"))
    for name in ("state.json", "dataset_info.json", "data-00000-of-00001.arrow"):
        assert (version / DATASET_DIR / name).read_bytes() == (tmp_path / "saved" / name).read_bytes(), name
    dataset.to_parquet(str(tmp_path / "train.parquet"))
    [shard] = (version / PARQUET_DIR).iterdir()
    assert pq.read_schema(shard).metadata == pq.read_schema(tmp_path / "train.parquet").metadata
    assert pq.read_table(shard).equals(pq.read_table(tmp_path / "train.parquet"))


def test_a_copy_of_no_rows_loads_as_no_rows_with_the_features(tmp_path: Path):
    from datasets import DatasetInfo, Features, load_from_disk

    features = export._pretrain_features()
    files = DatasetFiles(tmp_path, features, DatasetInfo(features=features), "0" * 16)
    files.close()
    saved = load_from_disk(str(tmp_path / DATASET_DIR))
    assert len(saved) == 0 and saved.features == features
    [shard] = (tmp_path / PARQUET_DIR).iterdir()
    assert shard.name == "train-00000-of-00001.parquet"  # as to_parquet writes 0 rows (load_dataset finds no data in it)
    assert pq.read_table(shard).num_rows == 0 and Features.from_arrow_schema(pq.read_schema(shard)) == features


def test_the_cards_examples_kept_as_rows_stream_are_those_chosen_from_all_rows(built: Path, tmp_path: Path):
    version = export_version(copy_of(built, tmp_path / "ws"), SFT, created_at=WHEN).path
    rows = saved_rows(version)
    multi = [r for r in rows if len(r["item_ids"]) > 1]
    single = [r for r in rows if len(r["item_ids"]) == 1]
    assert multi and len(single) >= 3
    for chunk in (1, 2, len(rows)):
        examples = CardExamples(conversations=True)
        for start in range(0, len(rows), chunk):
            examples.see(rows[start : start + chunk])
        assert examples.chosen() == multi[:1] + single[:2] and examples.n_multi_turn == len(multi)
    texts = CardExamples(conversations=False)
    texts.see(rows[:1])
    texts.see(rows[1:])
    assert texts.chosen() == rows[:3] and texts.n_multi_turn == 0


@pytest.mark.parametrize("share", [0.05, 0.3, 0.6, 0.9])
def test_the_disk_filling_up_while_the_files_stream_is_one_error_and_leaves_nothing(
    built: Path, tmp_path: Path, small_disk: Path, monkeypatch, share: float
):
    from datasets import config as datasets_config

    # Many shards (a write per source, a shard per write), so the disk fills up inside one of them or between.
    monkeypatch.setattr(dataset_files, "WRITE_BYTES", 1)
    monkeypatch.setattr(dataset_files, "PARQUET_SHARD_BYTES", 1)
    monkeypatch.setattr(datasets_config, "MAX_SHARD_SIZE", 1)
    done = export_version(copy_of(built, tmp_path / "room"), PRETRAIN, created_at=WHEN)
    data_bytes = sum(p.stat().st_size for d in (DATASET_DIR, PARQUET_DIR) for p in (done.path / d).iterdir())
    workspace = copy_of(built, small_disk / "ws")
    free = shutil.disk_usage(small_disk).free
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - int(share * data_bytes)))  # room for a share of the data files
    with pytest.raises(ExportError) as raised:
        export_version(workspace, PRETRAIN, created_at=WHEN)
    message = str(raised.value)
    assert len(message.splitlines()) == 1 and "disk full" in message and message.endswith("nothing was exported"), message
    versions = workspace.root / VERSIONS_DIR
    assert list_versions(workspace) == [] and sorted(p.name for p in versions.iterdir()) == [".lock"]
    filler.unlink()
    again = export_version(workspace, PRETRAIN, created_at=WHEN)  # room again: the same version
    assert again.version_id == done.version_id and verify_version(workspace, again.version_id) == []
