"""Training on tiny models: objectives, GradCache, the loop, resume, configs, the guard."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest
import torch
from helpers import ENGLISH, LORA, randomize_trained, tiny_run_config, write_pairs, write_run_config
from safetensors.torch import load_file
from torch import nn

from lusifer import LusiferModel
from lusifer.config import ConfigError
from lusifer.data.language_guard import NonEnglishDataError
from lusifer.onnx import OnnxExportError
from lusifer.training import load_train_config, run_training
from lusifer.training.backward import accumulated_backward, embedding_backward
from lusifer.training.losses import (
    IGNORE_INDEX,
    build_lm_inputs,
    distillation_loss,
    info_nce,
    lm_alignment_loss,
    relational_distillation,
)


# ------------------------------------------------------------------ objectives
def test_lm_labels_ignore_bos_soft_tokens_and_padding(tiny_model_factory):
    model = tiny_model_factory("llama")
    soft = torch.randn(2, 5, 40)
    soft_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    target_ids = torch.tensor([[10, 11, 12], [20, 21, 1]])
    target_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    embeds, mask, labels = build_lm_inputs(model, soft, soft_mask, target_ids, target_mask)
    assert labels[0].tolist() == [IGNORE_INDEX] * 6 + [10, 11, 12]
    assert labels[1].tolist() == [IGNORE_INDEX] * 3 + [20, 21] + [IGNORE_INDEX] * 4
    assert mask[1].tolist() == [1] * 5 + [0] * 4
    bos = model.target.input_embeddings().weight[model.target.tokenizer.bos_token_id]
    assert torch.allclose(embeds[1, 0], bos) and torch.allclose(embeds[1, 1:3], soft[1, :2])
    assert torch.allclose(embeds[1, 3], model.target.input_embeddings().weight[20])


def test_backbones_saved_with_left_padding_are_padded_right(tmp_path):
    """A folder whose tokenizer pads left (Llama-2/Gemma classes, padding_side="left")
    trains stage 1 on the same tokens as one that pads right."""
    import json

    from lusifer import LusiferModel
    from lusifer.backbones import load_backbone

    tiny = load_backbone("tiny:llama")
    folders = {}
    for side in ("left", "right"):
        folders[side] = tmp_path / side
        tiny.model.save_pretrained(folders[side])
        tiny.tokenizer.save_pretrained(folders[side])
        config_file = folders[side] / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config_file.write_text(json.dumps({**config, "padding_side": side}))
    assert load_backbone(str(folders["left"])).tokenizer.padding_side == "right"
    losses = []
    for side in ("left", "right"):
        torch.manual_seed(0)
        model = LusiferModel.build(encoder="tiny:xlmr", target=str(folders[side]))
        enc = model.tokenize(["a short text", "another, much longer text than that"])
        tok = model.target.tokenizer(
            ["it is short", "and a much longer one than the first"],
            padding=True,
            add_special_tokens=False,
            return_tensors="pt",
        )
        assert tok["attention_mask"][0, 0] == 1  # padding after the text, not before
        with torch.no_grad():
            losses.append(
                lm_alignment_loss(
                    model,
                    *model.soft_tokens(enc["input_ids"], enc["attention_mask"]),
                    tok["input_ids"],
                    tok["attention_mask"],
                )
            )
    torch.testing.assert_close(losses[0], losses[1])


def test_lm_loss_uses_causal_attention(tiny_model_factory):
    model = tiny_model_factory("mistral")
    enc = model.tokenize(["a short text", "another one"])
    tok = model.target.tokenizer(
        ["it is short", "and longer one"],
        padding=True,
        add_special_tokens=False,
        return_tensors="pt",
    )
    with torch.no_grad():
        soft = model.soft_tokens(enc["input_ids"], enc["attention_mask"])
        loss = lm_alignment_loss(model, *soft, tok["input_ids"], tok["attention_mask"])

        def manual(causal: bool) -> torch.Tensor:
            soft, soft_mask = model.soft_tokens(enc["input_ids"], enc["attention_mask"])
            embeds, mask, labels = build_lm_inputs(
                model, soft, soft_mask, tok["input_ids"], tok["attention_mask"]
            )
            logits = model.target.lm_logits(model.target.hidden_states(embeds, mask, causal=causal))
            return nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
            )

        assert torch.allclose(loss, manual(True), atol=1e-5)
        assert not torch.allclose(loss, manual(False), atol=1e-3)


class OneHotEncoder(nn.Module):
    """An 'encoder' whose token states are one-hot vectors of the input ids."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(
            last_hidden_state=nn.functional.one_hot(input_ids, self.vocab).float()
        )


