"""Build the English out-of-domain tasks of the bundled offline suite.

The bundled English training data (``resources/data/english_train.jsonl.gz``) is software
and dictionary text: Debian package descriptions, WordNet, LibreOffice help. The English
tasks of ``scripts/build_offline_suite.py`` come from the same sources, so they measure
English in the training domain. These tasks measure it outside: scripture and commentary,
and quotations and jokes sorted by topic, from Debian packages whose contents the training
data never reads (and whose package descriptions it does not hold either):

- ``BiblePassageRetrieval.en``: the chapter outlines of Matthew Henry's Concise
  Commentary (``sword-comm-mhcc``, public domain) as queries ("The law of retaliation."),
  the King James Version passage each outline line covers (``sword-text-kjv``, public
  domain) as the relevant document; other outlined passages as distractors.
- ``BibleDivisionClassification.en``: KJV verses labelled by division of the Bible (law,
  history, poetry and wisdom, prophets, gospels, epistles); train/test split by chapter.
- ``FortuneTopicClassification.en`` / ``FortuneTopicClustering.en``: the topic files of the
  BSD ``fortunes`` package (art, education, food, law, love, medicine, politics, science,
  sports, work); train/test split by cookie.

Every task.json carries ``"domain": "english-out-of-domain"``
(:data:`lusifer.evaluation.suites.ENGLISH_OOD_DOMAIN`): the demo and the ablation script
report these tasks apart from the in-domain English ones. Rows whose text equals a text of
the bundled training data or of WordNet, or shares a run of :data:`NGRAM` words with one,
are dropped (``tests/unit/test_english_ood.py`` checks the result).

``scripts/build_offline_suite.py`` rebuilds the suite folder from scratch: run this script
after it. Needs apt (the Debian mirror) and, to read the SWORD modules,
``pip install pysword==0.2.8`` (build time only)::

    .venv/bin/python scripts/build_english_ood.py
    .venv/bin/python scripts/build_english_ood.py --out /tmp/suite --work-dir /tmp/w
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_offline_suite import (  # noqa: E402 - the suite builder's helpers
    DEFAULT_OUT,
    DEFAULT_TRAIN,
    fetch_packages,
    norm_ws,
    short_id,
    stable_hash,
    task_json,
    text_key,
    training_strings,
    wordnet_strings,
    write_jsonl,
    write_retrieval,
)

DOMAIN = "english-out-of-domain"  # lusifer.evaluation.suites.ENGLISH_OOD_DOMAIN
SEED = 20250301
NGRAM = 8  # a row sharing a run of this many words with a training text is dropped
PACKAGES = ["fortunes", "sword-comm-mhcc", "sword-text-kjv"]
SWORD_PATHS = {
    "sword-text-kjv": "usr/share/sword/modules/texts/ztext/engKJV2006eb/",
    "sword-comm-mhcc": "usr/share/sword/modules/comments/zcom/mhcc/",
}
LICENSES = {
    "fortunes": "BSD-3-Clause (fortune-mod; see /usr/share/doc/fortunes/copyright)",
    "sword-comm-mhcc": "public-domain (Matthew Henry's Concise Commentary; see /usr/share/doc/sword-comm-mhcc/copyright)",
    "sword-text-kjv": "public-domain (King James Version, outside the UK where Crown letters patent restrict printing; see /usr/share/doc/sword-text-kjv/copyright)",
}
FORTUNE_TOPICS = (
    "art", "education", "food", "law", "love", "medicine", "politics", "science", "sports", "work",
)  # fmt: skip
# Bible divisions by OSIS book name (Acts and Revelation belong to none of them: left out).
DIVISIONS = {
    "law": "Gen Exod Lev Num Deut",
    "history": "Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth",
    "poetry and wisdom": "Job Ps Prov Eccl Song",
    "prophets": "Isa Jer Lam Ezek Dan Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech Mal",
    "gospels": "Matt Mark Luke John",
    "epistles": "Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim Titus Phlm Heb Jas 1Pet 2Pet 1John 2John 3John Jude",
}
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


# --------------------------------------------------------------------------- leakage screen


def words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


def ngrams(text: str, n: int = NGRAM) -> set[str]:
    w = words(text)
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


class Screen:
    """Drops candidate texts that equal, or share an n-gram with, a reference text."""

    def __init__(self, candidates: Iterable[str]) -> None:
        self.by_gram: dict[str, set[str]] = defaultdict(set)
        self.keys = set()
        for text in candidates:
            key = text_key(text)
            self.keys.add(key)
            for gram in ngrams(text):
                self.by_gram[gram].add(key)
        self.bad: set[str] = set()

    def scan(self, references: Iterable[str]) -> None:
        for ref in references:
            key = text_key(ref)
            if len(key) >= 10 and key in self.keys:
                self.bad.add(key)
            for gram in ngrams(ref):
                self.bad.update(self.by_gram.get(gram, ()))

    def ok(self, text: str) -> bool:
        return text_key(text) not in self.bad


# --------------------------------------------------------------------------- the Bible


@dataclass(frozen=True)
class Verse:
    book: str  # OSIS name
    chapter: int
    verse: int
    text: str


OSIS_NOTE = re.compile(r"<note\b.*?</note>|<title\b.*?</title>", re.S)
OSIS_TAG = re.compile(r"<[^>]+>")
SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)])")


def clean_osis(raw: str) -> str:
    text = OSIS_NOTE.sub(" ", raw)
    text = OSIS_TAG.sub("", text).replace("¶", " ")
    return SPACE_BEFORE_PUNCT.sub(r"\1", norm_ws(text))


def sword_module(root: Path, package: str):
    try:
        from pysword.bible import SwordBible
    except ImportError:
        raise SystemExit("reading the SWORD modules needs: pip install pysword==0.2.8") from None
    # both modules store 10-byte verse records (zText), whatever the commentary's .conf says
    module = SwordBible(str(root / SWORD_PATHS[package]), "ztext", "kjv", "utf-8", "OSIS")
    # a block holds a whole book: decompress it once, not once per verse
    module._decompressed_text = lru_cache(maxsize=4)(module._decompressed_text)  # noqa: SLF001
    return module


def read_bible(module) -> list[Verse]:
    """Every verse of the KJV, its markup removed."""
    verses = []
    books = module.get_structure().get_books()
    for book in [*books["ot"], *books["nt"]]:
        for ch, n_verses in enumerate(book.chapter_lengths, start=1):
            for v in range(1, n_verses + 1):
                raw = module.get(books=[book.osis_name], chapters=[ch], verses=[v], clean=False)
                verses.append(Verse(book.osis_name, ch, v, clean_osis(raw)))
    return verses


OUTLINE_ROW = re.compile(r"<row><cell>(.*?)</cell><cell>\((\d+)(?:-(\d+))?\)</cell></row>", re.S)


def read_outlines(module, structure) -> list[tuple[str, int, int, int, str]]:
    """(book, chapter, first verse, last verse, heading) of every commentary chapter outline."""
    out = []
    for book in [*structure["ot"], *structure["nt"]]:
        for ch, n_verses in enumerate(book.chapter_lengths, start=1):
            raw = module.get(books=[book.osis_name], chapters=[ch], verses=[1], clean=False)
            _, found, outline = raw.rpartition("Chapter Outline</title>")
            if not found:  # a chapter the commentary treats as one section
                continue
            for cell, first, last in OUTLINE_ROW.findall(outline):
                a, b = int(first), int(last or first)
                heading = clean_osis(cell)
                if 1 <= a <= b <= n_verses:
                    out.append((book.osis_name, ch, a, b, heading))
    return out


# --------------------------------------------------------------------------- fortunes

OVERSTRIKE = re.compile(r".\x08")


def read_fortunes(root: Path, topic: str) -> list[tuple[int, str]]:
    """(index in the file, whitespace-normalised text) of every cookie of a topic file."""
    path = root / "usr/share/games/fortunes" / topic
    raw = path.read_text(encoding="utf-8", errors="replace")
    out = []
    for i, cookie in enumerate(re.split(r"^%$", raw, flags=re.M)):
        text = norm_ws(OVERSTRIKE.sub("", cookie))
        if text:
            out.append((i, text))
    return out


def keep_fortune(text: str) -> bool:
    if not 60 <= len(text) <= 500 or len(words(text)) < 10:
        return False
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    return letters / len(visible) >= 0.75 and "http" not in text and text.isascii()


# --------------------------------------------------------------------------- tasks


def build_fortunes(
    out_root: Path, root: Path, version: str, screen: Screen, n_train: int, n_test: int
) -> tuple[dict[str, int], Counter]:
    lic = LICENSES["fortunes"]
    stats: Counter = Counter()
    by_text: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for topic in FORTUNE_TOPICS:
        for i, text in read_fortunes(root, topic):
            stats["cookies"] += 1
            if not keep_fortune(text):
                stats["filtered_length_or_layout"] += 1
                continue
            if not screen.ok(text):
                stats["dropped_training_overlap"] += 1
                continue
            source = f"debian:fortunes={version}:/usr/share/games/fortunes/{topic}#{i}"
            by_text[text_key(text)].append((text, topic, source))
    by_topic: dict[str, list[dict]] = defaultdict(list)
    for entries in by_text.values():
        if len({topic for _, topic, _ in entries}) > 1:  # one cookie under two topics
            stats["dropped_in_several_topics"] += 1
            continue
        text, topic, source = entries[0]
        by_topic[topic].append({"text": text, "label": topic, "source": source, "license": lic})
    train, test, cluster = [], [], []
    for topic in FORTUNE_TOPICS:
        items = sorted(by_topic[topic], key=lambda r: stable_hash("fortune", r["source"]))
        tr = [r for r in items if stable_hash("split", r["source"]) % 3 == 0][:n_train]
        te = [r for r in items if stable_hash("split", r["source"]) % 3 != 0][:n_test]
        train += tr
        test += te
        cluster += items[:n_test]
    src = f"Debian bookworm package fortunes {version} (/usr/share/games/fortunes/<topic>)"
    labels = ", ".join(FORTUNE_TOPICS)
    order = lambda r: (r["label"], r["source"])  # noqa: E731
    cdir = out_root / "FortuneTopicClassification.en"
    write_jsonl(cdir / "train.jsonl", sorted(train, key=order))
    write_jsonl(cdir / "test.jsonl", sorted(test, key=order))
    task_json(
        cdir,
        name=cdir.name,
        type="classification",
        languages=["en"],
        domain=DOMAIN,
        instruction="Classify the quotation or joke by its topic",
        main_score="accuracy",
        description=f"Fortune cookies (quotations, jokes, anecdotes) labelled by the topic file they come from ({labels}); train/test disjoint by cookie.",
        source=src,
        license=lic,
    )
    kdir = out_root / "FortuneTopicClustering.en"
    write_jsonl(kdir / "test.jsonl", sorted(cluster, key=order))
    task_json(
        kdir,
        name=kdir.name,
        type="clustering",
        languages=["en"],
        domain=DOMAIN,
        instruction="Identify the topic of the quotation or joke",
        main_score="v_measure",
        description=f"Cluster fortune cookies by the topic file they come from ({labels}).",
        source=src,
        license=lic,
    )
    return {cdir.name: len(train) + len(test), kdir.name: len(cluster)}, stats


def passage_text(
    verses: dict[tuple[str, int, int], Verse], book: str, ch: int, a: int, b: int
) -> str:
    return " ".join(verses[(book, ch, v)].text for v in range(a, b + 1))


def build_bible_retrieval(
    out_root: Path,
    verses: dict[tuple[str, int, int], Verse],
    outlines: list[tuple[str, int, int, int, str]],
    versions: dict[str, str],
    screen: Screen,
    n_queries: int,
    n_distractors: int,
    max_chars: int,
) -> tuple[dict[str, int], Counter]:
    stats: Counter = Counter(outline_lines=len(outlines))
    heading_count = Counter(text_key(h) for *_, h in outlines)
    candidates = []
    for book, ch, a, b, heading in outlines:
        passage = passage_text(verses, book, ch, a, b)
        if heading_count[text_key(heading)] > 1:
            stats["dropped_heading_not_unique"] += 1
        elif not 3 <= len(words(heading)) <= 25:
            stats["dropped_heading_length"] += 1
        elif not 40 <= len(passage) <= max_chars:
            stats["dropped_passage_length"] += 1
        elif not (screen.ok(heading) and screen.ok(passage)):
            stats["dropped_training_overlap"] += 1
        else:
            candidates.append((book, ch, a, b, heading, passage))
    rng = random.Random(f"{SEED}:bible-retrieval")
    rng.shuffle(candidates)
    with_query = candidates[:n_queries]
    distractors = candidates[n_queries : n_queries + n_distractors]
    mhcc, kjv = versions["sword-comm-mhcc"], versions["sword-text-kjv"]
    queries, docs, qrels = [], [], []
    for book, ch, a, b, heading, passage in with_query + distractors:
        ref = f"{book}.{ch}.{a}" + (f"-{b}" if b > a else "")
        did = short_id("d", ref)
        docs.append(
            (did, passage, f"debian:sword-text-kjv={kjv}:{ref}", LICENSES["sword-text-kjv"])
        )
        if len(queries) < len(with_query):
            qid = short_id("q", ref)
            src = f"debian:sword-comm-mhcc={mhcc}:{book}.{ch} outline ({a}" + (
                f"-{b})" if b > a else ")"
            )
            queries.append((qid, heading, src, LICENSES["sword-comm-mhcc"]))
            qrels.append((qid, did))
    rdir = out_root / "BiblePassageRetrieval.en"
    write_retrieval(rdir, queries, docs, qrels)
    task_json(
        rdir,
        name=rdir.name,
        type="retrieval",
        languages=["en"],
        domain=DOMAIN,
        instruction="Given a one-line summary of a Bible passage, retrieve the passage",
        main_score="ndcg_at_10",
        description="Chapter-outline lines of Matthew Henry's Concise Commentary as queries, the King James Version passage each line summarises as the relevant document; distractors: other outlined passages.",
        source=f"Debian bookworm packages sword-comm-mhcc {mhcc} (queries) and sword-text-kjv {kjv} (passages)",
        license="public-domain (Matthew Henry's Concise Commentary; King James Version outside the UK)",
    )
    return {rdir.name: len(queries)}, stats


def build_bible_divisions(
    out_root: Path,
    verses: list[Verse],
    version: str,
    screen: Screen,
    n_train: int,
    n_test: int,
) -> tuple[dict[str, int], Counter]:
    stats: Counter = Counter()
    division = {book: label for label, books in DIVISIONS.items() for book in books.split()}
    lic = LICENSES["sword-text-kjv"]
    by_label: dict[str, list[dict]] = defaultdict(list)
    seen: Counter = Counter(text_key(v.text) for v in verses)
    for v in verses:
        label = division.get(v.book)
        if label is None:
            continue
        if not 80 <= len(v.text) <= 400 or seen[text_key(v.text)] > 1:
            stats["filtered_length_or_repeated"] += 1
            continue
        if not screen.ok(v.text):
            stats["dropped_training_overlap"] += 1
            continue
        source = f"debian:sword-text-kjv={version}:{v.book}.{v.chapter}.{v.verse}"
        by_label[label].append({"text": v.text, "label": label, "source": source, "license": lic})
    train, test = [], []
    for label in DIVISIONS:
        items = sorted(by_label[label], key=lambda r: stable_hash("verse", r["source"]))
        chapter = lambda r: r["source"].rsplit(".", 1)[0]  # noqa: E731 - split by chapter
        train += [r for r in items if stable_hash("split", chapter(r)) % 3 == 0][:n_train]
        test += [r for r in items if stable_hash("split", chapter(r)) % 3 != 0][:n_test]
    cdir = out_root / "BibleDivisionClassification.en"
    order = lambda r: (r["label"], r["source"])  # noqa: E731
    write_jsonl(cdir / "train.jsonl", sorted(train, key=order))
    write_jsonl(cdir / "test.jsonl", sorted(test, key=order))
    task_json(
        cdir,
        name=cdir.name,
        type="classification",
        languages=["en"],
        domain=DOMAIN,
        instruction="Classify the Bible verse by the division of the Bible it comes from",
        main_score="accuracy",
        description=f"King James Version verses labelled by division ({', '.join(DIVISIONS)}; Acts and Revelation left out); train/test disjoint by chapter.",
        source=f"Debian bookworm package sword-text-kjv {version}",
        license=lic,
    )
    return {cdir.name: len(train) + len(test)}, stats


# --------------------------------------------------------------------------- README

README_MARK = "<!-- english-out-of-domain: written by scripts/build_english_ood.py -->"


def write_docs(out: Path, manifest: dict) -> None:
    names = sorted(manifest["counts"])
    metas = [json.loads((out / n / "task.json").read_text(encoding="utf-8")) for n in names]
    lines = [
        "# English out-of-domain tasks",
        "",
        "Generated by `scripts/build_english_ood.py`; do not edit by hand. Rebuild (after "
        "`scripts/build_offline_suite.py`, which empties this folder) with:",
        "",
        "```bash",
        "pip install pysword==0.2.8   # build time only: reads the SWORD modules",
        ".venv/bin/python scripts/build_english_ood.py",
        "```",
        "",
        "The bundled English training data is software and dictionary text (Debian package "
        "descriptions, WordNet, LibreOffice help), like the suite's other English tasks. These "
        'tasks (task.json `"domain": "english-out-of-domain"`) come from Debian packages '
        "whose contents the training data never reads and whose package descriptions it "
        "does not hold: scripture and commentary, and quotations and jokes by topic. "
        "`lusifer demo` and `benchmarks/ablations.py` report them as English out of domain, "
        "apart from the in-domain English tasks. Rows whose text equals a text of the bundled "
        f"training data or of WordNet, or shares a run of {NGRAM} words with one, are "
        "dropped; `tests/unit/test_english_ood.py` checks texts, sources and packages against "
        "the training data.",
        "",
        "| task | type | rows | source | licence |",
        "|---|---|---|---|---|",
    ]
    for m in metas:
        lines.append(
            f"| {m['name']} | {m['type']} | {manifest['counts'][m['name']]} | {m['source']} | {m['license']} |"
        )
    lines += [
        "",
        "Rows: queries for retrieval (one relevant document each), train+test for "
        "classification, texts for clustering. Every data row carries `source` "
        "(`debian:<package>=<version>:<file or reference>`) and `license`.",
        "",
        "Filter counts: "
        + "; ".join(
            f"{task}: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items()))
            for task, stats in manifest["filter_counts"].items()
        )
        + ".",
        "",
    ]
    (out / "ENGLISH_OOD.md").write_text("\n".join(lines), encoding="utf-8")
    readme = out / "README.md"
    if readme.exists():
        text = readme.read_text(encoding="utf-8").split(README_MARK)[0].rstrip("\n")
        text += (
            f"\n\n{README_MARK}\n## English out of domain\n\n"
            f"{', '.join(names)}: English tasks from domains the bundled training data does "
            "not cover, built by `scripts/build_english_ood.py` (run it after this suite's "
            "builder); see [ENGLISH_OOD.md](ENGLISH_OOD.md).\n"
        )
        readme.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/lusifer-english-ood-build"))
    ap.add_argument("--train-data", type=Path, default=DEFAULT_TRAIN)
    args = ap.parse_args(argv)
    if not args.train_data.exists():
        raise SystemExit(f"{args.train_data} not found: the screen needs the training data")

    pkgs = fetch_packages(args.work_dir, [*PACKAGES, "wordnet-base"])
    versions = {name: version for name, (_, version) in pkgs.items()}
    kjv = sword_module(pkgs["sword-text-kjv"][0], "sword-text-kjv")
    mhcc = sword_module(pkgs["sword-comm-mhcc"][0], "sword-comm-mhcc")
    print("reading the KJV and the commentary outlines", flush=True)
    verse_list = read_bible(kjv)
    verses = {(v.book, v.chapter, v.verse): v for v in verse_list}
    outlines = read_outlines(mhcc, kjv.get_structure().get_books())
    fortunes = [
        text for topic in FORTUNE_TOPICS for _, text in read_fortunes(pkgs["fortunes"][0], topic)
    ]
    passages = [passage_text(verses, b, c, a, z) for b, c, a, z, _ in outlines]
    screen = Screen(
        [*fortunes, *(v.text for v in verse_list), *passages, *(h for *_, h in outlines)]
    )
    print("screening against the training data and WordNet", flush=True)
    screen.scan(training_strings(args.train_data))
    screen.scan(wordnet_strings(pkgs["wordnet-base"][0]))
    print(f"{len(screen.bad)} candidate texts overlap the training data or WordNet", flush=True)

    for name in (
        "BiblePassageRetrieval.en",
        "BibleDivisionClassification.en",
        "FortuneTopicClassification.en",
        "FortuneTopicClustering.en",
    ):
        shutil.rmtree(args.out / name, ignore_errors=True)
    counts: dict[str, int] = {}
    filters: dict[str, dict[str, int]] = {}
    c, s = build_bible_retrieval(
        args.out,
        verses,
        outlines,
        versions,
        screen,
        n_queries=400,
        n_distractors=600,
        max_chars=800,
    )
    counts.update(c)
    filters["BiblePassageRetrieval.en"] = dict(s)
    c, s = build_bible_divisions(
        args.out, verse_list, versions["sword-text-kjv"], screen, n_train=40, n_test=80
    )
    counts.update(c)
    filters["BibleDivisionClassification.en"] = dict(s)
    c, s = build_fortunes(
        args.out, pkgs["fortunes"][0], versions["fortunes"], screen, n_train=20, n_test=40
    )
    counts.update(c)
    filters["FortuneTopic*.en"] = dict(s)

    manifest = {
        "packages": {n: versions[n] for n in PACKAGES},
        "counts": dict(sorted(counts.items())),
        "seed": SEED,
        "ngram": NGRAM,
        "screened_against": {
            "training_file_sha1": hashlib.sha1(args.train_data.read_bytes()).hexdigest(),
            "wordnet-base": versions["wordnet-base"],
        },
        "filter_counts": filters,
    }
    (args.out / "english_ood_manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    write_docs(args.out, manifest)
    print(json.dumps(manifest["counts"], indent=1))


if __name__ == "__main__":
    main()
