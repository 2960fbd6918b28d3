"""The paper's recipe as the reference code lays it out: stage-1 task mix and prompts,
several positives and hard negatives, the reference's NT-Xent, a stages list, 2-process
gradients, and the rehearsal of paper.yaml."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import run_torchrun
from safetensors.torch import load_file

from lusifer.config import ConfigError
from lusifer.data.readers import PairRow, TextRow, write_jsonl
from lusifer.training import load_train_config, run_training
from lusifer.training.config import DataSource
from lusifer.training.data import (
    LoadedSource,
    alignment_batch,
    contrastive_batch,
)
from lusifer.training.losses import info_nce, nt_xent, similarity_scores
from lusifer.training.rehearsal import english_sentence

PAPER = Path(__file__).parents[2] / "src/lusifer/configs/paper.yaml"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def _pairs(n: int, positives: int = 1, negatives: int = 0, seed: int = 0) -> list[PairRow]:
    rng = random.Random(seed)
    return [
        PairRow(
            query=f"question {i} " + english_sentence(rng, 6),
            positive=f"passage {i} " + english_sentence(rng),
            other_positives=[
                f"passage {i}.{k} " + english_sentence(rng) for k in range(1, positives)
            ],
            negatives=[f"negative {i}.{k} " + english_sentence(rng) for k in range(negatives)],
            instruction="Given a question, retrieve passages that answer the question",
        )
        for i in range(n)
    ]


# ------------------------------------------------------------------ stage 1 data


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("retrieval", {"reconstruct": 0.28, "query_to_passage": 0.30, "passage_to_query": 0.42}),
        (
            "classification",
            {"reconstruct": 0.10, "query_to_passage": 0.90, "passage_to_query": 0.0},
        ),
        ("reconstruction", {"reconstruct": 1.0, "query_to_passage": 0.0, "passage_to_query": 0.0}),
    ],
)
def test_stage_one_task_mix_follows_the_reference(group, expected):
    source = LoadedSource(
        DataSource(path="x.jsonl", alignment_tasks=group), "set", pairs=_pairs(50, positives=3)
    )
    drawn = [e for step in range(1, 201) for e in alignment_batch([source], 25, 7, step)]
    assert len(drawn) == 5000
    counts = Counter(e.task for e in drawn)
    for task, share in expected.items():
        assert abs(counts[task] / 5000 - share) < 0.02, (task, counts)


def test_stage_one_examples_read_and_write_what_the_reference_does():
    source = LoadedSource(
        DataSource(path="x.jsonl", alignment_tasks="retrieval"), "set", pairs=_pairs(20, 2)
    )
    rows = {r.query: r for r in source.pairs}
    by_task = {}
    for step in range(1, 30):
        for e in alignment_batch([source], 8, 1, step):
            by_task.setdefault(e.task, e)
    rec, q2p, p2q = by_task["reconstruct"], by_task["query_to_passage"], by_task["passage_to_query"]
    assert rec.instruction == "Please reconstruct the following text" and rec.answer is None
    assert rec.text.startswith("passage")  # retrieval sets reconstruct the passage
    assert q2p.instruction == rows[q2p.text].instruction
    assert q2p.answer in rows[q2p.text].positives
    assert p2q.instruction == "Please write a question based on this passage"
    assert rows[p2q.answer].positives.count(p2q.text) == 1
    # classification-style sets reconstruct the query; texts always reconstruct
    cls = LoadedSource(DataSource(path="x.jsonl", reconstruct_prob=1.0), "c", pairs=_pairs(5))
    assert alignment_batch([cls], 4, 0, 1)[0].text.startswith("question")
    texts = LoadedSource(DataSource(path="t.jsonl", format="texts"), "t", texts=[TextRow("a b")])
    assert alignment_batch([texts], 2, 0, 1)[0].task == "reconstruct"


def test_the_encoder_reads_the_instruction_and_the_lm_writes_the_prompted_text(
    tmp_path, monkeypatch
):
    """The reference's collator: encoder '{instruction}.\\n{text}'; LM target the same string
    for reconstruction."""
    from lusifer.model import LusiferModel
    from lusifer.training import collate

    texts = tmp_path / "texts.jsonl"
    write_jsonl(texts, [{"text": english_sentence(random.Random(i))} for i in range(8)])
    config = _config(
        tmp_path,
        stages=[_stage("align", "alignment", [{"path": str(texts), "format": "texts"}], steps=1)],
    )
    seen = {}
    original = collate.lm_target

    def spy(model, example):
        target = original(model, example)
        seen["lm"] = target
        seen["text"] = example.text
        return target

    monkeypatch.setattr(collate, "lm_target", spy)
    tokenize = LusiferModel.tokenize

    def spy_tokenize(self, texts, **kwargs):
        seen.setdefault("calls", []).append(kwargs.get("instruction"))
        return tokenize(self, texts, **kwargs)

    monkeypatch.setattr(LusiferModel, "tokenize", spy_tokenize)
    run_training(load_train_config(None, **_flat(config)))
    assert seen["lm"] == f"Please reconstruct the following text.\n{seen['text']}"
    assert ["Please reconstruct the following text"] * 4 in seen["calls"]


# ------------------------------------------------------------------ stage 2 data and losses


def test_contrastive_batches_draw_several_positives_and_negatives_at_random():
    source = LoadedSource(DataSource(path="x.jsonl"), "set", pairs=_pairs(10, 4, 40))
    batch = contrastive_batch([source], 6, 32, 3, 1, num_positives=3)
    assert Counter(batch.positive_owner) == dict.fromkeys(range(6), 3)
    assert Counter(batch.negative_owner) == dict.fromkeys(range(6), 32)
    first = [n for n, o in zip(batch.negatives, batch.negative_owner, strict=True) if o == 0]
    row = next(r for r in source.pairs if r.query == batch.queries[0])
    assert set(first) <= set(row.negatives) and first != row.negatives[:32]  # random, not the top


def _brute_nt_xent(emb, labels, rows, in_batch, temperature, similarity):
    scores = similarity_scores(emb, emb, similarity) / temperature
    losses = []
    for a in range(len(labels)):
        negs = [
            n
            for n in range(len(labels))
            if labels[n] != labels[a] and (in_batch or rows[n] == rows[a])
        ]
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a] or not (in_batch or rows[p] == rows[a]):
                continue
            logits = torch.stack([scores[a, p], *[scores[a, n] for n in negs]])
            losses.append(-torch.log_softmax(logits, 0)[0])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("similarity", ["cosine", "negative_l2"])
@pytest.mark.parametrize("in_batch", [True, False])
def test_nt_xent_matches_the_reference_definition(similarity, in_batch):
    gen = torch.Generator().manual_seed(0)
    q, p, n = (torch.randn(k, 8, generator=gen) for k in (3, 6, 5))
    pos_owner = torch.tensor([0, 0, 1, 1, 2, 2])
    neg_owner = torch.tensor([0, 0, 1, 2, 2])
    emb = torch.cat([q, p, n])
    rows = [0, 1, 2, *pos_owner.tolist(), *neg_owner.tolist()]
    labels = [0, 1, 2, *pos_owner.tolist(), 3, 4, 5, 6, 7]
    got = nt_xent(
        q,
        p,
        n,
        neg_owner,
        positive_owner=pos_owner,
        temperature=0.05,
        in_batch_negatives=in_batch,
        similarity=similarity,
    )
    want = _brute_nt_xent(emb, labels, rows, in_batch, 0.05, similarity)
    assert torch.allclose(got, want, atol=1e-5)


def test_info_nce_with_one_positive_is_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    q, p, n = (
        torch.randn(4, 8, generator=gen),
        torch.randn(4, 8, generator=gen),
        torch.randn(8, 8, generator=gen),
    )
    owner = torch.arange(4).repeat_interleave(2)
    docs = F.normalize(torch.cat([p, n]), dim=-1)
    want = F.cross_entropy(F.normalize(q, dim=-1) @ docs.T / 0.05, torch.arange(4))
    assert torch.allclose(info_nce(q, p, n, owner, temperature=0.05), want, atol=1e-5)


def test_sixteen_negatives_reach_the_loss(tmp_path, monkeypatch):
    from lusifer.training import engine

    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, _pairs(12, positives=2, negatives=20))
    widths = []
    original = engine.contrastive_loss

    def spy(kind, q, p, n, *args, **kwargs):
        widths.append((q.shape[0], p.shape[0], n.shape[0]))
        return original(kind, q, p, n, *args, **kwargs)

    monkeypatch.setattr(engine, "contrastive_loss", spy)
    stage = _stage(
        "rep",
        "representation",
        [{"path": str(pairs)}],
        steps=2,
        num_negatives=16,
        num_positives=2,
        loss="nt_xent",
        micro_batch=16,
    )
    run_training(load_train_config(None, **_flat(_config(tmp_path, stages=[stage]))))
    assert widths == [(4, 8, 64), (4, 8, 64)]  # 4 queries x 16 negatives, with GradCache
    summary = json.loads((tmp_path / "out/rep/summary.json").read_text())
    assert summary["negatives_per_query"] == 16 and summary["positives_per_query"] == 2


# ------------------------------------------------------------------ config


def _stage(name, objective, data, steps=2, batch_size=4, **extra):
    return {
        "name": name,
        "objective": objective,
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": 1e-3,
        "data": data,
        **extra,
    }


def _config(tmp_path, stages):
    return {
        "model": {
            "encoder": "tiny:xlmr",
            "target": "tiny:llama",
            "encoder_lora": LORA,
            "target_lora": LORA,
        },
        "run": {"output_dir": str(tmp_path / "out"), "seed": 3, "log_every": 1, "max_length": 128},
        "stages": stages,
    }


def _flat(config: dict) -> dict:
    return {k: v for k, v in config.items()}


def test_a_stages_list_runs_in_order_with_named_overrides_and_epochs(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, _pairs(10, negatives=2))
    data = [{"path": str(pairs), "alignment_tasks": "retrieval"}]
    config = _config(
        tmp_path,
        [
            _stage("a1", "alignment", data),
            _stage("a2", "alignment", data, learning_rate=5e-4),
            _stage("r1", "representation", data, steps=None, epochs=1.0, num_negatives=2),
        ],
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_train_config(path, ["a2.steps=1", "r1.epochs=0.5"])
    assert [(n, o) for n, o, _ in cfg.stage_list()] == [
        ("a1", "alignment"),
        ("a2", "alignment"),
        ("r1", "representation"),
    ]
    assert cfg.stage("a2").steps == 1 and cfg.stage("a2").learning_rate == 5e-4
    assert cfg.stage("r1").total_steps(10) == 2  # ceil(0.5 x 10 / 4)
    assert run_training(cfg) is not None
    steps = {
        n: json.loads((tmp_path / f"out/{n}/summary.json").read_text())["steps"]
        for n in ("a1", "a2", "r1")
    }
    assert steps == {"a1": 2, "a2": 1, "r1": 2}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["stages"].append(dict(c["stages"][0])), "repeated: a1"),
        (lambda c: c["stages"][0].pop("objective"), "needs a name and an objective"),
        (lambda c: c["stages"][0].update(steps=None), "needs steps or epochs"),
        (lambda c: c["stages"][0].update(name="../x"), "must be a folder name"),
        (lambda c: c.update(alignment=c["stages"][0]), "not both"),
        (
            lambda c: c["stages"][0]["data"][0].update(
                reconstruct_prob=0.8, query_to_passage_prob=0.5
            ),
            "must not exceed 1",
        ),
    ],
)
def test_stage_config_errors_name_the_problem(tmp_path, change, message):
    config = _config(tmp_path, [_stage("a1", "alignment", [{"path": "x.jsonl"}])])
    change(config)
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, **_flat(config))


def test_paper_config_has_the_papers_structure():
    cfg = load_train_config(PAPER)
    stages = cfg.stage_list()
    assert [o for _, o, _ in stages] == [
        "alignment",
        "alignment",
        "representation",
        "representation",
    ]
    a1, a2, r1, r2 = (s for _, _, s in stages)
    assert (a1.learning_rate, a2.learning_rate, a1.batch_size, a1.steps) == (
        2e-4,
        1.5e-4,
        256,
        10000,
    )
    assert all(d.format == "texts" for d in a1.data)
    assert {d.alignment_tasks for d in a2.data} == {"retrieval", "classification"}
    assert (r1.num_positives, r1.num_negatives, r1.batch_size, r1.epochs) == (3, 32, 64, 2)
    assert (r2.num_positives, r2.num_negatives, r2.batch_size, r2.epochs, r2.learning_rate) == (
        1,
        16,
        16,
        1,
        5e-6,
    )
    assert all(s.loss == "nt_xent" and s.temperature == 0.05 for s in (r1, r2))
    # in-batch negatives in the retrieval phase only, as the reference (main.py:309)
    assert all(d.in_batch_negatives for d in r1.data)
    assert not any(d.in_batch_negatives for d in r2.data)
    # every stage-2 source has hard negatives: a negatives field, or mined JSONL
    assert all(d.hf_negatives_field or d.path for d in r1.data + r2.data)
    # no BEIR set of the authors (their BEIR data merged test qrels into training)
    beir = (
        "MSMarco",
        "NQ",
        "HotpotQA",
        "Fever",
        "FiQA",
        "Arguana",
        "SciFact",
        "NFCorpus",
        "TREC-COVID",
        "Touche2020",
    )
    named = {d.hf_dataset for _, _, s in stages for d in s.data if d.hf_dataset}
    assert not named & {f"Hieuman/{b}" for b in beir}


# ------------------------------------------------------------------ distributed

GRAD_SCRIPT = Path(__file__).with_name("distributed_grads.py")


def _stage_for(objective: str, tmp_path: Path) -> tuple[dict, str]:
    """A stage of each objective with what distributes in it: GradCache and 16 hard
    negatives (stage 2); micro-batches, the LM and distillation objectives (stage 1)."""
    if objective == "representation":
        pairs = tmp_path / "pairs.jsonl"
        write_jsonl(pairs, _pairs(16, positives=3, negatives=20))
        stage = _stage(
            "rep",
            "representation",
            [{"path": str(pairs)}],
            num_negatives=16,
            num_positives=2,
            loss="nt_xent",
            similarity="negative_l2",
            micro_batch=8,
            train_target_lora=True,
        )
        return stage, "tiny:bert"
    texts = tmp_path / "texts.jsonl"
    write_jsonl(texts, [{"text": english_sentence(random.Random(i))} for i in range(16)])
    stage = _stage(
        "align",
        "alignment",
        [{"path": str(texts), "format": "texts"}],
        batch_size=8,
        micro_batch=2,
        objectives={"lm": 1.0, "distill": 0.5},
    )
    return stage, "tiny:llama"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("objective", ["alignment", "representation"])
def test_two_processes_give_the_gradients_of_one_process(tmp_path, objective):
    """Same global batch: the gradients before clipping and the optimizer match those of
    one process (a scale error in the gathered loss would show here; weights after AdamW
    would hide it), and every process runs as many forwards."""
    stage, target = _stage_for(objective, tmp_path)
    config = _config(tmp_path, [stage])
    config["model"]["target"] = target
    grads = {}
    for nproc in (1, 2):
        config["run"]["output_dir"] = str(tmp_path / f"out{nproc}")
        path = tmp_path / f"run{nproc}.yaml"
        path.write_text(yaml.safe_dump(config))
        out = tmp_path / f"grads{nproc}.safetensors"
        proc = run_torchrun(GRAD_SCRIPT, nproc, path, out)
        assert f"world={nproc}" in proc.stdout
        if Path("/proc/self/task").is_dir():  # each rank joined gloo's threads before exit
            assert proc.stdout.count("gloo_threads=0") == nproc, proc.stdout
        forwards = eval(proc.stdout.split("forwards=")[1].splitlines()[0])  # a list of ints
        assert len(forwards) == nproc and len(set(forwards)) == 1, forwards
        grads[nproc] = load_file(str(out))
    assert grads[1].keys() == grads[2].keys() and len(grads[1]) > 4
    for key, one in grads[1].items():
        two = grads[2][key]
        error = float((one - two).abs().max())
        assert error <= 1e-4 * float(one.abs().max()) + 1e-8, (key, error)
    total = sum(float(g.norm()) for g in grads[1].values())
    assert total > 0


@pytest.mark.timeout(900)
def test_paper_yaml_rehearses_with_two_processes(tmp_path):
    out = tmp_path / "rehearsal"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("lusifer")),
            "train",
            str(PAPER),
            "--rehearse",
            "--processes",
            "2",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "rehearsal.json").read_text())
    assert report["world_size"] == 2
    stages = report["stages"]
    assert [s["objective"] for s in stages] == [
        "alignment",
        "alignment",
        "representation",
        "representation",
    ]
    assert all(s["loss_first"] is not None and s["loss_last"] is not None for s in stages)
    assert stages[0]["rows_skipped"]["Salesforce/wikitext"] > 0  # its empty lines, skipped
    assert (stages[2]["positives_per_query"], stages[2]["negatives_per_query"]) == (3, 32)
    assert 1 < stages[2]["positives_per_query_mean"] <= 3  # rows with fewer keep theirs
    assert (stages[3]["positives_per_query"], stages[3]["negatives_per_query"]) == (1, 16)
    retrieval = [s for s, mix in stages[1]["task_mix"].items() if mix["passage_to_query"] > 0]
    assert len(retrieval) >= 4
    shares = {"query_to_passage": 0.30, "reconstruct": 0.28, "passage_to_query": 0.42}
    pooled = dict.fromkeys(shares, 0.0)
    total = 0
    for name in retrieval:
        mix = stages[1]["task_mix"][name]
        assert mix["draws"] >= 5000
        total += mix["draws"]
        for task, share in shares.items():
            # each data set within 4.5 binomial standard deviations of its share (about 0.023
            # at 8,000 draws): a wrong mapping for one data set still shows
            sd = (share * (1 - share) / mix["draws"]) ** 0.5
            assert abs(mix[task] - share) < 4.5 * sd, (name, task, mix)
            pooled[task] += mix[task] * mix["draws"]
    # pooled over >= 20,000 draws the standard deviation is <= 0.0033, so 0.01 (half the gap
    # between 0.30 and 0.28) tells two swapped shares apart at 3 standard deviations or more
    assert total >= 20000
    for task, share in shares.items():
        assert abs(pooled[task] / total - share) < 0.01, (task, pooled, total)
    assert "backbones" in report and report["backbones"]["target"]["rehearsed"] == "tiny:mistral"
