"""Real offline backbones on a small bundled cross-lingual task (en-sw retrieval)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_multilingual_backbone_beats_english_only_on_en_sw(tmp_path):
    from lusifer.evaluation import evaluate
    from lusifer.evaluation.local_tasks import offline_suite_dirs
    from lusifer.model import load_embedder

    dirs = [d for d in offline_suite_dirs() if d.name == "XlingRetrieval.en-sw"]
    if len(dirs) != 1:
        pytest.skip("the bundled offline suite is not built")
    e5 = load_embedder("multilingual-e5-small")
    minilm = load_embedder("all-MiniLM-L6-v2")
    report = evaluate(
        [e5, minilm], task_dirs=dirs, output_dir=tmp_path, bootstrap=200, show_progress=False
    )
    # English-only MiniLM cannot read Swahili; the multilingual backbone can
    assert (
        report.score(e5.name, "XlingRetrieval.en-sw")
        > report.score(minilm.name, "XlingRetrieval.en-sw") + 30
    )
    test = report.paired_tests[0]
    assert test["tasks"]["XlingRetrieval.en-sw"]["p_value"] < 0.05
    assert set(report.summaries[e5.name].languages) == {"sw"}
