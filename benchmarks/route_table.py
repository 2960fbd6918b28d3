"""The routed and unrouted demo recipes side by side, from finished demo folders (no
model is run): per folder, LUSIFER-mini minus MiniLM alone on cross-lingual retrieval
(gap closed), English in and out of the training domain, non-English topic
classification and clustering, the average, and for a routed folder the same model with
every text on the connector route.

    .venv/bin/python benchmarks/route_table.py lusifer-demo-routed-s0 lusifer-demo-routed-s1 ...

Each folder is what ``lusifer demo`` (``--routed`` or not) or ``benchmarks/demo_figures.py``
wrote: its ``summary.json`` and ``eval/results.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LUSIFER, TARGET = "LUSIFER-mini", "all-MiniLM-L6-v2 (target alone)"


def topic_means(results: dict, model: str) -> dict[str, float]:
    """Mean non-English HelpTopic classification accuracy and clustering V-measure."""
    tasks = results["results"][model]["tasks"]
    out = {}
    for kind in ("Classification", "Clustering"):
        scores = [
            t["score"]
            for name, t in tasks.items()
            if name.startswith(f"HelpTopic{kind}.") and not name.endswith(".en")
        ]
        out[kind.lower()] = sum(scores) / len(scores)
    return out


def row(folder: Path) -> dict[str, object]:
    figures = json.loads((folder / "summary.json").read_text())["figures"]
    results = json.loads((folder / "eval" / "results.json").read_text())
    ours, target = topic_means(results, LUSIFER), topic_means(results, TARGET)
    english = {
        part: figures[f"english_{part}"]["lusifer"] - figures[f"english_{part}"]["target"]
        for part in ("in_domain", "out_of_domain")
    }
    out: dict[str, object] = {
        "folder": folder.name,
        "routed": "connector_route" in figures,
        "gap closed %": 100 * figures["crosslingual"]["gap_closed"],
        "English in domain": english["in_domain"],
        "English out of domain": english["out_of_domain"],
        "topic cls (non-en)": ours["classification"] - target["classification"],
        "topic clustering (non-en)": ours["clustering"] - target["clustering"],
        "languages below MiniLM": len(figures["crosslingual"]["below_target"]),
        "average": figures["average"]["lusifer"],
    }
    connector = figures.get("connector_route")
    if connector:
        out["connector route: gap closed %"] = 100 * connector["crosslingual"]["gap_closed"]
        for part in ("in_domain", "out_of_domain"):
            label = f"connector route: English {part.replace('_', ' ')}"
            out[label] = connector[f"english_{part}"] - figures[f"english_{part}"]["target"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    rows = [row(f) for f in args.folders]
    columns = [c for c in rows[0] if c not in ("folder", "routed")]
    for r in rows[1:]:
        columns += [c for c in r if c not in columns and c not in ("folder", "routed")]
    print("| folder | routed | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for r in rows:
        cells = [
            f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns
        ]
        print(f"| {r['folder']} | {'yes' if r['routed'] else 'no'} | " + " | ".join(cells) + " |")
    routed = [r for r in rows if r["routed"]]
    if len(routed) > 1:
        mean = {
            c: sum(float(r[c]) for r in routed) / len(routed) for c in columns if c in routed[0]
        }
        cells = [f"**{mean[c]:.2f}**" if c in mean else "" for c in columns]
        print(f"| **routed mean ({len(routed)})** | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
