"""Run by test_training.py under torchrun: train from a YAML config on CPU processes."""

import sys

import torch
from accelerate import Accelerator

from lusifer.training import load_train_config, run_training

if __name__ == "__main__":
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    print(f"world={accelerator.num_processes}", flush=True)
    run_training(load_train_config(sys.argv[1]), accelerator=accelerator)