@pytest.mark.parametrize("target", ["bert", "llama"])
def test_distillation_is_zero_when_the_connector_reproduces_the_target_embeddings(target):
    # tiny:xlmr and the tiny targets share one byte-level tokenizer, so encoder ids == target ids
    model = LusiferModel.build(encoder="tiny:xlmr", target=f"tiny:{target}")
    table = model.target.input_embeddings().weight.detach()
    vocab = table.shape[0]
    model.encoder = OneHotEncoder(vocab)
    model.connector = type(model.connector)(vocab, table.shape[1], hidden_size=vocab)
    with torch.no_grad():
        model.connector.ff[0].weight.copy_(torch.eye(vocab))
        model.connector.ff[0].bias.zero_()
        model.connector.ff[2].weight.copy_(table.T)
        model.connector.ff[2].bias.zero_()
    texts = ["the same english text", "and a second, longer english sentence"]
    enc = model.tokenize(texts)
    # the teacher reads the same token sequence through the target's own embedding table
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        exact = distillation_loss(model, *model.soft_tokens(ids, mask), ids, mask)
        model.connector.ff[2].bias.add_(0.05 * torch.randn(table.shape[1]))
        off = distillation_loss(model, *model.soft_tokens(ids, mask), ids, mask)
    assert float(exact) < 1e-6
    assert float(off) > 1e-4


def test_info_nce_in_batch_and_own_negatives():
    torch.manual_seed(0)
    q, p, n = torch.randn(3, 8), torch.randn(3, 8), torch.randn(2, 8)
    owner = torch.tensor([0, 2])
    perfect = info_nce(q, q.clone(), n, owner, temperature=0.01)
    assert float(perfect) < 1e-3
    own = info_nce(q, p, n, owner, in_batch_negatives=False)
    qn, pn, nn_ = (nn.functional.normalize(x, dim=-1) for x in (q, p, n))
    logits0 = torch.stack([qn[0] @ pn[0], qn[0] @ nn_[0]]) / 0.05  # query 0: own pos + own neg
    logits1 = (qn[1] @ pn[1] / 0.05).unsqueeze(0)  # query 1: only its positive
    logits2 = torch.stack([qn[2] @ pn[2], qn[2] @ nn_[1]]) / 0.05
    expected = torch.stack(
        [
            -torch.log_softmax(logits0, 0)[0],
            -torch.log_softmax(logits1, 0)[0],
            -torch.log_softmax(logits2, 0)[0],
        ]
    ).mean()
    assert torch.allclose(own, expected, atol=1e-5)
    sym = info_nce(q, p, n, owner, symmetric=True)
    assert not torch.allclose(sym, info_nce(q, p, n, owner))


def test_relational_distillation_asks_each_text_to_find_its_teacher_embedding():
    torch.manual_seed(0)
    teacher = torch.randn(6, 8)
    student = (teacher + 0.01 * torch.randn(6, 8)).requires_grad_()
    close = relational_distillation(student, teacher, temperature=0.05)
    swapped = relational_distillation(student[[1, 0, 2, 3, 4, 5]], teacher, temperature=0.05)
    assert float(close.detach()) < 0.05 < 2.0 < float(swapped.detach())
    teacher.requires_grad_()
    close = relational_distillation(student, teacher)
    close.backward()
    assert student.grad is not None and teacher.grad is None  # the teacher is a fixed target


