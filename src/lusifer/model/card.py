"""Model cards and the sentence-transformers files of a saved LUSIFER folder.

:meth:`LusiferModel.save_pretrained` writes, beside ``lusifer_config.json`` and
``model.safetensors``:

- ``README.md``: a Hugging Face model card (:func:`build_model_card`) with YAML metadata
  built through ``huggingface_hub.ModelCardData`` (languages, ``library_name: lusifer``,
  tags, ``base_model`` = the encoder and target, ``datasets`` = the training data's hub
  ids when the training config is known, ``pipeline_tag: sentence-similarity``) and, when
  an evaluation is given, a ``model-index`` block of ``huggingface_hub.EvalResult`` rows;
- ``modules.json``, ``lusifer_module.json``, ``config_sentence_transformers.json`` and
  ``1_Normalize/config.json`` (:func:`write_sentence_transformers_files`), so the folder,
  or the hub repo it is pushed to, loads with
  ``SentenceTransformer(path_or_repo, trust_remote_code=True)`` wherever ``lusifer`` is
  installed (the first module is ``lusifer.interop.sentence_transformers.LusiferModule``).

None of this imports sentence-transformers (an optional dependency).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..evaluation.entry import TYPE_TO_MTEB_TYPE
from ..files import atomic_write

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCard

    from ..config import LusiferConfig
    from ..training.config import TrainConfig

CARD_NAME = "README.md"
LIBRARY_NAME = "lusifer"
PIPELINE_TAG = "sentence-similarity"
TAGS = [
    "sentence-transformers",
    "feature-extraction",
    "sentence-similarity",
    "multilingual",
    "lusifer",
]
TRAIN_CONFIG_NAME = "train_config.yaml"  # what ``lusifer train`` writes beside ``model/``
RESULTS_NAME = "results.json"  # what ``lusifer evaluate`` writes

ST_MODULES = "modules.json"
ST_MODULE_CONFIG = "lusifer_module.json"
ST_CONFIG = "config_sentence_transformers.json"
ST_NORMALIZE = "1_Normalize"
LUSIFER_MODULE = "lusifer.interop.sentence_transformers.LusiferModule"
NORMALIZE_MODULE = "sentence_transformers.base.modules.normalize.Normalize"


# --------------------------------------------------------------------------- sentence-transformers
def write_sentence_transformers_files(folder: str | Path, *, max_seq_length: int) -> None:
    """The files that make a LUSIFER folder a sentence-transformers folder:
    ``[LusiferModule (this folder), Normalize]``, cosine similarity, no default prompt."""
    folder = Path(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": LUSIFER_MODULE},
        {"idx": 1, "name": "1", "path": ST_NORMALIZE, "type": NORMALIZE_MODULE},
    ]
    config = {
        "model_type": "SentenceTransformer",
        "prompts": {"query": "", "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    (folder / ST_MODULES).write_text(json.dumps(modules, indent=2))
    (folder / ST_MODULE_CONFIG).write_text(
        json.dumps({"use_head": False, "max_seq_length": max_seq_length}, indent=4)
    )
    (folder / ST_CONFIG).write_text(json.dumps(config, indent=2))
    (folder / ST_NORMALIZE).mkdir(exist_ok=True)
    (folder / ST_NORMALIZE / "config.json").write_text(
        json.dumps(
            {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"},
            indent=4,
        )
    )


# --------------------------------------------------------------------------- metadata pieces
def hub_id(reference: str | None) -> str | None:
    """The hub id behind a backbone reference: a bundled offline backbone's original hub
    id, a hub id itself; None for local folders and test backbones."""
    if not reference:
        return None
    from ..backbones.offline import find_offline_backbone

    offline = find_offline_backbone(reference)
    if offline is not None:
        for alias in offline.aliases:
            if "/" in alias:  # aliases are lower case; the description starts with the id
                first = offline.description.split(":", 1)[0]
                return first if first.lower() == alias else alias
        return None
    if ":" in reference or reference.startswith((".", "/", "~")) or Path(reference).exists():
        return None
    return reference if reference.count("/") == 1 else None


def card_languages() -> list[str]:
    """The paper's 14 benchmark languages first, then the other languages lusifer scores
    (all covered by the XLM-R vocabulary the paper's and the demo's encoders share)."""
    from ..evaluation.languages import known_languages, order_languages

    return order_languages(known_languages())


def read_training_config(training: Any) -> TrainConfig | None:
    """A training config: a ``TrainConfig``, a dict, or a path to the
    ``train_config.yaml`` that ``lusifer train`` writes (None when there is none)."""
    from ..config import from_dict
    from ..training.config import TrainConfig, load_train_config

    if training is None or isinstance(training, TrainConfig):
        return training
    if isinstance(training, str | Path):
        return load_train_config(training) if Path(training).is_file() else None
    return from_dict(TrainConfig, dict(training))


def training_stages(training: TrainConfig | None) -> list[dict[str, Any]]:
    """The stages of a training config (:meth:`TrainConfig.stage_list`: shorthand sections
    included) as plain dicts, each with its ``name`` and ``objective``."""
    if training is None:
        return []
    return [
        {**dataclasses.asdict(stage), "name": name, "objective": objective}
        for name, objective, stage in training.stage_list()
    ]


def _source_name(source: Mapping[str, Any]) -> str:
    if source.get("hf_dataset"):
        subset = f" ({source['hf_subset']})" if source.get("hf_subset") else ""
        return f"{source['hf_dataset']}{subset}"
    if source.get("bundled"):
        return f"lusifer's bundled English data ({source['bundled']})"
    return str(source.get("name") or Path(str(source.get("path") or "local data")).name)


def training_datasets(training: TrainConfig | None) -> list[str]:
    """The hub ids of the training data (local files and bundled data are not on the hub)."""
    ids: list[str] = []
    for stage in training_stages(training):
        for source in stage.get("data") or []:
            ref = source.get("hf_dataset")
            if ref and hub_id(ref) and ref not in ids:
                ids.append(ref)
    return ids


# --------------------------------------------------------------------------- evaluation
def read_evaluation(evaluation: Any) -> dict[str, Any]:
    """An evaluation's ``results.json`` payload from an ``EvaluationReport``, a dict, the
    ``results.json`` file or the folder ``lusifer evaluate`` wrote."""
    if isinstance(evaluation, Mapping):
        return dict(evaluation)
    if hasattr(evaluation, "to_dict") and hasattr(evaluation, "summaries"):
        return evaluation.to_dict()
    path = Path(evaluation)
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation results at {path} (run lusifer evaluate first)")
    return json.loads(path.read_text(encoding="utf-8"))


def pick_model(payload: Mapping[str, Any], model: str | None = None) -> str:
    """The evaluated model a card reports: ``model``, else the first one (``lusifer
    evaluate MODEL BASELINE...`` lists the model under test first)."""
    names = list(payload.get("results") or {})
    if not names:
        raise ValueError("the evaluation holds no results")
    if model is None:
        return names[0]
    if model not in names:
        raise ValueError(f"no model {model!r} in the evaluation; it holds {names}")
    return model


def _dataset_type(task_name: str) -> str:
    """The hub dataset of an mteb task (mteb's own model cards used it); the task name for
    a local task."""
    try:
        import mteb

        path = mteb.get_task(task_name).metadata.dataset["path"]
    except Exception:  # a local task, or a name mteb does not know
        return task_name
    return str(path)


def eval_results(payload: Mapping[str, Any], model: str | None = None) -> list[EvalResult]:
    """One ``huggingface_hub.EvalResult`` per task and subset of one evaluated model: the
    task's mteb type, the dataset (hub id for mteb tasks), its subset as ``config``, the
    split, and the mteb main score x100 (as lusifer's tables show it)."""
    from huggingface_hub import EvalResult

    name = pick_model(payload, model)
    tasks = payload["results"][name].get("tasks") or {}
    rows = []
    for key, task in tasks.items():
        dataset_type = _dataset_type(task["name"])
        for subset, value in (task.get("subset_scores") or {"default": task["score"]}).items():
            rows.append(
                EvalResult(
                    task_type=TYPE_TO_MTEB_TYPE.get(task["type"], task["type"]),
                    dataset_type=dataset_type,
                    dataset_name=f"MTEB {key}" + (f" ({subset})" if subset != "default" else ""),
                    dataset_config=subset,
                    dataset_split=task["split"],
                    metric_type=task["metric"],
                    metric_value=round(float(value), 4),
                    source_name="lusifer evaluate (mteb)",
                    source_url="https://github.com/embeddings-benchmark/mteb",
                )
            )
    return rows


def _results_table(payload: Mapping[str, Any]) -> list[str]:
    results = payload.get("results") or {}
    languages = list(payload.get("languages") or [])
    if not results or not languages:
        return []
    fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        "| model | " + " | ".join(languages) + " | avg |",
        "|---" * (len(languages) + 2) + "|",
    ]
    for model, summary in results.items():
        langs = summary.get("languages") or {}
        cells = [fmt(langs.get(lang)) for lang in languages]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {fmt(summary.get('average'))} |")
    return lines


# --------------------------------------------------------------------------- the card
def _recipe_lines(training: TrainConfig | None) -> list[str]:
    stages = training_stages(training)
    if not stages:
        return [
            "The training config was not saved with this folder; `lusifer train` keeps it in "
            "the run folder's `train_config.yaml`."
        ]
    lines = [
        "English data only (the paper's premise): alignment stages fit the connector to the "
        "target, representation stages train the pipeline contrastively.",
        "",
        "| stage | objective | length | batch | learning rate | data |",
        "|---|---|---|---|---|---|",
    ]
    for stage in stages:
        length = []
        if stage.get("steps") is not None:
            length.append(f"{stage['steps']} steps")
        if stage.get("epochs") is not None:
            length.append(f"{stage['epochs']} epochs")
        data = ", ".join(_source_name(s) for s in stage.get("data") or [])
        lines.append(
            f"| {stage.get('name')} | {stage.get('objective')} | {' / '.join(length) or '-'} "
            f"| {stage.get('batch_size', '')} | {stage.get('learning_rate', '')} | {data} |"
        )
    return lines


def build_model_card(
    config: LusiferConfig,
    *,
    model_id: str,
    embedding_size: int | None = None,
    evaluation: Any = None,
    evaluation_model: str | None = None,
    training: Any = None,
    license: str | None = None,
    model_name: str | None = None,
) -> ModelCard:
    """The model card of a LUSIFER model.

    Args:
        config: the model's :class:`~lusifer.config.LusiferConfig`.
        model_id: what the usage snippets load (a hub repo id or a folder).
        embedding_size: the embedding width, when known.
        evaluation: an ``EvaluationReport``, a ``results.json`` payload, file or folder:
            adds a ``model-index`` block and a results table.
        evaluation_model: which evaluated model the ``model-index`` reports (default: the
            first).
        training: the training config (``TrainConfig``, dict, or ``train_config.yaml``):
            adds ``datasets`` and the recipe.
        license: the card's ``license`` (a hub license id), when known.
        model_name: the ``model-index`` name (default: the last part of ``model_id``).
    """
    from huggingface_hub import ModelCard, ModelCardData

    train = read_training_config(training)
    payload = read_evaluation(evaluation) if evaluation is not None else None
    rows = eval_results(payload, evaluation_model) if payload else []
    bases = [b for b in (hub_id(config.encoder), hub_id(config.target)) if b]
    name = model_name or Path(model_id).name or "lusifer-model"
    data = ModelCardData(
        language=card_languages(),
        library_name=LIBRARY_NAME,
        tags=list(TAGS),
        base_model=bases or None,
        datasets=training_datasets(train) or None,
        license=license,
        pipeline_tag=PIPELINE_TAG,
        model_name=name if rows else None,
        eval_results=rows or None,
    )
    body = [
        *_summary_lines(config, name, embedding_size),
        *_usage_lines(model_id, config.use_instructions),
        "## Training",
        "",
        *_recipe_lines(train),
        *(_evaluation_lines(payload) if payload else []),
        *_limitation_lines(config),
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _summary_lines(config: LusiferConfig, name: str, embedding_size: int | None) -> list[str]:
    """The card's title, what the model is and its parts."""
    sizes = f" ({embedding_size}-dimensional vectors)" if embedding_size else ""
    connector = f" (hidden {config.connector_hidden_size})" if config.connector_hidden_size else ""
    encoder_lora = f"r={config.encoder_lora.r}" if config.encoder_lora else "none"
    target_lora = f"r={config.target_lora.r}" if config.target_lora else "none"
    return [
        f"# {name}",
        "",
        "A multilingual text embedder built with [LUSIFER](https://arxiv.org/abs/2501.00874) "
        "(Language Universal Space Integration for Enhanced Multilingual Embeddings): a "
        "multilingual encoder reads the text, a connector maps its token states into the input "
        "space of an English-centric embedding model, which reads them instead of its own "
        f"tokens; the pooled output is the embedding{sizes}.",
        "",
        f"- encoder: `{config.encoder}`",
        f"- target: `{config.target}`",
        f"- connector: {config.connector_activation} MLP{connector}",
        f"- pooling: {config.pooling}"
        + (", projection head" if config.projection_head else "")
        + (f", {config.num_learned_tokens} learned tokens" if config.num_learned_tokens else ""),
        f"- LoRA: encoder {encoder_lora}, target {target_lora}",
        "- instructions: "
        + (
            "read (give each task's English instruction)"
            if config.use_instructions
            else "ignored (the model reads bare text)"
        ),
        f"- max length: {config.max_length} encoder tokens",
        "",
    ]


def _usage_lines(model_id: str, reads_instructions: bool) -> list[str]:
    """How to load and encode with lusifer and with sentence-transformers."""
    # the demo's kind of model reads bare text
    instruction_arg = ', instruction="Retrieve relevant passages"' if reads_instructions else ""
    return [
        "## Usage",
        "",
        "### lusifer",
        "",
        "```python",
        "from lusifer import LusiferModel",
        "",
        f'model = LusiferModel.from_pretrained("{model_id}")',
        'docs = model.encode(["Le chat dort sur le canapé.", "Кошка спит на диване."]'
        + instruction_arg
        + ', kind="document")',
        'query = model.encode("The cat is sleeping on the sofa."' + instruction_arg + ")",
        "print(docs @ query)",
        "```",
        "",
        'Install the `lusifer` package from its repository (`pip install ".[all]"` in a '
        "clone; it is not on PyPI); `encode` returns L2-normalised float32 rows.",
        "",
        "### sentence-transformers",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{model_id}", trust_remote_code=True)',
        'embeddings = model.encode(["Le chat dort sur le canapé.", "The cat is sleeping on the sofa."])',
        "print(model.similarity(embeddings, embeddings))",
        "```",
        "",
        "`trust_remote_code=True` lets sentence-transformers import the module class "
        "`lusifer.interop.sentence_transformers.LusiferModule` named in `modules.json`; it "
        "comes from the installed `lusifer` package, not from this repository. Prompts map "
        "onto LUSIFER's instruction and `encode_query`/`encode_document` onto its `kind`.",
        "",
    ]


def _evaluation_lines(payload: dict) -> list[str]:
    return [
        "",
        "## Evaluation",
        "",
        f"`lusifer evaluate` (mteb {_mteb_version(payload)}), suite "
        f"`{payload.get('suite') or 'local task dirs'}`: main scores x100, each language "
        "the mean of its tasks, the average the mean of the languages. Per task and subset "
        "in the `model-index` metadata.",
        "",
        *_results_table(payload),
    ]


def _limitation_lines(config: LusiferConfig) -> list[str]:
    return [
        "",
        "## Limitations",
        "",
        "- Trained on English data only: quality in other languages comes from the encoder's "
        "multilingual space through the connector, and is bounded by what the encoder covers.",
        "- The target was never trained on the encoder's representations beyond this recipe; "
        "English can trail the target used alone, and low-resource languages can trail the "
        "encoder used alone.",
        "- The backbones are referenced, not copied, unless the folder was saved with "
        "`merge=True`: loading downloads them (their own licenses apply).",
        *_bundled_lines(config),
        "",
    ]


def _bundled_lines(config: LusiferConfig) -> list[str]:
    """A caveat per backbone that is one of lusifer's bundled offline copies."""
    from ..backbones.offline import find_offline_backbone

    lines = []
    for reference in (config.encoder, config.target):
        offline = find_offline_backbone(reference)
        if offline is not None:
            lines.append(
                f"- `{reference}` is lusifer's bundled offline copy ({offline.description}); "
                "loading it needs `lusifer` and its registry packages, not the hub."
            )
    return lines


def _mteb_version(payload: Mapping[str, Any]) -> str:
    try:
        import mteb

        return mteb.__version__
    except ImportError:  # pragma: no cover
        return "2.x"


def write_model_card(folder: str | Path, card: ModelCard) -> Path:
    """Write ``README.md`` into ``folder`` atomically."""
    return atomic_write(Path(folder) / CARD_NAME, str(card))


def card_for_folder(
    folder: str | Path,
    *,
    model_id: str | None = None,
    evaluation: Any = None,
    evaluation_model: str | None = None,
    training: Any = None,
    license: str | None = None,
) -> ModelCard:
    """The card of a saved LUSIFER folder, from its ``lusifer_config.json`` alone (the model
    is not loaded); ``training`` defaults to the run's ``train_config.yaml`` when the folder
    is the ``model/`` that ``lusifer train`` wrote."""
    from ..config import LusiferConfig, from_dict
    from .loading import CONFIG_NAME

    folder = Path(folder)
    meta = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    config = from_dict(LusiferConfig, dict(meta["config"]))
    if training is None and (folder.parent / TRAIN_CONFIG_NAME).is_file():
        training = folder.parent / TRAIN_CONFIG_NAME
    return build_model_card(
        config,
        model_id=model_id or str(folder),
        evaluation=evaluation,
        evaluation_model=evaluation_model,
        training=training,
        license=license,
    )
