#!/usr/bin/env python
"""Build the bundled English-only training set from Debian packages.

Sources (all English, all from the Debian archive):

- Debian package descriptions (``Translation-en`` + ``Packages`` index files): the
  one-line summary <-> the long description, labelled with the package's section.
  Packages reserved for evaluation (``lusifer.data.splits.is_held_out``) are excluded,
  and so is any training row whose title or description text equals a held-out one.
- WordNet 3.0 (package ``wordnet-base``): lemmas <-> definition, and example
  sentence <-> definition.
- LibreOffice help (package ``libreoffice-help-en-us``): two paragraphs of the same
  help page, labelled with the help module. Only paragraphs on the training side of
  the suite's split (``lusifer.data.splits.is_help_train_side``) whose page and
  paragraph id no task of the offline suite uses, in any language, and whose text no
  task holds.

Usage (as root, needs apt access; takes about a minute)::

    .venv/bin/python scripts/build_english_data.py

It writes ``src/lusifer/resources/data/english_train.jsonl.gz`` (rows sorted, gzip with a
fixed mtime, sampling seeded), ``README.md`` (row counts, licences) and
``WORDNET_LICENSE`` next to it. apt index files go to a private lists directory, so
the system's apt configuration and state are left untouched.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from lusifer.data.language_guard import english_fraction, judge
from lusifer.data.readers import PairRow, write_jsonl
from lusifer.data.splits import help_paragraph_key, is_held_out, is_help_train_side

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "src" / "lusifer" / "resources" / "data"
OUT_NAME = "english_train.jsonl.gz"

DEBIAN_LICENSE = "per-package (Debian archive metadata)"
WORDNET_LICENSE = "WordNet-3.0"
HELP_PACKAGE = "libreoffice-help-en-us"
HELP_LICENSE = "MPL-2.0"
SUITE_DIR = ROOT / "src" / "lusifer" / "resources" / "offline_suite"

INSTRUCTIONS = {
    "debian-descriptions": "Given the one-line summary of a software package, retrieve its full description",
    "wordnet-definitions": "Given a word or phrase, retrieve its dictionary definition",
    "wordnet-examples": "Given an example sentence, retrieve the dictionary definition of the word sense it illustrates",
    "libreoffice-help": "Given a paragraph of LibreOffice help, retrieve another paragraph of the same help page",
}
WORDNET_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}

JUNK_TITLE = re.compile(
    r"transitional|dummy package|dummy transitional|empty package|obsolete|"
    r"debug(ging)? symbols|\(metapackage\)|virtual package",
    re.IGNORECASE,
)
# reStructuredText / Markdown debris pasted from READMEs: badges, underlines, tables.
JUNK_BODY = re.compile(r"={4,}|-{4,}|~{4,}|\|[\w ]+\||\.\. (?:image|code)|```|<[a-z]+[ >]")


def run(cmd: list[str], cwd: Path | None = None) -> bytes:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True).stdout


# --------------------------------------------------------------------------- apt


def apt_update(lists: Path) -> None:
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    run(
        [
            "apt-get",
            "update",
            "-qq",
            "-o",
            f"Dir::State::Lists={lists}",
            "-o",
            "Acquire::Languages=en",
        ]
    )


def read_index(path: Path) -> str:
    """Decompress an apt index file (lz4/gz/xz/plain) with apt's own helper."""
    return run(["/usr/lib/apt/apt-helper", "cat-file", str(path)]).decode("utf-8", "replace")


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """Parse deb822 stanzas; continuation lines are kept verbatim (with their leading space)."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def index_files(lists: Path, kind: str) -> list[Path]:
    # The main suite first, so that its entries win over -updates / -security.
    files = sorted(lists.glob(f"*{kind}*"))
    return sorted(files, key=lambda p: ("updates" in p.name or "security" in p.name, p.name))


# --------------------------------------------------------------------------- Debian descriptions

_BULLET = re.compile(r"^\s*(?:[-*+o•]|\d+[.)])\s+")


def clean_long_description(lines: list[str]) -> str:
    """Debian long description -> plain text: ' .' lines end paragraphs, bullets become '- '."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        body = line[1:] if line.startswith(" ") else line
        if body.strip() == ".":
            paragraphs.append([])
            continue
        if _BULLET.match(body):
            paragraphs[-1].append("- " + _BULLET.sub("", body).strip())
        elif paragraphs[-1] and paragraphs[-1][-1].startswith("- ") and body.startswith(" "):
            paragraphs[-1][-1] += " " + body.strip()  # continuation of a bullet item
        elif paragraphs[-1] and not paragraphs[-1][-1].startswith("- "):
            paragraphs[-1][-1] += " " + body.strip()
        else:
            paragraphs[-1].append(body.strip())
    out = ["\n".join(" ".join(p.split()) for p in para if p.strip()) for para in paragraphs]
    return "\n\n".join(p for p in out if p)


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


