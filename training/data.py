"""Training data: dataset versions only, tokenized with the origin of every token kept.

`open_version(dir, kind)` refuses anything but an intact dataset version of the wanted kind
(checksums, manifest and rows recomputed by curation.versions.verify_path), so a checkpoint's
lineage can always name the exact data. The version is read into memory
(`load_from_disk(..., keep_in_memory=True)`): `datasets` would otherwise write cache files
into the read-only version directory.

Every token carries its group, a (source, section) pair, from tokenization through packing
into the batch (`satsang_origin`), and the trainer counts what it trained on per group
(`TokenLedger`). So the audit's numbers are the trainer's own, and they add up by
construction: a source's count is the sum of its sections', the total the sum of all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.lineage import TrainingError

if TYPE_CHECKING:
    import torch
    from datasets import Dataset

ORIGIN = "satsang_origin"  # per-token group index, in datasets (pretrain) and in batches (both stages)
GROUP = "satsang_group"  # per-row group index (sft: a conversation is one talk of one source)
NO_SECTION = ""


@dataclass(frozen=True)
class DatasetVersion:
    """A verified dataset version, as training reads it."""

    path: Path
    version_id: str
    name: str
    kind: str  # "pretrain" | "sft"
    digest: str
    manifest_sha256: str  # of the manifest.json bytes: what audit rechecks
    created_at: str
    n_items: int
    n_rows: int
    sources: tuple[dict[str, Any], ...]  # the manifest's source records

    def titles(self) -> dict[str, str]:
        return {s["source_id"]: s.get("title", "") for s in self.sources}

    def record(self) -> dict[str, Any]:
        """What a lineage says about this version."""
        return {
            "version_id": self.version_id,
            "name": self.name,
            "kind": self.kind,
            "digest": self.digest,
            "manifest_sha256": self.manifest_sha256,
            "created_at": self.created_at,
            "path": str(self.path),
            "n_items": self.n_items,
            "n_rows": self.n_rows,
            "sources": [
                {k: s.get(k) for k in ("source_id", "title", "kind", "licence", "items", "tokens")} for s in self.sources
            ],
        }


def open_version(path: str | Path, kind: str | None = None) -> DatasetVersion:
    """The version at `path`, verified; TrainingError naming the problem when it is not an intact version of `kind`."""
    from curation.versions import CHECKSUMS_NAME, MANIFEST_NAME, MODES_LABEL, ExportError, load_manifest_path, verify_path

    directory = Path(path)
    if not directory.is_dir():
        raise TrainingError(f"{directory}: no such dataset version directory")
    if not (directory / MANIFEST_NAME).is_file() or not (directory / CHECKSUMS_NAME).is_file():
        raise TrainingError(
            f"{directory}: not a dataset version (no {MANIFEST_NAME} and {CHECKSUMS_NAME}); training reads versions only: satsang export --name NAME"
        )
    # Modes are repaired where they can be; a version whose every file and row verifies is the one exported.
    problems = [p for p in verify_path(directory) if not p.startswith(f"{MODES_LABEL}: ")]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise TrainingError(f"{directory}: dataset version does not verify ({shown})")
    try:
        manifest = load_manifest_path(directory)
    except ExportError as error:
        raise TrainingError(str(error)) from None
    if kind is not None and manifest.get("kind") != kind:
        raise TrainingError(
            f"{directory.name} is a {manifest.get('kind')} version; this stage trains on {kind} versions (satsang export --kind {kind})"
        )
    counts = manifest.get("counts", {})
    return DatasetVersion(
        path=directory.resolve(),
        version_id=manifest["version_id"],
        name=manifest.get("name", ""),
        kind=manifest.get("kind", ""),
        digest=manifest.get("digest", ""),
        manifest_sha256=hashlib.sha256((directory / MANIFEST_NAME).read_bytes()).hexdigest(),
        created_at=manifest.get("created_at", ""),
        n_items=int(counts.get("items", 0)),
        n_rows=int(counts.get("rows", 0)),
        sources=tuple(manifest.get("sources", [])),
    )


def resolve_dataset(ref: str | Path, workspace: str | Path | None = None) -> Path:
    """A version directory from a path to one, or from an id, unique id prefix or name (its latest) in the workspace."""
    from curation.versions import MANIFEST_NAME, resolve_version
    from curation.workspace import Workspace

    path = Path(ref).expanduser()
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return path
    if path.is_dir():
        raise TrainingError(f"{path}: not a dataset version (no {MANIFEST_NAME}); training reads versions only: satsang export --name NAME")
    return resolve_version(Workspace.open(workspace), str(ref))


def load_rows(version: DatasetVersion) -> Dataset:
    from datasets import load_from_disk
    from datasets.utils.logging import disable_progress_bar

    from curation.versions import DATASET_DIR

    disable_progress_bar()
    return load_from_disk(str(version.path / DATASET_DIR), keep_in_memory=True)


@dataclass
class Groups:
    """(source_id, section) pairs, indexed in order of first appearance in the dataset."""

    keys: list[tuple[str, str]] = field(default_factory=list)
    index: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, source_id: str, section: str) -> int:
        key = (source_id, section or NO_SECTION)
        if key not in self.index:
            self.index[key] = len(self.keys)
            self.keys.append(key)
        return self.index[key]

    def __len__(self) -> int:
        return len(self.keys)


# ---- pretraining ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedData:
    dataset: Dataset
    groups: Groups
    dataset_tokens: list[int]  # per group: tokens in the training sequences once (for pretraining, EOS included)
    sequences: dict[str, Any] = field(default_factory=dict)  # SequenceCount.to_dict() of the training rows
    eval_dataset: Dataset | None = None  # the held-out rows, prepared the same way
    validation: dict[str, Any] | None = None  # which rows were held out, and why (held_out_rows)


def pretrain_dataset(
    version: DatasetVersion, tokenizer: Any, max_seq_len: int, packing: bool = True, validation_fraction: float = 0.0
) -> PreparedData:
    """Token blocks of a pretrain version: `input_ids` and, per token, its group (`satsang_origin`).

    Each text is tokenized without special tokens and ended with EOS. Packing concatenates
    them and cuts blocks of exactly max_seq_len (the last may be shorter), so documents share
    blocks and nothing is padding. Without packing each text is cut into blocks of its own.
    No token is dropped either way. With validation_fraction, held-out talks (held_out_rows)
    are packed apart into `eval_dataset`.
    """
    rows = load_rows(version)
    if "text" not in rows.column_names:
        raise TrainingError(f"{version.path}: a pretrain version has a 'text' column; this one has {', '.join(rows.column_names)}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TrainingError("the tokenizer has no EOS token to end each text with")
    groups = Groups()
    group_of_row = [groups.add(sid, sec) for sid, sec in zip(list(rows["source_id"]), list(rows["section"]))]
    train_rows, eval_rows, validation = held_out_rows(version, groups, group_of_row, validation_fraction)
    texts = list(rows["text"])
    train = _pack([texts[i] for i in train_rows], [group_of_row[i] for i in train_rows], tokenizer, max_seq_len, packing, len(groups))
    if train is None:
        raise TrainingError(f"{version.path}: no text to train on")
    held = _pack([texts[i] for i in eval_rows], [group_of_row[i] for i in eval_rows], tokenizer, max_seq_len, packing, len(groups))
    dataset, dataset_tokens, count = train
    return PreparedData(
        dataset, groups, dataset_tokens, count.to_dict(), eval_dataset=held[0] if held else None, validation=_with_counts(validation, held)
    )


def _with_counts(validation: dict[str, Any] | None, held: tuple[Any, list[int], SequenceCount] | None) -> dict[str, Any] | None:
    if validation is None or held is None:
        return validation
    return {**validation, "sequences": held[2].sequences, "tokens": int(sum(held[1]))}


def _pack(
    texts: list[str], group_of_row: list[int], tokenizer: Any, max_seq_len: int, packing: bool, n_groups: int
) -> tuple[Dataset, list[int], SequenceCount] | None:
    """(blocks with their origins, tokens per group, the count) of `texts`; None when there is no text."""
    import numpy as np
    from datasets import Dataset

    if not texts:
        return None
    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    lengths = np.array([len(ids) + 1 for ids in encoded], dtype=np.int64)
    dataset_tokens = np.bincount(np.array(group_of_row, dtype=np.int64), weights=lengths, minlength=n_groups).astype(np.int64).tolist()
    split = 0
    if packing:
        flat = np.fromiter((t for ids in encoded for t in (*ids, eos)), dtype=np.int64, count=int(lengths.sum()))
        origin = np.repeat(np.array(group_of_row, dtype=np.int64), lengths)
        cuts = range(0, len(flat), max_seq_len)
        blocks = [flat[i : i + max_seq_len].tolist() for i in cuts]
        origins = [origin[i : i + max_seq_len].tolist() for i in cuts]
    else:
        blocks, origins = [], []
        for ids, group in zip(encoded, group_of_row):
            ids = [*ids, eos]
            split += len(ids) > max_seq_len
            for i in range(0, len(ids), max_seq_len):
                blocks.append(ids[i : i + max_seq_len])
                origins.append([group] * len(blocks[-1]))
    if not blocks:
        return None
    dataset = Dataset.from_dict({"input_ids": blocks, ORIGIN: origins})
    method = "texts packed into max_seq_len blocks (no token dropped)" if packing else "each text cut into max_seq_len blocks (no token dropped)"
    count = SequenceCount(rows=len(texts), sequences=len(blocks), split=split, max_seq_len=max_seq_len, method=method)
    return dataset, [int(n) for n in dataset_tokens], count


# ---- sequences and the held-out split -------------------------------------------------------


@dataclass(frozen=True)
class SequenceCount:
    """What became of a split's rows on the way to training sequences of at most max_seq_len tokens."""

    rows: int  # the version's rows (texts, conversations) in this split
    sequences: int  # training sequences made of them
    split: int = 0  # rows longer than max_seq_len, made into several sequences (SFT: on turn boundaries)
    truncated: int = 0  # rows with an exchange longer than max_seq_len on its own, cut to fit (SFT)
    dropped: int = 0  # rows with nothing left to learn once cut (SFT: no answer token within max_seq_len)
    tokens_cut: int = 0  # tokens of those rows that no sequence holds
    max_seq_len: int = 0
    method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("rows", "sequences", "split", "truncated", "dropped", "tokens_cut", "max_seq_len", "method")}


