"""Build the bundled offline multilingual evaluation suite from Debian packages.

Sources (all human-written or human-translated, fetched with apt, no model hub):

- gettext catalogs (``.mo``: English msgid -> translated msgstr) from
  ``libreoffice-l10n-<lang>``, ``vlc-l10n`` and the catalogs installed under
  ``/usr/share/locale``;
- LibreOffice help pages (``libreoffice-help-<lang>``, compiled HTML), paragraphs
  matched across languages by ``(page, paragraph id)`` and labelled by help module;
- Debian package descriptions (bookworm ``Packages`` + ``Translation-en``), only for
  packages where :func:`lusifer.data.splits.is_held_out` is True.

Output: one directory per task under ``src/lusifer/resources/offline_suite/`` (see the
README.md written there). The build is deterministic for a given set of package
versions: fixed seeds, hash-based splits, sorted output.

Usage::

    .venv/bin/python scripts/build_offline_suite.py            # build into the package
    .venv/bin/python scripts/build_offline_suite.py --out /tmp/suite --work-dir /tmp/w
"""

from __future__ import annotations

import argparse
import gettext
import gzip
import hashlib
import html
import json
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tqdm import tqdm

from lusifer.data.splits import is_held_out, is_help_train_side

REPO_ROOT = Path(__file__).resolve().parents[1]
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


# --------------------------------------------------------------------------- utilities


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


def keep_pair(en: str, tr: str, lang: str) -> bool:
    """The REFERENCE.md filter for one (English, translation) pair."""
    if not (MIN_CHARS <= len(en) <= MAX_CHARS and MIN_CHARS // 2 <= len(tr) <= MAX_CHARS * 2):
        return False
    if len(ENGLISH_WORD.findall(en)) < MIN_WORDS or len(tr.split()) < 2:
        return False
    if FORMAT_CODE.search(en) or FORMAT_CODE.search(tr):
        return False
    if en.casefold() == tr.casefold() or script_share(en, "LATIN") < 0.95 or excluded(en, tr):
        return False
    # Latin-script languages share letters with English, so demand near-pure Latin;
    # the others may keep Latin product names (LibreOffice, URL) in a mostly native text.
    need = 0.95 if LANG_SCRIPT[lang] == "LATIN" else 0.6
    return script_share(tr, LANG_SCRIPT[lang]) >= need


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


# Texts of the bundled English training data (filled in main()); nothing in it may enter
# the suite, whatever source it came from.
EXCLUDED: set[str] = set()


def text_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def training_strings(path: Path) -> Iterator[str]:
    """Every string field of the bundled training data (the fields a model may read)."""

    def walk(value) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v)

    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield from walk(json.loads(line))


def load_training_texts(path: Path) -> set[str]:
    """Every string field (20+ characters) of the bundled training data, normalised."""
    return {text_key(value) for value in training_strings(path) if len(value) >= 20}


def wordnet_strings(root: Path) -> Iterator[str]:
    """Lemmas, definitions and example sentences of WordNet (the training data's source)."""
    for part in ("noun", "verb", "adj", "adv"):
        path = root / "usr/share/wordnet" / f"data.{part}"
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  "):  # licence header
                continue
            fields, _, gloss = line.partition(" | ")
            cols = fields.split()
            n_words = int(cols[3], 16)
            yield from (w.replace("_", " ") for w in cols[4 : 4 + 2 * n_words : 2])
            yield from (g.strip().strip('"') for g in gloss.split(";") if g.strip())


def wordnet_texts(root: Path) -> set[str]:
    """Lemmas, definitions and example sentences of WordNet (the other training source).

    Excluded wholesale so that a later, larger training sample cannot collide with the
    suite (country names in iso-codes catalogs are also WordNet lemmas, for instance).
    """
    return {t for t in map(text_key, wordnet_strings(root)) if len(t) >= 10}


def excluded(*texts: str) -> bool:
    return any(text_key(t) in EXCLUDED for t in texts)


# --------------------------------------------------------------------------- fetching