BOILERPLATE_PACKAGES = 20  # a sentence in this many packages' descriptions is boilerplate
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def content_sentences(body: str, min_chars: int = 40) -> list[str]:
    """Normalised sentences of a description, long enough to identify something."""
    out = (norm(s) for s in _SENTENCE_END.split(body))
    return [s for s in out if len(s) >= min_chars]


def debian_rows(lists: Path, max_chars: int) -> tuple[list[PairRow], Counter]:
    sections: dict[str, str] = {}
    for path in index_files(lists, "_Packages"):
        for st in stanzas(read_index(path)):
            sections.setdefault(st["Package"], st.get("Section", "unknown"))
    descriptions: dict[str, str] = {}
    for path in index_files(lists, "Translation-en"):
        for st in stanzas(read_index(path)):
            if "Description-en" in st:
                descriptions.setdefault(st["Package"], st["Description-en"])

    stats: Counter = Counter(packages=len(descriptions))
    candidates: list[tuple[str, str, str, str]] = []
    held_out_texts: set[str] = set()
    held_out_sentences: set[str] = set()
    sentence_packages: Counter = Counter()
    for pkg in sorted(descriptions):
        title, *long_lines = descriptions[pkg].split("\n")
        title = title.strip()
        body = clean_long_description(long_lines)
        sentences = set(content_sentences(body))
        sentence_packages.update(sentences)
        if is_held_out(pkg):
            held_out_texts.update({norm(title), norm(body)})
            held_out_sentences.update(sentences)
            stats["held_out"] += 1
            continue
        candidates.append((pkg, title, body, sections.get(pkg, "unknown").split("/")[-1]))
    # Sentences that identify a package family ("The Slurm Workload Manager is ...") must
    # not leak from the evaluation side into training; boilerplate shared by many
    # packages ("Node.js is an event-based server-side JavaScript engine.") identifies
    # nothing and is allowed.
    leaky = {s for s in held_out_sentences if sentence_packages[s] < BOILERPLATE_PACKAGES}

    rows = []
    seen: set[str] = set()
    for pkg, title, body, section in candidates:
        if JUNK_TITLE.search(title) or JUNK_TITLE.search(body[:200]) or JUNK_BODY.search(body):
            stats["junk"] += 1
            continue
        if len(body) < 20 or len(title) < 5:
            stats["too_short"] += 1
            continue
        verdict_body, verdict_title = judge(body), judge(title)
        if not (verdict_body.english and verdict_title.english):
            stats["non_english"] += 1
            continue
        nt, nb = norm(title), norm(body)
        if nt in held_out_texts or nb in held_out_texts:
            stats["same_text_as_held_out"] += 1
            continue
        if any(s in leaky for s in content_sentences(body)):
            stats["sentence_shared_with_held_out"] += 1
            continue
        if nt in seen or nb in seen:
            stats["duplicate"] += 1
            continue
        seen.update({nt, nb})
        if len(body) > max_chars:  # keep whole paragraphs
            cut = body.rfind("\n\n", 0, max_chars)
            body = body[:cut] if cut > 200 else body[:max_chars].rsplit(" ", 1)[0]
        rows.append(
            PairRow(
                query=title,
                positive=body,
                instruction=INSTRUCTIONS["debian-descriptions"],
                dataset="debian-descriptions",
                label=section,
                source=f"debian:package-descriptions:{pkg}",
                license=DEBIAN_LICENSE,
            )
        )
    stats["kept"] = len(rows)
    return rows, stats


# --------------------------------------------------------------------------- WordNet


def fetch_package(name: str, workdir: Path) -> Path:
    dl = workdir / "debs"
    dl.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", name], cwd=dl)
    deb = next(dl.glob(f"{name}_*.deb"))
    dest = workdir / name
    run(["dpkg-deb", "-x", str(deb), str(dest)])
    return dest


