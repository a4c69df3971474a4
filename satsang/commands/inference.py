"""satsang generate, serve, eval: answers from a checkpoint, behind the critic loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from satsang.app import WorkspaceOption, app, err, fail, one_line_errors, out


CheckpointOption = Annotated[
    Path,
    typer.Option("--checkpoint", "-c", help="Checkpoint directory: a LoRA adapter with its tokenizer and satsang_lineage.json (or a whole model).", show_default=False),
]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")]
MergeOption = Annotated[bool, typer.Option("--merge", help="Fold the adapter into the base weights first: faster generation, same answers.")]
Load4bitOption = Annotated[bool, typer.Option("--load-in-4bit", help="Load the base in 4 bits (needs bitsandbytes and a CUDA GPU).")]
Load8bitOption = Annotated[bool, typer.Option("--load-in-8bit", help="Load the base in 8 bits (needs bitsandbytes and a CUDA GPU).")]
CriticUrlOption = Annotated[
    Optional[str],
    typer.Option("--critic-base-url", help="OpenAI-compatible endpoint of the critic. (default: $SATSANG_CRITIC_BASE_URL; unset: the offline critic)", show_default=False),
]
CriticModelOption = Annotated[Optional[str], typer.Option("--critic-model", help="The critic's model. (default: $SATSANG_CRITIC_MODEL, else the endpoint's first)", show_default=False)]
ThresholdOption = Annotated[float, typer.Option(help="Critic loop: the lowest aliveness score (0-10) an answer may have.", min=0, max=10)]
MaxAttemptsOption = Annotated[int, typer.Option(help="Critic loop: attempts before falling silent.", min=1, max=10)]


def _inference_critic(base_url: str | None, model: str | None):
    from critic.stage import CriticSettingsError, critic_from_settings

    try:
        return critic_from_settings(base_url, model)
    except CriticSettingsError as error:
        fail(f"error: {error}")


def _quiet_transformers() -> None:
    """No weight-loading progress bars or advisory warnings between the answers."""
    import warnings

    from transformers.utils import logging as transformers_logging

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def _loop_temperatures(first: float, attempts: int) -> tuple[float, ...]:
    return tuple(min(2.0, round(first + 0.2 * i, 4)) for i in range(attempts))


@app.command()
def generate(
    checkpoint: CheckpointOption,
    query: Annotated[str, typer.Option("--query", "-q", help="The seeker's question.", show_default=False)],
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy. With --critic-loop: the first attempt's, rising by 0.2.", min=0, max=2)] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.", min=0.01, max=1)] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="The most tokens to generate.", min=1)] = 200,
    seed: Annotated[Optional[int], typer.Option(help="Seed the sampler, for a repeatable answer.", show_default=False)] = None,
    merge: MergeOption = False,
    load_in_4bit: Load4bitOption = False,
    load_in_8bit: Load8bitOption = False,
    device: DeviceOption = "cpu",
    critic_loop: Annotated[bool, typer.Option("--critic-loop", help="Judge each answer; regenerate warmer below the threshold; fall silent after --max-attempts.")] = False,
    threshold: ThresholdOption = 7.0,
    max_attempts: MaxAttemptsOption = 3,
    critic_base_url: CriticUrlOption = None,
    critic_model: CriticModelOption = None,
) -> None:
    """Answer one question from a checkpoint (base + LoRA adapter, or merged), streaming the words as they come.

    With --critic-loop every attempt is judged and shown (temperature, score, rationale) on stderr;
    the answer, or "(silence)", goes to stdout.

    Example: satsang generate --checkpoint checkpoints/sft-1 --query "I feel lost in my practice."
    """
    from inference.generate import GenerationConfig, GenerationError, LocalGenerator
    from inference.loop import ContemplativeGenerator
    from satsang.render.inference import render_attempts

    _quiet_transformers()
    config = GenerationConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    critic = _inference_critic(critic_base_url, critic_model) if critic_loop else None
    with one_line_errors():
        try:
            generator = LocalGenerator(checkpoint, merge=merge, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, device=device)
            if critic is None:
                spoke = False
                for piece in generator.stream(query, config):
                    out.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
                    spoke = True
                out.print("" if spoke else "(silence)", markup=False, highlight=False)
                return
            temperatures = _loop_temperatures(temperature, max_attempts)
            result = ContemplativeGenerator(generator, critic, threshold, max_attempts, temperatures, config).respond(query)
        except GenerationError as error:
            fail(f"error: {error}")
    err.print(render_attempts(result))
    out.print("(silence)" if result.silent else result.response, markup=False, highlight=False, soft_wrap=True)


@app.command()
def serve(
    checkpoint: CheckpointOption,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    model_name: Annotated[Optional[str], typer.Option(help="The model id clients ask for. (default: the checkpoint directory's name)", show_default=False)] = None,
    merge: MergeOption = False,
    load_in_4bit: Load4bitOption = False,
    load_in_8bit: Load8bitOption = False,
    device: DeviceOption = "cpu",
    critic_loop: Annotated[bool, typer.Option("--critic-loop", help="Run the critic loop unless a request says otherwise (\"satsang\": {\"critic_loop\": false}).")] = False,
    threshold: ThresholdOption = 7.0,
    max_attempts: MaxAttemptsOption = 3,
    max_tokens: Annotated[int, typer.Option(help="The largest max_tokens a request may ask for.", min=1)] = 1024,
    critic_base_url: CriticUrlOption = None,
    critic_model: CriticModelOption = None,
) -> None:
    """Serve a checkpoint as an OpenAI-compatible endpoint: /v1/models, /v1/chat/completions (streaming too).

    Any OpenAI client can call it, and so can satsang's own critic and generator. A request turns
    the critic loop on with "satsang": {"critic_loop": true, "threshold": 7} (openai client: extra_body),
    and asks for the answer traced to the training items it repeats with "satsang": {"trace": true}.

    Example: satsang serve --checkpoint checkpoints/sft-1 --port 8000
    """
    from inference.generate import GenerationError, LocalGenerator
    from inference.server import ServerConfig
    from inference.server import serve as run_server

    _quiet_transformers()
    critic = _inference_critic(critic_base_url, critic_model)
    config = ServerConfig(model_name=model_name, critic_loop=critic_loop, threshold=threshold, max_attempts=max_attempts, max_tokens_limit=max_tokens)
    with one_line_errors():
        try:
            generator = LocalGenerator(checkpoint, merge=merge, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, device=device)
        except GenerationError as error:
            fail(f"error: {error}")
    err.print(f"Serving {model_name or generator.name} at http://{host}:{port}/v1 (critic: {critic.agent['kind']}; loop {'on' if critic_loop else 'off'} by default)", markup=False, highlight=False)
    from inference.trace import LazyTracer

    run_server(generator, host=host, port=port, critic=critic, config=config, tracer=LazyTracer.for_checkpoint(checkpoint))


@app.command("eval")
def eval_command(
    checkpoints: Annotated[Optional[list[Path]], typer.Option("--checkpoint", "-c", help="A checkpoint directory; repeat to compare several side by side.", show_default=False)] = None,
    endpoints: Annotated[Optional[list[str]], typer.Option("--endpoint", help="An OpenAI-compatible URL to evaluate too (its first model); repeatable.", show_default=False)] = None,
    prompts: Annotated[Optional[Path], typer.Option(help="JSONL of {\"id\", \"question\", \"category\"}. (default: the bundled 50 seeker questions)", show_default=False)] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where eval.json, samples.jsonl and eval.png go.")] = Path("eval-out"),
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.", min=1, show_default=False)] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.", min=0, max=2)] = 0.7,
    max_new_tokens: Annotated[int, typer.Option(help="The most tokens per answer.", min=1)] = 200,
    seed: Annotated[int, typer.Option(help="Sampler seed, the same for every checkpoint.")] = 0,
    merge: MergeOption = False,
    device: DeviceOption = "cpu",
    critic_loop: Annotated[bool, typer.Option("--critic-loop", help="Evaluate each checkpoint inside the critic loop (its silence counts).")] = False,
    threshold: ThresholdOption = 7.0,
    max_attempts: MaxAttemptsOption = 3,
    critic_base_url: CriticUrlOption = None,
    critic_model: CriticModelOption = None,
    trace: Annotated[bool, typer.Option("--trace", help="Also trace each checkpoint's answers to the training items they repeat (traces.jsonl).")] = False,
) -> None:
    """Compare checkpoints side by side on a prompt set: critic scores, silence rate, length, closure-reflex markers.

    Prints a table and writes eval.json, samples.jsonl and a plot, eval.png.

    Example: satsang eval --checkpoint checkpoints/sft-1 --checkpoint checkpoints/sft-2 --out eval-out
    """
    from inference.eval import EvalError, evaluate, load_prompts, unique_names
    from inference.generate import GenerationConfig, GenerationError, LocalGenerator, OpenAIGenerator
    from inference.loop import LoopSettings
    from satsang.render.inference import render_eval_report
    from satsang.render.progress import eval_progress

    checkpoints, endpoints = checkpoints or [], endpoints or []
    if not checkpoints and not endpoints:
        fail("error: give at least one --checkpoint (or --endpoint)")
    _quiet_transformers()
    critic = _inference_critic(critic_base_url, critic_model)
    with one_line_errors():
        try:
            questions = load_prompts(prompts)[:limit]
            named = [(c.resolve().name, LocalGenerator(c, merge=merge, device=device)) for c in checkpoints]
            named += [(url, OpenAIGenerator(url)) for url in endpoints]
            generators = unique_names(named)
            loop = LoopSettings(threshold, max_attempts, _loop_temperatures(temperature, max_attempts)) if critic_loop else None
            config = GenerationConfig(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
            with eval_progress(err, len(generators) * len(questions)) as progress:
                report = evaluate(generators, questions, critic, config, loop=loop, progress=progress)
            paths = report.write(out_dir)
        except (EvalError, GenerationError) as error:
            fail(f"error: {error}")
    out.print(render_eval_report(report))
    if trace:
        paths["traces"] = _eval_traces(report, unique_names([(c.resolve().name, c) for c in checkpoints]), out_dir)
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", markup=False, highlight=False)


def _eval_traces(report, checkpoints: dict, out_dir: Path) -> Path:
    """eval --trace: each checkpoint's answers traced against its own lineage, written to traces.jsonl."""
    import json as json_module

    from inference.trace import TraceError, Tracer, trace_samples
    from satsang.render.trace import render_eval_traces

    traces = {}
    with one_line_errors():
        try:
            for name, checkpoint in checkpoints.items():
                tracer = Tracer(checkpoint, progress=lambda message: err.print(message, markup=False, highlight=False))
                traces[name] = trace_samples(report.samples[name], tracer)
        except TraceError as error:
            fail(f"error: --trace: {error}")
    path = out_dir / "traces.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for rows in traces.values():
            for row in rows:
                handle.write(json_module.dumps(row, ensure_ascii=False) + "\n")
    out.print(render_eval_traces(traces))
    return path