def held_out_rows(
    version: DatasetVersion, groups: Groups, group_of_row: list[int], fraction: float
) -> tuple[list[int], list[int], dict[str, Any] | None]:
    """(training rows, held-out rows, the validation record): whole talks held out, chosen from the version id.

    The unit is the talk, a (source, section) group, so no talk is on both sides; a version of
    one talk is split by row (conversation) instead. The held-out units are the
    round(fraction x units) (at least one) with the smallest sha256 of "version id, unit":
    the same version always holds out the same talks, and another version draws afresh.
    """
    everything = list(range(len(group_of_row)))
    if fraction <= 0:
        return everything, [], None
    by_talk = len(groups) >= 2
    units = list(range(len(groups))) if by_talk else everything

    def unit_name(unit: int) -> str:
        return "\0".join(groups.keys[unit]) if by_talk else str(unit)

    count = max(1, round(fraction * len(units)))
    if count >= len(units):
        raise TrainingError(f"validation_fraction {fraction} of {len(units)} {'talks' if by_talk else 'rows'} leaves nothing to train on")
    ranked = sorted(units, key=lambda u: hashlib.sha256(f"{version.version_id}\0{unit_name(u)}".encode()).hexdigest())
    held = set(ranked[:count])
    unit_of_row = group_of_row if by_talk else everything
    eval_rows = [i for i in everything if unit_of_row[i] in held]
    record = {
        "fraction": fraction,
        "unit": "talk (source, section)" if by_talk else "row",
        "units": len(units),
        "held_out_units": count,
        "rows": len(eval_rows),
        "held_out": [{"source_id": groups.keys[u][0], "section": groups.keys[u][1]} for u in sorted(held)]
        if by_talk
        else [{"row": i} for i in eval_rows],
    }
    return [i for i in everything if unit_of_row[i] not in held], eval_rows, record


