"""Interop: sentence-transformers, and the reference code's published checkpoint layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

TEXTS = [
    "The cat sits on the mat.",
    "Le chat est assis sur le tapis, près de la fenêtre.",
    "Кошка сидит на коврике.",
    "x",
]


# ------------------------------------------------------------- sentence-transformers
@pytest.fixture(scope="module")
def st_model(tiny_model_factory):
    return tiny_model_factory("mistral")


def test_sentence_transformer_matches_encode(st_model):
    from lusifer.interop import to_sentence_transformer

    st = to_sentence_transformer(st_model)
    np.testing.assert_allclose(st.encode(TEXTS), st_model.encode(TEXTS), atol=1e-5)
    got = st.encode_document(TEXTS, prompt="Retrieve the translation")
    want = st_model.encode(TEXTS, instruction="Retrieve the translation", kind="document")
    np.testing.assert_allclose(got, want, atol=1e-5)
    got = st.encode_query(TEXTS, prompt="Retrieve the translation")
    assert not np.allclose(got, want, atol=1e-3)  # kind reached the prompt
    assert st.get_embedding_dimension() == st_model.embedding_size


def test_sentence_transformer_folder_round_trip(st_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    from lusifer.interop import save_sentence_transformer, to_sentence_transformer

    folder = save_sentence_transformer(st_model, tmp_path / "st")
    modules = json.loads((folder / "modules.json").read_text())
    assert modules[0]["type"] == "lusifer.interop.sentence_transformers.LusiferModule"
    want = st_model.encode(TEXTS)
    # our loader: no trust_remote_code needed
    np.testing.assert_allclose(to_sentence_transformer(folder).encode(TEXTS), want, atol=1e-5)
    # the stock loader imports our module class only when trusted
    st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(st.encode(TEXTS), want, atol=1e-5)
    with pytest.raises(ValueError, match="trust_remote_code|third-party"):
        SentenceTransformer(str(folder), device="cpu")


def test_sentence_transformer_from_lusifer_folder(st_model, tmp_path):
    from lusifer.interop import to_sentence_transformer

    folder = st_model.save_pretrained(tmp_path / "m")
    st = to_sentence_transformer(folder)
    np.testing.assert_allclose(st.encode(TEXTS), st_model.encode(TEXTS), atol=1e-5)


# ------------------------------------------------------- the reference layout
def _linear_names(model: nn.Module) -> list[str]:
    """Every Linear's short name except the LM head: what the reference code's
    'all' target modules resolve to."""
    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m is not head
    }
    return sorted(names - {"lm_head"})


class ReferenceStyle(nn.Module):
    """The reference module's attribute layout, on tiny backbones, with real peft adapters."""

    def __init__(self, num_added_tokens: int) -> None:
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers import AutoModel, AutoModelForCausalLM

        from lusifer.backbones import resolve_backbone

        super().__init__()
        learner = AutoModel.from_pretrained(resolve_backbone("tiny:xlmr"))  # with its pooler
        llm = AutoModelForCausalLM.from_pretrained(resolve_backbone("tiny:mistral"))

        def lora(model):
            return LoraConfig(
                r=4,
                lora_alpha=8,
                lora_dropout=0.1,
                bias="none",
                task_type=TaskType.FEATURE_EXTRACTION,
                target_modules=_linear_names(model),
            )

        self.universal_learner = get_peft_model(
            learner, lora(learner), adapter_name="universal_learner_lora"
        )
        self.encoder = get_peft_model(llm, lora(llm), adapter_name="encoder_lora")
        d_in, d_out = learner.config.hidden_size, llm.config.hidden_size
        self.connection_module = nn.Module()
        self.connection_module.ff = nn.Sequential(
            nn.Linear(d_in, d_in), nn.ReLU(), nn.Linear(d_in, d_out)
        )
        self.num_added_tokens = num_added_tokens
        if num_added_tokens:
            self.connection_module.added_tokens = nn.Parameter(torch.randn(num_added_tokens, d_out))
        self.output_projection = nn.Sequential(
            nn.Linear(d_out, d_out), nn.ReLU(), nn.Linear(d_out, d_out)
        )
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():  # every tensor moves, base weights included
            for p in self.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)

    @torch.no_grad()
    def embed(self, input_ids, attention_mask, *, head: bool = False) -> torch.Tensor:
        """The reference forward, by hand: last encoder layer -> ff -> added tokens after
        the padded sequence -> bidirectional LLM -> mean over the mask -> head."""
        states = self.universal_learner(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        x = self.connection_module.ff(states)
        mask = attention_mask
        if self.num_added_tokens:
            b = x.shape[0]
            x = torch.cat([x, self.connection_module.added_tokens.expand(b, -1, -1)], dim=1)
            mask = torch.cat([mask, torch.ones(b, self.num_added_tokens, dtype=mask.dtype)], 1)
        body = self.encoder.base_model.model.model
        attn = [m for m in body.modules() if isinstance(getattr(m, "is_causal", None), bool)]
        for m in attn:
            m.is_causal = False
        keep = mask[:, None, None, :].bool().expand(-1, 1, mask.shape[1], -1)
        bias = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
        hidden = body(inputs_embeds=x, attention_mask=bias).last_hidden_state
        m = mask.unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1)
        return self.output_projection(pooled) if head else pooled

    def save(self, folder, *, n_added: int) -> None:
        from safetensors.torch import save_model

        folder.mkdir(parents=True, exist_ok=True)
        save_model(self, str(folder / "model.safetensors"))
        config = {  # the reference constructor's arguments, as PyTorchModelHubMixin saves them
            "universal_learner_name_or_path": "tiny:xlmr",
            "encoder_name_or_path": "tiny:mistral",
            "universal_learner_backbone_type": "xlm-r",
            "encoder_backbone_type": "mistral",
            "is_freeze_universal_learner": False,
            "is_freeze_encoder": False,
            "connection_type": "ff",
            "num_added_tokens": n_added,
            "pooling_method": "mean",
            "encoder_lora_name": "encoder_lora",
            "universal_learner_lora_name": "universal_learner_lora",
            "encoder_lora_target_modules": "all",
            "universal_learner_lora_target_modules": "all",
            "loar_r": 4,
            "lora_alpha": 8,
            "dropout": 0.1,
            "attn_implementation": "sdpa",
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="module", params=[0, 2])
def reference_folder(request, tmp_path_factory):
    n = request.param
    ref = ReferenceStyle(n).eval()
    folder = tmp_path_factory.mktemp(f"reference-{n}")
    ref.save(folder, n_added=n)
    return ref, folder, n


