"""One English instruction per task, in two tables.

``reference`` (the default of the mteb suites): the reference code's strings
(``resources/reference_instructions.json``, from its ``lusifer/eval/constants.py``), which
are the training sets' own instructions, so a model trained on ``paper.yaml`` is scored
with the prompts it saw. ``lusifer``: our E5-style one-liners below, one per task.

LUSIFER reads ``{instruction}.\\n{text}`` for queries and ``{instruction}. Candidate:\\n{text}``
for documents (a final period of the instruction is dropped first, so both tables give
the same prompt form).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Literal, get_args

#: The instruction tables ``instruction_for`` reads.
InstructionTable = Literal["reference", "lusifer"]
INSTRUCTION_TABLES: tuple[str, ...] = get_args(InstructionTable)

#: Fallback per task type (lusifer's simplified names).
DEFAULT_INSTRUCTIONS: Mapping[str, str] = {
    "retrieval": "Given a query, retrieve passages that answer it",
    "reranking": "Given a query, rank the candidate passages by how well they answer it",
    "sts": "Retrieve sentences with the same meaning as the given sentence",
    "classification": "Classify the topic of the given text",
    "multilabel_classification": "Classify the topics of the given text",
    "pair_classification": "Retrieve sentences that are paraphrases or entailments of the given sentence",
    "clustering": "Identify the topic of the given text",
    "bitext": "Retrieve the translation of the given sentence",
    "summarization": "Given a news summary, retrieve other summaries with the same meaning",
}

_SENTIMENT = "Classify the sentiment of the given text"
_NEWS = "Classify the topic of the given news article"
_INTENT = "Given a user utterance, find the user intent"
_SCENARIO = "Given a user utterance, find the user scenario"
_STS = "Retrieve sentences with the same meaning as the given sentence"
_NLI = "Retrieve sentences that are entailed by the given sentence"
_PARA = "Retrieve sentences that paraphrase the given sentence"
_WIKI_QA = "Given a question, retrieve Wikipedia passages that answer it"
_QA = "Given a question, retrieve passages that answer it"
_NEWS_CLUSTER = "Identify the topic of the given news article"
_SCI_TITLE = "Identify the main field of a scientific paper from its title"
_SCI_FULL = "Identify the main field of a scientific paper from its title and abstract"

#: Task name (mteb 1.14 name; ``.v2`` successors share it) -> instruction.
TASK_INSTRUCTIONS: Mapping[str, str] = {
    # English MTEB
    "AmazonCounterfactualClassification": "Classify whether the given Amazon review states a counterfactual",
    "AmazonPolarityClassification": "Classify the given Amazon review as positive or negative",
    "AmazonReviewsClassification": "Classify the star rating of the given Amazon review",
    "ArguAna": "Given a claim, retrieve the argument that counters it",
    "ArxivClusteringP2P": _SCI_FULL,
    "ArxivClusteringS2S": _SCI_TITLE,
    "AskUbuntuDupQuestions": "Retrieve AskUbuntu questions that duplicate the given question",
    "BIOSSES": "Retrieve biomedical sentences with the same meaning as the given sentence",
    "Banking77Classification": "Given an online banking query, find the user intent",
    "BiorxivClusteringP2P": _SCI_FULL,
    "BiorxivClusteringS2S": _SCI_TITLE,
    "CQADupstackTexRetrieval": "Given a StackExchange question, retrieve questions that duplicate it",
    "ClimateFEVER": "Given a claim about climate change, retrieve documents that support or refute it",
    "DBPedia": "Given a query, retrieve the matching entity descriptions from DBPedia",
    "EmotionClassification": "Classify the emotion expressed in the given Twitter message",
    "FEVER": "Given a claim, retrieve documents that support or refute it",
    "FiQA2018": "Given a financial question, retrieve user replies that answer it",
    "HotpotQA": "Given a multi-hop question, retrieve documents that help answer it",
    "ImdbClassification": "Classify the sentiment of the given movie review",
    "MSMARCO": "Given a web search query, retrieve passages that answer it",
    "MTOPDomainClassification": "Given a user utterance, find the intent domain",
    "MTOPIntentClassification": _INTENT,
    "MassiveIntentClassification": _INTENT,
    "MassiveScenarioClassification": _SCENARIO,
    "MedrxivClusteringP2P": _SCI_FULL,
    "MedrxivClusteringS2S": _SCI_TITLE,
    "MindSmallReranking": "Given a news title, rank the news articles the reader would click",
    "NFCorpus": "Given a health question, retrieve documents that answer it",
    "NQ": _WIKI_QA,
    "QuoraRetrieval": "Given a question, retrieve questions with the same meaning",
    "RedditClustering": "Identify the topic of the given Reddit post title",
    "RedditClusteringP2P": "Identify the topic of the given Reddit post",
    "SCIDOCS": "Given a paper title, retrieve abstracts of papers it cites",
    "SICK-R": _STS,
    "STS12": _STS,
    "STS13": _STS,
    "STS14": _STS,
    "STS15": _STS,
    "STS16": _STS,
    "STS17": _STS,
    "STS22": "Retrieve news articles with the same meaning as the given article",
    "STSBenchmark": _STS,
    "SciDocsRR": "Given a paper title, rank the titles of related scientific papers",
    "SciFact": "Given a scientific claim, retrieve documents that support or refute it",
    "SprintDuplicateQuestions": "Retrieve Sprint forum questions that duplicate the given question",
    "StackExchangeClustering": "Identify the topic of the given StackExchange question title",
    "StackExchangeClusteringP2P": "Identify the topic of the given StackExchange post",
    "StackOverflowDupQuestions": "Retrieve StackOverflow questions that duplicate the given question",
    "SummEval": "Given a news summary, retrieve other summaries with the same meaning",
    "TRECCOVID": "Given a question about COVID-19, retrieve documents that answer it",
    "Touche2020": "Given a controversial question, retrieve arguments that address it",
    "ToxicConversationsClassification": "Classify whether the given comment is toxic",
    "TweetSentimentExtractionClassification": "Classify the sentiment of the given tweet",
    "TwentyNewsgroupsClustering": "Identify the topic of the given newsgroup post title",
    "TwitterSemEval2015": "Retrieve tweets that paraphrase the given tweet",
    "TwitterURLCorpus": "Retrieve tweets that paraphrase the given tweet",
    # multilingual
    "AfriSentiClassification": "Classify the sentiment of the given tweet",
    "AlloProfClusteringP2P": "Identify the topic of the given educational document",
    "AlloProfClusteringS2S": "Identify the topic of an educational document from its title",
    "AlloprofReranking": "Given a student question, rank the educational passages that answer it",
    "AlloprofRetrieval": "Given a student question, retrieve educational passages that answer it",
    "ArEntail": _NLI,
    "BelebeleRetrieval": "Given a question, retrieve the passage that answers it",
    "BengaliDocumentClassification": _NEWS,
    "BengaliHateSpeechClassification": "Classify the kind of hate speech in the given text",
    "FQuADRetrieval": _WIKI_QA,
    "FarsTail": _NLI,
    "FinParaSTS": _STS,
    "FinToxicityClassification": "Classify whether the given comment is toxic",
    "FrenchBookReviews": "Classify the rating of the given book review",
    "GeoreviewClassification": "Classify the rating of the given organisation review",
    "GeoreviewClusteringP2P": "Identify the category of the organisation in the given review",
    "HALClusteringS2S": _SCI_TITLE,
    "HeadlineClassification": "Classify the topic of the given news headline",
    "InappropriatenessClassification": "Classify whether the given message is inappropriate",
    "IndicCrosslingualSTS": _STS,
    "IndicNLPNewsClassification": _NEWS,
    "IndicQARetrieval": _WIKI_QA,
    "IndicReviewsClusteringP2P": "Identify the product category of the given review",
    "IndicSentimentClassification": "Classify the sentiment of the given product review",
    "IndonesianMongabayConservationClassification": "Classify the sentiment of the given conservation news text",
    "KLUE-STS": _STS,
    "KLUE-TC": "Classify the topic of the given news headline",
    "Ko-StrategyQA": "Given a question, retrieve passages that help answer it",
    "KinopoiskClassification": "Classify the sentiment of the given movie review",
    "KorHateSpeechMLClassification": "Classify the kinds of hate speech in the given comment",
    "KorSTS": _STS,
    "KorSarcasmClassification": "Classify whether the given tweet is sarcastic",
    "MLQARetrieval": _WIKI_QA,
    "MLSUMClusteringP2P": _NEWS_CLUSTER,
    "MLSUMClusteringS2S": "Identify the topic of a news article from its title",
    "MasakhaNEWSClassification": _NEWS,
    "MasakhaNEWSClusteringP2P": _NEWS_CLUSTER,
    "MasakhaNEWSClusteringS2S": "Identify the topic of a news article from its headline",
    "MintakaRetrieval": "Given a question, retrieve the entity that answers it",
    "MultiEURLEXMultilabelClassification": "Classify the topics of the given EU legal document",
    "MultilingualSentimentClassification": _SENTIMENT,
    "OpusparcusPC": _PARA,
    "PawsXPairClassification": _PARA,
    "PublicHealthQA": "Given a public health question, retrieve passages that answer it",
    "RTE3": _NLI,
    "RiaNewsRetrieval": "Given a news headline, retrieve the news article it belongs to",
    "RuBQRetrieval": _WIKI_QA,
    "RuReviewsClassification": "Classify the sentiment of the given product review",
    "RuSTSBenchmarkSTS": _STS,
    "RuSciBenchGRNTIClassification": "Classify the research field of the given scientific paper",
    "RuSciBenchGRNTIClusteringP2P": _SCI_FULL,
    "RuSciBenchOECDClassification": "Classify the research field of the given scientific paper",
    "RuSciBenchOECDClusteringP2P": _SCI_FULL,
    "SIB200Classification": "Classify the topic of the given sentence",
    "SIB200ClusteringS2S": "Identify the topic of the given sentence",
    "SICKFr": _STS,
    "STSBenchmarkMultilingualSTS": _STS,
    "SemRel24STS": _STS,
    "SentimentAnalysisHindi": _SENTIMENT,
    "SpanishNewsClassification": _NEWS,
    "SpanishNewsClusteringP2P": _NEWS_CLUSTER,
    "SummEvalFr": "Given a news summary, retrieve other summaries with the same meaning",
    "SwahiliNewsClassification": _NEWS,
    "SyntecReranking": "Given a question, rank the legal articles that answer it",
    "TERRa": _NLI,
    "TeluguAndhraJyotiNewsClassification": _NEWS,
    "TweetEmotionClassification": "Classify the emotion expressed in the given tweet",
    "TweetSentimentClassification": "Classify the sentiment of the given tweet",
    "VieQuADRetrieval": _WIKI_QA,
    "VieStudentFeedbackClassification": "Classify the sentiment of the given student feedback",
    "WikipediaRerankingMultilingual": "Given a question, rank the Wikipedia passages that answer it",
    "WikipediaRetrievalMultilingual": _WIKI_QA,
    "XNLI": _NLI,
    "XNLIV2": _NLI,
    "XQuADRetrieval": _WIKI_QA,
    "indonli": _NLI,
}

#: mteb renamed a few successors instead of adding ``.v2``; they keep the original's instruction.
_SUCCESSOR_ALIASES: Mapping[str, str] = {
    "ArXivHierarchicalClusteringP2P": "ArxivClusteringP2P",
    "ArXivHierarchicalClusteringS2S": "ArxivClusteringS2S",
    "SummEvalSummarization": "SummEval",
    "SummEvalFrSummarization": "SummEvalFr",
    "Touche2020Retrieval": "Touche2020",
}


def base_task_name(name: str) -> str:
    """The task name without a version suffix (``STS22.v2`` -> ``STS22``)."""
    head, dot, tail = name.rpartition(".")
    if dot and tail[:1] == "v" and tail[1:].isdigit():
        name = head
    return _SUCCESSOR_ALIASES.get(name, name)


@cache
def reference_instructions() -> Mapping[str, str]:
    """The reference code's instruction of each task name, as it spelled the names."""
    path = resources.files("lusifer") / "resources" / "reference_instructions.json"
    return json.loads(path.read_text(encoding="utf-8"))["instructions"]


@cache
def _reference_by_base_name() -> Mapping[str, str]:
    return {base_task_name(name): text for name, text in reference_instructions().items()}


def instruction_for(
    name: str, task_type: str | None = None, table: str = "reference"
) -> str | None:
    """The instruction of an mteb task name (any version) in ``table``; a task the table
    lacks takes our own table's, then the default for its type."""
    if table not in INSTRUCTION_TABLES:
        raise ValueError(f"instructions must be one of {list(INSTRUCTION_TABLES)}, got {table!r}")
    found = None
    if table == "reference":
        found = reference_instructions().get(name) or _reference_by_base_name().get(
            base_task_name(name)
        )
    found = found or TASK_INSTRUCTIONS.get(name) or TASK_INSTRUCTIONS.get(base_task_name(name))
    if found is None and task_type is not None:
        found = DEFAULT_INSTRUCTIONS.get(task_type)
    return found
