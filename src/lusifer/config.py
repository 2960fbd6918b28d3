"""Typed configuration: the model's config and the strict dict -> dataclass loader.

Every config in the package (model, training) is a dataclass. ``from_dict`` turns a
plain dict (from JSON or YAML) into one, refusing unknown keys and wrong types with an
error that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

PoolingMethod = Literal["mean", "last", "cls"]


class ConfigError(ValueError):
    """A configuration value is unknown, missing or of the wrong type (``key``: which one,
    when known; ``problem``: the message without the key)."""

    def __init__(self, message: str, key: str | None = None, problem: str | None = None):
        super().__init__(message)
        self.key, self.problem = key, problem or message


def _bad(key: str, problem: str) -> ConfigError:
    return ConfigError(f"{key}: {problem}", key, problem)


@dataclass
class LoraSettings:
    """LoRA adapter settings (the paper: r=16, alpha=32, dropout 0.1, all linear layers)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: str | list[str] = "all-linear"


@dataclass
class RouteSettings:
    """Ours (issue: English kept exactly). A routed model embeds text its router judges
    English with the target alone, on the target's own tokens, pooling and prompt (the
    "native" route, nothing trained applied), and every other text through the encoder
    and connector (the "connector" route). ``None`` values are filled in when the model
    is built, from the target's own settings (a bundled backbone's, or a
    sentence-transformers folder's ``1_Pooling`` and ``sentence_bert_config.json``), so a
    saved folder records exactly what its native route does."""

    pooling: PoolingMethod | None = None
    # prepended to the text; "{instruction}" in it is replaced by the task instruction
    # (e.g. E5-Mistral: "Instruct: {instruction}\nQuery: "), dropped when there is none
    query_prefix: str | None = None
    document_prefix: str | None = None
    max_length: int | None = None  # the target's own token limit
    # the router's settings (lusifer.model.router.LanguageRouter); empty: its defaults
    router: dict[str, Any] = field(default_factory=dict)


@dataclass
class LusiferConfig:
    """What a LUSIFER model is made of.

    ``encoder`` and ``target`` are backbone references: a bundled offline name
    (``multilingual-e5-small``), a local folder, a hub id, or ``tiny:<name>`` for tests.
    """

    encoder: str
    target: str
    connector_hidden_size: int | None = None  # None: the encoder's hidden size (paper)
    connector_activation: Literal["relu", "gelu", "silu"] = "relu"
    # Ours (0.0 is the paper): the connector reads each encoder token state minus this
    # fraction of the text's mean state, i.e. with part of what all its tokens share
    # (see lusifer.model.connector.Connector.prepare).
    connector_centering: float = 0.0
    num_learned_tokens: int = 0
    pooling: PoolingMethod = "mean"
    # The paper pools over every token, instruction included; False pools over the text's
    # tokens only (the instruction is still attended to), as LLM2Vec does.
    pool_instruction: bool = True
    # Ours (True is the paper): False makes the model ignore task instructions everywhere
    # (training, evaluation, serving) and read the bare text. For targets never trained
    # with instructions, such as the demo's all-MiniLM-L6-v2 (see the README).
    use_instructions: bool = True
    projection_head: bool = False
    encoder_lora: LoraSettings | None = None
    target_lora: LoraSettings | None = None
    max_length: int = 512
    # None: every text takes the connector route (the paper); set: English text takes
    # the target alone (see RouteSettings)
    routes: RouteSettings | None = None
    query_template: str = "{instruction}.\n{text}"
    document_template: str = "{instruction}. Candidate:\n{text}"
    # Filled in by the model when built; a saved model is refused if its backbones differ.
    encoder_signature: dict[str, Any] = field(default_factory=dict)
    target_signature: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_learned_tokens < 0:
            raise ConfigError(f"num_learned_tokens must be >= 0, got {self.num_learned_tokens}")
        if not 0.0 <= self.connector_centering <= 1.0:
            raise ConfigError(
                f"connector_centering must be between 0 and 1, got {self.connector_centering}"
            )
        if self.max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {self.max_length}")
        if self.routes is not None and self.projection_head:
            raise ConfigError(
                "routes needs projection_head: false (the native route's vectors are the "
                "target's own, and the head's output lives in another space)"
            )
        for key in ("query_template", "document_template"):
            if "{text}" not in getattr(self, key):
                raise ConfigError(f"{key} must contain '{{text}}'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxdict = 6
_short.maxlevel = 3
_SCALARS = (str, int, float, bool, type(None))


def short_repr(value: Any) -> str:
    """``repr(value)``, cut short: an error never quotes a whole huge (or YAML-alias
    exploded) value."""
    return _short.repr(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert dicts into nested dataclasses."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [o for o in get_args(tp) if o is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        if len(options) == 1:  # Optional[X]: X's own error is the useful one
            return _coerce(value, options[0], key)
        errors = []
        for option in get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise _bad(key, f"expected {_type_name(tp)}, got {short_repr(value)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise _bad(key, f"expected one of {list(get_args(tp))}, got {short_repr(value)}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _bad(key, f"expected a mapping for {tp.__name__}, got {short_repr(value)}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _bad(key, f"expected a list, got {short_repr(value)}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(key, f"expected a mapping, got {short_repr(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _bad(key, f"keys must be strings, got {short_repr(k)}")
            if not isinstance(v, _SCALARS):  # plain facts, never a nested (or cyclic) tree
                raise _bad(
                    f"{key}.{k}", f"expected a string, number, boolean or null, got {short_repr(v)}"
                )
            out[k] = v
        return out
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(key, f"expected a number, got {short_repr(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(key, f"expected an integer, got {short_repr(value)}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise _bad(key, f"expected {tp.__name__}, got {short_repr(value)}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping, got {short_repr(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + _short.repr(k)[1:-1] for k in unknown)}; "
            f"valid keys for {cls.__name__}: {', '.join(sorted(fields))}",
            prefix + unknown[0],
            f"unknown key; valid keys: {', '.join(sorted(fields))}",
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                f"missing required config key {prefix + name}", prefix + name, "missing (required)"
            )
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}") from None
