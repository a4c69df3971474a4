"""The dataset-version format: layout, identity, manifest, checksums, and reading versions back.

This module owns what a version *is* on disk; `curation.export` writes one, and training,
audit and the CLI read them through the names here. Nothing else spells these paths.

Layout (`<workspace>/versions/<name>-<12 hex>/`, files 0444, directories 0555):

    README.md                   the data card (Hugging Face YAML header; configs -> data/)
    data/train-NNNNN-of-NNNNN.parquet   Parquet shards: datasets.load_dataset(<version dir>)
    dataset/                    Dataset.save_to_disk: datasets.load_from_disk(<version dir>/dataset)
    seed.jsonl                  sft only
    manifest.json               config, sources, steps, agents, every item (one per line)
    score_distributions.png, items_per_source.png   the card's plots
    checksums.sha256            sha256 of every other file (`sha256sum -c` reads it); its last
                                line, a comment, is the sha256 of the lines above it

Version id: `<name>-` + the first 12 hex of the sha256 of the resolved config, the
export format, the satsang version and every item's manifest record (item id, source,
content hash, exported hash, decision, reviewer, scores, agents), sorted
(`identity_digest`). The same inputs give the same id.

Atomicity: a version is written into `versions/.tmp-<random>/` (`staging_dir`), every
file and directory fsynced, then renamed into place in one step and made read-only
(`publish`). A killed export leaves only a `.tmp-*` directory, which `list_versions`
never shows and the next export sweeps (exports hold `versions/.lock`).

Reading: `list_versions`, `resolve_version` (an id, a unique prefix, a name for its
latest version), `load_manifest`, `diff_versions`, and `verify_version`, which recomputes
every file's hash, the id from the manifest and each item's exported hash from the rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation import schema
from curation.errors import CurationError
from curation.files import TMP_PREFIX, exclusive_lock, fsync, iso_utc, sha256_file
from curation.workspace import pause_if_testing

if TYPE_CHECKING:
    from curation.workspace import Workspace

EXPORT_FORMAT = 1
VERSIONS_DIR = "versions"
LOCK_NAME = ".lock"
MANIFEST_NAME = "manifest.json"
CHECKSUMS_NAME = "checksums.sha256"
CARD_NAME = "README.md"
PARQUET_DIR = "data"
DATASET_DIR = "dataset"
SEED_NAME = "seed.jsonl"
SCORE_PLOT = "score_distributions.png"
SOURCE_PLOT = "items_per_source.png"
SELF_DIGEST_PREFIX = "# sha256 of the lines above: "

LOCK_TIMEOUT_S = 60.0
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a version's name; ids are <name>-<12 hex>
HEX = re.compile(r"^[0-9a-f]+$")


class ExportError(CurationError):
    """An export, or a question about versions, cannot be answered as asked; the message says why."""


# ---- what reading versions returns --------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    version_id: str
    name: str
    kind: str
    created_at: str
    parent: str | None
    n_items: int
    n_rows: int
    n_tokens: int
    n_sources: int
    path: Path


@dataclass(frozen=True)
class ItemChange:
    """An item in a diff, with its exported text before and after (None where it is absent)."""

    item_id: str
    source_id: str
    section: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class VersionDiff:
    old: str
    new: str
    added: tuple[ItemChange, ...]
    removed: tuple[ItemChange, ...]
    edited: tuple[ItemChange, ...]
    n_unchanged: int
    # per source: source_id, title, added, removed, edited, unchanged
    per_source: tuple[dict[str, Any], ...]
    config_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.edited)


# ---- identity -----------------------------------------------------------------------------------


def identity_digest(
    config: Mapping[str, Any], records: list[dict[str, Any]], agents: dict[str, list[Any]], satsang_version: str | None = None
) -> str:
    """The full sha256 hex a version's id is cut from: config (as a dict), format, satsang version, agents and item records.

    satsang_version: the version that made it (verify passes the manifest's), default this one.
    """
    ordered = sorted(({k: v for k, v in r.items() if k not in ("row", "turn")} for r in records),
                     key=lambda r: (r["item_id"], r["source_id"]))
    return identity_digest_sorted(config, ordered, agents, satsang_version)


def identity_digest_sorted(
    config: Mapping[str, Any], records: Iterable[dict[str, Any]], agents: dict[str, list[Any]],
    satsang_version: str | None = None,
) -> str:
    """`identity_digest` of records already in its order (by item_id, source_id; no row or turn), hashed as
    they come: the canonical JSON of the whole payload, never held whole (a version may have millions of items)."""
    payload = {
        "format": EXPORT_FORMAT,
        "satsang": satsang_version if satsang_version is not None else tool_versions()["satsang"],
        "config": dict(config),
        "agents": agents,
        "items": [],
    }
    before, after = canonical_json(payload).split(b'"items":[]', 1)
    digest = hashlib.sha256(before + b'"items":[')
    for number, record in enumerate(records):
        digest.update((b"," if number else b"") + canonical_json(record))
    digest.update(b"]" + after)
    return digest.hexdigest()


def version_id_of(name: str, digest: str) -> str:
    return f"{name}-{digest[:12]}"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def tool_versions() -> dict[str, str]:
    """The versions of the tools whose output a version's bytes depend on (the manifest records them)."""
    from importlib import metadata

    versions = {}
    for dist, key in (("satsang-workbench", "satsang"), ("datasets", "datasets"), ("pyarrow", "pyarrow"), ("polars", "polars")):
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = "unknown"
    return versions


def iso_time(value: Any) -> str:
    """A timestamp as manifests write it (ISO 8601, UTC, seconds); ExportError when it is not one."""
    try:
        return iso_utc(value)
    except ValueError as error:
        raise ExportError(str(error)) from None


# ---- the manifest and the checksums ---------------------------------------------------------------


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Pretty header, then `"items": [` with one compact record per line: diffable, and `versions` reads only the header."""
    chunks: list[bytes] = []
    write_manifest(chunks.append, {k: v for k, v in manifest.items() if k != "items"}, manifest["items"])
    return b"".join(chunks)


def write_manifest(write: Any, header: dict[str, Any], records: Iterable[dict[str, Any]]) -> None:
    """The manifest's bytes to `write` (a file's write), a record at a time: `manifest_bytes`, never held whole."""
    head = json.dumps(header, indent=2, ensure_ascii=False, allow_nan=False)
    write((head[:-2] + ',\n  "items": [\n').encode("utf-8"))
    for number, record in enumerate(records):
        line = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
        write(((",\n" if number else "") + "    " + line).encode("utf-8"))
    write("\n  ]\n}\n".encode("utf-8"))


def read_manifest_header(directory: Path) -> dict[str, Any]:
    """The manifest without its item list, read only as far as `"items": [` (the manifest is written so)."""
    marker = '  "items": [\n'
    head: list[str] = []
    with open(directory / MANIFEST_NAME, encoding="utf-8") as file:
        for line in file:
            if line == marker:
                text = "".join(head).rstrip().rstrip(",") + "\n}"
                try:
                    return json.loads(text)
                except ValueError:
                    break
            head.append(line)
    data = load_manifest_path(directory)
    data.pop("items", None)
    return data


def load_manifest_path(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{directory}: no {MANIFEST_NAME}") from None
    except ValueError as error:
        raise ExportError(f"{directory / MANIFEST_NAME}: unreadable ({error})") from None


def write_checksums(directory: Path) -> None:
    lines = [f"{sha256_file(path)}  {rel}\n" for rel, path in version_files(directory) if rel != CHECKSUMS_NAME]
    text = "".join(lines)
    text += SELF_DIGEST_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest() + "\n"
    (directory / CHECKSUMS_NAME).write_text(text, encoding="utf-8")


def version_files(directory: Path) -> list[tuple[str, Path]]:
    """Every regular file under `directory` as (posix relative path, path), sorted by relative path."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            path = Path(root) / name
            found.append((path.relative_to(directory).as_posix(), path))
    return sorted(found)