def fetch_packages(work: Path, names: list[str]) -> dict[str, tuple[Path, str]]:
    """apt-get download + dpkg-deb -x each package; returns name -> (root, version)."""
    debs, roots = work / "debs", work / "x"
    debs.mkdir(parents=True, exist_ok=True)
    out = {}
    missing = [n for n in names if not list(debs.glob(f"{n}_*.deb"))]
    if missing:
        run(["apt-get", "download", *missing], cwd=debs)
    for name in tqdm(names, desc="extract debs"):
        deb = sorted(debs.glob(f"{name}_*.deb"))[-1]
        version = run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
        root = roots / name
        if not root.exists():
            tmp = roots / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            run(["dpkg-deb", "-x", str(deb), str(tmp)])
            tmp.rename(root)
        out[name] = (root, version)
    return out


def fetch_description_lists(work: Path) -> Path:
    """Bookworm package lists with English long descriptions, in a private lists dir.

    The system's apt is configured without Translation files; a private
    ``Dir::State::Lists`` fetches them without touching the system state.
    """
    lists = work / "lists"
    if not list(lists.glob("*bookworm_main_i18n_Translation-en*")):
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        run(
            [
                "apt-get",
                "update",
                "-o",
                "Acquire::Languages=en",
                "-o",
                f"Dir::State::Lists={lists}",
            ]
        )
    return lists


# --------------------------------------------------------------------------- gettext


@dataclass(frozen=True)
class Pair:
    en: str
    tr: str
    source: str
    license: str


