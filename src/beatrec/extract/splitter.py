"""Deterministic rule-based phrase splitter: a no-LM baseline for micro supervision (kind ``"splitter"``).

Each text is split into clause-like chunks at punctuation and at conjunctions / connectives ("because",
"and", "but", "with", ...); leading and trailing stopwords are stripped from each chunk; chunks that are
empty or longer than ``MAX_WORDS`` words are dropped. Phrases are ranked by how many times they occur across
the entity's texts (most first), then by first occurrence. It never fails on a non-empty text.
"""

from __future__ import annotations

import re

from beatrec.extract.base import ExtractorConfig

MAX_WORDS = 4

# words at which a text is split into chunks (they start or join clauses)
SPLIT_WORDS = frozenset(
    """
and but or nor so yet because since although though while whereas with without as if when which who whom
whose that than despite plus also however therefore thus especially including like
""".split()
)

# words stripped from the ends of a chunk (a chunk made only of them is dropped)
STOPWORDS = frozenset(
    """
a an the this that these those it its it's they them their theirs he him his she her hers we us our you your
i me my mine one ones user users item items book books product products is are was were be been being am do
does did done have has had having will would shall should can could may might must to of in on at by for from
about into onto over under up down out off again further then once here there all any both each few more most
other some such only own same very too just not no really quite much many lot lots also even still well
would've they'd they're they've he's she's likely previously already enjoy enjoys enjoyed enjoying like likes
liked love loves loved appreciate appreciates appreciated find finds found buy buys bought purchase purchased
read reads reading use uses used get gets got make makes made think thinks thought feel feels felt seem seems
seemed want wants wanted given based due since well
value values valued care cares cared suit suits suited fan fans known offer offers offering deliver delivers
delivering try tries give gives usual usually exactly look looks drawn rather outside
""".split()
)

_TOKEN = re.compile(r"[a-z0-9]+(?:['’\-][a-z0-9]+)*")
_BREAK = re.compile(r"[.,;:!?()\[\]{}\"“”]|\s[-–—]\s")


def split_phrases(text: str) -> list[str]:
    """Candidate phrases of one text, in order of occurrence (lower-cased, 1-4 words)."""
    out: list[str] = []
    for segment in _BREAK.split(text.lower()):
        chunk: list[str] = []
        for word in [*_TOKEN.findall(segment), "and"]:  # the sentinel "and" flushes the last chunk
            if word in SPLIT_WORDS:
                while chunk and chunk[0] in STOPWORDS:
                    chunk.pop(0)
                while chunk and chunk[-1] in STOPWORDS:
                    chunk.pop()
                if chunk and len(chunk) <= MAX_WORDS:
                    out.append(" ".join(chunk))
                chunk = []
            else:
                chunk.append(word)
    return out


def rank_phrases(texts: list[str], n: int) -> list[str]:
    """The ``n`` most frequent phrases over ``texts`` (ties: first occurrence first)."""
    count: dict[str, int] = {}
    first: dict[str, int] = {}
    pos = 0
    for text in texts:
        for p in split_phrases(text):
            count[p] = count.get(p, 0) + 1
            first.setdefault(p, pos)
            pos += 1
    return sorted(count, key=lambda p: (-count[p], first[p]))[:n]


class SplitterExtractor:
    """``PhraseExtractor`` that needs no LM: ``rank_phrases`` per entity (None only for entities with no phrase)."""

    def __init__(self, cfg: ExtractorConfig) -> None:
        cfg.validate()
        self.n_phrases = cfg.n_phrases
        self.identity = "splitter:v2"

    def extract(self, kind: str, docs: list[list[str]], progress: bool = False) -> list[list[str] | None]:
        """Ranked phrases per entity; ``kind`` and ``progress`` are accepted for the protocol and unused."""
        return [rank_phrases(texts, self.n_phrases) or None for texts in docs]
