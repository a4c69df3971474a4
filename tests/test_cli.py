"""The `satsang` command: help, exit codes, and the state each command leaves behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from curation.workspace import Workspace
from satsang.cli import app

DATA = Path(__file__).parent / "data"
TALKS = DATA / "talks-19-24.txt"
NAN_YAR = DATA / "nan-yar-excerpt.txt"

runner = CliRunner()


def satsang(*args: str, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def command_names() -> list[str]:
    return sorted(typer.main.get_command(app).commands)


def test_the_commands_are_there():
    assert command_names() == ["audit", "critique", "dedup", "diagnose", "diff", "eval", "export", "export-model", "generate", "ingest", "init", "review", "reviewers", "run", "score", "select", "serve", "show", "status", "trace", "train", "verify", "versions"]


@pytest.mark.parametrize("args", [[], *([name] for name in command_names()), ["train", "pretrain"], ["train", "sft"]])
def test_every_help_has_an_example(args: list[str]):
    result = satsang(*args, "--help")
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output


def test_help_does_not_load_the_heavy_modules():
    code = "import sys; from satsang.cli import app; print(sorted({'polars', 'curation.workspace'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_help_builds_no_command_s_config_options():
    # typer builds every command at start; the config options are made only for the command that runs.
    code = (
        "import sys\nfrom satsang.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'polars', 'torch', 'curation.score', 'curation.dedup', 'training.config'} & set(sys.modules)), file=sys.stderr)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert loaded.strip() == "[]"


def plain_help(*args: str) -> str:
    result = satsang(*args, "--help", env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("command", "config"),
    [
        (["train", "pretrain"], "training.config:PretrainConfig"),
        (["train", "sft"], "training.config:SFTConfig"),
        (["score"], "curation.score:ScoreConfig"),
        (["dedup"], "curation.dedup:DedupConfig"),
    ],
)
def test_config_options_show_each_field_s_help_and_default(command: list[str], config: str):
    import dataclasses
    import importlib

    module, _, name = config.partition(":")
    config_class = getattr(importlib.import_module(module), name)
    shown = plain_help(*command)
    with_help = [field for field in dataclasses.fields(config_class) if "help" in field.metadata]
    assert with_help
    for field in with_help:
        flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
        assert flag.split("/")[0] in shown, flag
        assert " ".join(field.metadata["help"].split()) in shown, field.name


def test_train_flags_keep_their_names_and_show_the_seed_s_defaults():
    shown = plain_help("train", "pretrain")
    for text in (
        "--rank <int> LoRA rank r. (default: 64)",
        "--alpha <float> LoRA alpha; the update is scaled by alpha / r. (default: 128)",
        "--dropout <float> Dropout on the LoRA branch. (default: 0.05)",
        "--lr <float> Peak learning rate (AdamW). (default: 0.0002)",
        "--epochs <float>", "--max-steps <int>", "--batch-size <int>", "--per-device-batch-size <int>",
        "--max-seq-len <int>", "--save-steps <int>", "--target-modules A,B,...", "--dtype <str>", "--device <str>",
        "--gradient-checkpointing --no-gradient-checkpointing", "--compile --no-compile", "--wandb --no-wandb",
        "--wandb-mode <str>", "--seed <int>", "--packing --no-packing", "(default: on)",
        "--dataset", "--base-model", "--output", "--workspace", "--config", "[pretrain]/[sft]", "--resume",
    ):
        assert text in shown, text
    sft = plain_help("train", "sft")
    assert "--assistant-only-loss --full-loss" in sft and "--chat-template FILE" in sft and "--from" in sft
    assert "--packing" not in sft and "--assistant-only-loss" not in shown


def test_a_bad_stage_setting_is_one_line(tmp_path: Path):
    assert satsang("init", tmp_path / "ws").exit_code == 0
    result = satsang("dedup", "--threshold", "1.5", "-w", tmp_path / "ws")
    assert result.exit_code == 1
    assert result.stderr == "error: threshold must be in (0, 1], got 1.5\n"


def test_run_curates_the_sample_into_a_fresh_workspace(tmp_path: Path):
    root = tmp_path / "sample"
    result = satsang("run", "--workspace", root)

    assert result.exit_code == 0, result.output
    assert f"Workspace: {root.resolve()}" in result.output
    # ...and says what to do next, naming the workspace since it is not the default one.
    assert f"satsang review -w {root.resolve()}  " in result.output
    workspace = Workspace.open(root)
    kinds = dict(workspace.items().group_by("kind").len().iter_rows())
    assert kinds["pair"] > 50 and kinds["passage"] > 10
    assert workspace.sources()["title"].to_list() == ["Talks with Sri Ramana Maharshi", "Nan Yar? (Who am I?)"]
    assert workspace.status().n_items == kinds["pair"] + kinds["passage"]
    assert "reviewed 0)" in result.output

    # Again, after a curator decided two items: the books are recognised, nothing is added,
    # and the status it prints counts the decisions (read from the review database).
    from curation.responses import ResponseStore

    decided = workspace.items().filter(pl.col("kind") == "pair").head(2)
    with ResponseStore.open(root) as store:
        for item in decided.iter_rows(named=True):
            store.record(item["item_id"], item["content_hash"], "ana", "accept")
    n_reviewed = workspace.items().filter(pl.col("item_id").is_in(decided["item_id"].to_list())).height
    generation = workspace.generation
    again = satsang("run", "--workspace", root)
    assert again.exit_code == 0, again.output
    assert again.output.count("already ingested") == 2
    assert workspace.generation == generation
    assert f"reviewed {n_reviewed})" in again.output


def test_run_defaults_to_satsang_workspace_in_the_current_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = satsang("run", env={"SATSANG_WORKSPACE": ""})
    assert result.exit_code == 0, result.output
    assert Workspace.open(tmp_path / "satsang-workspace").sources().height == 2


def test_init_ingest_status(tmp_path: Path):
    root = tmp_path / "ws"
    assert satsang("init", root).exit_code == 0
    assert Workspace.open(root).generation == 0

    result = satsang("ingest", TALKS, "--kind", "dialogue", "--title", "Talks", "--convention", "dm", "-w", root)
    assert result.exit_code == 0, result.output
    assert "Committed generation 1" in result.output
    result = satsang("ingest", NAN_YAR, "--kind", "prose", "--target-tokens", "100", "--licence", "free", "-w", root)
    assert result.exit_code == 0, result.output

    sources = Workspace.open(root).sources()
    assert sources.select("title", "convention", "licence").rows() == [("Talks", "dm", ""), ("nan-yar-excerpt", "", "free")]
    assert '"target_tokens": 100' in sources["parser_config"][1]

    status = satsang("status", "-w", root, env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    n_pairs, n_passages = sources["n_items"].to_list()
    assert f"2 sources, {n_pairs + n_passages} items (ingested {n_pairs + n_passages}," in status.output

    again = satsang("ingest", TALKS, "--kind", "dialogue", "-w", root)
    assert again.exit_code == 0 and "Nothing new" in again.output
    assert Workspace.open(root).generation == 2


def test_status_reads_the_workspace_from_the_environment(tmp_path: Path):
    assert satsang("init", tmp_path / "ws").exit_code == 0
    result = satsang("status", env={"SATSANG_WORKSPACE": str(tmp_path / "ws"), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "0 sources, 0 items" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["init", "{ws}"], "{ws}: already a satsang workspace"),
        (["status", "-w", "{tmp}"], "{tmp}: not a satsang workspace"),
        (["ingest", "{tmp}/missing.txt", "--kind", "prose", "-w", "{ws}"], "{tmp}/missing.txt: no such file"),
        (["ingest", "{tmp}", "--kind", "prose", "-w", "{ws}"], "{tmp}: is a directory"),
        (["ingest", str(NAN_YAR), "--kind", "dialogue", "-w", "{ws}"], f"{NAN_YAR}: no speaker markers found"),
        (["ingest", str(NAN_YAR), "--kind", "prose", "--convention", "qa", "-w", "{ws}"], "--convention, --answerer and --asker apply to --kind dialogue only"),
        (["ingest", str(TALKS), "--kind", "dialogue", "--target-tokens", "50", "-w", "{ws}"], "--target-tokens applies to --kind prose only"),
        (["ingest", str(NAN_YAR), "--kind", "prose", "--target-tokens", "3", "-w", "{ws}"], "--target-tokens must be at least"),
    ],
)
def test_errors_are_one_red_line_with_exit_status_1_and_change_nothing(tmp_path: Path, args: list[str], message: str):
    root = tmp_path / "ws"
    assert satsang("init", root).exit_code == 0
    before = Workspace.open(root).generation
    fill = {"ws": str(root), "tmp": str(tmp_path)}

    result = satsang(*(a.format(**fill) for a in args), env={"COLUMNS": "500"})

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {message.format(**fill)}")
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n")
    assert Workspace.open(root).generation == before
    assert Workspace.open(root).sources().height == 0


def test_the_console_script_reports_a_bad_file_without_a_traceback(tmp_path: Path):
    root = tmp_path / "ws"
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"GIF89a\n\x00\x01")
    assert satsang("init", root).exit_code == 0

    command = [sys.executable, "-m", "satsang.cli", "ingest", str(binary), "--kind", "prose", "-w", str(root)]
    result = subprocess.run(command, capture_output=True, text=True)

    assert result.returncode == 1
    assert result.stderr == f"error: {binary}:2: binary file (NUL byte at byte offset 7)\n"


def test_ray_address_without_executor_ray_is_one_line(tmp_path):
    result = satsang("ingest", Path(__file__).parent / "data" / "nan-yar-excerpt.txt", "--kind", "prose",
                     "-w", tmp_path, "--ray-address", "auto")
    assert result.exit_code == 1
    assert result.output.strip() == "error: --ray-address applies to --executor ray only"