def test_reference_layout_file_has_expected_names(reference_folder):
    from safetensors import safe_open

    _, folder, n = reference_folder
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert any(".lora_A.universal_learner_lora." in k for k in keys)
    assert any(
        k.startswith("encoder.base_model.model.") and ".lora_B.encoder_lora." in k for k in keys
    )
    assert {"connection_module.ff.0.weight", "output_projection.2.bias"} <= keys
    assert ("connection_module.added_tokens" in keys) == (n > 0)


@pytest.mark.parametrize("merge", [False, True])
def test_reference_checkpoint_matches_hand_forward(reference_folder, merge):
    from lusifer import LusiferModel
    from lusifer.model.loading import load_reference_layout

    ref, folder, n = reference_folder
    model = (
        load_reference_layout(LusiferModel, folder, merge=True)
        if merge
        else LusiferModel.from_pretrained(folder)
    )
    assert model.config.num_learned_tokens == n and model.config.projection_head
    if not merge:
        from peft import PeftModel

        assert isinstance(model.encoder, PeftModel) and isinstance(model.target.model, PeftModel)
    # base weights come from the file (they were perturbed after loading the tiny backbone)
    file_emb = ref.universal_learner.base_model.model.embeddings.word_embeddings.weight
    ours = model.encoder.get_input_embeddings().weight
    torch.testing.assert_close(ours, file_emb)
    instruction = "Retrieve the translation"
    # learned tokens sit after the padded batch in the reference, after each row's text
    # here: equal for unpadded rows, so compare one text at a time when N > 0
    groups = [TEXTS] if n == 0 else [[t] for t in TEXTS]
    for group in groups:
        enc = model.tokenize(group, instruction=instruction, kind="query")
        for head in (False, True):
            want = ref.embed(enc["input_ids"], enc["attention_mask"], head=head).numpy()
            got = model.encode(
                group,
                instruction=instruction,
                normalize=False,
                use_head=head,
                batch_size=len(group),
            )
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_reference_config_errors(reference_folder, tmp_path):
    import shutil

    from lusifer import LusiferModel
    from lusifer.config import ConfigError
    from lusifer.model.loading import load_reference_layout

    _, folder, _ = reference_folder
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "connection_type": "attn"}))
    with pytest.raises(ConfigError, match="connection_type"):
        load_reference_layout(LusiferModel, bad)
    (bad / "config.json").write_text(json.dumps({**config, "encoder_lora_name": "other"}))
    with pytest.raises(ValueError, match="adapter"):
        load_reference_layout(LusiferModel, bad)


def test_reference_folder_through_the_backend_loader(reference_folder):
    from lusifer import LusiferModel, load

    ref, folder, n = reference_folder
    encoder = load(folder, backend="torch", threads=1)
    assert isinstance(encoder, LusiferModel)
    enc = encoder.tokenize(TEXTS[:1])
    want = ref.embed(enc["input_ids"], enc["attention_mask"]).numpy()
    got = encoder.encode(TEXTS[:1], normalize=False)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