# ---- writing a version into place --------------------------------------------------------------


@contextmanager
def versions_lock(versions: Path) -> Iterator[None]:
    with exclusive_lock(versions / LOCK_NAME, LOCK_TIMEOUT_S, f"{versions}: another export is writing here", error=ExportError):
        yield


def sweep_unfinished(versions: Path) -> None:
    """Remove what killed exports left (`.tmp-*`). The caller holds the versions lock."""
    for entry in versions.glob(f"{TMP_PREFIX}*"):
        if entry.is_dir() and not entry.is_symlink():
            for root, dirs, _ in os.walk(entry):  # a tmp dir is never read-only, but be sure rmtree can go in
                os.chmod(root, stat.S_IRWXU)
            shutil.rmtree(entry)
        else:
            entry.unlink()


def staging_dir(versions: Path) -> Path:
    """A fresh `.tmp-*` directory to write a version into; the caller holds the versions lock."""
    staging = versions / f"{TMP_PREFIX}{secrets.token_hex(6)}"
    staging.mkdir()
    return staging


def is_finished(directory: Path) -> bool:
    """A version whose writing completed (its checksums are the last file written)."""
    return directory.is_dir() and (directory / CHECKSUMS_NAME).is_file()


def publish(staging: Path, final: Path) -> None:
    """Rename a fully written, fsynced staging directory into place in one step, then make it read-only."""
    pause_if_testing("export-before-rename")
    os.rename(staging, final)
    fsync(final.parent)
    pause_if_testing("export-after-rename")
    make_read_only(final)


