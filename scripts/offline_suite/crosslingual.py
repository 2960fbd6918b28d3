"""The cross-lingual tasks (``XlingRetrieval.en-<lang>``, ``Bitext.en-<lang>``): pairs of
English strings and their human translations from gettext catalogs and LibreOffice help."""

from __future__ import annotations

import gettext
import random
import sys
from pathlib import Path

from .common import (
    ENGLISH_WORD,
    FORMAT_CODE,
    LANG_NAMES,
    LANG_SCRIPT,
    LICENSES,
    MAX_CHARS,
    MIN_CHARS,
    MIN_WORDS,
    NOTHING_EXCLUDED,
    ExcludedTexts,
    Pair,
    dedupe,
    norm_ws,
    script_share,
    short_id,
    task_json,
    write_jsonl,
    write_retrieval,
)
from .packages import package_license, system_info


def keep_pair(en: str, tr: str, lang: str, *, excluded: ExcludedTexts = NOTHING_EXCLUDED) -> bool:
    """The REFERENCE.md filter for one (English, translation) pair."""
    if not (MIN_CHARS <= len(en) <= MAX_CHARS and MIN_CHARS // 2 <= len(tr) <= MAX_CHARS * 2):
        return False
    if len(ENGLISH_WORD.findall(en)) < MIN_WORDS or len(tr.split()) < 2:
        return False
    if FORMAT_CODE.search(en) or FORMAT_CODE.search(tr):
        return False
    if (
        en.casefold() == tr.casefold()
        or script_share(en, "LATIN") < 0.95
        or excluded.any_of(en, tr)
    ):
        return False
    # Latin-script languages share letters with English, so demand near-pure Latin;
    # the others may keep Latin product names (LibreOffice, URL) in a mostly native text.
    need = 0.95 if LANG_SCRIPT[lang] == "LATIN" else 0.6
    return script_share(tr, LANG_SCRIPT[lang]) >= need


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


def gettext_pairs(
    lang: str,
    pkgs: dict[str, tuple[Path, str]],
    *,
    system_locale: bool,
    excluded: ExcludedTexts = NOTHING_EXCLUDED,
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
        owners, versions = system_info()
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
            if keep_pair(en, tr, lang, excluded=excluded):
                candidates.append(Pair(en, tr, source, lic))
    return dedupe(candidates), sorted(used_system)


def help_pairs(
    en: dict[tuple[str, str], str],
    tr: dict[tuple[str, str], str],
    *,
    lang: str,
    pkg: str,
    version: str,
    excluded: ExcludedTexts = NOTHING_EXCLUDED,
) -> list[Pair]:
    candidates = []
    for key in sorted(en.keys() & tr.keys()):
        if keep_pair(en[key], tr[key], lang, excluded=excluded):
            source = f"debian:{pkg}={version}:{key[0]}#{key[1]}"
            candidates.append(Pair(en[key], tr[key], source, LICENSES["libreoffice"]))
    return dedupe(candidates)


def build_crosslingual(
    out_root: Path,
    lang: str,
    *,
    catalog_pairs: list[Pair],
    help_page_pairs: list[Pair],
    n_pairs: int,
    seed: int,
) -> dict[str, int]:
    """XlingRetrieval.en-<lang> and Bitext.en-<lang> (``n_pairs`` pairs each) on disjoint
    samples where possible."""
    gt, hp, n = catalog_pairs, help_page_pairs, n_pairs
    rng = random.Random(f"{seed}:{lang}")
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
