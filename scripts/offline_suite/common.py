"""What every builder of the offline suite shares: languages, licences, seeds and limits,
text helpers, the excluded texts, and the writers of task folders."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "src" / "lusifer" / "resources" / "offline_suite"
DEFAULT_TRAIN = REPO_ROOT / "src" / "lusifer" / "resources" / "data" / "english_train.jsonl.gz"

LANGS = ["es", "ru", "fr", "vi", "fa", "id", "ar", "fi", "ko", "hi", "bn", "te", "sw"]
HELP_LANGS = ["en", "es", "fi", "fr", "hi", "id", "ko", "ru", "vi"]
LIBREOFFICE_L10N_LANGS = ["ar", "bn", "es", "fa", "fi", "fr", "hi", "id", "ko", "ru", "te", "vi"]
LANG_NAMES = {
    "en": "English",
    "es": "Spanish",
    "ru": "Russian",
    "fr": "French",
    "vi": "Vietnamese",
    "fa": "Persian",
    "id": "Indonesian",
    "ar": "Arabic",
    "fi": "Finnish",
    "ko": "Korean",
    "hi": "Hindi",
    "bn": "Bengali",
    "te": "Telugu",
    "sw": "Swahili",
}
# Unicode script (first word of the character name) each language must be written in.
LANG_SCRIPT = {
    "en": "LATIN",
    "es": "LATIN",
    "fr": "LATIN",
    "fi": "LATIN",
    "id": "LATIN",
    "vi": "LATIN",
    "sw": "LATIN",
    "ru": "CYRILLIC",
    "ar": "ARABIC",
    "fa": "ARABIC",
    "hi": "DEVANAGARI",
    "bn": "BENGALI",
    "te": "TELUGU",
    "ko": "HANGUL",
}
HELP_MODULES = {
    "sbasic": "Basic",
    "scalc": "Calc",
    "schart": "Chart",
    "sdatabase": "Base",
    "sdraw": "Draw",
    "shared": "Shared",
    "simpress": "Impress",
    "smath": "Math",
    "swriter": "Writer",
}
# Sections whose descriptions are boilerplate ("this package contains the shared library")
# rather than a topic: left out of the Debian section tasks.
NON_TOPICAL_SECTIONS = {
    "libs",
    "libdevel",
    "oldlibs",
    "debug",
    "metapackages",
    "tasks",
    "localization",
    "introspection",
    "doc",
    "misc",
    # language-ecosystem sections: their descriptions are mostly templates
    # ("the source for the Rust X crate, packaged by debcargo") that name the section
    "perl",
    "python",
    "rust",
    "golang",
    "ruby",
    "gnu-r",
    "java",
    "lisp",
    "javascript",
    "php",
    "ocaml",
    "haskell",
    "interpreters",
}
LICENSES = {
    "libreoffice": "MPL-2.0",
    "vlc-l10n": "GPL-2.0-or-later",
    "debian-description": "Debian archive metadata (package description by its maintainers; see the package's copyright file)",
}

SEED = 20250101
MIN_CHARS, MAX_CHARS, MIN_WORDS = 20, 400, 4
MIN_PER_LABEL = 10  # a topic label needs this many train rows (and twice as many test rows)
# gettext placeholders, accelerators and markup in any of their usual spellings.
FORMAT_CODE = re.compile(r"[%{}$~<>&\\_|@#\[\]]|\bhttps?:")
ENGLISH_WORD = re.compile(r"[A-Za-z]{2,}")


# --------------------------------------------------------------------------- text


def norm_ws(text: str) -> str:
    return " ".join(text.split())


def stable_hash(*parts: str) -> int:
    return int(hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest(), 16)


def short_id(prefix: str, *parts: str) -> str:
    return f"{prefix}{stable_hash(*parts) % 16**10:010x}"


def script_share(text: str, script: str) -> float:
    """Share of the letters in ``text`` that belong to ``script``."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    hits = sum(1 for ch in letters if unicodedata.name(ch, "").startswith(script))
    return hits / len(letters)


def text_key(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class ExcludedTexts:
    """Texts no suite row may contain (WordNet and the bundled training data), kept as
    :func:`text_key` keys; built once (``exclusion.excluded_texts``) and handed to the
    builders that filter on it."""

    keys: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.keys)

    def any_of(self, *texts: str) -> bool:
        """Whether one of ``texts`` is excluded."""
        return any(text_key(t) in self.keys for t in texts)

    @classmethod
    def union(cls, *groups: Iterable[str]) -> ExcludedTexts:
        """The excluded texts of several groups of keys."""
        return cls(frozenset().union(*groups))


NOTHING_EXCLUDED = ExcludedTexts()


@dataclass(frozen=True)
class Pair:
    en: str
    tr: str
    source: str
    license: str


def dedupe(pairs: list[Pair]) -> list[Pair]:
    """One pair per English text and per translation (case-insensitive), deterministic."""
    seen_en, seen_tr, out = set(), set(), []
    for p in sorted(pairs, key=lambda p: (p.en, p.tr, p.source)):
        ken, ktr = p.en.casefold(), p.tr.casefold()
        if ken in seen_en or ktr in seen_tr:
            continue
        seen_en.add(ken)
        seen_tr.add(ktr)
        out.append(p)
    return out


# --------------------------------------------------------------------------- writers


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return proc.stdout


def task_json(out: Path, **meta) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "task.json").write_text(
        json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )


def write_retrieval(
    out: Path,
    queries: list[tuple[str, str, str, str]],
    docs: list[tuple[str, str, str, str]],
    qrels: list[tuple[str, str]],
) -> None:
    """queries/docs: (id, text, source, license); qrels: (query id, doc id)."""
    write_jsonl(
        out / "queries.jsonl",
        [{"_id": i, "text": t, "source": s, "license": lic} for i, t, s, lic in sorted(queries)],
    )
    write_jsonl(
        out / "corpus.jsonl",
        [
            {"_id": i, "title": "", "text": t, "source": s, "license": lic}
            for i, t, s, lic in sorted(docs)
        ],
    )
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in sorted(qrels)]
    (out / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