def make_read_only(directory: Path) -> None:
    for root, dirs, files in os.walk(directory, topdown=False):
        for name in files:
            os.chmod(Path(root) / name, 0o444)
        os.chmod(root, 0o555)


# ---- reading versions -----------------------------------------------------------------------------


def versions_path(workspace: Workspace) -> Path:
    return workspace.root / VERSIONS_DIR


def version_dirs(versions: Path) -> list[Path]:
    if not versions.is_dir():
        return []
    return sorted(p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file())


def version_info(directory: Path, header: dict[str, Any]) -> VersionInfo:
    counts = header.get("counts", {})
    return VersionInfo(
        version_id=header.get("version_id", directory.name),
        name=header.get("name", ""),
        kind=header.get("kind", ""),
        created_at=header.get("created_at", ""),
        parent=header.get("parent"),
        n_items=int(counts.get("items", 0)),
        n_rows=int(counts.get("rows", 0)),
        n_tokens=int(counts.get("tokens", 0)),
        n_sources=len(header.get("sources", [])),
        path=directory,
    )


def list_versions(workspace: Workspace) -> list[VersionInfo]:
    """Every finished version (never a `.tmp-*` directory), by name, then parent before child."""
    infos = []
    for directory in version_dirs(versions_path(workspace)):
        try:
            infos.append((version_info(directory, read_manifest_header(directory)), directory.stat().st_mtime_ns))
        except ExportError:
            continue  # a damaged manifest: `verify` says what is wrong; the list shows what it can read
    order: dict[str, int] = {}
    for info, _ in sorted(infos, key=lambda x: (x[0].created_at, x[1], x[0].version_id)):
        depth, parent, seen = 0, info.parent, set()
        by_id = {i.version_id: i for i, _ in infos}
        while parent in by_id and parent not in seen:
            seen.add(parent)
            depth += 1
            parent = by_id[parent].parent
        order[info.version_id] = depth
    return [i for i, m in sorted(infos, key=lambda x: (x[0].name, order[x[0].version_id], x[0].created_at, x[1], x[0].version_id))]


def head_of(versions: Path, name: str) -> str | None:
    """The latest version of `name`: the one no other version of that name names as parent (newest if several)."""
    mine = []
    for directory in version_dirs(versions):
        try:
            header = read_manifest_header(directory)
        except ExportError:
            continue
        if header.get("name") == name:
            mine.append((header.get("version_id", directory.name), header.get("parent"), directory.stat().st_mtime_ns))
    parents = {parent for _, parent, _ in mine}
    heads = [(mtime, vid) for vid, _, mtime in mine if vid not in parents]
    return max(heads)[1] if heads else None


