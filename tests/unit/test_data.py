"""Readers, the bundled English data and the English-only guard."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from lusifer.data.english import (
    BUNDLED_DATASETS,
    bundled_english_path,
    load_bundled_english,
)
from lusifer.data.hub import load_hf_pairs, load_hf_texts
from lusifer.data.language_guard import (
    NonEnglishDataError,
    english_fraction,
    ensure_english,
    is_english,
)
from lusifer.data.readers import (
    DataFormatError,
    PairRow,
    ReadStats,
    TextRow,
    read_pair_rows,
    read_text_rows,
    write_jsonl,
)
from lusifer.data.splits import help_paragraph_key, is_held_out, is_help_train_side

ENGLISH = [
    "The library provides functions for reading and writing compressed files.",
    "She was able to program her computer before she turned ten.",
    "This package contains the documentation for the command line tools.",
    "We walked along the river until the sun went down behind the hills.",
    "It is a small utility that converts images between several formats.",
    "The committee will meet again next week to discuss the budget.",
    "Most of the students have already finished their exams.",
    "He said that the train would arrive at the station in an hour.",
    "A simple text editor with syntax highlighting for many languages.",
    "They bought a new house near the school where their children study.",
]

FRENCH = [
    "Le chat dort sur le canapé depuis ce matin.",
    "Nous allons au marché tous les samedis avec nos enfants.",
    "Cette bibliothèque permet de lire et d'écrire des fichiers compressés.",
    "Il fait très froid aujourd'hui, mets ton manteau avant de sortir.",
    "Les élèves ont terminé leurs examens la semaine dernière.",
    "Elle a dit que le train arriverait à la gare dans une heure.",
    "Je ne sais pas pourquoi il n'est pas venu à la réunion.",
    "Ce paquet contient la documentation des outils en ligne de commande.",
    "Le comité se réunira de nouveau la semaine prochaine pour discuter du budget.",
    "Ils ont acheté une maison près de l'école où leurs enfants étudient.",
]

RUSSIAN = [
    "Кошка спит на диване с самого утра.",
    "Этот пакет содержит документацию для инструментов командной строки.",
    "Мы гуляли вдоль реки, пока солнце не зашло за холмы.",
]
ARABIC = [
    "القطة نائمة على الأريكة منذ الصباح.",
    "تحتوي هذه الحزمة على وثائق أدوات سطر الأوامر.",
    "مشينا على طول النهر حتى غابت الشمس خلف التلال.",
]
HINDI = [
    "बिल्ली सुबह से सोफे पर सो रही है।",
    "इस पैकेज में कमांड लाइन टूल्स का दस्तावेज़ है।",
    "हम नदी के किनारे तब तक चलते रहे जब तक सूरज पहाड़ियों के पीछे नहीं डूब गया।",
]


@pytest.fixture(scope="module")
def bundled() -> list[PairRow]:
    return load_bundled_english()


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_pair_rows_round_trip(tmp_path, suffix):
    rows = [
        PairRow("what is a cat", "a small domesticated feline", ["a dog"], "Retrieve", "toy"),
        PairRow("q2", "p2", dataset="toy", label=3, source="s", license="MIT"),
        PairRow("héllo wörld", "ünïcode ✓ 中文", dataset="toy", label="x"),
    ]
    path = tmp_path / f"pairs{suffix}"
    assert write_jsonl(path, rows) == 3
    assert read_pair_rows(path) == rows


def test_pair_rows_defaults_and_dataset_from_file_name(tmp_path):
    path = tmp_path / "my-set.jsonl"
    path.write_text('{"query": "q", "positive": "p"}\n\n', encoding="utf-8")
    (row,) = read_pair_rows(path)
    assert row == PairRow("q", "p", [], None, "my-set")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_text_rows_round_trip(tmp_path, suffix):
    rows = [TextRow("first text"), TextRow("second text", source="wiki")]
    path = tmp_path / f"texts{suffix}"
    write_jsonl(path, rows)
    assert read_text_rows(path) == rows


def test_gzip_output_is_reproducible(tmp_path):
    rows = [PairRow("q", "p", dataset="d")]
    write_jsonl(tmp_path / "a.jsonl.gz", rows)
    write_jsonl(tmp_path / "b.jsonl.gz", rows)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def _write_lines(path, lines: list[bytes]) -> None:
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


GOOD = b'{"query": "q", "positive": "p"}'


@pytest.mark.parametrize(
    ("bad_line", "field", "expected"),
    [
        (b'{"query": "q", "positive": "p"', None, "invalid JSON"),
        (b'{"query": "q"}', "positive", "missing; expected a non-empty string"),
        (b'{"query": "q", "positive": 5}', "positive", "expected a non-empty string, got int"),
        (b'{"query": "q", "positive": "p", "negatives": "n"}', "negatives", "list"),
        (b'{"query": "q", "positive": "p", "negatives": ["n", 3]}', "negatives[1]", "got int"),
        (b'{"query": "q", "positive": "p", "instruction": 1}', "instruction", "string or null"),
        (b'{"query": "q", "positive": "p", "label": [1]}', "label", "got list"),
        (b'["q", "p"]', None, "expected a JSON object"),
        (b'{"query": "q", "positive": "caf\xe9"}', "positive", "invalid UTF-8"),
    ],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_pair_errors_name_file_line_field(tmp_path, bad_line, field, expected, suffix):
    path = tmp_path / f"broken{suffix}"
    _write_lines(path, [GOOD, GOOD, bad_line, GOOD])
    with pytest.raises(DataFormatError) as info:
        read_pair_rows(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message
    assert expected in message
    assert info.value.line == 3
    assert info.value.field == field
    if field:
        assert repr(field) in message


def test_text_errors_name_file_line_field(tmp_path):
    path = tmp_path / "texts.jsonl"
    _write_lines(path, [b'{"text": "ok"}', b'{"txt": "typo"}'])
    with pytest.raises(DataFormatError, match=r"texts\.jsonl, line 2: field 'text': missing"):
        read_text_rows(path)
    _write_lines(path, [b'{"text": "ok"}', b'{"text": null}'])
    with pytest.raises(
        DataFormatError, match=r"line 2: field 'text': expected a non-empty string, got null"
    ):
        read_text_rows(path)


def test_invalid_utf8_outside_a_string_names_byte(tmp_path):
    path = tmp_path / "bytes.jsonl"
    _write_lines(path, [GOOD, b'\xff{"query": "q", "positive": "p"}'])
    with pytest.raises(DataFormatError, match=r"line 2: invalid UTF-8 byte b'\\xff' at byte 0"):
        read_pair_rows(path)


def test_missing_file_and_bad_gzip(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_pair_rows(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match="bad.jsonl.gz: not a valid gzip file"):
        read_pair_rows(bad)


def test_load_hf_from_save_to_disk_and_files(tmp_path):
    datasets = pytest.importorskip("datasets")
    records = {
        "question": ["what is a cat", "what is a dog"],
        "answer": ["a small feline", "a domestic canine"],
        "hard": [["a dog"], ["a cat", "a fox"]],
    }
    ds = datasets.Dataset.from_dict(records)
    ds.save_to_disk(str(tmp_path / "plain"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    ds.to_parquet(str(tmp_path / "pairs.parquet"))

    rows = load_hf_pairs(
        tmp_path / "plain",
        query_field="question",
        positive_field="answer",
        negatives_field="hard",
        instruction="Retrieve the answer",
    )
    assert rows == [
        PairRow("what is a cat", "a small feline", ["a dog"], "Retrieve the answer", "plain"),
        PairRow(
            "what is a dog", "a domestic canine", ["a cat", "a fox"], "Retrieve the answer", "plain"
        ),
    ]
    test_rows = load_hf_pairs(
        tmp_path / "dd", split="test", query_field="question", positive_field="answer"
    )
    assert [r.query for r in test_rows] == ["what is a cat"]
    pq = load_hf_pairs(
        tmp_path / "pairs.parquet",
        query_field="question",
        positive_field="answer",
        dataset_name="x",
        cache_dir=str(tmp_path / "cache"),
    )
    assert [(r.positive, r.dataset) for r in pq] == [
        ("a small feline", "x"),
        ("a domestic canine", "x"),
    ]

    texts = load_hf_texts(tmp_path / "plain", text_field="answer", limit=1)
    assert texts == [TextRow("a small feline", source=str(tmp_path / "plain"))]

    jsonl = tmp_path / "local.jsonl"
    write_jsonl(jsonl, [{"text": "one"}, {"text": "two"}])
    assert [t.text for t in load_hf_texts(jsonl, cache_dir=str(tmp_path / "cache"))] == [
        "one",
        "two",
    ]


def test_load_hf_errors(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"q": ["a", "b"], "p": ["x", "y"]}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(
        DataFormatError, match=r"field 'query': no such column; available columns: \['q', 'p'\]"
    ):
        load_hf_pairs(tmp_path / "d")
    datasets.Dataset.from_dict({"q": ["a"], "p": [3]}).save_to_disk(str(tmp_path / "t"))
    with pytest.raises(DataFormatError, match=r"field 'p': row 0: expected a non-empty string"):
        load_hf_pairs(tmp_path / "t", query_field="q", positive_field="p")
    datasets.Dataset.from_dict({"q": ["a"], "p": ["x"], "n": [["ok", None]]}).save_to_disk(
        str(tmp_path / "neg")
    )
    with pytest.raises(DataFormatError, match=r"field 'n\[1\]': row 0: expected a non-empty"):
        load_hf_pairs(tmp_path / "neg", query_field="q", positive_field="p", negatives_field="n")
    with pytest.raises(DataFormatError, match=r"field 'negative_\*': no column matches"):
        load_hf_pairs(
            tmp_path / "d", query_field="q", positive_field="p", negatives_field="negative_*"
        )
    with pytest.raises(DataFormatError, match="no split 'validation'"):
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"q": ["a"]})}).save_to_disk(
            str(tmp_path / "dd")
        )
        load_hf_pairs(tmp_path / "dd", split="validation", query_field="q", positive_field="q")


def test_empty_rows_are_skipped_and_counted(tmp_path):
    datasets = pytest.importorskip("datasets")
    # wikitext-103-raw has empty lines between paragraphs: skipped, not fatal
    datasets.Dataset.from_dict(
        {"text": ["", " = Title = \n", "  ", "A paragraph.\n"]}
    ).save_to_disk(str(tmp_path / "wiki"))
    stats = ReadStats()
    texts = load_hf_texts(tmp_path / "wiki", stats=stats)
    assert [t.text for t in texts] == [" = Title = \n", "A paragraph.\n"]
    assert (stats.rows, stats.skipped_rows) == (2, 2)
    # pairs: an empty query or no non-empty positive skips the row; empty negatives drop
    datasets.Dataset.from_dict(
        {"q": ["a", " ", "c"], "p": [["x", ""], ["y"], [""]], "n": [["n1", ""], [], ["n3"]]}
    ).save_to_disk(str(tmp_path / "pairs"))
    stats = ReadStats()
    rows = load_hf_pairs(
        tmp_path / "pairs", query_field="q", positive_field="p", negatives_field="n", stats=stats
    )
    assert [(r.query, r.positives, r.negatives) for r in rows] == [("a", ["x"], ["n1"])]
    assert (stats.rows, stats.skipped_rows, stats.dropped_negatives) == (1, 2, 1)
    path = tmp_path / "rows.jsonl"
    _write_lines(path, [GOOD, b'{"query": "  ", "positive": "p"}', GOOD])
    stats = ReadStats()
    assert len(read_pair_rows(path, stats)) == 2 and stats.skipped_rows == 1


def test_numbered_negative_columns_and_several_positives(tmp_path):
    datasets = pytest.importorskip("datasets")
    # the layout of sentence-transformers/msmarco-bm25 "triplet-50": negative_1..negative_N
    columns = {"query": ["q1", "q2"], "positive": ["p1", "p2"]}
    for k in (1, 2, 10, 11):  # numeric, not alphabetical, order
        columns[f"negative_{k}"] = [f"q1 n{k}", f"q2 n{k}"]
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "t50"))
    rows = load_hf_pairs(tmp_path / "t50", negatives_field="negative_*")
    assert rows[0].negatives == ["q1 n1", "q1 n2", "q1 n10", "q1 n11"]
    # a list of columns, and a single string column
    rows = load_hf_pairs(tmp_path / "t50", negatives_field=["negative_2", "negative_1"])
    assert rows[1].negatives == ["q2 n2", "q2 n1"]
    assert load_hf_pairs(tmp_path / "t50", negatives_field="negative_10")[0].negatives == ["q1 n10"]
    # the authors' sets: positive and negative are list columns
    datasets.Dataset.from_dict(
        {
            "query": ["q"],
            "positive": [["p1", "p2", "p3"]],
            "negative": [["n1", "n2"]],
            "cluster": [0],
        }
    ).save_to_disk(str(tmp_path / "lists"))
    (row,) = load_hf_pairs(tmp_path / "lists", negatives_field="negative")
    assert row.positives == ["p1", "p2", "p3"] and row.negatives == ["n1", "n2"]
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [row])
    assert read_pair_rows(path)[0].positives == ["p1", "p2", "p3"]


def test_limit_draws_a_seeded_random_subset(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [f"text number {i}" for i in range(200)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "d"))
    first = [t.text for t in load_hf_texts(tmp_path / "d", limit=20, seed=1)]
    again = [t.text for t in load_hf_texts(tmp_path / "d", limit=20, seed=1)]
    other = [t.text for t in load_hf_texts(tmp_path / "d", limit=20, seed=2)]
    assert first == again and len(set(first)) == 20
    assert first != texts[:20] and set(first) != set(other)
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [{"text": t} for t in texts])
    local = [t.text for t in read_text_rows(path, limit=20, seed=1)]
    assert len(local) == 20 and local != texts[:20]
    assert local == sorted(local, key=texts.index)  # kept in file order


# --------------------------------------------------------------------------- bundled data


def test_bundled_path_is_package_data():
    path = bundled_english_path()
    assert path.name == "english_train.jsonl.gz"
    assert path.parent.parts[-3:] == ("lusifer", "resources", "data")
    assert 1_000_000 < path.stat().st_size < 9_000_000


def test_bundled_datasets_and_fields(bundled):
    counts = Counter(r.dataset for r in bundled)
    assert set(counts) == set(BUNDLED_DATASETS)
    assert counts["debian-descriptions"] > 30_000
    assert counts["wordnet-definitions"] > 10_000
    assert counts["wordnet-examples"] > 10_000
    for row in bundled:
        assert row.query.strip() and row.positive.strip() and row.instruction
        assert row.source and row.license
        assert row.label
    deb = [r for r in bundled if r.dataset == "debian-descriptions"]
    assert all(r.source.startswith("debian:package-descriptions:") for r in deb)
    assert all(r.license == "per-package (Debian archive metadata)" for r in deb)
    assert all(len(r.positive) >= 20 for r in deb)
    assert not any(
        " ." in line and line.strip() == "." for r in deb for line in r.positive.split("\n")
    )
    wn = [r for r in bundled if r.dataset.startswith("wordnet-")]
    assert all(r.source.startswith("wordnet-3.0:") and r.license == "WordNet-3.0" for r in wn)
    assert {r.label for r in wn} == {"noun", "verb", "adjective", "adverb"}
    help_rows = [r for r in bundled if r.dataset == "libreoffice-help"]
    assert len(help_rows) > 1_000
    assert all(r.source.startswith("debian:libreoffice-help-en-us=") for r in help_rows)
    assert all(r.license == "MPL-2.0" for r in help_rows)
    assert {"Calc", "Writer", "Basic", "Shared"} <= {r.label for r in help_rows}
    # Sorted output, no duplicate pairs.
    keys = [(r.dataset, r.source, r.query) for r in bundled]
    assert keys == sorted(keys)
    assert len({(r.query, r.positive) for r in bundled}) == len(bundled)


def test_bundled_has_no_held_out_package(bundled):
    packages = [
        r.source.removeprefix("debian:package-descriptions:")
        for r in bundled
        if r.dataset == "debian-descriptions"
    ]
    assert len(set(packages)) == len(packages)
    assert not [p for p in packages if is_held_out(p)]
    assert any(is_held_out(p) for p in ["a", "b", "c", "d", "e", "f", "g", "h"])  # rule is live


def test_bundled_help_paragraphs_sit_on_the_training_side(bundled):
    # the suite's topic tasks split help paragraphs by page and id in every language;
    # a training paragraph must come from the training side and from no suite task
    keys = [help_paragraph_key(r.source) for r in bundled if r.dataset == "libreoffice-help"]
    assert keys and all(page.startswith("text/") for page, _ in keys)
    assert all(is_help_train_side(page, pid) for page, pid in keys)
    assert not all(is_help_train_side("text/swriter/main.html", f"par_id{i}") for i in range(20))


def test_help_paragraph_key_reads_the_page_and_id_after_a_versioned_package():
    source = "debian:libreoffice-help-fr=4:7.4.7-1+deb12u14:text/scalc/01/func.html#par_id31"
    assert help_paragraph_key(source) == ("text/scalc/01/func.html", "par_id31")
    assert help_paragraph_key("debian:package-descriptions:vim") is None
    assert help_paragraph_key("wordnet-3.0:n00001740") is None


def test_bundled_has_no_transitional_or_dummy_packages(bundled):
    titles = [r.query.lower() for r in bundled if r.dataset == "debian-descriptions"]
    assert not [t for t in titles if "transitional" in t or "dummy package" in t]


def test_load_bundled_selection_and_limit():
    a = load_bundled_english(["wordnet-examples"], limit_per_dataset=50, seed=1)
    b = load_bundled_english(["wordnet-examples"], limit_per_dataset=50, seed=1)
    c = load_bundled_english(["wordnet-examples"], limit_per_dataset=50, seed=2)
    assert len(a) == 50 and a == b and a != c
    assert {r.dataset for r in a} == {"wordnet-examples"}
    with pytest.raises(ValueError, match="unknown bundled data set.*'msmarco'.*available"):
        load_bundled_english(["msmarco"])


# --------------------------------------------------------------------------- guard


def test_guard_accepts_bundled_data(bundled):
    texts = [t for r in bundled for t in (r.query, r.positive)]
    report = ensure_english(texts, source="bundled english_train.jsonl.gz")
    print(f"\nbundled English fraction: {report.english_fraction:.4f}")
    assert report.passed and report.english_fraction >= 0.95
    assert report.n_checked == 2000 and report.n_texts == len(texts)
    for name in BUNDLED_DATASETS:
        frac = english_fraction([r.query for r in bundled if r.dataset == name], seed=3)
        print(f"{name} queries: {frac:.4f}")
        assert frac >= 0.95, name


def test_guard_refuses_french_file(tmp_path):
    path = tmp_path / "french.jsonl"
    write_jsonl(path, [TextRow(t) for t in FRENCH])
    texts = [r.text for r in read_text_rows(path)]
    assert english_fraction(texts) == 0.0
    with pytest.raises(NonEnglishDataError) as info:
        ensure_english(texts, source=str(path))
    message = str(info.value)
    assert str(path) in message
    assert "0.000" in message
    assert "allow_non_english: true" in message and "--allow-non-english" in message


@pytest.mark.parametrize("texts", [RUSSIAN, ARABIC, HINDI], ids=["ru", "ar", "hi"])
def test_guard_refuses_non_latin_scripts(texts):
    assert not any(is_english(t) for t in texts)
    with pytest.raises(NonEnglishDataError, match="English fraction 0.000"):
        ensure_english(texts, source="x")


@pytest.mark.parametrize(
    "text",
    [
        "El perro duerme en la casa de mis padres.",
        "Der Hund schläft im Haus meiner Eltern.",
        "O cachorro dorme na casa dos meus pais.",
        "Il cane dorme nella casa dei miei genitori.",
        "Anjing itu tidur di rumah orang tua saya.",
        "Con chó đang ngủ trong nhà của bố mẹ tôi.",
        "Koira nukkuu vanhempieni talossa ja se on onnellinen.",
        "Mbwa analala katika nyumba ya wazazi wangu.",
    ],
)
def test_other_latin_languages_are_not_english(text):
    assert not is_english(text)


def test_english_texts_and_short_ascii_count_as_english():
    assert english_fraction(ENGLISH) == 1.0
    for short in ["domestic dog", "Canis familiaris", "referent", "x86_64 C++ bindings", "42"]:
        assert is_english(short), short


def test_guard_override(tmp_path):
    report = ensure_english(FRENCH, source="fr.jsonl", allow_non_english=True)
    assert not report.passed and report.overridden
    assert report.english_fraction == 0.0
    assert "OVERRIDDEN" in report.summary()


def test_guard_mixed_files():
    def mixed(n_french: int) -> list[str]:
        return FRENCH[:n_french] + ENGLISH[: 10 - n_french]

    # 10 % / 30 % / 70 % French -> measured English fraction 0.9 / 0.7 / 0.3.
    assert english_fraction(mixed(1)) == pytest.approx(0.9)
    assert ensure_english(mixed(1), source="m", min_english_fraction=0.8).passed
    assert english_fraction(mixed(3)) == pytest.approx(0.7)
    assert ensure_english(mixed(3), source="m", min_english_fraction=0.6).passed
    with pytest.raises(NonEnglishDataError, match="0.700"):
        ensure_english(mixed(3), source="m", min_english_fraction=0.8)
    assert english_fraction(mixed(7)) == pytest.approx(0.3)
    with pytest.raises(NonEnglishDataError, match="0.300"):
        ensure_english(mixed(7), source="m", min_english_fraction=0.6)


def test_english_fraction_sampling_is_seeded():
    texts = FRENCH * 50 + ENGLISH * 50
    a = english_fraction(texts, sample=100, seed=0)
    assert a == english_fraction(texts, sample=100, seed=0)
    assert 0.3 < a < 0.7
    assert english_fraction([]) == 1.0


def test_bundled_file_rows_are_plain_json():
    with gzip.open(bundled_english_path(), "rt", encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    assert set(first) >= {"dataset", "query", "positive", "instruction", "source", "license"}
