"""Stages that go through the items a part at a time (issue 17): the same workspace as the whole-table route.

A workspace made with tiny parts (`Workspace.part_rows`) holds its items in many part
files; every stage run on it must commit exactly what the same stage commits on a
workspace of one part, in memory. And a part a generation leaves unchanged is shared
with the generation before (hard-linked), never rewritten.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

import curation.distributed
import curation.partitioned_dedup
from curation.dedup import run_dedup
from curation.distributed import run_dedup_distributed
from curation.workspace import Workspace, init_workspace

DATA = Path(__file__).parent / "data"
DIALOGUE = [DATA / "talks-excerpt.txt", DATA / "talks-19-24.txt", DATA / "dedup-talks-272-274.txt",
            DATA / "dedup-talks-vol2-272-274.txt", DATA / "dedup-talks-322.txt", DATA / "dedup-talks-vol2-322.txt"]
PROSE = [DATA / "nan-yar-excerpt.txt", DATA / "prose-nan-yar.txt", DATA / "prose-talks-foreword.txt"]


def build(root: Path, part_rows: int | None) -> Workspace:
    workspace = init_workspace(root)
    if part_rows is not None:
        workspace.part_rows = part_rows
    workspace.ingest(DIALOGUE, "dialogue")
    workspace.ingest(PROSE, "prose")
    return workspace


@pytest.fixture
def whole_and_parted(tmp_path: Path) -> tuple[Workspace, Workspace]:
    return build(tmp_path / "whole", None), build(tmp_path / "parted", 23)


def test_many_parts_hold_the_same_items_as_one(whole_and_parted):
    whole, parted = whole_and_parted
    _, parts = parted.item_parts()
    assert len(whole.item_parts()[1]) == 2 and len(parts) > 10  # one part per ingest, or many
    assert parted.items().equals(whole.items())
    assert parted.scan_items().collect().equals(whole.items())
    assert [part.offset for part in parts] == [sum(p.rows for p in parts[:i]) for i in range(len(parts))]


def test_an_ingest_shares_the_parts_it_leaves_unchanged(tmp_path: Path):
    workspace = init_workspace(tmp_path / "ws")
    workspace.part_rows = 30
    workspace.ingest(DIALOGUE[:2], "dialogue")
    _, before = workspace.item_parts()
    workspace.ingest(PROSE, "prose")
    _, after = workspace.item_parts()
    assert len(after) > len(before)
    for old, new in zip(before, after):
        assert os.path.samefile(old.path, new.path)  # linked, not copied
    assert not any((workspace.root / "staging").iterdir())


def test_an_ingest_after_a_stage_widens_its_new_parts_to_the_stage_columns(tmp_path: Path):
    workspace = init_workspace(tmp_path / "ws")
    workspace.part_rows = 30
    workspace.ingest(DIALOGUE[:2], "dialogue")
    run_dedup(workspace)
    workspace.ingest(PROSE, "prose")
    schemas = {tuple(pl.read_parquet_schema(part.path).items()) for part in workspace.item_parts()[1]}
    assert len(schemas) == 1 and "dedup_cluster" in dict(next(iter(schemas)))
    new = workspace.items().filter(pl.col("kind") == "passage")
    assert new.height and new["dedup_cluster"].is_null().all()  # not deduped yet: null, not made up


def test_streamed_dedup_commits_what_in_memory_dedup_commits(whole_and_parted, monkeypatch):
    whole, parted = whole_and_parted
    expected = run_dedup(whole)
    assert expected.n_near_duplicates + expected.n_exact_duplicates > 0 and expected.n_cross_source_clusters > 0
    monkeypatch.setattr(curation.distributed, "IN_MEMORY_ROWS", 0)  # the partitioned route, part by part
    monkeypatch.setattr(curation.partitioned_dedup, "CONFIRM_PAIRS_PER_TASK", 3)  # many confirm groups
    streamed = run_dedup_distributed(parted, rows_per_partition=17)
    assert parted.items().equals(whole.items())
    assert {k: v for k, v in vars(streamed).items() if k not in ("seconds", "generation")} == {
        k: v for k, v in vars(expected).items() if k not in ("seconds", "generation")}
    assert run_dedup(parted).generation == streamed.generation  # unchanged: nothing new committed


@pytest.fixture(scope="module")
def model():
    from sentence_transformers import SentenceTransformer

    from curation.score import PACKAGED_MODEL, resolve_model

    return SentenceTransformer(resolve_model(PACKAGED_MODEL), device="cpu")


def test_streamed_scoring_commits_what_one_part_commits(whole_and_parted, model):
    from curation.score import ConceptScorer, ScoreConfig, run_score

    config = ScoreConfig(backend="torch")
    whole, parted = whole_and_parted
    expected = run_score(whole, scorer=ConceptScorer(config, model=model))
    seen: list[tuple[int, int]] = []
    streamed = run_score(parted, scorer=ConceptScorer(config, model=model), progress=lambda *done: seen.append(done))
    # Equal but in the last bits of a score: an embedding's rounding depends on the batch its text was
    # encoded in (padding, kernel blocking), and parts are encoded in batches of their own.
    got, want = parted.items(), whole.items()
    assert got.drop("concept_score").equals(want.drop("concept_score"))
    assert (got["concept_score"] - want["concept_score"]).abs().max() < 1e-6
    assert len(seen) == len(parted.item_parts()[1]) and seen[-1] == (streamed.n_items, streamed.n_items)
    for field in ("n_items", "n_scored", "n_pairs", "n_passages", "n_silence", "n_empty", "n_texts"):
        assert getattr(streamed, field) == getattr(expected, field), field
    for name, summary in expected.distributions.items():
        assert streamed.distributions[name] == pytest.approx(summary, abs=1e-6), name
    again = run_score(parted, scorer=ConceptScorer(config, model=model))
    assert again.generation is None and again.n_encoded == 0  # unchanged: all from the store, nothing committed


def test_streamed_critique_commits_what_one_part_commits(whole_and_parted):
    from critic.offline import OfflineCritic
    from critic.stage import run_critique

    whole, parted = whole_and_parted
    expected = run_critique(whole, OfflineCritic())
    _, before = parted.item_parts()
    streamed = run_critique(parted, OfflineCritic())
    assert parted.items().equals(whole.items())
    assert (streamed.n_scored, streamed.n_passages_skipped, streamed.mean_score) == (
        expected.n_scored, expected.n_passages_skipped, expected.mean_score)
    _, after = parted.item_parts()
    # Parts of passages only gain null critic columns: rewritten once, with the pairs' parts.
    assert len(after) == len(before) and run_critique(parted, OfflineCritic()).generation == streamed.generation


@pytest.mark.parametrize(("share", "at_least"), [(0.2, 5), (0.01, 40), (0.0, 10_000)])
def test_the_calibration_sample_drawn_part_by_part_is_the_whole_table_s(whole_and_parted, share, at_least):
    from curation.cascade import calibration_sample
    from curation.score import calibration_candidates, scored_texts

    _, parted = whole_and_parted
    texts = [text for text in scored_texts(parted.items())[0] if text is not None]
    candidates = calibration_candidates(parted.item_parts()[1], share, at_least)
    assert calibration_sample(candidates, share, at_least) == calibration_sample(texts, share, at_least)
    assert len(candidates) < len(set(texts)) or share == 0.0


def test_a_version_exported_from_many_parts_is_the_one_exported_from_one(whole_and_parted, tmp_path):
    import hashlib

    from curation.export import export_version
    from curation.responses import ResponseStore
    from curation.selection import ExportConfig

    results = []
    for workspace in whole_and_parted:
        run_dedup(workspace)
        pairs = workspace.items().filter(pl.col("kind") == "pair").head(3)
        with ResponseStore.open(workspace.root) as store:  # an edit: its exported hash is recomputed from the parts
            first, second, third = pairs.iter_rows(named=True)
            store.record(first["item_id"], first["content_hash"], "ana", "edit", edited_answer="Who asks?")
            store.record(second["item_id"], second["content_hash"], "ana", "reject", reason="not contemplative")
            store.record(third["item_id"], third["content_hash"], "ana", "accept")
        made = [export_version(workspace, ExportConfig(name=kind, kind=kind, include_unreviewed=True,
                                                       include_answers_in_pretrain=kind == "pretrain"),
                               created_at="2026-01-01T00:00:00+00:00") for kind in ("sft", "pretrain")]
        results.append([(result.version_id, {str(p.relative_to(result.path)): hashlib.sha256(p.read_bytes()).hexdigest()
                                             for p in sorted(result.path.rglob("*")) if p.is_file()}) for result in made])
    assert results[0] == results[1]
