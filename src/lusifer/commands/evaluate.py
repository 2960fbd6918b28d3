"""``lusifer evaluate``: run models on a benchmark suite and/or local task dirs through mteb."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..evaluation.instructions import InstructionTable
from ..evaluation.suites import Suite
from ..types import Backend
from .options import DeviceOption, RouteOption, ThreadsOption, load_embedder, reports_errors

ModelsArgument = Annotated[
    list[str],
    typer.Argument(
        help="One or more models: a LUSIFER model folder, a bundled offline backbone "
        "(all-MiniLM-L6-v2, multilingual-e5-small), a local Hugging Face folder or a hub id."
    ),
]
EvalBackendOption = Annotated[
    Backend,
    typer.Option(
        help="torch; onnx: LUSIFER models and BERT-like backbones through onnxruntime "
        "(CPU, same scores; decoder backbones alone stay on torch); or auto: whichever "
        "is faster on this machine (measured once per model, cached)."
    ),
]
MtebNameOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mteb-name",
        help="The name (org/name[@revision]) a model's results carry in the mteb layout "
        "under OUTPUT/mteb, one per MODEL in order (default lusifer/<model>).",
    ),
]

InstructionsOption = Annotated[
    InstructionTable,
    typer.Option(
        help="The mteb suites' task instructions: reference (the reference code's, the "
        "training sets' own: what paper.yaml trains with) or lusifer (ours)."
    ),
]
UseHeadOption = Annotated[
    bool,
    typer.Option(
        help="Score LUSIFER models on their projection head's vectors (what the reference "
        "code's encode returns) instead of the pooled embedding."
    ),
]


@reports_errors()
def evaluate_command(
    models: ModelsArgument,
    suite: Annotated[
        Suite | None,
        typer.Option(
            help="lusifer, lusifer-v2, crosslingual (mteb hub data, needs internet) or "
            "offline (bundled local tasks)."
        ),
    ] = None,
    task_dir: Annotated[
        list[Path] | None,
        typer.Option("--task-dir", help="A local task directory (task.json + data); repeatable."),
    ] = None,
    languages: Annotated[
        str | None, typer.Option(help="Comma-separated ISO 639-1 codes to keep, e.g. en,fr.")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output folder (rerun to resume).")
    ] = Path("evaluation"),
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples for CIs and paired tests (0: off).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resamples.")] = 0,
    backend: EvalBackendOption = "torch",
    device: DeviceOption = None,
    route: RouteOption = None,
    threads: ThreadsOption = None,
    cache: Annotated[
        bool,
        typer.Option(
            help="Reuse (and store) results of unchanged models on unchanged tasks in the "
            "lusifer cache; --no-cache scores everything afresh."
        ),
    ] = True,
    mteb_name: MtebNameOption = None,
    instructions: InstructionsOption = "reference",
    use_head: UseHeadOption = False,
) -> None:
    """Evaluate MODELS; writes results.json, table.md, table.csv, chart.png and mteb's
    results layout (mteb/results/...) to --output. Under torchrun or accelerate launch the
    (model, task) pairs are split across the processes and rank 0 writes the report."""
    from ..evaluation.runner import evaluate
    from ..model.routing import is_routed, with_head, with_route

    if suite is None and not task_dir:
        raise typer.BadParameter("give --suite and/or --task-dir", param_hint="--suite")
    wanted = [x.strip() for x in languages.split(",") if x.strip()] if languages else None
    if mteb_name and len(mteb_name) != len(models):
        raise typer.BadParameter(
            f"give one --mteb-name per model ({len(models)}), got {len(mteb_name)}",
            param_hint="--mteb-name",
        )
    embedders = [load_embedder(ref, backend, None, threads, device) for ref in models]
    # --route picks the route of the routed models; baselines are scored as they are
    embedders = [with_route(e, route) if is_routed(e) else e for e in embedders]
    if use_head:  # LUSIFER models only; baselines have no head
        embedders = [with_head(e) if hasattr(e, "config") else e for e in embedders]
    report = evaluate(
        embedders,
        suite=suite,
        task_dirs=task_dir or (),
        languages=wanted,
        output_dir=output,
        batch_size=batch_size,
        bootstrap=bootstrap,
        seed=seed,
        use_cache=cache,
        mteb_names=mteb_name,
        device=device,
        instructions=instructions,
    )
    if not report.files:  # another process of a multi-process run writes the report
        return
    typer.echo(report.files["markdown"].read_text(encoding="utf-8"))
    for name, path in report.files.items():
        typer.echo(f"wrote {name}: {path}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