# ---- sft --------------------------------------------------------------------------------------


def sft_dataset(version: DatasetVersion) -> tuple[Dataset, Groups]:
    """The conversations of an sft version (`messages`), each with its group (`satsang_group`)."""
    rows = load_rows(version)
    if "messages" not in rows.column_names:
        raise TrainingError(f"{version.path}: an sft version has a 'messages' column; this one has {', '.join(rows.column_names)}")
    groups = Groups()
    group_of_row = [groups.add(sid, sec) for sid, sec in zip(list(rows["source_id"]), list(rows["section"]))]
    dataset = rows.select_columns(["messages"]).add_column(GROUP, group_of_row)
    return dataset, groups


def exchanges(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """(system messages, exchanges): an exchange is a question (user turns) with its answer (the turns after it)."""
    prefix: list[dict[str, Any]] = []
    turns: list[list[dict[str, Any]]] = []
    for message in messages:
        if message["role"] == "system" and not turns:
            prefix.append(message)
        elif not turns or (message["role"] == "user" and turns[-1][-1]["role"] != "user"):
            turns.append([message])
        else:
            turns[-1].append(message)
    return prefix, turns


def encode_conversation(tokenizer: Any, messages: list[dict[str, Any]], assistant_only_loss: bool) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a conversation in the tokenizer's chat template; labels -100 off the answers when assistant_only_loss."""
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=assistant_only_loss)
    ids = list(encoded["input_ids"])
    if not assistant_only_loss:
        return ids, ids
    return ids, [t if m else -100 for t, m in zip(ids, encoded["assistant_masks"])]


