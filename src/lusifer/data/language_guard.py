"""The English-only guard: LUSIFER's training data must be English.

The method's claim is that the target model gains languages *without* multilingual
training data, so a training run that silently mixes in French or Russian text would
invalidate its results. :func:`ensure_english` measures the English fraction of a data
set and refuses to go on below a threshold unless the user overrides it explicitly.

Each text is judged by two dependency-free, deterministic signals:

- script: letters outside the Latin script (Cyrillic, Arabic, Devanagari, Hangul, ...)
  mean "not English";
- function words: counts of English function words against those of other
  Latin-script languages (French, Spanish, German, Portuguese, Italian, Dutch,
  Indonesian, Vietnamese, Finnish, Swahili, Turkish, Polish). Words shared by English
  and another list ("a", "in", "die", "on", ...) count for neither.

Short texts with no function words at all (a WordNet lemma, a title) count as English
when they are (nearly) plain ASCII, so dictionary-style English data is not refused.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "GuardReport",
    "NonEnglishDataError",
    "english_fraction",
    "ensure_english",
    "is_english",
]

_ENGLISH = """
a i in on the of and to is was for that with as it be are by this from at or an not have has had
which but were their they you we he she his her its our your been would will can could
should may might must shall there these those what when where who whom whose why how
than then them other some such only also into about over under after before between
through during without within more most very just because if so any each all both few
many much own same does did do doing being here while until upon against among it's
don't doesn't can't isn't there's using via like well one new up out no per plus me
""".split()

_OTHER: dict[str, list[str]] = {
    "french": """le la les des du un une et est sont dans pour par sur avec qui que
        ne pas plus ce cette ces ses aux au il elle nous vous ils elles leur leurs été être
        mais ou donc car comme où très sans sous entre aussi même tout tous toutes dont
        je tu mon ma mes ton ta notre votre lui y en se avoir fait""".split(),
    "spanish": """el la los las de del y es son en un una por para con que se su sus
        al lo como más pero o este esta estos estas ese esa muy sin sobre entre también
        cuando donde porque ya yo tú él ella nosotros ellos fue ser está están hay
        todo todos""".split(),
    "portuguese": """o os a as do da dos das de e é são em um uma uns umas por para
        com que se seu sua seus suas ao aos no na nos nas pelo pela como mais mas ou este
        esta isso muito sem sobre entre também quando onde porque já eu ele ela nós eles
        foi ser está estão não há todo""".split(),
    "italian": """il lo la i gli le di del della dei delle e è sono in un una uno per
        con che si suo sua suoi al alla allo nel nella come più ma o questo questa molto
        senza sopra tra fra anche quando dove perché già io lui lei noi loro era essere
        sta non ha hanno tutto""".split(),
    "german": """der die das den dem des ein eine einer eines einem und ist sind in zu
        von mit für auf nicht sich auch als wie bei aus nach oder aber wenn noch nur
        über unter durch wird werden wurde kann können ich du er sie wir ihr es im ins
        vom zum zur dass daß diese dieser dieses sein seine""".split(),
    "dutch": """de het een en is zijn van in op te met voor niet dat die deze dit er
        ook als bij uit naar maar of wordt worden werd kan kunnen ik jij hij zij wij
        ons onze hun nog wel geen""".split(),
    "indonesian": """yang dan di ini itu dengan untuk dari tidak ada akan pada juga ke
        karena saya adalah atau dalam oleh sebagai bisa dapat kami kita mereka sudah
        telah belum tersebut lebih sangat banyak""".split(),
    "vietnamese": """của và là các những được trong cho với không này có một người
        đã sẽ đến từ khi nhưng để thì cũng như theo về trên tại nào rất""".split(),
    "finnish": """ja on ei se että oli ovat mutta kun tai jos myös kuin ole tämä hän
        joka niin sekä voi olla mikä sitä siitä nyt vain""".split(),
    "swahili": """na ya wa kwa za la ni katika kuwa hii huo hiyo lakini pia cha vya
        kama sana bado hao yake wake zake ambao ambayo kwamba""".split(),
    "turkish": """ve bir bu da de ile için olarak çok daha gibi ama veya ki ne mi
        olan sonra kadar""".split(),
    "polish": """i w na z do się nie jest to że o jak ale od po za przez dla jego jej
        są być lub oraz tylko""".split(),
}

# A word shared by English and another list ("in", "to", "a", "on", ...) counts half
# for each side, so it tips no balance by itself.
_AMBIGUOUS = frozenset(_ENGLISH) & {w for words in _OTHER.values() for w in words}
ENGLISH_WORDS = frozenset(_ENGLISH) - _AMBIGUOUS
OTHER_WORDS = {lang: frozenset(words) - _AMBIGUOUS for lang, words in _OTHER.items()}
_OTHER_AMBIGUOUS = {lang: frozenset(words) & _AMBIGUOUS for lang, words in _OTHER.items()}
# French elisions: l'homme, d'un, qu'il, c'est, j'ai, n'est, s'il.
_ELISION = re.compile(r"^(?:l|d|qu|c|j|n|s|m|t)'[^\W\d_]")

_EDGE_PUNCT = "\"'“”‘’«»„()[]{}<>.,;:!?¿¡…*"
# Latin abbreviations common in English prose would otherwise read as Italian "e"/"i".
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|cf|viz)\.", re.IGNORECASE)


def _words(text: str) -> list[str]:
    """Whole words only: tokens like ``W3C``, ``C++`` or ``x86_64`` are not words."""
    out = []
    for token in _ABBREV.sub(" ", text).split():
        token = token.strip(_EDGE_PUNCT).replace("’", "'").lower()
        if token and all(ch.isalpha() or ch == "'" for ch in token):
            out.append(token)
    return out


@dataclass(frozen=True)
class Verdict:
    """How one text was judged (kept for reports and debugging)."""

    english: bool
    reason: str
    english_hits: float = 0.0
    other_hits: float = 0.0
    other_language: str | None = None


def _is_latin(ch: str) -> bool:
    if ch.isascii():
        return True
    try:
        return unicodedata.name(ch).startswith("LATIN")
    except ValueError:  # unnamed code point
        return False


def judge(text: str) -> Verdict:
    """Judge one text; see the module docstring for the rules."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return Verdict(True, "no letters")
    non_latin = sum(not _is_latin(ch) for ch in letters)
    if non_latin / len(letters) > 0.3:
        return Verdict(False, "non-Latin script")

    words = _words(text)
    ambiguous = sum(w in _AMBIGUOUS for w in words)
    en_strict = sum(w in ENGLISH_WORDS for w in words)
    en = en_strict + 0.5 * ambiguous
    best_lang, best, best_strict = None, 0.0, 0
    for lang, vocab in OTHER_WORDS.items():
        strict = sum(w in vocab for w in words)
        if lang == "french":
            strict += sum(bool(_ELISION.match(w)) for w in words)
        hits = strict + 0.5 * sum(w in _OTHER_AMBIGUOUS[lang] for w in words)
        if hits > best:
            best_lang, best, best_strict = lang, hits, strict
    accented = sum(not ch.isascii() for ch in letters) / len(letters)

    if en_strict + best_strict >= 2:
        # Enough unambiguous function words to decide on: English must not lose.
        english = (en > best or (en == best and accented <= 0.02)) and not (
            accented > 0.08 and en < 2 * best
        )
        reason = "function words" if english else f"function words ({best_lang})"
        return Verdict(english, reason, en, best, best_lang)
    # Too little evidence (a lemma, a title): (nearly) plain ASCII counts as English
    # unless another language's word outweighs the English ones.
    english = accented <= 0.1 and best_strict <= en_strict
    return Verdict(english, "short text", en, best, best_lang)


