"""The English Debian tasks (``DebianSectionClassification.en``,
``DebianSectionClustering.en``, ``DebianDescriptionRetrieval.en``) from held-out packages'
descriptions."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from lusifer.data.splits import is_held_out

from .common import (
    LICENSES,
    NON_TOPICAL_SECTIONS,
    NOTHING_EXCLUDED,
    SEED,
    ExcludedTexts,
    norm_ws,
    short_id,
    stable_hash,
    task_json,
    write_jsonl,
    write_retrieval,
)
from .packages import read_deb822


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


def held_out_packages(
    pkgs: list[DebPackage], *, excluded: ExcludedTexts = NOTHING_EXCLUDED
) -> list[DebPackage]:
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
        if excluded.any_of(p.short, p.long, *p.paragraphs):
            continue
        if p.short.casefold() in seen or not (80 <= len(p.long) <= 1500):
            continue
        seen.update([p.long.casefold(), p.short.casefold()])
        out.append(p)
    return out


def build_debian(
    out_root: Path,
    pkgs: list[DebPackage],
    *,
    n_sections: int,
    n_train: int,
    n_test: int,
    n_retrieval: int,
) -> dict[str, int]:
    """The three tasks from held-out ``pkgs``: the ``n_sections`` most frequent topical
    sections with up to ``n_train``/``n_test`` packages each (clustering: ``n_test``), and
    ``n_retrieval`` queries over ``3 * n_retrieval`` descriptions."""
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
    with_query, distractors = pool[:n_retrieval], pool[n_retrieval : n_retrieval * 3]
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
