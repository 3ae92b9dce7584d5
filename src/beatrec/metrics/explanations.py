"""All explanation metrics of DESIGN.md "Evaluation protocol" behind one call, :func:`score_explanations`.

| field | label | module |
|---|---|---|
| bleu1, bleu4 | BLEU-1, BLEU-4 | :mod:`beatrec.metrics.text` (NLTK corpus BLEU, smoothing method1) |
| rouge_l | ROUGE-L | :mod:`beatrec.metrics.rouge` (sentence-level LCS F1, mean over pairs) |
| bertscore_f1 | BERTScore-MiniLM | :mod:`beatrec.metrics.bertscore` (greedy matching, last layer, no rescaling) |
| lm_score | LM-score | :mod:`beatrec.metrics.lm_score` (mean log p(reference \\| candidate), a BARTScore stand-in) |
| specificity | specificity | :mod:`beatrec.metrics.text` (MRR of the own reference by MiniLM cosine) |
| distinct1, distinct2 | distinct-1, distinct-2 | :mod:`beatrec.metrics.diversity` (over the whole set) |
| avg_words | avg. words | :mod:`beatrec.metrics.diversity` |

The expensive metrics (BERTScore, LM-score, and specificity which embeds every text) can be switched off;
their fields are then ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from beatrec.config import check
from beatrec.lm import LMConfig
from beatrec.metrics.bertscore import bertscore as _bertscore
from beatrec.metrics.diversity import average_words, distinct_n
from beatrec.metrics.lm_score import lm_score as _lm_score
from beatrec.metrics.rouge import rouge_l
from beatrec.metrics.text import bleu
from beatrec.metrics.text import specificity as _specificity

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from beatrec.text_encoder import TextEncoder

LABELS: dict[str, str] = {
    "bleu1": "BLEU-1", "bleu4": "BLEU-4", "rouge_l": "ROUGE-L", "bertscore_f1": "BERTScore-MiniLM",
    "lm_score": "LM-score", "specificity": "specificity", "distinct1": "distinct-1", "distinct2": "distinct-2",
    "avg_words": "avg. words",
}


class ExplanationScores(NamedTuple):
    """Scores of P generations against their references (``None`` = metric switched off)."""

    n: int
    bleu1: float
    bleu4: float
    rouge_l: float
    bertscore_f1: float | None
    lm_score: float | None
    specificity: float | None
    distinct1: float
    distinct2: float
    avg_words: float


@dataclass
class ScoreConfig:
    """Which metrics to compute and with what.

    Attributes:
        bertscore / lm_score / specificity: compute these (the expensive ones).
        lm: the causal LM of LM-score (default the packaged SmolLM2).
        lm_batch_size: pairs per LM forward pass.
    """

    bertscore: bool = True
    lm_score: bool = True
    specificity: bool = True
    lm: LMConfig = field(default_factory=LMConfig)
    lm_batch_size: int = 16

    def validate(self) -> None:
        self.lm.validate()
        check(self.lm_batch_size >= 1, f"lm_batch_size must be >= 1, got {self.lm_batch_size}")


class Scorer:
    """Holds the (lazily loaded) text encoder and LM so several prediction sets are scored with one load.

    Args:
        cfg: metric switches.
        encoder: a text encoder to reuse (default: the packaged MiniLM, loaded on first need).
        lm: a (model, tokenizer) pair to reuse for LM-score (default: ``load_causal_lm(cfg.lm)`` on first need).
    """

    def __init__(self, cfg: ScoreConfig | None = None, encoder: TextEncoder | None = None,
                 lm: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None) -> None:
        self.cfg = cfg or ScoreConfig()
        self.cfg.validate()
        self._encoder, self._lm = encoder, lm

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            from beatrec.text_encoder import TextEncoder, TextEncoderConfig

            self._encoder = TextEncoder(TextEncoderConfig())
        return self._encoder

    @property
    def lm(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        if self._lm is None:
            from beatrec.lm import load_causal_lm

            self._lm = load_causal_lm(self.cfg.lm)
        return self._lm

    def score(self, preds: list[str], refs: list[str]) -> ExplanationScores:
        """Every metric of ``preds`` against row-aligned ``refs`` (P > 0 pairs)."""
        if len(preds) != len(refs) or not preds:
            raise ValueError(f"need equally many predictions and references (> 0), got {len(preds)}/{len(refs)}")
        c = self.cfg
        return ExplanationScores(
            n=len(preds),
            bleu1=bleu(preds, refs, 1),
            bleu4=bleu(preds, refs, 4),
            rouge_l=rouge_l(preds, refs),
            bertscore_f1=_bertscore(preds, refs, self.encoder).f1 if c.bertscore else None,
            lm_score=_lm_score(preds, refs, *self.lm, batch_size=c.lm_batch_size) if c.lm_score else None,
            specificity=_specificity(preds, refs, self.encoder) if c.specificity else None,
            distinct1=distinct_n(preds, 1),
            distinct2=distinct_n(preds, 2),
            avg_words=average_words(preds),
        )


def score_explanations(preds: list[str], refs: list[str], *, bertscore: bool = True, lm_score: bool = True,
                       specificity: bool = True, encoder: TextEncoder | None = None,
                       lm: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
                       lm_config: LMConfig | None = None) -> ExplanationScores:
    """All metrics of the module table for row-aligned predictions and references.

    Args:
        preds, refs: P generations and their P references.
        bertscore, lm_score, specificity: switch the expensive metrics off (their fields become ``None``).
        encoder: MiniLM text encoder to reuse; lm: (model, tokenizer) to reuse; lm_config: which LM to load
            for LM-score when ``lm`` is not given (default the packaged SmolLM2).
    """
    cfg = ScoreConfig(bertscore=bertscore, lm_score=lm_score, specificity=specificity,
                      lm=lm_config or LMConfig())
    return Scorer(cfg, encoder, lm).score(preds, refs)


def markdown_table(rows: list[tuple[str, ExplanationScores]], extra: dict[str, list[str]] | None = None) -> str:
    """A markdown table, one row per (name, scores); metrics that are ``None`` in every row are left out.

    ``extra`` adds columns (header -> one cell per row) after the method name.
    """
    keys = [k for k in LABELS if any(getattr(s, k) is not None for _, s in rows)]
    extra = extra or {}
    head = ["method", *extra, "pairs", *(LABELS[k] for k in keys)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, (name, s) in enumerate(rows):
        cells = [name, *(v[r] for v in extra.values()), str(s.n)]
        for k in keys:
            v = getattr(s, k)
            cells.append("–" if v is None else (f"{v:.1f}" if k == "avg_words" else f"{v:.4f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