def package_version(name: str, workdir: Path) -> str:
    """Version of a package that :func:`fetch_package` downloaded."""
    deb = next((workdir / "debs").glob(f"{name}_*.deb"))
    return run(["dpkg-deb", "-f", str(deb), "Version"]).decode("utf-8").strip()


_LEMMA_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def parse_wordnet_line(line: str) -> tuple[str, str, list[str], str, list[str]] | None:
    """-> (offset, pos, lemmas, definition, examples) for one ``data.*`` line."""
    if line.startswith("  "):  # licence header
        return None
    head, _, gloss = line.partition(" | ")
    parts = head.split()
    offset, pos, n_words = parts[0], parts[2], int(parts[3], 16)
    lemmas = []
    for i in range(n_words):
        lemma = _LEMMA_MARKER.sub("", parts[4 + 2 * i]).replace("_", " ")
        if lemma not in lemmas:
            lemmas.append(lemma)
    definition_parts, examples = [], []
    for piece in re.split(r";\s+", gloss.strip()):
        piece = piece.strip()
        if piece.startswith('"'):
            example = piece.strip('"').split('" -')[0].strip().strip('"')
            if example:
                examples.append(example)
        elif piece and not examples:
            definition_parts.append(piece)
    definition = "; ".join(definition_parts).strip()
    return offset, WORDNET_POS[pos], lemmas, definition, examples


def wordnet_rows(wordnet_dir: Path, seed: int) -> tuple[list[PairRow], list[PairRow]]:
    rng = random.Random(seed)
    definitions, examples = [], []
    # A few synsets share a definition ("paint again"); keep the first so that no two
    # rows share a positive text.
    seen_definitions: set[str] = set()
    for pos_file in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / "usr" / "share" / "wordnet" / f"data.{pos_file}"
        for line in path.read_text(encoding="utf-8").splitlines():
            parsed = parse_wordnet_line(line)
            if parsed is None:
                continue
            offset, pos, lemmas, definition, exs = parsed
            if len(definition) < 10 or norm(definition) in seen_definitions:
                continue
            seen_definitions.add(norm(definition))
            source = f"wordnet-3.0:{pos[0]}{offset}"
            definitions.append(
                PairRow(
                    query=", ".join(lemmas[:6]),
                    positive=definition,
                    instruction=INSTRUCTIONS["wordnet-definitions"],
                    dataset="wordnet-definitions",
                    label=pos,
                    source=source,
                    license=WORDNET_LICENSE,
                )
            )
            # One example per synset: several rows sharing a positive would be false
            # in-batch negatives for each other.
            usable = [e for e in exs if len(e.split()) >= 4]
            if usable:
                examples.append(
                    PairRow(
                        query=rng.choice(usable),
                        positive=definition,
                        instruction=INSTRUCTIONS["wordnet-examples"],
                        dataset="wordnet-examples",
                        label=pos,
                        source=source,
                        license=WORDNET_LICENSE,
                    )
                )
    return definitions, examples


# --------------------------------------------------------------------------- LibreOffice help