@app.command("trace")
def trace_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory with its satsang_lineage.json.", show_default=False)],
    text: Annotated[str, typer.Argument(help="The text to trace (a generated answer); - reads it from standard input.", show_default=False)],
    workspace: WorkspaceOption = None,
    min_words: Annotated[int, typer.Option(help="The shortest verbatim span reported, in words (at least the index's 6).", min=6)] = 6,
    max_items: Annotated[int, typer.Option(help="The most items listed.", min=1)] = 10,
    nearest: Annotated[int, typer.Option(help="Also list this many nearest answers and passages by embedding (loads the embedding model).", min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trace as JSON.")] = False,
) -> None:
    """Which training items, across the checkpoint's whole lineage, a text repeats word for word.

    Finds the text's longest verbatim spans (6 words or more) in every dataset version the
    checkpoint's lineage names, and lists the items they come from with their stage, version,
    source, talk and character offsets. A version is indexed on its first trace (cached in the
    workspace's cache/trace/).

    Example: satsang trace runs/sft "Mouna is not closing the mouth. It is eternal speech."
    """
    import json as json_module
    import sys

    from curation.workspace import default_workspace_path
    from inference.trace import TraceError, Tracer
    from satsang.render.trace import render_trace

    if text == "-":
        text = sys.stdin.read()
    root = workspace if workspace is not None else default_workspace_path()
    with one_line_errors():
        try:
            tracer = Tracer(checkpoint, root if root.is_dir() else None, progress=lambda message: err.print(message, markup=False, highlight=False))
            result = tracer.trace(text, min_words=min_words, max_items=max_items, nearest=nearest)
        except TraceError as error:
            fail(f"error: {error}")
    if as_json:
        print(json_module.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        out.print(render_trace(result))
