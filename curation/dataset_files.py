"""A dataset version's two copies of its rows, written as the rows arrive (export's writer).

`DatasetFiles` writes `dataset/` (what `datasets.load_from_disk` reads: Arrow shards,
state.json, dataset_info.json) and `data/` (Parquet shards, what `load_dataset("parquet")`
reads), with datasets' own writers, a bounded batch at a time: memory holds the rows gathered
for the next write, never the version. `curation.export` builds the rows and decides the
version's other files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from curation.versions import DATASET_DIR, PARQUET_DIR

PARQUET_SHARD_BYTES = 256 * 1024 * 1024
WRITE_BYTES = 32 * 1024 * 1024  # rows gathered before they are written: one Parquet row group, one Arrow write


class ShardedCopy:
    """One copy of the dataset written as its rows arrive, in shards of about `max_bytes` (Arrow bytes):
    `<stem>-NNNNN-of-NNNNN.<suffix>`, named once the count is known.

    `open_writer(stream)` gives a `datasets` writer (`ArrowWriter`, `ParquetWriter`), so each file carries
    the features in its schema metadata exactly as `save_to_disk`/`to_parquet` write them. The stream is
    pyarrow's own file, not a Python one: a write error (disk full) then comes back as an exception
    without passing through a Python callback inside pyarrow (which, failing there, leaves the
    thread's recursion count off: a later `ast.parse` in the process fails on CPython 3.11). A copy of 0
    rows is one shard with the schema and no rows (which `load_from_disk` loads).
    """

    def __init__(self, directory: Path, stem: str, suffix: str, max_bytes: int, open_writer: Any):
        self.directory, self.stem, self.suffix, self.max_bytes = directory, stem, suffix, max_bytes
        self.open_writer = open_writer
        self.paths: list[Path] = []
        self.writer: Any = None
        self.stream: Any = None
        self.shard_bytes = 0

    def write(self, table: Any, batch_rows: int) -> None:
        if self.writer is None or self.shard_bytes >= self.max_bytes:
            self._next_shard()
        self.writer.write_table(table, writer_batch_size=batch_rows)
        self.shard_bytes += table.nbytes

    def close(self) -> list[str]:
        """Finish the last shard and name every shard; returns their names in order."""
        if self.writer is None:
            self._next_shard()
        self._finish_shard()
        names = [f"{self.stem}-{i:05d}-of-{len(self.paths):05d}.{self.suffix}" for i in range(len(self.paths))]
        for path, name in zip(self.paths, names):
            path.rename(self.directory / name)
        return names

    def discard(self) -> None:
        """Close the open shard after a failure (its files are removed with the staging directory)."""
        if self.writer is not None:
            self.writer.close()
            self.stream.close()
            self.writer = self.stream = None

    def _next_shard(self) -> None:
        if self.writer is not None:
            self._finish_shard()
        import pyarrow as pa

        path = self.directory / f".{self.stem}-{len(self.paths):05d}.{self.suffix}.partial"
        self.paths.append(path)
        self.stream = pa.OSFile(str(path), "wb")
        self.writer, self.shard_bytes = self.open_writer(self.stream), 0

    def _finish_shard(self) -> None:
        try:
            self.writer.finalize()  # closes the stream too
        finally:
            self.writer.close()
            if not self.stream.closed:
                self.stream.close()
            self.writer = self.stream = None


class DatasetFiles:
    """The version's two copies of the rows, written a bounded batch at a time: `dataset/` (what
    `datasets.load_from_disk` reads) and `data/` (Parquet shards, what `load_dataset` reads).

    Memory holds the rows gathered for the next write (about WRITE_BYTES, or one batch if more),
    never the version's.
    """

    def __init__(self, staging: Path, features: Any, info: Any, fingerprint: str):
        from datasets import config as datasets_config
        from datasets.arrow_writer import ArrowWriter, ParquetWriter
        from datasets.utils.py_utils import convert_file_size_to_int

        self.features, self.info, self.fingerprint = features, info, fingerprint
        self.saved = staging / DATASET_DIR
        self.saved.mkdir()
        (staging / PARQUET_DIR).mkdir()
        # As save_to_disk writes its shards (features, local files embedded) and to_parquet its file.
        self.arrow = ShardedCopy(
            self.saved, "data", "arrow", convert_file_size_to_int(datasets_config.MAX_SHARD_SIZE),
            lambda stream: ArrowWriter(features=features, stream=stream, embed_local_files=True),
        )
        self.parquet = ShardedCopy(
            staging / PARQUET_DIR, "train", "parquet", PARQUET_SHARD_BYTES,
            lambda stream: ParquetWriter(features=features, stream=stream, use_content_defined_chunking=True, write_page_index=True),
        )
        self.pending: list[Any] = []
        self.pending_bytes = 0
        self.n_rows = 0

    def add(self, table: Any) -> None:
        self.pending.append(table)
        self.pending_bytes += table.nbytes
        self.n_rows += table.num_rows
        if self.pending_bytes >= WRITE_BYTES:
            self._flush()

    def close(self) -> None:
        """Write what is gathered, name the shards, and write dataset/'s state.json and dataset_info.json."""
        from datasets import Dataset
        from datasets.table import InMemoryTable

        self._flush()
        self.parquet.close()
        names = self.arrow.close()
        # The two JSON files are datasets' own: save_to_disk of an empty dataset with this info, split and
        # fingerprint writes them (and no shard, for 0 rows); only the shard list is ours.
        empty = Dataset(InMemoryTable(self.features.arrow_schema.empty_table()), info=self.info, split="train", fingerprint=self.fingerprint)
        scratch = self.saved / ".empty"
        empty.save_to_disk(str(scratch))
        (scratch / "dataset_info.json").rename(self.saved / "dataset_info.json")
        state = json.loads((scratch / "state.json").read_text(encoding="utf-8"))
        state["_data_files"] = [{"filename": name} for name in names]
        with open(self.saved / "state.json", "w", encoding="utf-8") as file:
            json.dump(state, file, indent=2, sort_keys=True)  # as save_to_disk dumps it
        shutil.rmtree(scratch)

    def discard(self) -> None:
        self.pending = []
        self.arrow.discard()
        self.parquet.discard()

    def _flush(self) -> None:
        import pyarrow as pa
        from datasets import config as datasets_config
        from datasets.arrow_writer import get_writer_batch_size_from_data_size

        if not self.pending:
            return
        table = pa.concat_tables(self.pending).combine_chunks() if len(self.pending) > 1 else self.pending[0]
        self.pending, self.pending_bytes = [], 0
        # Record batches and row groups sized as datasets sizes them (under MAX_ROW_GROUP_SIZE each).
        group_rows = get_writer_batch_size_from_data_size(table.num_rows, table.nbytes) if table.nbytes else max(1, table.num_rows)
        self.arrow.write(table, min(datasets_config.DEFAULT_MAX_BATCH_SIZE, group_rows))
        self.parquet.write(table, group_rows)