def suite_help_usage(suite_dir: Path) -> tuple[set[tuple[str, str]], set[str]]:
    """(page, paragraph id) keys of every help paragraph the offline suite uses, in any
    language and any task, and the normalised text of every suite field."""
    keys, texts = set(), set()
    for path in sorted(suite_dir.glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if key := help_paragraph_key(str(row.get("source", ""))):
                keys.add(key)
            for field in ("text", "title", "sentence1", "sentence2"):
                if row.get(field):
                    texts.add(norm(row[field]))
    if not keys:
        raise SystemExit(f"no help paragraphs found in the offline suite at {suite_dir}")
    return keys, texts


def help_rows(
    help_root: Path, version: str, suite_dir: Path, seed: int
) -> tuple[list[PairRow], Counter]:
    """Pairs of English help paragraphs from one page, kept apart from the offline suite."""
    # the suite builder's HTML reader, so both see the same paragraphs under the same keys
    from build_offline_suite import ENGLISH_WORD, help_module, read_help

    used_keys, used_texts = suite_help_usage(suite_dir)
    stats: Counter = Counter()
    by_page: dict[str, list[tuple[str, str]]] = {}
    seen: set[str] = set()
    for key, text in sorted(read_help(help_root, "en-US").items()):
        stats["paragraphs"] += 1
        normalised = norm(text)
        if not is_help_train_side(*key):
            stats["test_side"] += 1
        elif key in used_keys:
            stats["used_by_suite"] += 1
        elif not (30 <= len(text) <= 600) or len(ENGLISH_WORD.findall(text)) < 6:
            stats["too_short_or_long"] += 1
        elif normalised in used_texts:
            stats["same_text_as_suite"] += 1
        elif normalised in seen:
            stats["duplicate"] += 1
        elif not judge(text).english:
            stats["non_english"] += 1
        else:
            seen.add(normalised)
            by_page.setdefault(key[0], []).append((key[1], text))
    rng = random.Random(seed)
    rows = []
    for page, paragraphs in sorted(by_page.items()):
        rng.shuffle(paragraphs)
        # an odd paragraph out stays unpaired
        for (id_a, text_a), (_, text_b) in zip(paragraphs[0::2], paragraphs[1::2], strict=False):
            rows.append(
                PairRow(
                    query=text_a,
                    positive=text_b,
                    instruction=INSTRUCTIONS["libreoffice-help"],
                    dataset="libreoffice-help",
                    label=help_module(page),
                    source=f"debian:{HELP_PACKAGE}={version}:{page}#{id_a}",
                    license=HELP_LICENSE,
                )
            )
    stats["kept_paragraphs"] = len(seen)
    return rows, stats


# --------------------------------------------------------------------------- main


def subsample(rows: list[PairRow], limit: int | None, seed: int) -> list[PairRow]:
    if limit is None or len(rows) <= limit:
        return rows
    return random.Random(seed).sample(rows, limit)


def write_readme(
    out_dir: Path,
    counts: Counter,
    stats: Counter,
    help_stats: Counter,
    help_version: str,
    size: int,
    fractions: dict,
    index_dates: dict[str, str],
) -> None:
    lines = [
        "# Bundled English training data",
        "",
        f"`{OUT_NAME}`: gzip JSONL, one pair a line (`dataset`, `query`, `positive`,",
        "`instruction`, `label`, `source`, `license`). English only. Built by",
        "",
        "    .venv/bin/python scripts/build_english_data.py",
        "",
        "from the Debian bookworm archive (package index files and the `wordnet-base` and",
        f"`{HELP_PACKAGE}` {help_version} packages), with a fixed seed and sorted output. Load it with",
        "`lusifer.data.english.load_bundled_english()`. A rebuild is byte-identical as long",
        "as the archive's index files are the same; these were dated "
        + "; ".join(f"{k}: {v}" for k, v in index_dates.items())
        + ".",
        "",
        "| dataset | rows | query -> positive | label | licence |",
        "|---|---|---|---|---|",
        f"| debian-descriptions | {counts['debian-descriptions']} | package summary -> long description | Debian section | {DEBIAN_LICENSE} |",
        f"| wordnet-definitions | {counts['wordnet-definitions']} | lemmas -> definition | part of speech | {WORDNET_LICENSE} |",
        f"| wordnet-examples | {counts['wordnet-examples']} | example sentence -> definition | part of speech | {WORDNET_LICENSE} |",
        f"| libreoffice-help | {counts['libreoffice-help']} | help paragraph -> another paragraph of the same page | help module | {HELP_LICENSE} |",
        f"| total | {sum(counts.values())} | | | |",
        "",
        f"File size: {size / 1e6:.2f} MB. English fraction (lusifer's language guard, 2000-row "
        "samples of query + positive): "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(fractions.items()))
        + ".",
        "",
        "Debian descriptions: packages for which `lusifer.data.splits.is_held_out(name)` is",
        "true are reserved for the evaluation suite and excluded here, as is any package",
        "whose summary or description equals a held-out package's, or that shares a sentence",
        "(40+ characters, found in fewer than 20 packages) with one. Also dropped:",
        "transitional/dummy/debug-symbol packages, long descriptions under 20 characters,",
        "texts the language guard does not judge English prose, and duplicates (normalised",
        "summary or description). Long descriptions are cut at a paragraph boundary after",
        "about 1,000 characters. Filter counts: "
        + ", ".join(f"{k} {v}" for k, v in sorted(stats.items()))
        + ".",
        "",
        "LibreOffice help: English paragraphs (30-600 characters, 6+ English words) on the",
        "training side of the offline suite's split (`lusifer.data.splits.is_help_train_side`),",
        "minus every paragraph whose page and id any suite task uses in any language (the",
        "cross-lingual tasks and topic tasks of other languages hold translations of English",
        "paragraphs under the same key) and any whose text a suite task holds; two paragraphs",
        "of one page make a pair. Filter counts: "
        + ", ".join(f"{k} {v}" for k, v in sorted(help_stats.items()))
        + ".",
        "",
        "## Licences",
        "",
        "- Debian package descriptions are metadata written by each package's maintainers",
        "  and upstream authors and distributed in the Debian archive; each description",
        "  falls under its own package's licence (`license` field: "
        f"`{DEBIAN_LICENSE}`). Every row names its package in `source`",
        "  (`debian:package-descriptions:<package>`), so the licence can be looked up in",
        "  `/usr/share/doc/<package>/copyright` or on https://packages.debian.org.",
        "- WordNet 3.0, Copyright 2006 by Princeton University, used under the WordNet 3.0",
        "  licence; its full text, which must accompany all copies, is in",
        "  [`WORDNET_LICENSE`](WORDNET_LICENSE). Rows name their synset in `source`",
        "  (`wordnet-3.0:<pos letter><offset>`).",
        f"- LibreOffice help, MPL-2.0 (`{HELP_PACKAGE}`). Rows name the page and paragraph id",
        f"  of their query in `source` (`debian:{HELP_PACKAGE}=<version>:<page>#<id>`).",
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-description-chars", type=int, default=1000)
    ap.add_argument("--max-debian", type=int, default=None)
    ap.add_argument("--max-wordnet-definitions", type=int, default=35000)
    ap.add_argument("--max-wordnet-examples", type=int, default=25000)
    ap.add_argument("--max-help", type=int, default=None)
    ap.add_argument(
        "--suite-dir", type=Path, default=SUITE_DIR, help="the offline suite to keep apart from"
    )
    ap.add_argument("--workdir", type=Path, default=None, help="keep downloads here")
    args = ap.parse_args()

    start = time.time()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lusifer-english-"))
    try:
        lists = workdir / "lists"
        apt_update(lists)
        index_dates = {
            f.name.split("_dists_")[1].removesuffix("_InRelease"): next(
                (
                    ln[5:].strip()
                    for ln in f.read_text(errors="replace").splitlines()
                    if ln.startswith("Date:")
                ),
                "?",
            )
            for f in sorted(lists.glob("*_InRelease"))
        }
        debian, stats = debian_rows(lists, args.max_description_chars)
        wn_defs, wn_examples = wordnet_rows(fetch_package("wordnet-base", workdir), args.seed)
        copyright_file = workdir / "wordnet-base" / "usr/share/doc/wordnet-base/copyright"
        wordnet_license = copyright_file.read_text(encoding="utf-8")
        help_root = fetch_package(HELP_PACKAGE, workdir)
        help_version = package_version(HELP_PACKAGE, workdir)
        libreoffice_help, help_stats = help_rows(help_root, help_version, args.suite_dir, args.seed)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = (
        subsample(debian, args.max_debian, args.seed)
        + subsample(wn_defs, args.max_wordnet_definitions, args.seed)
        + subsample(wn_examples, args.max_wordnet_examples, args.seed)
        + subsample(libreoffice_help, args.max_help, args.seed)
    )
    rows.sort(key=lambda r: (r.dataset, r.source or "", r.query))
    out = args.out_dir / OUT_NAME
    write_jsonl(out, rows)
    (args.out_dir / "WORDNET_LICENSE").write_text(wordnet_license, encoding="utf-8")

    counts = Counter(r.dataset for r in rows)
    fractions = {
        name: english_fraction(
            [t for r in rows if r.dataset == name for t in (r.query, r.positive)], sample=2000
        )
        for name in counts
    }
    size = out.stat().st_size
    write_readme(
        args.out_dir, counts, stats, help_stats, help_version, size, fractions, index_dates
    )
    print(f"debian filter: {dict(sorted(stats.items()))}")
    print(f"help filter: {dict(sorted(help_stats.items()))}")
    print(f"rows: {dict(sorted(counts.items()))}, total {len(rows)}")
    print(f"english fraction: {fractions}")
    print(f"wrote {out} ({size / 1e6:.2f} MB) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