def test_gradcache_gradients_equal_full_batch(tiny_model_factory):
    model = LusiferModel.build(
        encoder="tiny:xlmr",
        target="tiny:llama",
        encoder_lora={**LORA, "dropout": 0.1},
        target_lora={**LORA, "dropout": 0.1},
    )
    randomize_trained(model)
    model.freeze(connector=True, head=False, encoder_lora=True, target_lora=True)
    model.train()  # LoRA dropout active: GradCache must replay it exactly
    texts = [f"sentence number {i} with some words" for i in range(6)]
    enc = model.tokenize(texts + texts, kind=["query"] * 6 + ["document"] * 6)
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def loss_fn(reps):
        return info_nce(
            reps[:6], reps[6:], reps.new_zeros(0, reps.shape[1]), torch.zeros(0, dtype=torch.long)
        )

    def embed(chunk):
        return model(chunk["input_ids"], chunk["attention_mask"])

    params = [p for p in model.parameters() if p.requires_grad]

    def grads_of(fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        torch.manual_seed(5)
        loss = fn()
        return loss.detach(), [p.grad.clone() for p in params]

    def full_batch() -> torch.Tensor:
        loss = loss_fn(embed(inputs))
        loss.backward()
        return loss

    def chunked_graph() -> torch.Tensor:  # same dropout draws as GradCache, one big graph
        chunks = [{k: v[i : i + 4] for k, v in inputs.items()} for i in range(0, 12, 4)]
        loss = loss_fn(torch.cat([embed(c) for c in chunks]))
        loss.backward()
        return loss

    def cached() -> torch.Tensor:
        return embedding_backward(
            embed, inputs, loss_fn, micro_batch=4, bucket_rows=None, backward=torch.Tensor.backward
        )

    def worst(a, b) -> float:
        return max(
            float((x - y).abs().max() / (x.abs().max() + 1e-12)) for x, y in zip(a, b, strict=True)
        )

    # with LoRA dropout on: GradCache replays each chunk's dropout exactly
    loss_ref, ref = grads_of(chunked_graph)
    loss_gc, got = grads_of(cached)
    assert torch.allclose(loss_ref, loss_gc, atol=1e-6) and worst(ref, got) < 1e-4
    # without dropout: equal to one forward over the whole batch
    model.eval()
    loss_full, full = grads_of(full_batch)
    loss_gc, got = grads_of(cached)
    assert torch.allclose(loss_full, loss_gc, atol=1e-5) and worst(full, got) < 1e-4, worst(
        full, got
    )


def test_gradcache_pads_to_the_chunk_count_of_the_busiest_process(monkeypatch):
    """A process with fewer chunks than another runs zero-weighted copies in both passes:
    as many forwards as the busiest process, the same gradient as without them."""
    from lusifer.training import backward

    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    inputs = {"x": torch.randn(5, 3)}
    calls = []

    def embed(chunk):
        calls.append(chunk["x"].shape[0])
        return layer(chunk["x"])

    def run() -> list[torch.Tensor]:
        layer.zero_grad()
        embedding_backward(
            embed,
            inputs,
            lambda reps: reps.pow(2).sum(),
            micro_batch=2,
            bucket_rows=None,
            backward=torch.Tensor.backward,
        )
        return [p.grad.clone() for p in layer.parameters()]

    alone = run()
    assert len(calls) == 6  # 3 chunks, twice
    calls.clear()
    monkeypatch.setattr(backward, "max_over_processes", lambda n, device: n + 2)
    padded = run()
    assert len(calls) == 10  # 5 forwards in each pass
    for a, b in zip(alone, padded, strict=True):
        torch.testing.assert_close(a, b)


def test_stage_one_micro_batches_give_the_gradient_of_one_forward(tmp_path):
    """Micro-batches of 1, 2 or 3 rows accumulate exactly the gradient (and loss) of the
    whole local batch in one forward, for the LM and the distillation objectives."""
    from accelerate import Accelerator

    from lusifer.training.engine import StageTrainer

    stage = {"steps": 1, "batch_size": 6, "objectives": {"lm": 1.0, "distill": 0.5}}
    config = tiny_run_config(tmp_path, target="llama", alignment=stage)
    grads, losses = {}, {}
    for micro in (None, 1, 2, 4):
        cfg = load_train_config(
            write_run_config(tmp_path, config), [f"alignment.micro_batch={micro}"] if micro else []
        )
        name, objective, stage_config = cfg.stage_list()[0]
        torch.manual_seed(0)
        model = LusiferModel.build(cfg.model)
        randomize_trained(model)
        trainer = StageTrainer(
            model, name, stage_config, cfg.run, tmp_path / f"m{micro}", Accelerator(cpu=True),
            objective,
        )  # fmt: skip
        trainer.prepare()
        model.eval()  # no dropout: the micro-batches see the same network
        losses[micro] = trainer.step(1)
        grads[micro] = {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }
    assert grads[None]
    for micro in (1, 2, 4):
        assert grads[micro].keys() == grads[None].keys()
        for n, g in grads[None].items():
            torch.testing.assert_close(grads[micro][n], g, atol=1e-6, rtol=1e-5, msg=n)
        for part in ("loss", "lm", "distill"):
            assert losses[micro][part] == pytest.approx(losses[None][part], abs=1e-6)


def test_accumulated_backward_holds_back_all_but_the_last_sync():
    seen = []

    @contextlib.contextmanager
    def sync(last):
        seen.append(last)
        yield

    w = torch.ones(3, requires_grad=True)
    parts = [lambda i=i: (w * (i + 1)).sum() / 6 for i in range(3)]
    total = accumulated_backward(parts, torch.Tensor.backward, sync)
    assert seen == [False, False, True]
    assert float(total) == pytest.approx(3.0) and w.grad.tolist() == [1.0, 1.0, 1.0]


# -------------------------------------------------------------------- the loop
@pytest.mark.parametrize(
    ("target", "objectives", "train_target_lora", "factor"),
    [
        ("bert", {"lm": 0.0, "distill": 1.0}, False, 0.8),
        # a random tiny LM starts near log(vocab): a small but steady fall
        ("llama", {"lm": 1.0, "distill": 0.0}, True, 0.985),
    ],
)
def test_a_few_steps_lower_the_loss(tmp_path, target, objectives, train_target_lora, factor):
    stage = {
        "steps": 25,
        "learning_rate": 1e-2,
        "objectives": objectives,
        "train_target_lora": train_target_lora,
    }
    config = tiny_run_config(tmp_path, target=target, alignment=stage)
    config["run"]["save_every"] = 100
    cfg = load_train_config(write_run_config(tmp_path, config))
    assert run_training(cfg, stages=["alignment"]) is not None
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "out/alignment/log.jsonl").read_text().splitlines()
    ]
    assert sum(losses[-5:]) / 5 < factor * sum(losses[:5]) / 5, losses


