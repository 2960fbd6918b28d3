"""Published numbers of the LUSIFER paper (arXiv 2501.00874), to compare and to test aggregation."""

from __future__ import annotations

from collections.abc import Mapping

#: Table 1: per-language averages (0-100) and the reported overall average.
PAPER_TABLE1: Mapping[str, Mapping[str, float]] = {
    "Jina-v3": {"en": 59.84, "es": 61.23, "ru": 62.88, "fr": 58.94, "vi": 66.74, "fa": 78.35, "id": 58.51, "ar": 64.71, "fi": 73.57, "ko": 64.96, "hi": 64.19, "bn": 61.54, "te": 68.96, "sw": 49.20},
    "mGTE-base": {"en": 60.40, "es": 59.65, "ru": 61.02, "fr": 56.20, "vi": 65.81, "fa": 73.46, "id": 56.55, "ar": 61.97, "fi": 68.96, "ko": 61.22, "hi": 60.81, "bn": 58.24, "te": 63.58, "sw": 52.57},
    "BGE-M3": {"en": 60.09, "es": 60.60, "ru": 62.37, "fr": 57.34, "vi": 70.69, "fa": 78.97, "id": 58.78, "ar": 64.12, "fi": 75.60, "ko": 64.72, "hi": 64.61, "bn": 65.31, "te": 69.85, "sw": 54.20},
    "mE5-large": {"en": 61.91, "es": 61.97, "ru": 62.91, "fr": 59.40, "vi": 71.30, "fa": 78.08, "id": 55.21, "ar": 63.41, "fi": 76.53, "ko": 66.55, "hi": 63.75, "bn": 63.67, "te": 67.32, "sw": 51.55},
    "E5-Mistral": {"en": 66.64, "es": 61.84, "ru": 61.30, "fr": 59.65, "vi": 58.58, "fa": 72.55, "id": 58.25, "ar": 54.43, "fi": 66.97, "ko": 62.82, "hi": 56.23, "bn": 55.10, "te": 47.15, "sw": 50.61},
    "LUSIFER": {"en": 57.20, "es": 60.14, "ru": 59.82, "fr": 59.24, "vi": 67.69, "fa": 76.17, "id": 59.70, "ar": 55.60, "fi": 72.83, "ko": 65.23, "hi": 62.37, "bn": 58.43, "te": 69.30, "sw": 53.12},
}  # fmt: skip
PAPER_TABLE1_AVERAGES: Mapping[str, float] = {
    "Jina-v3": 63.83, "mGTE-base": 61.46, "BGE-M3": 64.80, "mE5-large": 64.54, "E5-Mistral": 59.44, "LUSIFER": 62.63,
}  # fmt: skip

#: Table 2: cross-lingual tasks (0-100) and the reported average.
PAPER_TABLE2: Mapping[str, Mapping[str, float]] = {
    "LUSIFER": {"MLQARetrieval": 36.68, "BelebeleRetrieval": 57.81, "STS17": 81.09, "STS22.v2": 70.49, "IndicCrosslingualSTS": 43.40},
    "E5-Mistral": {"MLQARetrieval": 31.54, "BelebeleRetrieval": 54.75, "STS17": 81.12, "STS22.v2": 71.37, "IndicCrosslingualSTS": 21.92},
}  # fmt: skip
PAPER_TABLE2_AVERAGES: Mapping[str, float] = {"LUSIFER": 57.89, "E5-Mistral": 52.14}