def is_english(text: str) -> bool:
    """True when ``text`` looks English (see :func:`judge`)."""
    return judge(text).english


def _sample(texts: list[str], sample: int | None, seed: int) -> list[str]:
    if sample is None or len(texts) <= sample:
        return texts
    return random.Random(seed).sample(texts, sample)


def english_fraction(texts: Iterable[str], sample: int | None = 2000, seed: int = 0) -> float:
    """Fraction of ``texts`` judged English, on a seeded sample of at most ``sample`` texts.

    An empty input gives 1.0 (there is nothing non-English in it).
    """
    picked = _sample(list(texts), sample, seed)
    if not picked:
        return 1.0
    return sum(is_english(t) for t in picked) / len(picked)


@dataclass
class GuardReport:
    """What :func:`ensure_english` measured."""

    source: str
    n_texts: int
    n_checked: int
    english_fraction: float
    min_english_fraction: float
    passed: bool
    overridden: bool = False
    non_english_examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        status = "ok" if self.passed else ("OVERRIDDEN" if self.overridden else "refused")
        return (
            f"{self.source}: English fraction {self.english_fraction:.3f} on "
            f"{self.n_checked}/{self.n_texts} texts (min {self.min_english_fraction:.2f}): {status}"
        )


class NonEnglishDataError(ValueError):
    """Training data failed the English-only check."""

    def __init__(self, report: GuardReport):
        self.report = report
        examples = "".join(f"\n  - {t[:100]!r}" for t in report.non_english_examples[:3])
        super().__init__(
            f"Training data from {report.source} does not look English: measured English "
            f"fraction {report.english_fraction:.3f} on {report.n_checked} sampled texts, "
            f"below the required {report.min_english_fraction:.2f}. LUSIFER trains on "
            "English data only; if this is intended, set `allow_non_english: true` in the "
            "config or pass `--allow-non-english` on the command line."
            + (f"\nTexts judged non-English, for example:{examples}" if examples else "")
        )


def ensure_english(
    texts: Iterable[str],
    *,
    source: str,
    min_english_fraction: float = 0.8,
    allow_non_english: bool = False,
    sample: int | None = 2000,
    seed: int = 0,
) -> GuardReport:
    """Check that ``texts`` are English; raise :class:`NonEnglishDataError` if not.

    With ``allow_non_english=True`` the check still runs and is reported, but does not
    raise (``report.overridden`` is then True when the data would have been refused).
    """
    all_texts = list(texts)
    picked = _sample(all_texts, sample, seed)
    verdicts = [judge(t) for t in picked]
    frac = sum(v.english for v in verdicts) / len(verdicts) if verdicts else 1.0
    passed = frac >= min_english_fraction
    report = GuardReport(
        source=source,
        n_texts=len(all_texts),
        n_checked=len(picked),
        english_fraction=frac,
        min_english_fraction=min_english_fraction,
        passed=passed,
        overridden=not passed and allow_non_english,
        non_english_examples=[t for t, v in zip(picked, verdicts, strict=True) if not v.english][
            :5
        ],
    )
    if not passed and not allow_non_english:
        raise NonEnglishDataError(report)
    return report