def conversation_windows(
    tokenizer: Any, messages: list[dict[str, Any]], max_seq_len: int, assistant_only_loss: bool
) -> tuple[list[tuple[list[int], list[int]]], int, bool]:
    """(sequences, tokens cut, whether an exchange was cut) of one conversation, each sequence at most max_seq_len tokens.

    A conversation that fits is one sequence. One that does not is split on exchange
    boundaries, each window the system turns and as many whole exchanges as fit, so every
    answer is trained with its question before it. An exchange longer than max_seq_len on
    its own is cut at the end (it is the one thing that loses tokens, and it is counted); a
    window left with no answer token is not a sequence.
    """
    whole = encode_conversation(tokenizer, messages, assistant_only_loss)
    if len(whole[0]) <= max_seq_len:
        return [whole], 0, False
    prefix, turns = exchanges(messages)
    windows: list[tuple[list[int], list[int]]] = []
    cut, truncated, start = 0, False, 0
    while start < len(turns):
        end = start + 1
        window = encode_conversation(tokenizer, prefix + [m for turn in turns[start:end] for m in turn], assistant_only_loss)
        while end < len(turns) and len(window[0]) <= max_seq_len:
            wider = encode_conversation(tokenizer, prefix + [m for turn in turns[start : end + 1] for m in turn], assistant_only_loss)
            if len(wider[0]) > max_seq_len:
                break
            window, end = wider, end + 1
        ids, labels = window
        if len(ids) > max_seq_len:
            cut += len(ids) - max_seq_len
            truncated = True
            ids, labels = ids[:max_seq_len], labels[:max_seq_len]
        if any(label != -100 for label in labels[1:]):
            windows.append((ids, labels))
        else:
            cut += len(ids)
        start = end
    return windows, cut, truncated


def sft_sequences(
    version: DatasetVersion, tokenizer: Any, max_seq_len: int, assistant_only_loss: bool = True, validation_fraction: float = 0.0
) -> PreparedData:
    """The conversations of an sft version as training sequences (`input_ids`, `labels`, `satsang_group`), none cut silently.

    Tokenized here (not by TRL, which would truncate at max_seq_len with a warning): see
    conversation_windows. `sequences` counts rows, sequences, split, truncated and dropped
    rows and the tokens cut; `dataset_tokens` are the tokens of the sequences (what trains).
    """
    from datasets import Dataset

    rows, groups = sft_dataset(version)
    group_of_row = list(rows[GROUP])
    conversations = list(rows["messages"])
    train_rows, eval_rows, validation = held_out_rows(version, groups, group_of_row, validation_fraction)

    def build(indices: list[int]) -> tuple[Dataset | None, list[int], SequenceCount]:
        columns: dict[str, list[Any]] = {"input_ids": [], "labels": [], GROUP: [], "satsang_row": []}
        tokens = [0] * len(groups)
        split = truncated = dropped = cut = 0
        for i in indices:
            windows, lost, was_cut = conversation_windows(tokenizer, conversations[i], max_seq_len, assistant_only_loss)
            split += len(windows) > 1
            truncated += was_cut and bool(windows)
            dropped += not windows
            cut += lost
            for ids, labels in windows:
                columns["input_ids"].append(ids)
                columns["labels"].append(labels)
                columns[GROUP].append(group_of_row[i])
                columns["satsang_row"].append(i)
                tokens[group_of_row[i]] += len(ids)
        count = SequenceCount(
            rows=len(indices), sequences=len(columns["input_ids"]), split=split, truncated=truncated, dropped=dropped, tokens_cut=cut,
            max_seq_len=max_seq_len, method="conversations split on turn boundaries into max_seq_len windows, each with its question",
        )
        return (Dataset.from_dict(columns) if columns["input_ids"] else None), tokens, count

    dataset, dataset_tokens, count = build(train_rows)
    if dataset is None:
        raise TrainingError(f"{version.path}: no conversation has an answer token within max_seq_len {max_seq_len}")
    if assistant_only_loss and not any(label != -100 for labels in dataset["labels"] for label in labels):
        raise TrainingError("assistant_only_loss: the chat template marks no answer token (it needs {% generation %} markers); or use --full-loss")
    held = build(eval_rows) if eval_rows else None
    return PreparedData(
        dataset, groups, dataset_tokens, count.to_dict(), eval_dataset=held[0] if held else None,
        validation=_with_counts(validation, held) if held else validation,
    )


