"""Run by test_paper_recipe.py under torchrun: one representation step's gradients.

Builds the model and the first stage of the YAML config, runs one step (GradCache, hard
negatives, the gathered loss) and saves the gradients of every trained tensor as they
stand before clipping and the optimizer, from the main process."""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file

from lusifer import LusiferModel
from lusifer.devices import close_process_group
from lusifer.training import load_train_config
from lusifer.training.engine import StageTrainer


def main(config_path: str, grads_path: str) -> None:
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    config = load_train_config(config_path)
    set_seed(config.run.seed)
    model = LusiferModel.build(config.model).to(accelerator.device)
    name, objective, stage = config.stage_list()[0]
    out = Path(config.run.output_dir)
    trainer = StageTrainer(
        model, name, stage, config.run, out / name, accelerator, objective=objective
    )
    trainer.prepare()
    forwards = []  # every process must run as many forwards (a sharded model gathers in each)
    module_forward = trainer.training_module.forward
    trainer.training_module.forward = lambda *a, **k: (
        forwards.append(a[0]) or module_forward(*a, **k)
    )
    metrics = trainer.step(1)
    counts = accelerator.gather_for_metrics(torch.tensor([len(forwards)]))
    grads = {
        n: p.grad.detach().clone().contiguous()
        for n, p in model.named_parameters()
        if p.requires_grad and p.grad is not None
    }
    if accelerator.is_main_process:
        save_file(grads, grads_path)
        print(f"world={accelerator.num_processes} loss={metrics['loss']:.6f}", flush=True)
        print(f"forwards={counts.tolist()}", flush=True)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    # after main's trainer and wrapped model are gone: they hold the process group
    close_process_group()
    tasks = Path("/proc/self/task")  # Linux: gloo's threads must be gone before exit
    if tasks.is_dir():
        names = [(t / "comm").read_text() for t in tasks.iterdir()]
        print(f"gloo_threads={sum('gloo' in n for n in names)}", flush=True)