def resolve_version(workspace: Workspace, ref: str) -> Path:
    """A version's directory from its id, a unique prefix of its id, or its name (the latest of that name)."""
    versions = versions_path(workspace)
    directories = version_dirs(versions)
    exact = [d for d in directories if d.name == ref]
    if exact:
        return exact[0]
    if ref.startswith(".") or "/" in ref:
        raise ExportError(f"no version {ref!r}")
    head = head_of(versions, ref)
    if head is not None:
        return versions / head
    prefixed = [d for d in directories if d.name.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise ExportError(f"version {ref!r} is ambiguous: {', '.join(d.name for d in prefixed[:5])}")
    known = ", ".join(d.name for d in directories[-5:]) or "none yet (satsang export --name NAME)"
    raise ExportError(f"no version {ref!r} in {versions} (versions: {known})")


def load_manifest(workspace: Workspace, version_id: str) -> dict[str, Any]:
    """The whole manifest of a version (id, unique id prefix, or name for the latest of that name)."""
    return load_manifest_path(resolve_version(workspace, version_id))


def _item_texts(directory: Path, manifest: dict[str, Any], wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The exported text of the wanted (source_id, item_id) items, read from the version's Parquet shards."""
    if not wanted:
        return {}
    import pyarrow.parquet as pq

    where = {(r["source_id"], r["item_id"]): (r.get("row"), r.get("turn", 0)) for r in manifest["items"]}
    rows_needed = {where[key][0] for key in wanted if key in where}
    columns = ["messages"] if manifest["kind"] == "sft" else ["text"]
    texts_by_row: dict[int, Any] = {}
    offset = 0
    for shard in sorted((directory / PARQUET_DIR).glob("*.parquet")):
        table = pq.read_table(shard, columns=columns)
        values = table.column(0).to_pylist()
        for i, value in enumerate(values):
            if offset + i in rows_needed:
                texts_by_row[offset + i] = value
        offset += table.num_rows
    texts = {}
    for key in wanted:
        if key not in where or where[key][0] not in texts_by_row:
            continue
        row, turn = where[key]
        value = texts_by_row[row]
        if manifest["kind"] == "sft":
            question, answer = value[2 * turn]["content"], value[2 * turn + 1]["content"]
            texts[key] = f"Q: {question}\nA: {answer}"
        else:
            texts[key] = value
    return texts


def diff_versions(workspace: Workspace, old: str, new: str, examples: int = 3) -> VersionDiff:
    """Items added, removed and edited (same item, other exported content) from `old` to `new`, per source."""
    old_dir, new_dir = resolve_version(workspace, old), resolve_version(workspace, new)
    a, b = load_manifest_path(old_dir), load_manifest_path(new_dir)
    items_a = {(r["source_id"], r["item_id"]): r for r in a["items"]}
    items_b = {(r["source_id"], r["item_id"]): r for r in b["items"]}
    added = sorted(items_b.keys() - items_a.keys())
    removed = sorted(items_a.keys() - items_b.keys())
    common = items_a.keys() & items_b.keys()
    edited = sorted(k for k in common if items_a[k]["exported_hash"] != items_b[k]["exported_hash"])
    titles = {s["source_id"]: s["title"] for s in a["sources"] + b["sources"]}
    per_source: dict[str, dict[str, Any]] = {}
    for label, keys in (("added", added), ("removed", removed), ("edited", edited), ("unchanged", sorted(common - set(edited)))):
        for sid, _ in keys:
            entry = per_source.setdefault(sid, {"source_id": sid, "title": titles.get(sid, ""), "added": 0, "removed": 0, "edited": 0, "unchanged": 0})
            entry[label] += 1
    shown_added, shown_removed, shown_edited = added[:examples], removed[:examples], edited[:examples]
    texts_a = _item_texts(old_dir, a, set(shown_removed) | set(shown_edited))
    texts_b = _item_texts(new_dir, b, set(shown_added) | set(shown_edited))

    def change(key: tuple[str, str], record: dict[str, Any], with_texts: bool) -> ItemChange:
        return ItemChange(key[1], key[0], record.get("section", ""), texts_a.get(key) if with_texts else None, texts_b.get(key) if with_texts else None)

    shown = set(shown_added) | set(shown_removed) | set(shown_edited)
    config_changes = {k: (a["config"].get(k), b["config"].get(k)) for k in sorted(set(a["config"]) | set(b["config"])) if a["config"].get(k) != b["config"].get(k)}
    return VersionDiff(
        old=a["version_id"],
        new=b["version_id"],
        added=tuple(change(k, items_b[k], k in shown) for k in added),
        removed=tuple(change(k, items_a[k], k in shown) for k in removed),
        edited=tuple(change(k, items_b[k], k in shown) for k in edited),
        n_unchanged=len(common) - len(edited),
        per_source=tuple(sorted(per_source.values(), key=lambda e: e["title"])),
        config_changes=config_changes,
    )


def verify_version(workspace: Workspace, version_id: str) -> list[str]:
    """Every problem found in a version, one line each naming the file; [] when it is intact.

    Recomputes: the sha256 of every file against checksums.sha256 (and that file's own
    digest line), files missing or not listed, the version id from the manifest, each
    item's exported hash from the rows of every copy (data/, dataset/, seed.jsonl), and
    the modes (a writable file or directory is reported, and made read-only again).
    """
    directory = resolve_version(workspace, version_id)
    return verify_path(directory)


def verify_path(directory: Path, repair_modes: bool = True) -> list[str]:
    """verify_version on a version directory. repair_modes: make what is writable read-only (still reported)."""
    problems: list[str] = writable_entries(directory, repair=repair_modes)
    listed: dict[str, str] = {}
    checksums = directory / CHECKSUMS_NAME
    if not checksums.is_file():
        return problems + [f"{CHECKSUMS_NAME}: missing"]
    raw = checksums.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        problems.append(f"{CHECKSUMS_NAME}: changed (not UTF-8)")
    lines = text.splitlines(keepends=True)
    body = "".join(lines[:-1]) if lines else ""
    last = lines[-1] if lines else ""
    own_digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    if last != f"{SELF_DIGEST_PREFIX}{own_digest}\n":
        problems.append(f"{CHECKSUMS_NAME}: changed (its own digest line does not match its contents)")
    for number, line in enumerate(lines[:-1] if lines else [], start=1):
        digest, sep, rel = line.rstrip("\n").partition("  ")
        if not sep or len(digest) != 64 or not HEX.match(digest):
            problems.append(f"{CHECKSUMS_NAME}:{number}: malformed line")
            continue
        listed[rel] = digest
    present = {rel: path for rel, path in version_files(directory) if rel != CHECKSUMS_NAME}
    for rel, digest in sorted(listed.items()):
        path = present.get(rel)
        if path is None:
            problems.append(f"{rel}: missing")
            continue
        actual = sha256_file(path)
        if actual != digest:
            problems.append(f"{rel}: changed (sha256 {actual[:16]}..., checksums.sha256 says {digest[:16]}...)")
    for rel in sorted(present.keys() - listed.keys()):
        problems.append(f"{rel}: not in {CHECKSUMS_NAME} (added after export)")
    problems.extend(_verify_manifest(directory))
    return problems


MODES_LABEL = "modes"


def writable_entries(directory: Path, repair: bool) -> list[str]:
    """One line (or none) saying which files and directories of a version anyone may write.

    A version is 0444 files in 0555 directories; one killed between its rename and its chmod
    stays writable, and so does one someone chmod-ed. repair=True makes them read-only again
    (the line says so), as the next export of the same id does.
    """
    writable: list[tuple[str, int, Path]] = []
    for root, _, files in os.walk(directory, topdown=False):
        for path in [Path(root) / name for name in files] + [Path(root)]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
                writable.append((path.relative_to(directory).as_posix() if path != directory else ".", mode, path))
    if not writable:
        return []
    writable.sort()
    examples = ", ".join(f"{rel} {mode:04o}" for rel, mode, _ in writable[:3]) + (", ..." if len(writable) > 3 else "")
    what = f"{MODES_LABEL}: {len(writable)} files or directories writable ({examples}); a version is read-only"
    if not repair:
        return [what]
    try:
        for _, _, path in writable:  # chmod needs ownership, not a writable directory: any order will do
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
    except OSError as error:
        return [f"{what}, and they could not be made so ({error.strerror})"]
    return [f"{what}: made read-only again"]


def _verify_manifest(directory: Path) -> list[str]:
    """The id recomputed from the manifest, and exported hashes recomputed from the rows of every copy."""
    try:
        manifest = load_manifest_path(directory)
        config = manifest["config"]
        if not isinstance(config, dict) or not isinstance(config.get("name"), str):
            raise ValueError("config is not an export configuration")
        # The id's payload names the satsang version that made it: recompute with the one the manifest records.
        made_by = manifest.get("tool", {}).get("satsang")
        if not isinstance(made_by, str):
            raise ValueError("tool.satsang is not a version")
        digest = identity_digest(config, manifest["items"], manifest["agents"], satsang_version=made_by)
    except (ExportError, KeyError, TypeError, ValueError, AttributeError) as error:
        return [f"{MANIFEST_NAME}: unreadable ({str(error).splitlines()[0][:200] if str(error) else type(error).__name__})"]
    problems = []
    if manifest.get("version_id") != directory.name:
        problems.append(f"{MANIFEST_NAME}: names version {manifest.get('version_id')!r}, but the directory is {directory.name!r}")
    if version_id_of(config["name"], digest) != directory.name or digest != manifest.get("digest"):
        problems.append(f"{MANIFEST_NAME}: its config and items hash to {version_id_of(config['name'], digest)}, not to this version's id")
    data_rows, data_problems = _parquet_rows(directory)
    problems.extend(data_problems)
    if data_rows is not None:
        problems.extend(_verify_rows(f"{PARQUET_DIR}/", data_rows, manifest, config))
    saved_rows, saved_problems = _saved_dataset_rows(directory)
    problems.extend(saved_problems)
    if saved_rows is not None:
        problems.extend(_verify_rows(f"{DATASET_DIR}/", saved_rows, manifest, config))
    if manifest.get("kind") == "sft":
        problems.extend(_verify_seed(directory, data_rows if data_rows is not None else saved_rows, manifest, config))
    return problems


def _parquet_rows(directory: Path) -> tuple[list[dict[str, Any]] | None, list[str]]:
    import pyarrow.parquet as pq

    shards = sorted((directory / PARQUET_DIR).glob("*.parquet"))
    try:
        return [row for s in shards for row in pq.read_table(s).to_pylist()], []
    except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
        return None, [f"{PARQUET_DIR}/: unreadable Parquet ({type(error).__name__})"]


def _saved_dataset_rows(directory: Path) -> tuple[list[dict[str, Any]] | None, list[str]]:
    """The rows `datasets.load_from_disk` would load: the Arrow files its state.json lists, in order."""
    import pyarrow as pa

    saved = directory / DATASET_DIR
    try:
        state = json.loads((saved / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, [f"{DATASET_DIR}/state.json: unreadable ({type(error).__name__})"]
    rows: list[dict[str, Any]] = []
    for name in names:
        path = saved / name
        if Path(name).name != name or not path.is_file():
            return None, [f"{DATASET_DIR}/state.json: names {name!r}, which is not a file of the version"]
        try:
            with pa.memory_map(str(path)) as source:
                rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
        except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
            return None, [f"{DATASET_DIR}/{name}: unreadable Arrow ({type(error).__name__})"]
    return rows, []


def _verify_seed(directory: Path, rows: list[dict[str, Any]] | None, manifest: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """seed.jsonl's conversations, with the contexts of the rows they copy, against the manifest's hashes."""
    path = directory / SEED_NAME
    if not path.is_file() or rows is None:
        return []  # a missing seed.jsonl is named by the checksums; no readable rows, named above
    seed_rows = []
    with open(path, encoding="utf-8", errors="replace") as file:
        for number, line in enumerate(file, start=1):
            try:
                entry = json.loads(line)
                messages = [{"role": "user" if m["role"] == "human" else m["role"], "content": m["content"]} for m in entry["messages"]]
                row_id = entry["id"]
            except (ValueError, KeyError, TypeError):
                return [f"{SEED_NAME}:{number}: not a seed conversation"]
            if number > len(rows):
                return [f"{SEED_NAME}: {number} or more conversations, the manifest says {len(rows)}"]
            if row_id != rows[number - 1]["id"]:
                return [f"{SEED_NAME}:{number}: conversation {row_id!r}, the manifest's row {number - 1} is {rows[number - 1]['id']!r}"]
            seed_rows.append({**rows[number - 1], "messages": messages})
    return _verify_rows(f"{SEED_NAME}", seed_rows, manifest, config)


def _verify_rows(label: str, rows: list[dict[str, Any]], manifest: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """One copy's rows against the manifest: the row count, and each item's exported hash recomputed."""
    if len(rows) != manifest["counts"]["rows"]:
        return [f"{label}: {len(rows)} rows, the manifest says {manifest['counts']['rows']}"]
    problems = []
    for record in manifest["items"]:
        row = rows[record["row"]] if 0 <= record.get("row", -1) < len(rows) else None
        if row is None:
            problems.append(f"{label}: no row for item {record['item_id']}")
            continue
        try:
            if manifest["kind"] == "sft":
                turn = record["turn"]
                if turn >= len(row["item_ids"]) or row["item_ids"][turn] != record["item_id"]:
                    problems.append(f"{label}: row {record['row']} does not hold item {record['item_id']}")
                    continue
                question = row["messages"][2 * turn]["content"]
                answer = row["messages"][2 * turn + 1]["content"]
                if record["silent"] and answer == config.get("silence_text"):
                    answer = ""
                actual = schema.content_hash("pair", question=question, answer=answer, context=row["contexts"][turn])
            elif record["kind"] == "passage":
                actual = schema.content_hash("passage", text=row["text"])
            else:
                continue  # an answer alone cannot rebuild its pair's hash; the file checksum covers it
        except (KeyError, IndexError, TypeError):
            problems.append(f"{label}: row {record['row']} does not have the shape of a {manifest['kind']} row")
            continue
        if actual != record["exported_hash"]:
            problems.append(f"{label}: item {record['item_id']} (row {record['row']}) does not match its exported hash")
    return problems
