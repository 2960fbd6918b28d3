"""``lusifer train``: run the two-stage training from a YAML config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .options import reports_errors

EstimateOption = Annotated[
    bool,
    typer.Option(
        help="Print each stage's parameter counts (beside the paper's) and GPU memory per "
        "engine at full size, built on the meta device (offline, no weights), and the "
        "micro-batch that fits; trains nothing. Also writes OUTPUT/estimate.md when "
        "--output is given."
    ),
]
MeasureOption = Annotated[
    bool,
    typer.Option(
        help="With --estimate: run a few real steps of each stage at full width with random "
        "weights (1 and 2 layers, extrapolated to full depth) on this machine's GPU, and "
        "print measured peak memory, time per forward and hours per stage."
    ),
]


# a refused checkpoint (one that could run code, a damaged one) fails the run: exit code 1
@reports_errors({"lusifer.model.loading.ModelFolderError": 1})
def train_command(
    config: Annotated[Path, typer.Argument(help="A YAML run file (see src/lusifer/configs/).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=value overrides with dotted keys, e.g. alignment.steps=200"),
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help="Only this stage (a stage name of the config).")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Start over instead of resuming the unfinished run in the output folder "
            "(its checkpoints are discarded; a finished model is replaced only once the new "
            "run finishes)."
        ),
    ] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder.")] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Start from the trained weights of this LUSIFER folder.")
    ] = None,
    allow_non_english: Annotated[
        bool, typer.Option(help="Train on data the English-only guard refuses (not the method).")
    ] = False,
    rehearse: Annotated[
        bool,
        typer.Option(
            help="Run every stage for a few steps on tiny backbones of the same families and "
            "local copies of every data set's columns; writes OUTPUT/rehearsal.json. "
            "Do this before renting GPUs."
        ),
    ] = False,
    processes: Annotated[
        int, typer.Option(help="With --rehearse: rehearse under torchrun with this many processes.")
    ] = 1,
    estimate: EstimateOption = False,
    gpus: Annotated[int, typer.Option(min=1, help="With --estimate: GPUs the run gets.")] = 8,
    gpu_memory: Annotated[
        float, typer.Option(min=1, help="With --estimate: memory of each GPU in GiB.")
    ] = 80.0,
    measure: MeasureOption = False,
) -> None:
    """Train a LUSIFER model: its stages in order (alignment, then representation
    finetuning), on English data only. Rerunning the same command resumes an unfinished
    run from its last checkpoint (a run folder started with another config is refused)."""
    from ..devices import close_process_group
    from ..training import load_train_config, run_training

    extra: dict[str, Any] = {}
    if output is not None:
        extra["run.output_dir"] = str(output)
    if allow_non_english:
        extra["run.allow_non_english"] = True
    if processes != 1 and not rehearse:
        raise typer.BadParameter(
            "only with --rehearse; launch real runs with accelerate launch or torchrun",
            param_hint="--processes",
        )
    if rehearse:
        _rehearse(config, overrides or [], extra, output, processes)
        return
    if measure and not estimate:
        raise typer.BadParameter("only with --estimate", param_hint="--measure")
    if estimate:
        _estimate(config, overrides or [], extra, output, gpus, gpu_memory, measure)
        return
    cfg = load_train_config(config, overrides or [], **extra)
    try:
        result = run_training(
            cfg, stages=[stage] if stage else None, resume=not overwrite, init_from=init_from
        )
    finally:
        close_process_group()
    if result is None:
        typer.echo("Interrupted; run the same command again to continue", err=True)
        raise typer.Exit(130)
    typer.echo(f"trained model saved to {result}")


def _estimate(
    config: Path,
    overrides: list[str],
    extra: dict,
    output: Path | None,
    gpus: int,
    gpu_memory: float,
    measure: bool,
) -> None:
    from ..files import atomic_write
    from ..training import load_train_config
    from ..training.estimate import estimate_run, format_estimate

    cfg = load_train_config(config, overrides, **extra)
    report = format_estimate(
        estimate_run(cfg, gpus=gpus, gpu_memory_gib=gpu_memory),
        gpus=gpus,
        gpu_memory_gib=gpu_memory,
    )
    if measure:
        from ..training.measure import format_measures, measure_stage

        stages = range(len(cfg.stage_list()))
        measured = [measure_stage(cfg, i, gpus=gpus) for i in stages]
        report += "\n\nMeasured (random weights, extrapolated to full depth):\n\n"
        report += format_measures(measured)
    typer.echo(report)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write(output / "estimate.md", report + "\n")
        typer.echo(f"wrote {output / 'estimate.md'}")


def _rehearse(
    config: Path, overrides: list[str], extra: dict, output: Path | None, processes: int
) -> None:
    import json
    import os
    import sys

    from ..training import load_train_config
    from ..training.rehearsal import REHEARSAL_FILE, launch_processes, rehearse

    if output is None:
        raise typer.BadParameter("--rehearse needs --output DIR", param_hint="--output")
    if processes > 1 and not os.environ.get("LUSIFER_REHEARSAL_CHILD"):
        code = launch_processes(sys.argv[1:], processes)
        if code != 0:
            typer.echo(
                f"error: the rehearsal failed (exit code {code}); see the output above", err=True
            )
            raise typer.Exit(code)
    else:
        extra = {k: v for k, v in extra.items() if k != "run.output_dir"}
        report = rehearse(load_train_config(config, overrides, **extra), output)
        if not report or os.environ.get("LUSIFER_REHEARSAL_CHILD"):
            return  # another process, or the launcher prints
    report = json.loads((output / REHEARSAL_FILE).read_text())
    typer.echo(f"rehearsal on {report['world_size']} process(es): {output / REHEARSAL_FILE}")
    for s in report["stages"]:
        typer.echo(
            f"  {s['name']:<20} {s['objective']:<15} loss {s['loss_first']:.3f} -> "
            f"{s['loss_last']:.3f}  positives/query {s['positives_per_query']}  "
            f"negatives/query {s['negatives_per_query']}"
        )


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
