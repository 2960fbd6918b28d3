"""Which route a text takes: ``"native"`` (the English target reads the text on its own
tokens) or ``"connector"`` (multilingual encoder + connector, which handles English too).

A false "native" (Swahili read by an English-only target) costs much more than a false
"connector" (English read through the connector), so a text is routed native only when it
is confidently English; everything unsure goes to the connector:

1. fewer than ``min_letters`` letters (empty, whitespace, very short texts);
2. any letter outside the Latin script (non-Latin texts and mixed-script texts);
3. code-like text: symbols (``{}[]<>=;|\\/_#$%^&*~`@+``) over 10% of the visible
   characters, or more than one code token (URL, e-mail address, file path, operator,
   ``=``, brace, markup tag, ``a.b.c`` or ``snake_case`` name, ``f(x)`` call, command-line
   option, leading ``def``/``import``/...) per 10 words;
4. the language identifier (``py3langid``, bundled model, no download) does not give
   English as the top language with probability ``>= min_confidence``;
5. a text of 10 words or more whose first or second half (by words) alone is not
   identified as English (mixed-language text).

The defaults (``min_confidence=0.02``, i.e. English must be the top language, and
``min_letters=12``) were tuned on half of the bundled offline suite's texts and checked on
the other half (English 93.4% native, at most 0.1% of any other language native):
``benchmarks/router_choice.py``, results in ``docs/research/routing.md``.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

Route = Literal["native", "connector"]
Detector = Callable[[Sequence[str]], list[tuple[str, float]]]

LIBRARY = "py3langid"
PIP_PACKAGE = "py3langid"
# bump when the rules below change, so a saved setting says which rules it was tuned for
RULES_VERSION = 1

DEFAULT_MIN_CONFIDENCE = 0.02
DEFAULT_MIN_LETTERS = 12
MAX_SYMBOL_RATIO = 0.1  # symbols / visible characters
MAX_CODE_TOKENS_PER_WORD = 0.1
HALVES_MIN_WORDS = 10  # texts this long must also read as English in each half

_SYMBOLS = frozenset("{}[]<>=;|\\/_#$%^&*~`@+")
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://\S|\bwww\.\w|\b[\w.+-]+@[\w-]+\.[a-z]{2,}\b")
_PATH = re.compile(r"(?:^|[\s\"'(=:])~?\.{0,2}/[\w.-]+/|\b[A-Za-z]:\\\\?\w|\\[\w.-]+\\")
_CODE = re.compile(
    r"==|!=|<=|>=|->|=>|::|&&|\|\||\*\*|\+\+|\+=|-=|[{}`=]"
    r"|</?[A-Za-z][\w-]*[^<>]*>"  # markup tags
    r"|\b[A-Za-z_]\w*\.[A-Za-z_]\w*\.[A-Za-z_]\w*"  # dotted names: com.sun.star.sheet
    r"|\b[A-Za-z]\w*_\w"  # snake_case
    r"|\b[A-Za-z_][\w.]*\((?!s\))[^()\s]*\)"  # calls without spaces: f(x), SUM(A1:A5)
    r"|(?:^|\s)--?[A-Za-z]"  # command-line options
    r"|^\s*(?:def|class|import|from|return|function|var|let|const|public|private|SELECT"
    r"|#include)\s"
)


def _is_latin(ch: str) -> bool:
    o = ord(ch)
    # Basic Latin to Latin Extended-B, Latin Extended Additional (Vietnamese), -C, -D
    return o < 0x250 or 0x1E00 <= o <= 0x1EFF or 0x2C60 <= o <= 0x2C7F or 0xA720 <= o <= 0xA7FF


def text_checks(text: str) -> tuple[int, str | None]:
    """(letters in ``text``, why it cannot be native whatever the detector says, or None):
    rules 2 and 3 of the module docstring. Rule 1 needs ``min_letters``, so the caller
    applies it to the letter count."""
    letters = symbols = visible = 0
    non_latin = False
    for ch in text:
        if ch.isspace():
            continue
        visible += 1
        if ch.isalpha():
            letters += 1
            if not _is_latin(ch):
                non_latin = True
        elif ch in _SYMBOLS:
            symbols += 1
    if letters == 0:
        return 0, "no letters"
    if non_latin:
        return letters, "non-latin letters"
    if symbols > MAX_SYMBOL_RATIO * visible:
        return letters, "code-like: symbols"
    tokens = sum(1 for pattern in (_URL, _PATH, _CODE) for _ in pattern.finditer(text))
    if tokens > MAX_CODE_TOKENS_PER_WORD * len(text.split()):
        return letters, "code-like: tokens"
    return letters, None


def halves(text: str) -> list[str]:
    """The first and second half of ``text`` by words, or [] below ``HALVES_MIN_WORDS``."""
    words = text.split()
    if len(words) < HALVES_MIN_WORDS:
        return []
    mid = len(words) // 2
    return [" ".join(words[:mid]), " ".join(words[mid:])]


def decide(
    letters: int,
    problem: str | None,
    whole: tuple[str, float] | None,
    half_languages: Sequence[str],
    min_confidence: float,
    min_letters: int,
) -> str:
    """The reason for a text's route from its measurements: ``"english"`` (native), else
    why it goes to the connector. ``whole`` is the detector's (language, probability) for
    the text, ``half_languages`` its top language for each of :func:`halves`."""
    if letters < min_letters:
        return "too few letters"
    if problem is not None:
        return problem
    assert whole is not None
    language, confidence = whole
    if language != "en":
        return f"detected {language}"
    if confidence < min_confidence:
        return "low confidence"
    if any(lang != "en" for lang in half_languages):
        return "mixed languages"
    return "english"


@functools.lru_cache(maxsize=1)
def _py3langid_detector() -> Detector:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as e:  # pragma: no cover - the package is a dependency
        raise ImportError(
            f"LanguageRouter needs the language identifier {PIP_PACKAGE!r}: "
            f"pip install {PIP_PACKAGE}"
        ) from e
    # the bundled model (data/model.npz.xz, in the wheel); probabilities, not raw scores
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def detect(texts: Sequence[str]) -> list[tuple[str, float]]:
        # py3langid has no batch call; one text is ~0.2 ms
        return [identifier.classify(text) for text in texts]

    return detect


def _library_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PIP_PACKAGE)
    except PackageNotFoundError:
        return None


class LanguageRouter:
    """Routes each text to ``"native"`` (confidently English) or ``"connector"``
    (everything else: other languages, unsure, mixed-language, mixed-script, code-like,
    empty or very short text). Deterministic; rules in the module docstring.

    ``min_confidence``: the identifier's probability of English needed for native;
    ``min_letters``: fewer letters than this always go to the connector. The identifier
    (``py3langid``) is imported and loaded on first use (about 1 s, once per process, shared
    by all routers; it is read-only, so threads may share a router)."""

    def __init__(
        self,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        min_letters: int = DEFAULT_MIN_LETTERS,
    ) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        if min_letters < 1:
            raise ValueError(f"min_letters must be at least 1, got {min_letters!r}")
        self.min_confidence = float(min_confidence)
        self.min_letters = int(min_letters)

    def __repr__(self) -> str:
        return (
            f"LanguageRouter(min_confidence={self.min_confidence}, min_letters={self.min_letters})"
        )

    def reasons(self, texts: Sequence[str]) -> list[str]:
        """Per text, ``"english"`` for the native route, else why it takes the connector."""
        measured = [text_checks(text) for text in texts]
        # the detector reads only the texts that passed the cheap checks, and their halves
        todo = [
            i
            for i, (letters, problem) in enumerate(measured)
            if problem is None and letters >= self.min_letters
        ]
        parts: list[str] = []
        spans: dict[int, tuple[int, int]] = {}
        for i in todo:
            start = len(parts)
            parts.append(texts[i])
            parts.extend(halves(texts[i]))
            spans[i] = (start, len(parts))
        detected = self._detect(parts) if parts else []
        out = []
        for i, (letters, problem) in enumerate(measured):
            whole, half_languages = None, []
            if i in spans:
                start, end = spans[i]
                whole = detected[start]
                half_languages = [lang for lang, _ in detected[start + 1 : end]]
            out.append(
                decide(
                    letters, problem, whole, half_languages, self.min_confidence, self.min_letters
                )
            )
        return out

    def _detect(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """(top language, its probability) per text, in one call."""
        return _py3langid_detector()(texts)

    def routes(self, texts: Sequence[str]) -> list[Route]:
        """``"native"`` for each confidently English text, ``"connector"`` for the rest."""
        if isinstance(texts, str):
            raise TypeError("routes() takes a list of texts, not one string")
        return ["native" if r == "english" else "connector" for r in self.reasons(texts)]

    def describe(self) -> dict[str, Any]:
        """JSON-able settings, saved in model folders; :meth:`from_settings` reads them."""
        return {
            "library": LIBRARY,
            "version": _library_version(),
            "rules_version": RULES_VERSION,
            "min_confidence": self.min_confidence,
            "min_letters": self.min_letters,
        }

    @classmethod
    def from_settings(cls, settings: dict) -> LanguageRouter:
        """The router :meth:`describe` described. A different library is a ValueError; a
        different library version or rules version is a warning (routes may differ)."""
        library = settings.get("library", LIBRARY)
        if library != LIBRARY:
            raise ValueError(
                f"these router settings are for {library!r}; this lusifer routes with {LIBRARY!r}"
            )
        saved, installed = settings.get("version"), _library_version()
        if saved is not None and installed is not None and saved != installed:
            warnings.warn(
                f"router settings were saved with {LIBRARY} {saved}, {installed} is installed: "
                "some routes may differ",
                stacklevel=2,
            )
        rules = settings.get("rules_version", RULES_VERSION)
        if rules != RULES_VERSION:
            warnings.warn(
                f"router settings were saved for rules version {rules}, this lusifer has "
                f"{RULES_VERSION}: some routes may differ",
                stacklevel=2,
            )
        return cls(
            min_confidence=settings.get("min_confidence", DEFAULT_MIN_CONFIDENCE),
            min_letters=settings.get("min_letters", DEFAULT_MIN_LETTERS),
        )