# ---- batches and the ledger -------------------------------------------------------------------


@dataclass
class OriginCollator:
    """Pads a batch on the right; labels are the input ids (or the dataset's `labels`), -100 on padding.

    Adds `satsang_origin` [batch, length]: each position's group, -1 on padding. The trainer
    takes it out before the forward pass.
    """

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        length = max(len(e["input_ids"]) for e in examples)
        batch = len(examples)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), -100, dtype=torch.long)
        origin = torch.full((batch, length), -1, dtype=torch.long)
        for i, example in enumerate(examples):
            ids = torch.as_tensor(example["input_ids"], dtype=torch.long)
            n = ids.numel()
            input_ids[i, :n] = ids
            attention_mask[i, :n] = 1
            labels[i, :n] = torch.as_tensor(example["labels"], dtype=torch.long) if "labels" in example else ids
            if ORIGIN in example:
                origin[i, :n] = torch.as_tensor(example[ORIGIN], dtype=torch.long)
            elif GROUP in example:
                origin[i, :n] = int(example[GROUP])
            else:
                raise TrainingError(f"batch example without {ORIGIN} or {GROUP}: token accounting needs one")
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, ORIGIN: origin}


class TokenLedger:
    """Tokens trained on per group: `tokens` the model read, `loss_tokens` it was trained to predict."""

    def __init__(self, n_groups: int) -> None:
        import torch

        self.n_groups = n_groups
        self.tokens = torch.zeros(n_groups, dtype=torch.long)
        self.loss_tokens = torch.zeros(n_groups, dtype=torch.long)

    def add(self, origin: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> None:
        import torch

        if self.tokens.device != origin.device:
            self.tokens = self.tokens.to(origin.device)
            self.loss_tokens = self.loss_tokens.to(origin.device)
        read = origin[attention_mask.bool() & (origin >= 0)]
        self.tokens += torch.bincount(read, minlength=self.n_groups)[: self.n_groups]
        # The label at position 0 is never predicted (the model predicts position t+1 from t).
        predicted = origin[:, 1:][(labels[:, 1:] != -100) & (origin[:, 1:] >= 0)]
        self.loss_tokens += torch.bincount(predicted, minlength=self.n_groups)[: self.n_groups]

    def restore(self, groups: Groups, report: dict[str, Any] | None) -> None:
        """Start from a checkpoint's counts (resume): its per-section rows, matched by (source, section)."""
        for row in (report or {}).get("by_section", []):
            key = (row.get("source_id", ""), row.get("section", NO_SECTION) or NO_SECTION)
            if key not in groups.index:
                raise TrainingError(f"the checkpoint counted tokens of {key}, which this dataset does not have: another dataset?")
            i = groups.index[key]
            self.tokens[i] = int(row.get("tokens", 0))
            self.loss_tokens[i] = int(row.get("loss_tokens", 0))

    def report(self, groups: Groups, titles: dict[str, str], dataset_tokens: list[int], tokenizer_name: str) -> dict[str, Any]:
        """The lineage's `tokens`: per section, per source (sums of its sections) and total (sum of all)."""
        tokens = self.tokens.cpu().tolist()
        loss_tokens = self.loss_tokens.cpu().tolist()
        by_section = []
        by_source: dict[str, dict[str, Any]] = {}
        for i, (source_id, section) in enumerate(groups.keys):
            row = {"source_id": source_id, "title": titles.get(source_id, ""), "section": section, "tokens": tokens[i], "loss_tokens": loss_tokens[i], "dataset_tokens": dataset_tokens[i]}
            by_section.append(row)
            source = by_source.setdefault(
                source_id, {"source_id": source_id, "title": titles.get(source_id, ""), "sections": 0, "tokens": 0, "loss_tokens": 0, "dataset_tokens": 0}
            )
            source["sections"] += 1
            for k in ("tokens", "loss_tokens", "dataset_tokens"):
                source[k] += row[k]
        total = {k: sum(row[k] for row in by_section) for k in ("tokens", "loss_tokens", "dataset_tokens")}
        return {
            "method": (
                f"{tokenizer_name} tokens in the batches the trainer trained on, counted per (source, section): tokens = positions "
                "read (attention mask), loss_tokens = positions predicted (labels), so epochs count again; dataset_tokens = the "
                "tokenized dataset once"
            ),
            "total": total,
            "by_source": sorted(by_source.values(), key=lambda s: (s["title"], s["source_id"])),
            "by_section": by_section,
        }
