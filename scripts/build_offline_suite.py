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
README.md written there). The builders live in ``scripts/offline_suite/``, one module per
task family; this script runs them. The build is deterministic for a given set of package
versions: fixed seeds, hash-based splits, sorted output.

Usage::

    .venv/bin/python scripts/build_offline_suite.py            # build into the package
    .venv/bin/python scripts/build_offline_suite.py --out /tmp/suite --work-dir /tmp/w
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the builders, and the helpers scripts/build_english_ood.py and the tests import from here
from offline_suite.common import (  # noqa: E402
    DEFAULT_OUT,
    DEFAULT_TRAIN,
    HELP_LANGS,
    LANGS,
    LIBREOFFICE_L10N_LANGS,
    SEED,
    Pair,
    dedupe,
    norm_ws,
    short_id,
    stable_hash,
    task_json,
    text_key,
    write_jsonl,
    write_retrieval,
)
from offline_suite.crosslingual import (  # noqa: E402
    build_crosslingual,
    gettext_pairs,
    help_pairs,
    keep_pair,
)
from offline_suite.debian import build_debian, debian_packages, held_out_packages  # noqa: E402
from offline_suite.exclusion import (  # noqa: E402
    excluded_texts,
    training_strings,
    wordnet_strings,
)
from offline_suite.help_topics import HelpParagraphs, build_help_topics, read_help  # noqa: E402
from offline_suite.packages import fetch_description_lists, fetch_packages  # noqa: E402
from offline_suite.readme import write_readme  # noqa: E402

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_TRAIN",
    "HelpParagraphs",
    "Pair",
    "dedupe",
    "fetch_packages",
    "keep_pair",
    "main",
    "norm_ws",
    "short_id",
    "stable_hash",
    "task_json",
    "text_key",
    "training_strings",
    "wordnet_strings",
    "write_jsonl",
    "write_retrieval",
]


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
    train_file, train_sha1 = None, None
    if args.exclude_train.exists():
        train_file = args.exclude_train
        train_sha1 = hashlib.sha1(args.exclude_train.read_bytes()).hexdigest()
    else:
        print(f"warning: {args.exclude_train} not found; only WordNet texts are excluded")
    # nothing of the training data or WordNet may enter the suite, whatever its source
    excluded = excluded_texts(wordnet_root, train_file)
    print(f"excluding {len(excluded)} WordNet and training texts from the suite")

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
        gt, used = gettext_pairs(
            lang, pkgs, system_locale=not args.no_system_locale, excluded=excluded
        )
        system_used.update(used)
        hp = []
        if lang in help_text:
            pkg = f"libreoffice-help-{lang}"
            hp = help_pairs(
                help_text["en"],
                help_text[lang],
                lang=lang,
                pkg=pkg,
                version=pkgs[pkg][1],
                excluded=excluded,
            )
        counts.update(
            build_crosslingual(
                args.out,
                lang,
                catalog_pairs=gt,
                help_page_pairs=hp,
                n_pairs=args.pairs,
                seed=SEED,
            )
        )

    for lang in HELP_LANGS:
        pkg = "libreoffice-help-en-us" if lang == "en" else f"libreoffice-help-{lang}"
        counts.update(
            build_help_topics(
                args.out,
                lang,
                texts=help_text[lang],
                en=help_text["en"],
                pkg=pkg,
                version=pkgs[pkg][1],
                n_train=args.topic_train,
                n_test=args.topic_test,
                n_cluster=args.topic_cluster,
                excluded=excluded,
            )
        )

    deb = held_out_packages(debian_packages(lists), excluded=excluded)
    counts.update(
        build_debian(args.out, deb, n_sections=10, n_train=50, n_test=100, n_retrieval=1000)
    )

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
