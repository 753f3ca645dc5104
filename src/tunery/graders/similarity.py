"""text_similarity's measures and string_check's operations: how alike a model's text is to a
reference, each a number in [0, 1], from maintained libraries.

- fuzzy_match: rapidfuzz's normalized Indel similarity (fuzz.ratio / 100) of the two texts.
- bleu: NLTK's sentence BLEU, uniform weights over the n-gram orders up to 4 that both texts are
  long enough to have (sacreBLEU's "effective order": a short answer equal to its reference scores
  1.0, not 0), NLTK's smoothing method 1 for orders without a match.
- gleu: NLTK's sentence GLEU (1- to 4-grams).
- meteor: NLTK's METEOR with exact and Porter-stem matching only. Its third stage, WordNet
  synonyms, needs NLTK's WordNet corpus, a download at run time, which tunery never does (and no
  package on PyPI ships that corpus from a source to be trusted): synonyms are not matched, so a
  paraphrase scores lower than METEOR with WordNet would give it.
- rouge_1 .. rouge_5, rouge_l: rouge-score's F-measure of ROUGE-N / ROUGE-L (its tokenizer:
  lowercase letters and digits; no stemming, the library's default).
- cosine needs an embedding model, which tunery does not configure: checks.py refuses it.

BLEU, GLEU and METEOR split texts with NLTK's wordpunct tokenizer (runs of letters and digits,
runs of punctuation), which needs no downloaded model. Two texts without any token are alike (1.0)."""

from __future__ import annotations

from functools import lru_cache

ROUGE = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_3": "rouge3", "rouge_4": "rouge4", "rouge_5": "rouge5",
         "rouge_l": "rougeL"}
MAX_BLEU_ORDER = 4


class _NoSynonyms:
    """Stands for NLTK's WordNet reader in METEOR: no word has a synonym (see the module's docstring)."""

    @staticmethod
    def synsets(_word: str) -> list:
        return []


def string_check(operation: str, text: str, reference: str) -> float:
    """OpenAI's string_check: eq (equal), ne (not equal), like (the text contains the reference),
    ilike (contains it, ignoring case); 1.0 when it holds, else 0.0."""
    holds = {"eq": lambda: text == reference, "ne": lambda: text != reference,
             "like": lambda: reference in text, "ilike": lambda: reference.casefold() in text.casefold()}[operation]()
    return 1.0 if holds else 0.0


def similarity(metric: str, text: str, reference: str) -> float:
    """How alike `text` is to `reference` by `metric` (any of TextSimilarityGrader's but cosine)."""
    # The libraries are imported when first used: NLTK alone takes a second or two, which neither the
    # API's start nor the CLI should wait for.
    from nltk.tokenize import wordpunct_tokenize
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from nltk.translate.gleu_score import sentence_gleu
    from nltk.translate.meteor_score import single_meteor_score
    from rapidfuzz import fuzz

    if metric == "fuzzy_match":
        return fuzz.ratio(text, reference) / 100
    hypothesis, references = wordpunct_tokenize(text), wordpunct_tokenize(reference)
    if not hypothesis or not references:
        return 1.0 if hypothesis == references else 0.0
    if metric in ROUGE:
        return float(_rouge(ROUGE[metric]).score(reference, text)[ROUGE[metric]].fmeasure)
    if metric == "bleu":
        order = min(MAX_BLEU_ORDER, len(hypothesis), len(references))
        return float(sentence_bleu([references], hypothesis, weights=(1 / order,) * order,
                                   smoothing_function=SmoothingFunction().method1))
    if metric == "gleu":
        return float(sentence_gleu([references], hypothesis))
    if metric == "meteor":
        return float(single_meteor_score(references, hypothesis, wordnet=_NoSynonyms()))
    raise ValueError(f"no text similarity measure {metric!r}")


@lru_cache(maxsize=None)
def _rouge(kind: str):
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer([kind])
