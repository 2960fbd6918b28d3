"""Language codes of the LUSIFER benchmark and the rule that assigns scores to languages.

Users write ISO 639-1 codes ("en", "fr"); mteb writes ``{ISO 639-3}-{script}`` ("fra-Latn").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ENGLISH = "en"

#: The 14 languages of the paper's Table 1, in the paper's column order.
LUSIFER_LANGUAGES: tuple[str, ...] = (
    "en", "es", "ru", "fr", "vi", "fa", "id", "ar", "fi", "ko", "hi", "bn", "te", "sw",
)  # fmt: skip


@dataclass(frozen=True)
class Language:
    """One language: its ISO 639-1 code, the ISO 639-3 codes mteb may use, its script(s).

    The first ISO 639-3 code is the one that selects mteb subsets (:func:`mteb_iso3`).
    """

    code: str
    iso3: tuple[str, ...]
    scripts: tuple[str, ...]  # the first is the default when writing an mteb code

    @property
    def mteb_code(self) -> str:
        return f"{self.iso3[0]}-{self.scripts[0]}"


_LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("en", ("eng",), ("Latn",)),
        Language("es", ("spa",), ("Latn",)),
        Language("ru", ("rus",), ("Cyrl",)),
        Language("fr", ("fra",), ("Latn",)),
        Language("vi", ("vie",), ("Latn",)),
        # Persian: mteb tags it "fas" or "pes" (Iranian Persian)
        Language("fa", ("fas", "pes"), ("Arab",)),
        Language("id", ("ind",), ("Latn",)),
        # Arabic: Modern Standard Arabic only ("ara"/"arb"), not the dialect subsets
        Language("ar", ("ara", "arb"), ("Arab",)),
        Language("fi", ("fin",), ("Latn",)),
        Language("ko", ("kor",), ("Hang", "Kore")),
        Language("hi", ("hin",), ("Deva",)),
        Language("bn", ("ben",), ("Beng",)),
        Language("te", ("tel",), ("Telu",)),
        Language("sw", ("swa", "swh"), ("Latn",)),
        Language("de", ("deu",), ("Latn",)),
        Language("it", ("ita",), ("Latn",)),
        Language("pt", ("por",), ("Latn",)),
        Language("nl", ("nld",), ("Latn",)),
        Language("pl", ("pol",), ("Latn",)),
        Language("tr", ("tur",), ("Latn",)),
        Language("zh", ("zho", "cmn"), ("Hans", "Hant")),
        Language("ja", ("jpn",), ("Jpan",)),
        Language("th", ("tha",), ("Thai",)),
        Language("uk", ("ukr",), ("Cyrl",)),
        Language("cs", ("ces",), ("Latn",)),
        Language("sv", ("swe",), ("Latn",)),
        Language("da", ("dan",), ("Latn",)),
        Language("nb", ("nob",), ("Latn",)),
        Language("el", ("ell",), ("Grek",)),
        Language("he", ("heb",), ("Hebr",)),
        Language("ur", ("urd",), ("Arab",)),
        Language("ta", ("tam",), ("Taml",)),
        Language("mr", ("mar",), ("Deva",)),
        Language("ca", ("cat",), ("Latn",)),
        Language("ro", ("ron",), ("Latn",)),
        Language("hu", ("hun",), ("Latn",)),
    )
}


def known_languages() -> list[str]:
    """The ISO 639-1 codes accepted in ``task.json`` and ``--languages``."""
    return sorted(_LANGUAGES)


def get_language(code: str) -> Language:
    """The :class:`Language` for an ISO 639-1 code; ValueError naming the code otherwise."""
    try:
        return _LANGUAGES[code]
    except KeyError:
        raise ValueError(
            f"unknown language code {code!r}; use an ISO 639-1 code, one of: "
            + ", ".join(known_languages())
        ) from None


def mteb_iso3(code: str) -> str:
    """The ISO 639-3 code that selects ``code``'s mteb subsets: the first of its codes, the one
    the reference code passed to mteb (its ``LANG_TO_CODES``: "ara", "fas", "swa", ...)."""
    return get_language(code).iso3[0]


def involves(langscripts: Iterable[str], code: str) -> bool:
    """Whether an mteb subset with these ``iso3-Script`` tags counts for language ``code``.

    mteb 1.14's rule (``AbsTask.filter_languages`` and ``TaskResult.get_score`` with bare ISO
    639-3 codes): a subset counts when any of its languages has the code, whatever the script,
    so a cross-lingual subset (es-en) counts for each of its languages.
    """
    iso3 = mteb_iso3(code)
    return any(tag.partition("-")[0] == iso3 for tag in langscripts)


def aggregation_languages(languages: Sequence[str]) -> list[str]:
    """The languages a local task (``task.json``) with these languages counts for.

    A monolingual task counts for its language; a cross-lingual one for each of its
    non-English languages, so an en-xx task counts for xx only (English-only work is measured
    by the English tasks). Tasks from mteb follow mteb's rule instead (see :func:`involves`).
    """
    unique = list(dict.fromkeys(languages))
    non_english = [lang for lang in unique if lang != ENGLISH]
    return non_english or [ENGLISH]


def order_languages(languages: Iterable[str]) -> list[str]:
    """The paper's column order first, then any other language alphabetically."""
    present = set(languages)
    head = [lang for lang in LUSIFER_LANGUAGES if lang in present]
    return head + sorted(present - set(head))
