"""The LibreOffice help tasks (``HelpTopicClassification.<lang>``,
``HelpTopicClustering.<lang>``), and the help-page reader the cross-lingual pairs use too."""

from __future__ import annotations

import html
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

from tqdm import tqdm

from lusifer.data.splits import is_help_train_side

from .common import (
    ENGLISH_WORD,
    HELP_MODULES,
    LANG_NAMES,
    LANG_SCRIPT,
    LICENSES,
    MIN_PER_LABEL,
    NOTHING_EXCLUDED,
    ExcludedTexts,
    norm_ws,
    script_share,
    stable_hash,
    task_json,
    write_jsonl,
)

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


def build_help_topics(
    out_root: Path,
    lang: str,
    *,
    texts: dict[tuple[str, str], str],
    en: dict[tuple[str, str], str],
    pkg: str,
    version: str,
    n_train: int,
    n_test: int,
    n_cluster: int,
    excluded: ExcludedTexts = NOTHING_EXCLUDED,
) -> dict[str, int]:
    """HelpTopicClassification.<lang> and HelpTopicClustering.<lang> from ``texts`` (the
    help paragraphs of ``pkg`` in ``lang``; ``en``: the same paragraphs in English): up to
    ``n_train``/``n_test`` train/test rows and ``n_cluster`` clustering rows per label."""
    by_label: dict[str, list[tuple[int, tuple[str, str], str]]] = defaultdict(list)
    seen: set[str] = set()
    for key in sorted(texts):
        text = texts[key]
        en_text = en.get(key, "")
        if not (30 <= len(text) <= 600) or len(ENGLISH_WORD.findall(en_text)) < 6:
            continue
        if lang != "en" and not keep_pair_loose(en_text, text, lang):
            continue
        if text.casefold() in seen or excluded.any_of(text):
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