def read_mo(path: Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled catalog; plural entries and context dropped."""
    with path.open("rb") as f:
        try:
            catalog = gettext.GNUTranslations(f)._catalog  # noqa: SLF001 - stdlib parser
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            print(f"warning: skipping unreadable catalog {path}: {exc}", file=sys.stderr)
            return []
    pairs = []
    for key, value in catalog.items():
        if not isinstance(key, str) or not key or not value:
            continue
        msgid = key.split("\x04", 1)[-1]
        pairs.append((msgid, value))
    return sorted(pairs)


def dpkg_owners() -> dict[str, str]:
    """Installed file path -> owning package (from dpkg's file lists)."""
    owners = {}
    for lst in sorted(Path("/var/lib/dpkg/info").glob("*.list")):
        pkg = lst.stem.split(":")[0]
        for line in lst.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.endswith(".mo") and "/locale/" in line:
                owners[line] = pkg
    return owners


SPDX_LIKE = re.compile(r"^[A-Za-z][\w.+-]*(?:,?\s+(?:or|and|with)\s+[\w.+-]+)*$", re.I)


def package_license(pkg: str) -> str:
    """Licence of a package's main files, from its machine-readable copyright file."""
    fallback = f"see /usr/share/doc/{pkg}/copyright in Debian"
    try:
        text = (Path("/usr/share/doc") / pkg / "copyright").read_text("utf-8", "replace")
    except OSError:
        return fallback
    for para in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.*)$", para, flags=re.M)
        lic = re.search(r"^License:\s*(\S.*)$", para, flags=re.M)
        if files and lic and "*" in files.group(1).split() and SPDX_LIKE.match(lic.group(1)):
            return lic.group(1).strip()
    return fallback


def installed_versions() -> dict[str, str]:
    out = run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n"])
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def gettext_pairs(
    lang: str, pkgs: dict[str, tuple[Path, str]], system_locale: bool
) -> tuple[list[Pair], list[str]]:
    """Filtered, de-duplicated (English, translation) pairs for ``lang``; plus the
    system packages that contributed."""
    catalogs: list[tuple[Path, str, str]] = []  # (file, source, license)
    lo = f"libreoffice-l10n-{lang}"
    if lo in pkgs:
        root, ver = pkgs[lo]
        for mo in sorted(root.rglob("*.mo")):
            rel = mo.relative_to(root)
            catalogs.append((mo, f"debian:{lo}={ver}:/{rel}", LICENSES["libreoffice"]))
    root, ver = pkgs["vlc-l10n"]
    for mo in sorted((root / "usr/share/locale" / lang / "LC_MESSAGES").glob("*.mo")):
        rel = mo.relative_to(root)
        catalogs.append((mo, f"debian:vlc-l10n={ver}:/{rel}", LICENSES["vlc-l10n"]))
    used_system = set()
    if system_locale:
        owners, versions = _system_info()
        for mo in sorted((Path("/usr/share/locale") / lang / "LC_MESSAGES").glob("*.mo")):
            pkg = owners.get(str(mo))
            if pkg is None:  # not from a Debian package: provenance unknown, skip
                continue
            if mo.name.startswith("iso_"):  # iso-codes: country/language names, not sentences
                continue
            used_system.add(f"{pkg}={versions.get(pkg, '?')}")
            catalogs.append(
                (mo, f"debian:{pkg}={versions.get(pkg, '?')}:{mo}", package_license(pkg))
            )
    candidates = []
    for path, source, lic in catalogs:
        for msgid, msgstr in read_mo(path):
            en, tr = norm_ws(msgid), norm_ws(msgstr)
            if keep_pair(en, tr, lang):
                candidates.append(Pair(en, tr, source, lic))
    return dedupe(candidates), sorted(used_system)


_SYSTEM_CACHE: tuple[dict[str, str], dict[str, str]] | None = None


def _system_info() -> tuple[dict[str, str], dict[str, str]]:
    global _SYSTEM_CACHE
    if _SYSTEM_CACHE is None:
        _SYSTEM_CACHE = (dpkg_owners(), installed_versions())
    return _SYSTEM_CACHE


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


# --------------------------------------------------------------------------- help pages


VOID_TAGS = {"img", "br", "input", "meta", "link", "hr", "source", "col", "wbr", "area"}
SKIP_DIV_CLASSES = {"embedded", "howtoget", "icontable", "iconcell"}


class HelpParagraphs(HTMLParser):
    """Collects ``<p id=...>`` texts of one compiled help page.

    Skips platform/module variants that the help viewer hides (``hidden`` spans other
    than the ``default...`` one), paragraphs embedded from other pages, and the
    "how to get there" menu boxes.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[bool] = []  # per open element: does it suppress text?
        self.skip_depth = 0
        self.current: str | None = None
        self.buf: list[str] = []
        self.paragraphs: dict[str, str] = {}
        self.p_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_TAGS:
            if tag == "br" and self.current is not None:
                self.buf.append(" ")
            return
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        suppress = ("hidden" in a and not (a.get("id") or "").startswith("default")) or (
            tag == "div" and bool(classes & SKIP_DIV_CLASSES)
        )
        self.stack.append(suppress)
        self.skip_depth += suppress
        if tag == "p" and self.current is None and (a.get("id") or "").startswith("par_id"):
            self.current = a["id"] if not self.skip_depth else None
            self.buf = []
            self.p_depth = len(self.stack)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS or not self.stack:
            return
        if tag == "p" and self.current is not None and len(self.stack) == self.p_depth:
            text = norm_ws("".join(self.buf))
            self.paragraphs.setdefault(self.current, text)
            self.current = None
        self.skip_depth -= self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.current is not None and not self.skip_depth:
            self.buf.append(data)


def read_help(root: Path, lang_dir: str) -> dict[tuple[str, str], str]:
    """(page path relative to the language dir, paragraph id) -> paragraph text."""
    base = root / "usr/share/libreoffice/help" / lang_dir
    out = {}
    files = sorted(base.glob("text/**/*.html"))
    for page in tqdm(files, desc=f"help {lang_dir}", leave=False):
        parser = HelpParagraphs()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        rel = page.relative_to(base).as_posix()
        for pid, text in parser.paragraphs.items():
            out[(rel, pid)] = html.unescape(text)
    return out


def help_module(rel: str) -> str:
    return HELP_MODULES[rel.split("/")[1]]


def help_pairs(
    en: dict[tuple[str, str], str],
    tr: dict[tuple[str, str], str],
    lang: str,
    pkg: str,
    version: str,
) -> list[Pair]:
    candidates = []
    for key in sorted(en.keys() & tr.keys()):
        if keep_pair(en[key], tr[key], lang):
            source = f"debian:{pkg}={version}:{key[0]}#{key[1]}"
            candidates.append(Pair(en[key], tr[key], source, LICENSES["libreoffice"]))
    return dedupe(candidates)


# --------------------------------------------------------------------------- tasks


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


def build_crosslingual(
    out_root: Path, lang: str, gt: list[Pair], hp: list[Pair], n: int, rng_seed: int
) -> dict[str, int]:
    """XlingRetrieval.en-<lang> and Bitext.en-<lang> on disjoint samples where possible."""
    rng = random.Random(f"{rng_seed}:{lang}")
    gt, hp = gt[:], hp[:]
    rng.shuffle(gt)
    rng.shuffle(hp)
    # Half from each source where both exist; either one fills the other's shortfall.
    hp_take = min(len(hp), max(n, 2 * n - len(gt)))
    gt_take = min(len(gt), 2 * n - hp_take)
    # interleaved so that both halves (retrieval, bitext) mix the two sources
    pool, seen = [], set()
    for p in _interleave(gt[:gt_take], hp[:hp_take]):
        # the same string can sit in a catalog and in the help: keep it once
        if p.en.casefold() not in seen and p.tr.casefold() not in seen:
            seen.update((p.en.casefold(), p.tr.casefold()))
            pool.append(p)
    if len(pool) >= 2 * n:
        retr, bitext = pool[:n], pool[n : 2 * n]
        disjoint = True
    else:  # small languages (sw): both tasks use everything there is
        retr, bitext = pool[:n], pool[:n]
        disjoint = False
    name = LANG_NAMES[lang]
    sources = "gettext catalogs" + (" and LibreOffice help paragraphs" if hp else "")
    tdir = out_root / f"XlingRetrieval.en-{lang}"
    queries, docs, qrels = [], [], []
    for p in retr:
        qid, did = short_id("q", "en", p.en), short_id("d", lang, p.tr)
        queries.append((qid, p.en, p.source, p.license))
        docs.append((did, p.tr, p.source, p.license))
        qrels.append((qid, did))
    write_retrieval(tdir, queries, docs, qrels)
    task_json(
        tdir,
        name=tdir.name,
        type="retrieval",
        languages=["en", lang],
        instruction=f"Given an English sentence from software, retrieve its {name} translation",
        main_score="ndcg_at_10",
        description=f"English software strings as queries; the corpus holds their human {name} translations ({sources}); one relevant document per query.",
        source=f"Debian bookworm packages: {sources}",
        license="per row (MPL-2.0 for LibreOffice, GPL/LGPL family for gettext catalogs)",
    )
    bdir = out_root / f"Bitext.en-{lang}"
    rows = [
        {"sentence1": p.en, "sentence2": p.tr, "source": p.source, "license": p.license}
        for p in sorted(bitext, key=lambda p: p.en)
    ]
    write_jsonl(bdir / "test.jsonl", rows)
    task_json(
        bdir,
        name=bdir.name,
        type="bitext",
        languages=["en", lang],
        instruction=f"Retrieve the {name} translation of the given English sentence",
        main_score="f1",
        description=f"Bitext mining between English software strings and their human {name} translations ({sources}); "
        + ("disjoint from" if disjoint else "the same pairs as")
        + f" XlingRetrieval.en-{lang}.",
        source=f"Debian bookworm packages: {sources}",
        license="per row",
    )
    return {
        tdir.name: len(queries),
        bdir.name: len(rows),
        f"_gettext_pairs.{lang}": len(gt),
        f"_help_pairs.{lang}": len(hp),
    }


def _interleave(a: list, b: list) -> list:
    out = []
    for i in range(max(len(a), len(b))):
        if i < len(a):
            out.append(a[i])
        if i < len(b):
            out.append(b[i])
    return out


def build_help_topics(
    out_root: Path,
    lang: str,
    texts: dict[tuple[str, str], str],
    en: dict[tuple[str, str], str],
    pkg: str,
    version: str,
    n_train: int,
    n_test: int,
    n_cluster: int,
) -> dict[str, int]:
    """HelpTopicClassification.<lang> and HelpTopicClustering.<lang>."""
    by_label: dict[str, list[tuple[int, tuple[str, str], str]]] = defaultdict(list)
    seen: set[str] = set()
    for key in sorted(texts):
        text = texts[key]
        en_text = en.get(key, "")
        if not (30 <= len(text) <= 600) or len(ENGLISH_WORD.findall(en_text)) < 6:
            continue
        if lang != "en" and not keep_pair_loose(en_text, text, lang):
            continue
        if text.casefold() in seen or excluded(text):
            continue
        seen.add(text.casefold())
        by_label[help_module(key[0])].append((stable_hash("topic", *key), key, text))

    def row(key: tuple[str, str], text: str, label: str) -> dict:
        return {
            "text": text,
            "label": label,
            "source": f"debian:{pkg}={version}:{key[0]}#{key[1]}",
            "license": LICENSES["libreoffice"],
        }

    train, test, cluster = [], [], []
    for label in sorted(by_label):
        items = sorted(by_label[label])
        # the split depends on the paragraph key only, so it is the same in every language
        tr = [it for it in items if is_help_train_side(*it[1])][:n_train]
        te = [it for it in items if not is_help_train_side(*it[1])][:n_test]
        if len(tr) < MIN_PER_LABEL or len(te) < 2 * MIN_PER_LABEL:
            continue  # too rare in this language's translated help to be a fair class
        train += [row(k, t, label) for _, k, t in tr]
        test += [row(k, t, label) for _, k, t in te]
        cluster += [row(k, t, label) for _, k, t in items[:n_cluster]]
    name = LANG_NAMES[lang]
    cdir = out_root / f"HelpTopicClassification.{lang}"
    write_jsonl(cdir / "train.jsonl", sorted(train, key=lambda r: (r["label"], r["text"])))
    write_jsonl(cdir / "test.jsonl", sorted(test, key=lambda r: (r["label"], r["text"])))
    common = dict(
        languages=[lang],
        source=f"Debian bookworm package {pkg} {version} (compiled LibreOffice help pages)",
        license=LICENSES["libreoffice"],
    )
    task_json(
        cdir,
        name=cdir.name,
        type="classification",
        instruction="Classify the LibreOffice help paragraph by the application module it documents",
        main_score="accuracy",
        description=f"{name} LibreOffice help paragraphs labelled by help module (Writer, Calc, Impress, Draw, Math, Base, Chart, Basic, Shared); train/test split by paragraph id.",
        **common,
    )
    kdir = out_root / f"HelpTopicClustering.{lang}"
    write_jsonl(kdir / "test.jsonl", sorted(cluster, key=lambda r: (r["label"], r["text"])))
    task_json(
        kdir,
        name=kdir.name,
        type="clustering",
        instruction="Identify the LibreOffice module that the help paragraph documents",
        main_score="v_measure",
        description=f"Cluster {name} LibreOffice help paragraphs by help module.",
        **common,
    )
    return {cdir.name: len(train) + len(test), kdir.name: len(cluster)}


def keep_pair_loose(en: str, tr: str, lang: str) -> bool:
    """Translated-paragraph check for topic tasks (no format-code or length limits)."""
    if en.casefold() == tr.casefold():
        return False
    need = 0.95 if LANG_SCRIPT[lang] == "LATIN" else 0.6
    return script_share(tr, LANG_SCRIPT[lang]) >= need


# --------------------------------------------------------------------------- Debian


def read_deb822(path: Path) -> list[dict[str, str]]:
    text = run(["/usr/lib/apt/apt-helper", "cat-file", str(path)])
    records = []
    for block in text.split("\n\n"):
        rec, last = {}, None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and last:
                rec[last] += "\n" + line
            elif ":" in line:
                last, value = line.split(":", 1)
                rec[last] = value.strip()
        if rec:
            records.append(rec)
    return records


@dataclass(frozen=True)
class DebPackage:
    name: str
    section: str
    short: str
    paragraphs: tuple[str, ...]

    @property
    def long(self) -> str:
        return "\n".join(self.paragraphs)


def debian_packages(lists: Path) -> list[DebPackage]:
    pkgs_file = next(lists.glob("*_debian_dists_bookworm_main_binary-amd64_Packages*"))
    trans_file = next(lists.glob("*_debian_dists_bookworm_main_i18n_Translation-en*"))
    long_by = {}
    for rec in read_deb822(trans_file):
        desc = rec.get("Description-en", "")
        long_by[(rec.get("Package"), rec.get("Description-md5"))] = desc
    out = []
    for rec in read_deb822(pkgs_file):
        desc = long_by.get((rec["Package"], rec.get("Description-md5")))
        if not desc:
            continue
        short, _, body = desc.partition("\n")
        paragraphs, cur = [], []
        for line in body.splitlines():
            line = line[1:] if line.startswith(" ") else line
            if line.strip() == ".":
                if cur:
                    paragraphs.append(norm_ws(" ".join(cur)))
                cur = []
            else:
                cur.append(line)
        if cur:
            paragraphs.append(norm_ws(" ".join(cur)))
        section = rec.get("Section", "").split("/")[-1]
        out.append(DebPackage(rec["Package"], section, norm_ws(short), tuple(paragraphs)))
    return sorted(out, key=lambda p: p.name)


def held_out_packages(pkgs: list[DebPackage]) -> list[DebPackage]:
    """Held-out packages whose texts share nothing with any training-side package."""
    train_texts = set()
    for p in pkgs:
        if not is_held_out(p.name):
            train_texts.add(p.short.casefold())
            train_texts.update(par.casefold() for par in p.paragraphs)
    out, seen = [], set()
    for p in pkgs:
        if not is_held_out(p.name) or not p.paragraphs or not p.short:
            continue
        texts = [p.short.casefold(), *(par.casefold() for par in p.paragraphs)]
        if any(t in train_texts for t in texts) or p.long.casefold() in seen:
            continue
        if excluded(p.short, p.long, *p.paragraphs):
            continue
        if p.short.casefold() in seen or not (80 <= len(p.long) <= 1500):
            continue
        seen.update([p.long.casefold(), p.short.casefold()])
        out.append(p)
    return out


def build_debian(
    out_root: Path, pkgs: list[DebPackage], n_sections: int, n_train: int, n_test: int, n_retr: int
) -> dict[str, int]:
    lic = LICENSES["debian-description"]
    counts = Counter(p.section for p in pkgs if p.section not in NON_TOPICAL_SECTIONS)
    sections = sorted(s for s, _ in counts.most_common(n_sections))
    by_sec: dict[str, list[DebPackage]] = defaultdict(list)
    for p in pkgs:
        if p.section in sections:
            by_sec[p.section].append(p)

    def row(p: DebPackage) -> dict:
        return {
            "text": p.long,
            "label": p.section,
            "source": f"debian-package:{p.name}",
            "license": lic,
        }

    train, test, cluster = [], [], []
    for sec in sections:
        items = sorted(by_sec[sec], key=lambda p: stable_hash("deb", p.name))
        tr = [p for p in items if stable_hash("split", p.name) % 3 == 0][:n_train]
        te = [p for p in items if stable_hash("split", p.name) % 3 != 0][:n_test]
        train += map(row, tr)
        test += map(row, te)
        cluster += map(row, items[:n_test])
    src = "Debian bookworm main: Packages (Section) + Translation-en (descriptions), held-out packages only (lusifer.data.splits.is_held_out)"
    cdir = out_root / "DebianSectionClassification.en"
    write_jsonl(cdir / "train.jsonl", sorted(train, key=lambda r: (r["label"], r["source"])))
    write_jsonl(cdir / "test.jsonl", sorted(test, key=lambda r: (r["label"], r["source"])))
    task_json(
        cdir,
        name=cdir.name,
        type="classification",
        languages=["en"],
        instruction="Classify the software package description by its Debian archive section",
        main_score="accuracy",
        description=f"Debian package long descriptions labelled by archive section ({', '.join(sections)}); train/test disjoint by package.",
        source=src,
        license=lic,
    )
    kdir = out_root / "DebianSectionClustering.en"
    write_jsonl(kdir / "test.jsonl", sorted(cluster, key=lambda r: (r["label"], r["source"])))
    task_json(
        kdir,
        name=kdir.name,
        type="clustering",
        languages=["en"],
        instruction="Identify the Debian archive section of the software package description",
        main_score="v_measure",
        description=f"Cluster Debian package long descriptions by archive section ({', '.join(sections)}).",
        source=src,
        license=lic,
    )
    rng = random.Random(f"{SEED}:debian-retrieval")
    pool = pkgs[:]
    rng.shuffle(pool)
    with_query, distractors = pool[:n_retr], pool[n_retr : n_retr * 3]
    queries, docs, qrels = [], [], []
    for p in with_query:
        qid, did = short_id("q", p.name), short_id("d", p.name)
        queries.append((qid, p.short, f"debian-package:{p.name}", lic))
        docs.append((did, p.long, f"debian-package:{p.name}", lic))
        qrels.append((qid, did))
    for p in distractors:
        docs.append((short_id("d", p.name), p.long, f"debian-package:{p.name}", lic))
    rdir = out_root / "DebianDescriptionRetrieval.en"
    write_retrieval(rdir, queries, docs, qrels)
    task_json(
        rdir,
        name=rdir.name,
        type="retrieval",
        languages=["en"],
        instruction="Given a one-line summary of a software package, retrieve the package's full description",
        main_score="ndcg_at_10",
        description="Debian package short descriptions as queries, long descriptions as corpus (relevant: the same package); distractors from other held-out packages.",
        source=src,
        license=lic,
    )
    return {cdir.name: len(train) + len(test), kdir.name: len(cluster), rdir.name: len(queries)}


# --------------------------------------------------------------------------- README


def write_readme(out: Path, manifest: dict) -> None:
    tasks = sorted(d for d in out.iterdir() if (d / "task.json").exists())
    metas = [json.loads((d / "task.json").read_text(encoding="utf-8")) for d in tasks]
    size = sum(f.stat().st_size for f in out.rglob("*.jsonl")) + sum(
        f.stat().st_size for f in out.rglob("*.tsv")
    )
    by_lang: dict[str, list[str]] = defaultdict(list)
    for m in metas:  # a cross-lingual task counts for its non-English side
        by_lang[m["languages"][-1]].append(m["name"])
    counts = manifest["counts"]
    lines = [
        "# Offline multilingual evaluation suite",
        "",
        "Generated by `scripts/build_offline_suite.py`; do not edit by hand. Rebuild with:",
        "",
        "```bash",
        ".venv/bin/python scripts/build_offline_suite.py   # needs apt (root) and the Debian mirror",
        "```",
        "",
        f"{len(metas)} tasks, {len(by_lang)} languages (cross-lingual tasks are listed "
        f"under their non-English side), {size / 1e6:.1f} MB of data. "
        "Every data row carries `source` (Debian package, "
        "version and file, or `debian-package:<name>`) and `license`.",
        "",
        "## Layout (one directory per task)",
        "",
        "- `task.json`: name, type, languages (cross-lingual: query side first), "
        "instruction, main_score, description, source, license.",
        "- retrieval: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`), "
        "`qrels/test.tsv` (`query-id`, `corpus-id`, `score`).",
        "- classification: `train.jsonl`, `test.jsonl` (`text`, `label`); clustering: `test.jsonl`.",
        "- bitext: `test.jsonl` (`sentence1` English, `sentence2` translation).",
        "",
        "## Sources and licences",
        "",
        "- gettext catalogs (English msgid -> human msgstr) from `libreoffice-l10n-<lang>` "
        "(MPL-2.0), `vlc-l10n` (GPL-2.0-or-later; the only Swahili source) and the catalogs "
        "installed under `/usr/share/locale` on the build machine (licence of the owning "
        "package, read from its copyright file; the packages used are listed in "
        "`manifest.json`, so a machine with other packages installed builds a different "
        "sample). Filter: 20-400 characters, 4+ English words, no format codes, "
        "accelerators or markup, translation differs from the English, translation in the "
        "language's script; pairs de-duplicated by English text and by translation.",
        "- LibreOffice help (`libreoffice-help-<lang>`, MPL-2.0): compiled HTML pages; "
        "paragraphs matched across languages by (page, paragraph id); platform variants "
        "other than the default, embedded paragraphs and menu boxes dropped. The label is "
        "the help module of the page (`text/<module>/...`). Train/test split by a hash of "
        "the paragraph key, so one paragraph never sits in both splits; labels with fewer "
        f"than {MIN_PER_LABEL} train rows in a language are dropped for that language.",
        "- Debian bookworm `main` package descriptions (`Packages` + `Translation-en`): only "
        "packages with `lusifer.data.splits.is_held_out(name)` True, minus any whose short "
        "description or any description paragraph also occurs in a training-side package. "
        "Section tasks use the 10 most frequent topical sections (library, documentation "
        "and language-ecosystem sections excluded).",
        "",
        "Texts of WordNet (`wordnet-base`) and of the bundled English training data "
        "(`resources/data/english_train.jsonl.gz`, if present at build time) are kept out "
        "of every task; iso-codes catalogs (country and language names) are not used.",
        "",
        "Cross-lingual tasks mix gettext and help pairs half and half where the language has "
        "both; `Bitext.en-<lang>` is disjoint from `XlingRetrieval.en-<lang>` except for "
        "Swahili, which has too few pairs and uses the same ones.",
        "",
        "## Tasks per language",
        "",
        "| language | tasks |",
        "|---|---|",
    ]
    for lang in ["en", *LANGS]:
        lines.append(f"| {lang} | {', '.join(sorted(by_lang.get(lang, [])))} |")
    lines += ["", "## Row counts", "", "| task | type | rows |", "|---|---|---|"]
    for m in metas:
        lines.append(f"| {m['name']} | {m['type']} | {counts.get(m['name'], '?')} |")
    lines += [
        "",
        "Rows: queries for retrieval (one relevant document each), train+test for "
        "classification, texts for clustering, pairs for bitext.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/lusifer-offline-suite-build"))
    ap.add_argument("--pairs", type=int, default=1000, help="pairs per language and task")
    ap.add_argument("--topic-train", type=int, default=48, help="train rows per label")
    ap.add_argument("--topic-test", type=int, default=96, help="test rows per label")
    ap.add_argument("--topic-cluster", type=int, default=96, help="clustering rows per label")
    ap.add_argument(
        "--no-system-locale",
        action="store_true",
        help="ignore the gettext catalogs installed under /usr/share/locale",
    )
    ap.add_argument(
        "--exclude-train",
        type=Path,
        default=DEFAULT_TRAIN,
        help="bundled training data whose texts must stay out of the suite (skipped if absent)",
    )
    args = ap.parse_args(argv)
    start = time.time()
    names = (
        [f"libreoffice-l10n-{lang}" for lang in LIBREOFFICE_L10N_LANGS]
        + ["vlc-l10n"]
        + ["libreoffice-help-en-us"]
        + [f"libreoffice-help-{lang}" for lang in HELP_LANGS if lang != "en"]
    )
    pkgs = fetch_packages(args.work_dir, [*names, "wordnet-base"])
    wordnet_root, wordnet_version = pkgs.pop("wordnet-base")
    EXCLUDED.update(wordnet_texts(wordnet_root))
    train_sha1 = None
    if args.exclude_train.exists():
        EXCLUDED.update(load_training_texts(args.exclude_train))
        train_sha1 = hashlib.sha1(args.exclude_train.read_bytes()).hexdigest()
    else:
        print(f"warning: {args.exclude_train} not found; only WordNet texts are excluded")
    print(f"excluding {len(EXCLUDED)} WordNet and training texts from the suite")

    lists = fetch_description_lists(args.work_dir)

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    counts: dict[str, int] = {}
    system_used: set[str] = set()

    help_text = {}
    for lang in HELP_LANGS:
        pkg = "libreoffice-help-en-us" if lang == "en" else f"libreoffice-help-{lang}"
        help_text[lang] = read_help(pkgs[pkg][0], "en-US" if lang == "en" else lang)

    for lang in tqdm(LANGS, desc="cross-lingual"):
        gt, used = gettext_pairs(lang, pkgs, system_locale=not args.no_system_locale)
        system_used.update(used)
        hp = []
        if lang in help_text:
            pkg = f"libreoffice-help-{lang}"
            hp = help_pairs(help_text["en"], help_text[lang], lang, pkg, pkgs[pkg][1])
        counts.update(build_crosslingual(args.out, lang, gt, hp, args.pairs, SEED))

    for lang in HELP_LANGS:
        pkg = "libreoffice-help-en-us" if lang == "en" else f"libreoffice-help-{lang}"
        counts.update(
            build_help_topics(
                args.out,
                lang,
                help_text[lang],
                help_text["en"],
                pkg,
                pkgs[pkg][1],
                args.topic_train,
                args.topic_test,
                args.topic_cluster,
            )
        )

    deb = held_out_packages(debian_packages(lists))
    counts.update(build_debian(args.out, deb, 10, 50, 100, 1000))

    versions = {n: v for n, (_, v) in pkgs.items()}
    manifest = {
        "packages": versions,
        "system_locale_packages": sorted(system_used),
        "counts": dict(sorted(counts.items())),
        "seed": SEED,
        "excluded_texts": {
            "wordnet-base": wordnet_version,
            "training_file_sha1": train_sha1,
        },
    }
    (args.out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    write_readme(args.out, manifest)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(json.dumps(manifest["counts"], indent=1))
    print(f"total size {size / 1e6:.1f} MB, built in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