def test_stage_two_target_distillation_logs_and_lowers_its_term(tmp_path):
    stage = {"steps": 25, "learning_rate": 1e-2, "target_distill": 1.0}
    config = tiny_run_config(tmp_path, target="bert", representation=stage)
    config["run"]["save_every"] = 100
    cfg = load_train_config(write_run_config(tmp_path, config))
    assert run_training(cfg, stages=["representation"]) is not None
    rows = [
        json.loads(line)
        for line in (tmp_path / "out/representation/log.jsonl").read_text().splitlines()
    ]
    assert all(abs(r["loss"] - r["contrastive"] - r["target_distill"]) < 1e-4 for r in rows)
    distill = [r["target_distill"] for r in rows]
    assert sum(distill[-5:]) / 5 < 0.8 * sum(distill[:5]) / 5, distill


def test_both_stages_save_a_model_that_reloads(tmp_path):
    cfg = load_train_config(write_run_config(tmp_path, tiny_run_config(tmp_path, target="bert")))
    out = run_training(cfg)
    assert out == tmp_path / "out/model"
    model = LusiferModel.from_pretrained(out)
    for stage in ("alignment", "representation"):
        assert (tmp_path / "out" / stage / "final" / "lusifer_config.json").is_file()
    assert model.encode(["hello"]).shape == (1, 24)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    def run(folder: Path, stop_after: int | None):
        folder.mkdir()
        config = tiny_run_config(folder, representation={"micro_batch": 3})
        config["model"]["encoder_lora"] = {**LORA, "dropout": 0.1}  # RNG state must be restored too
        cfg = load_train_config(write_run_config(folder, config))
        if stop_after is not None:  # "crash" after that step (its checkpoint is saved)
            assert run_training(cfg, stop_after=stop_after) is None
            assert not (folder / "out/alignment/final").exists()
        return run_training(cfg, resume=True)

    whole = run(tmp_path / "a", None)
    resumed = run(tmp_path / "b", 2)  # "crashes" after step 2, checkpoint at step 2
    logs = [
        [json.loads(x)["loss"] for x in (p.parent / "alignment/log.jsonl").read_text().splitlines()]
        for p in (whole, resumed)
    ]
    assert logs[0] == pytest.approx(logs[1], abs=1e-6)
    # the interrupted stage ends with the same weights as the uninterrupted run
    a, b = (
        load_file(str(p.parent / "alignment/final/model.safetensors")) for p in (whole, resumed)
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the next stage follows the same curve (it drifted by ~1e-3 while a frozen
    # target LoRA collected stale gradients in stage 1; see test_teacher_pass_keeps_...)
    curves = [
        [
            json.loads(x)["loss"]
            for x in (p.parent / "representation/log.jsonl").read_text().splitlines()
        ]
        for p in (whole, resumed)
    ]
    assert curves[0] == pytest.approx(curves[1], abs=1e-6)


def test_resume_refuses_a_folder_started_with_another_config(tmp_path):
    config = tiny_run_config(tmp_path, target="bert")
    config["alignment"]["steps"] = 2
    config["representation"]["steps"] = 2
    path = write_run_config(tmp_path, config)
    assert run_training(load_train_config(path), stages=["alignment"]) is not None
    changed = load_train_config(path, ["representation.learning_rate=0.5"])
    with pytest.raises(ConfigError, match=r"representation.learning_rate: 0.001 -> 0.5"):
        run_training(changed, resume=True)
    assert not (tmp_path / "out/representation").exists()  # nothing was trained or written
    # bookkeeping (how often to save or log) does not change what is trained
    same = load_train_config(path, ["run.save_every=1", "run.log_every=5"])
    assert run_training(same, resume=True) is not None


def test_teacher_pass_keeps_a_frozen_target_lora_frozen():
    """peft re-enables adapters by making them trainable; after the distillation teacher
    pass (adapters off) a frozen target LoRA must stay frozen and gather no gradient."""
    from lusifer.training.losses import distillation_loss

    model = LusiferModel.build(
        encoder="tiny:xlmr", target="tiny:llama", encoder_lora=LORA, target_lora=LORA
    )
    model.freeze(connector=True, head=False, encoder_lora=False, target_lora=False)
    enc = model.tokenize(["a small test sentence"])
    tgt = model.target.tokenizer(["a small test sentence"], return_tensors="pt")
    soft = model.soft_tokens(enc["input_ids"], enc["attention_mask"])
    loss = distillation_loss(model, *soft, tgt["input_ids"], tgt["attention_mask"])
    loss.backward()
    lora = [p for n, p in model.target.named_parameters() if "lora_" in n]
    assert lora and not any(p.requires_grad or p.grad is not None for p in lora)
    assert model.connector.ff[0].weight.grad is not None


def test_checkpoints_are_complete_or_absent(tmp_path):
    cfg = load_train_config(write_run_config(tmp_path, tiny_run_config(tmp_path)))
    run_training(cfg, stages=["alignment"])
    root = tmp_path / "out/alignment/checkpoints"
    names = sorted(p.name for p in root.iterdir())
    assert names == ["step-00000003", "step-00000006"]  # keep_checkpoints=2, no temp folders
    for name in names:
        assert {p.name for p in (root / name).iterdir()} == {
            "model.safetensors",
            "optimizer.pt",
            "scheduler.pt",
            "rng-0.pt",
            "trainer_state.json",
        }


# ----------------------------------------------------------------- configs etc.
def test_config_errors_name_the_key(tmp_path):
    config = tiny_run_config(tmp_path)
    config["alignment"]["learning_rte"] = 1e-3
    with pytest.raises(ConfigError, match="alignment.learning_rte"):
        load_train_config(write_run_config(tmp_path, config))
    with pytest.raises(ConfigError, match="alignment.steps: expected an integer"):
        load_train_config(
            write_run_config(tmp_path, tiny_run_config(tmp_path)), ["alignment.steps=many"]
        )
    with pytest.raises(ConfigError, match=r"data\[0\]"):
        load_train_config(
            write_run_config(tmp_path, tiny_run_config(tmp_path)), ["alignment.data=[{}]"]
        )
    with pytest.raises(ConfigError, match="target_distill .*use_head: false"):
        load_train_config(
            write_run_config(tmp_path, tiny_run_config(tmp_path)),
            ["representation.target_distill=1.0", "representation.use_head=true"],
        )
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="no LM head"):
        cfg = load_train_config(
            write_run_config(tmp_path, tiny_run_config(tmp_path, target="bert")),
            ["alignment.objectives.lm=1.0"],
        )
        run_training(cfg, stages=["alignment"])


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """4e-4 is a number in YAML 1.2 and to every user; PyYAML alone reads it as a string,
    which the strict loader then refused ("expected a number")."""
    path = write_run_config(tmp_path, tiny_run_config(tmp_path))
    text = path.read_text()
    assert "learning_rate:" in text
    path.write_text(re.sub(r"learning_rate: \S+", "learning_rate: 2e-5", text))
    cfg = load_train_config(path, ["representation.learning_rate=4E-4"])
    assert cfg.alignment.learning_rate == pytest.approx(2e-5)
    assert cfg.representation.learning_rate == pytest.approx(4e-4)
    with pytest.raises(ConfigError, match="alignment.steps: expected an integer"):
        load_train_config(path, ["alignment.steps=1e3"])
    assert load_train_config(path, ["run.output_dir=1e"]).run.output_dir == "1e"


def test_english_guard_refuses_french_training_data(tmp_path):
    french = [
        (
            "comment installer le paquet",
            "Lancez le programme et suivez les étapes affichées à l'écran.",
        ),
        ("que fait cet outil", "Il convertit les images entre de nombreux formats de fichiers."),
        ("où sont les polices", "Les polices sont rangées dans le dossier des données partagées."),
        (
            "un jeu sur les trains",
            "Construisez des réseaux ferrés et livrez des marchandises entre les villes.",
        ),
    ]
    config = tiny_run_config(tmp_path)
    config["alignment"]["data"] = [{"path": str(write_pairs(tmp_path / "fr.jsonl", french))}]
    cfg = load_train_config(write_run_config(tmp_path, config))
    with pytest.raises(NonEnglishDataError, match="allow_non_english"):
        run_training(cfg, stages=["alignment"])
    cfg.run.allow_non_english = True
    cfg.alignment.steps = 1
    assert run_training(cfg, stages=["alignment"]) is not None


def test_bundled_english_data_passes_the_guard(tmp_path):
    from lusifer.training.config import RunConfig
    from lusifer.training.data import load_sources

    config = tiny_run_config(tmp_path)
    config["alignment"]["data"] = [{"bundled": "all", "limit": 3000}]
    cfg = load_train_config(write_run_config(tmp_path, config))
    sources = load_sources(cfg.alignment.data, RunConfig())
    assert {s.name for s in sources} >= {"debian-descriptions", "wordnet-definitions"}
    assert all(s.guard.passed and s.guard.english_fraction > 0.95 for s in sources)


def test_train_command_end_to_end(tmp_path):
    path = write_run_config(tmp_path, tiny_run_config(tmp_path, target="bert"))
    from typer.testing import CliRunner

    from lusifer.cli import app

    result = CliRunner().invoke(
        app,
        [
            "train",
            str(path),
            "alignment.steps=2",
            "representation.steps=2",
            "--output",
            str(tmp_path / "cli"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli/model/lusifer_config.json").is_file()
    bad = CliRunner().invoke(app, ["train", str(path), "alignment.stepz=2"])
    assert bad.exit_code == 2 and "alignment.stepz" in bad.output


def test_distillation_teacher_ignores_target_lora(tiny_model_factory):
    model = tiny_model_factory("bert", target_lora=LORA)
    enc = model.tokenize(["some english text"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    captured = []
    original = model.target.hidden_states

    def spy(embeds, mask, causal=False):
        out = original(embeds, mask, causal=causal)
        captured.append(out)
        return out

    model.target.hidden_states = spy
    try:
        with torch.no_grad():
            distillation_loss(model, *model.soft_tokens(ids, mask), ids, mask)
            teacher_with_lora_off = captured[1]
            with model.target.model.disable_adapter():
                plain = original(
                    model.target.input_embeddings()(enc["input_ids"]), enc["attention_mask"]
                )
            with_lora = original(
                model.target.input_embeddings()(enc["input_ids"]), enc["attention_mask"]
            )
    finally:
        del model.target.hidden_states
    assert torch.allclose(teacher_with_lora_off, plain, atol=1e-6)
    assert not torch.allclose(plain, with_lora, atol=1e-4)  # the adapter does change the target


def test_token_alignment_links_overlapping_characters():
    from lusifer.training.losses import token_alignment

    # "cats run": encoder pieces <s> "cat" "s" " run" </s>; target <cls> "cats" "run" <sep>
    enc = [[(0, 0), (0, 3), (3, 4), (5, 8), (0, 0)]]
    tgt = [[(0, 0), (0, 4), (5, 8), (0, 0)]]
    weights = token_alignment(enc, tgt, 6, 5)
    assert weights.shape == (1, 6, 5)
    assert weights[0, 0].tolist() == [1, 0, 0, 0, 0]  # specials first-to-first
    assert weights[0, 1].tolist() == [0, 1, 0, 0, 0] and weights[0, 2].tolist() == [0, 1, 0, 0, 0]
    assert weights[0, 3].tolist() == [0, 0, 1, 0, 0]
    assert weights[0, 4].tolist() == [0, 0, 0, 1, 0]  # and last-to-last
    assert weights[0, 5].sum() == 0  # padding links to nothing


def test_least_squares_pairs_read_the_states_the_connector_reads():
    from lusifer.training.connector_init import token_pairs

    model = LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert")
    text = ["The quick brown fox jumps over the lazy dog."]
    plain, targets = token_pairs(model, text, show_progress=False)
    model.connector.centering = 0.5
    centred, same_targets = token_pairs(model, text, show_progress=False)
    assert torch.equal(targets, same_targets)
    shift = plain - centred  # half the text's mean state, the same for every token
    assert shift.abs().max() > 1e-3
    assert torch.allclose(shift, shift[:1].expand_as(shift), atol=1e-5)


def token_distillation_loss(
    model,
    encoder_ids: torch.Tensor,
    encoder_mask: torch.Tensor,
    target_ids: torch.Tensor,
    alignment: torch.Tensor,
) -> torch.Tensor:
    """Each soft token should sit where the target's own input embeddings of the same
    characters sit: a dense, cheap signal (no pass through the target) that teaches the
    connector a token-level dictionary from the encoder's space into the target's."""
    soft, _ = model.soft_tokens(encoder_ids, encoder_mask)
    table = model.target.input_embeddings().weight
    with torch.no_grad():
        wanted = alignment.to(table.dtype) @ table[target_ids]  # [B, Le, d]
        valid = alignment.sum(-1) > 0
        scale = table.float().var(dim=0).sum()
    soft = soft[:, : wanted.shape[1]]
    error = (soft.float() - wanted.float()).pow(2).sum(-1) / scale
    return error[valid].mean()


@pytest.mark.parametrize("centering", [0.0, 0.5])
def test_least_squares_connector_init_fits_the_token_targets(centering):
    from lusifer.training.connector_init import least_squares_connector
    from lusifer.training.losses import real_offsets, token_alignment

    model = LusiferModel.build(
        encoder="tiny:xlmr",
        target="tiny:bert",
        connector_hidden_size=128,
        connector_centering=centering,
    )
    texts = [q for q, _ in ENGLISH] + [p for _, p in ENGLISH]
    enc = model.tokenize(texts, return_offsets=True)
    tgt = model.target.tokenizer(
        texts, padding=True, return_offsets_mapping=True, return_tensors="pt"
    )
    weights = token_alignment(
        real_offsets(enc), real_offsets(tgt), enc["input_ids"].shape[1], tgt["input_ids"].shape[1]
    )

    def loss() -> float:
        with torch.no_grad():
            return float(
                token_distillation_loss(
                    model, enc["input_ids"], enc["attention_mask"], tgt["input_ids"], weights
                )
            )

    before = loss()
    r2 = least_squares_connector(model, texts, show_progress=False)
    after = loss()
    assert 0.2 < r2 <= 1.0
    assert after < 0.8 * before, (before, after)


def test_least_squares_init_runs_in_training(tmp_path):
    config = tiny_run_config(
        tmp_path,
        target="bert",
        alignment={"steps": 2, "connector_init": "least_squares", "connector_init_examples": 16},
    )
    cfg = load_train_config(write_run_config(tmp_path, config))
    assert run_training(cfg, stages=["alignment"]) is not None


def test_the_least_squares_start_reads_the_encoder_the_steps_read(tmp_path, monkeypatch):
    """With the frozen encoder on onnxruntime, the connector's start is fitted on the
    onnxruntime states too (the torch encoder's differ in float rounding, which moved
    every later step of the demo); on the torch encoder, no graph runs."""
    from lusifer.onnx.runtime import OnnxEncoderStates

    monkeypatch.setenv("LUSIFER_CACHE", str(tmp_path / "cache"))
    calls: list[int] = []
    run_graph = OnnxEncoderStates.__call__

    def counted(self, input_ids, attention_mask):
        calls.append(int(input_ids.shape[0]))
        return run_graph(self, input_ids, attention_mask)

    monkeypatch.setattr(OnnxEncoderStates, "__call__", counted)
    stage = {
        "steps": 0,
        "connector_init": "least_squares",
        "connector_init_examples": 16,
        "train_encoder_lora": False,
    }
    for backend, graph_rows in (("torch", 0), ("onnx", 16)):
        calls.clear()
        folder = tmp_path / backend
        folder.mkdir()
        config = tiny_run_config(folder, target="bert", alignment=stage)
        config["run"]["frozen_encoder_backend"] = backend
        run_training(load_train_config(write_run_config(folder, config)), stages=["alignment"])
        assert sum(calls) == graph_rows, (backend, calls)


def test_a_frozen_encoder_trains_the_same_on_onnxruntime_and_torch(tmp_path, monkeypatch):
    """A stage that trains none of the encoder can read it through onnxruntime on CPU
    (``frozen_encoder_backend: auto``, here measured faster) and learns what the torch
    encoder teaches: both read it without dropout, as at inference."""
    from lusifer.onnx import calibration

    monkeypatch.setenv("LUSIFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(calibration, "calibrate", lambda c, **_: {"torch": 1.0, "onnx": 2.0})
    runs = {}
    for backend in ("torch", "auto"):
        folder = tmp_path / backend
        folder.mkdir()
        stage = {"train_encoder_lora": False, "target_distill": 1.0}
        config = tiny_run_config(folder, target="bert", representation=stage)
        config["model"]["encoder_lora"] = {**LORA, "dropout": 0.1}
        config["run"]["frozen_encoder_backend"] = backend
        out = run_training(load_train_config(write_run_config(folder, config)))
        logs = (out.parent / "representation/log.jsonl").read_text().splitlines()
        runs[backend] = (
            [json.loads(line)["loss"] for line in logs],
            load_file(str(out / "model.safetensors")),
        )
        graphs = list((tmp_path / "cache" / "onnx").glob("encoder-*.onnx"))
        assert len(graphs) == (0 if backend == "torch" else 1), graphs
    (torch_losses, torch_weights), (onnx_losses, onnx_weights) = runs["torch"], runs["auto"]
    assert onnx_losses == pytest.approx(torch_losses, rel=1e-4)
    for key, value in torch_weights.items():
        torch.testing.assert_close(onnx_weights[key], value, atol=1e-4, rtol=1e-3)


def test_a_frozen_encoder_that_cannot_be_exported_trains_on_torch(tmp_path, monkeypatch):
    import lusifer.onnx.export as export

    monkeypatch.setenv("LUSIFER_CACHE", str(tmp_path / "cache"))  # no calibration record

    blocker = tmp_path / "not-a-folder"  # the graph's folder cannot be created: a file in
    blocker.write_text("x")  # the way (read-only or full disks fail at the same place)
    monkeypatch.setattr(export, "encoder_export_path", lambda *a, **k: blocker / "enc.onnx")
    config = tiny_run_config(tmp_path, target="bert", representation={"train_encoder_lora": False})
    cfg = load_train_config(write_run_config(tmp_path, config))
    with pytest.warns(UserWarning, match="runs on torch instead"):
        assert run_training(cfg, stages=["representation"]) is not None
    config["run"]["frozen_encoder_backend"] = "onnx"  # asked for explicitly: an error
    config["run"]["output_dir"] = str(tmp_path / "out-onnx")
    cfg = load_train_config(write_run_config(tmp_path, config))
    with pytest.raises(OnnxExportError, match="exporting the encoder"):
        run_training(cfg, stages=["representation"])


def test_a_collapsed_stage_two_is_reported(tmp_path, monkeypatch):
    import warnings

    config = tiny_run_config(tmp_path, target="bert", representation={"steps": 12})
    cfg = load_train_config(write_run_config(tmp_path, config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_training(cfg, stages=["representation"])
    assert not [w for w in caught if "collapsed" in str(w.message)]  # a healthy run
    logged = [json.loads(x) for x in (tmp_path / "out/representation/log.jsonl").open()]
    assert all(0 < r["mean_cosine"] < 0.999 for r in logged)

    embed = LusiferModel.embed_states  # every text gets the same embedding
    monkeypatch.setattr(
        LusiferModel, "embed_states", lambda self, *a, **k: embed(self, *a, **k) * 0 + 1
    )
    config["run"]["output_dir"] = str(tmp_path / "collapsed")
    cfg = load_train_config(write_run_config(tmp_path, config))
    with pytest.warns(UserWarning, match="step 10: the embeddings have collapsed"):
        run_training(cfg, stages=["representation"])


def test_onnx_encoder_backend_refuses_a_stage_that_trains_the_encoder(tmp_path):
    config = tiny_run_config(tmp_path, target="bert")  # stage 1 trains the encoder LoRA
    config["run"]["frozen_encoder_backend"] = "onnx"
    cfg = load_train_config(write_run_config(tmp_path, config))
    with pytest.raises(ValueError, match="alignment.train_encoder_lora is set"):
        run_training(cfg, stages=["alignment"])


def _sources(sizes: dict[str, int]):
    from lusifer.data.readers import PairRow
    from lusifer.training.config import DataSource
    from lusifer.training.data import LoadedSource

    return [
        LoadedSource(
            DataSource(path="x"),
            name,
            pairs=[PairRow(f"{name} q{i}", f"{name} p{i}", dataset=name) for i in range(n)],
        )
        for name, n in sizes.items()
    ]


def test_round_robin_gives_every_data_set_its_turn_and_proportional_follows_size():
    from collections import Counter

    from lusifer.training.data import contrastive_batch, pick_source

    sources = _sources({"big": 900, "small": 30, "mid": 300})
    turns = [pick_source(sources, 0, step, "round_robin").name for step in range(6)]
    assert turns == ["big", "small", "mid", "big", "small", "mid"]
    drawn = Counter(pick_source(sources, 0, step).name for step in range(600))
    assert drawn["big"] > drawn["mid"] > drawn["small"]  # 900 : 300 : 30
    batch = contrastive_batch(sources, 4, 0, seed=0, step=1, sampling="round_robin")
    assert batch.dataset == "small" and all(q.startswith("small ") for q in batch.queries)


@pytest.mark.parametrize(
    ("sampling", "most_from_big"), [("proportional", True), ("round_robin", False)]
)
def test_least_squares_start_shares_texts_as_the_stage_samples(
    tmp_path, monkeypatch, sampling, most_from_big
):
    import lusifer.training.connector_init as connector_init

    seen: list[str] = []

    def record(model, texts, **kwargs):
        seen.extend(texts)
        return 1.0

    monkeypatch.setattr(connector_init, "least_squares_connector", record)
    big = write_pairs(tmp_path / "big.jsonl", repeat=40)
    rows = [
        (f"small: how do I print page {i}", f"small: choose File, then Print, for page {i}.")
        for i in range(8)
    ]
    small = write_pairs(tmp_path / "small.jsonl", rows=rows, repeat=1)
    config = tiny_run_config(
        tmp_path,
        target="bert",
        alignment={
            "steps": 0,
            "connector_init": "least_squares",
            "connector_init_examples": 16,
            "dataset_sampling": sampling,
            "data": [{"path": str(big)}, {"path": str(small)}],
        },
    )
    cfg = load_train_config(write_run_config(tmp_path, config))
    run_training(cfg, stages=["alignment"])
    from_small = sum(t.startswith("small:") for t in seen)
    assert len(seen) == 16
    assert (from_small < 4) == most_from_big, from_small
    if sampling == "round_robin":
        assert from_small == 8


def test_ctrl_c_saves_a_checkpoint_and_stops(tmp_path, monkeypatch):
    import os
    import signal

    from lusifer.training.engine import StageTrainer

    original = StageTrainer.step

    def step_then_interrupt(self, step):
        metrics = original(self, step)
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C mid-step
        return metrics

    monkeypatch.setattr(StageTrainer, "step", step_then_interrupt)
    cfg = load_train_config(write_run_config(tmp_path, tiny_run_config(tmp_path, target="bert")))
    assert run_training(cfg) is None  # stopped cleanly, no exception
    root = tmp_path / "out/alignment/checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-00000002"]
    assert not (tmp_path / "out/alignment/final").exists()
    monkeypatch.setattr(StageTrainer, "step", original)
    assert run_training(cfg, resume=True) == tmp_path / "out/model"


def test_shipped_configs_and_ablation_variants_load():
    import importlib.util

    from lusifer.demo import demo_config_path
    from lusifer.training.config import DataSource

    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "src" / "lusifer" / "configs").glob("*.yaml")):
        load_train_config(path)
    spec = importlib.util.spec_from_file_location("ablations", root / "benchmarks" / "ablations.py")
    ablations = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablations)
    for name, (target, overrides, _) in ablations.VARIANTS.items():
        cfg = load_train_config(demo_config_path(target), overrides)
        assert cfg.representation is not None, name
    without = load_train_config(
        demo_config_path("minilm"), ablations.VARIANTS["without help paragraphs"][1]
    )
    for stage in (without.alignment, without.representation):
        assert all(isinstance(d, DataSource) for d in stage.data)
        assert {d.bundled for d in stage.data} == {
            "debian-descriptions",
            "wordnet-definitions",
            "wordnet-examples",
        }
    assert without.alignment.data[0].reconstruct_prob == 0.5
    # the demo's stage 1 is the least-squares start alone: scaling keeps it at 0 steps
    assert ablations.scaled_steps(0, 1.0) == 0
    assert ablations.scaled_steps(260, 0.3) == 78 and ablations.scaled_steps(2, 0.1) == 1
