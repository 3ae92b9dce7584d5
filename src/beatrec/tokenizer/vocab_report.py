"""A readable behavior vocabulary (``beatrec vocab``): what each token of each codebook stands for.

For every code of the four codebooks (user/item × macro/micro): how many users or items carry it, and the
words most associated with it by TF-IDF, where a code's "document" is the concatenated training texts of the
entities that carry it (a micro code is carried by an entity when any of its N micro positions holds it) and
the corpus is the codebook's codes. Only training texts are read (rows of training users, as in stage 1), so
zero-shot users' texts never describe a token. Most entities have no text of their own (on XRec's Amazon only
~8% of users do), and codes often gather entities without text; such a code is described instead by the texts
of the counterparts its carriers interacted with (its users' items, or its item's users; the 50 most frequent),
and marked so (``source``: ``own`` / ``interacted`` / ``none``). Writes ``vocab.md`` and a static, self-contained ``vocab.html``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

BOOKS = ("user_macro", "user_micro", "item_macro", "item_micro")


class CodeEntry(NamedTuple):
    code: int
    n_entities: int  # users/items carrying it
    terms: list[str]  # top TF-IDF terms (empty when no text describes it)
    examples: list[int]  # a few carrier ids
    source: str  # "own": carriers' own texts; "interacted": texts of what the carriers interacted with; "none"


class VocabReport(NamedTuple):
    books: dict[str, list[CodeEntry]]  # codebook name -> one entry per code, most carried first
    n_codes: int
    n_users: int
    n_items: int


TOKEN = r"(?u)\b[a-zA-Z][a-zA-Z]+\b"


def boilerplate_terms(entity_docs: list[str], max_share: float = 0.2) -> list[str]:
    """English stop words plus the words in more than ``max_share`` of the entity documents: the templates of a
    dataset's texts ("the user would likely enjoy ...") that would otherwise top every code's list."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    stop = set(ENGLISH_STOP_WORDS)
    if len(entity_docs) >= 10:
        cv = CountVectorizer(binary=True, token_pattern=TOKEN, lowercase=True)
        x = cv.fit_transform(entity_docs)
        share = np.asarray(x.sum(0)).ravel() / x.shape[0]
        stop |= set(cv.get_feature_names_out()[share > max_share].tolist())
    return sorted(stop)


def distinct_terms(ranked: list[str], k: int) -> list[str]:
    """The first ``k`` terms that add a word: "lord rings" then "rings" keeps only "lord rings"."""
    out: list[str] = []
    seen: set[str] = set()
    for t in ranked:
        words = set(t.split())
        if words <= seen:
            continue
        out.append(t)
        seen |= words
        if len(out) == k:
            break
    return out


def carriers(codes: np.ndarray, part: str, n_codes: int) -> list[np.ndarray]:
    """Entity ids carrying each code. codes (n, 1+N); part "macro" | "micro". -> n_codes arrays."""
    sl = codes[:, :1] if part == "macro" else codes[:, 1:]  # (n, 1) or (n, N)
    # (code, entity) pairs, de-duplicated and sorted by code, then cut at each code's first row.
    ent = np.repeat(np.arange(len(sl)), sl.shape[1])
    pairs = np.unique(np.stack([sl.ravel(), ent], 1), axis=0)
    split = np.searchsorted(pairs[:, 0], np.arange(n_codes + 1))
    return [pairs[split[c] : split[c + 1], 1] for c in range(n_codes)]


def _code_documents(per_code: list[np.ndarray], own: dict[int, str], other: dict[int, str],
                    links: sp.csr_matrix | None, n_counterparts: int = 50) -> tuple[list[str], list[str]]:
    """Each code's document and its source: the carriers' own texts, else their counterparts' texts."""
    texts, sources = [], []
    for ids in per_code:
        t = " ".join(own[int(e)] for e in ids if int(e) in own)
        src = "own" if t.strip() else "none"
        if not t.strip() and links is not None and len(ids):
            counts = np.asarray(links[ids].sum(0)).ravel()
            order = [j for j in np.argsort(-counts, kind="stable") if counts[j] > 0 and int(j) in other]
            t = " ".join(other[int(j)] for j in order[:n_counterparts])
            src = "interacted" if t.strip() else "none"
        texts.append(t)
        sources.append(src)
    return texts, sources


def build_report(codes: dict[str, np.ndarray], docs: dict[str, dict[int, str]], n_codes: int, top_terms: int = 8,
                 n_examples: int = 5, links: dict[str, sp.csr_matrix] | None = None) -> VocabReport:
    """Counts and TF-IDF terms per code.

    Args:
        codes: {"user": (U, 1+N), "item": (I, 1+N)} token tables.
        docs: {"user": {id: text}, "item": {id: text}} training text of each entity that has some.
        links: {"user": (U, I), "item": (I, U)} training interactions, for codes whose carriers have no text.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    stop = boilerplate_terms([*docs["user"].values(), *docs["item"].values()])
    books: dict[str, list[CodeEntry]] = {}
    for name in BOOKS:
        side, part = name.split("_")
        per_code = carriers(codes[side], part, n_codes)
        other = "item" if side == "user" else "user"
        texts, sources = _code_documents(per_code, docs[side], docs[other], (links or {}).get(side))
        terms: list[list[str]] = [[] for _ in per_code]
        if any(t.strip() for t in texts):
            vec = TfidfVectorizer(stop_words=stop, ngram_range=(1, 2), min_df=2, max_df=0.5, sublinear_tf=True,
                                  token_pattern=TOKEN)
            try:
                mat = vec.fit_transform(texts)
            except ValueError:  # too few documents for min_df / max_df: fall back to plain counts
                vec = TfidfVectorizer(stop_words=stop, token_pattern=TOKEN)
                mat = vec.fit_transform(texts)
            vocab = np.asarray(vec.get_feature_names_out())
            for c in range(len(texts)):
                row = mat.getrow(c)
                if row.nnz:
                    ranked = vocab[row.indices[np.argsort(-row.data, kind="stable")]].tolist()
                    terms[c] = distinct_terms(ranked, top_terms)
        entries = [CodeEntry(c, len(ids), terms[c], ids[:n_examples].tolist(), sources[c] if terms[c] else "none")
                   for c, ids in enumerate(per_code)]
        books[name] = sorted(entries, key=lambda e: (-e.n_entities, e.code))
    return VocabReport(books, n_codes, len(codes["user"]), len(codes["item"]))


def load_report(run: str | Path, data: str | Path | None = None, top_terms: int = 8) -> VocabReport:
    """Build the report of a ``beatrec tokenize`` run from its token tables and the dataset's training texts."""
    from beatrec.align.vocab import read_token_table
    from beatrec.data.split import ZeroShotSplit, training_texts
    from beatrec.tokenizer.pipeline import entity_documents, open_stage1_run

    run = Path(run)
    need = ("user_tokens.parquet", "item_tokens.parquet", "config.yaml", "split.json")
    cfg, ds = open_stage1_run(run, data, need)
    rows = training_texts(ds, ZeroShotSplit.load(run / "split.json"))
    codes = {"user": read_token_table(run / "user_tokens.parquet"), "item": read_token_table(run / "item_tokens.parquet")}
    docs = {"user": {k: " ".join(v) for k, v in entity_documents(rows, "uid", cfg.user_texts).items()},
            "item": {k: " ".join(v) for k, v in entity_documents(rows, "iid", cfg.item_texts).items()}}
    tr = ds.interactions[ds.interactions["split"] == "train"]
    r = sp.csr_matrix((np.ones(len(tr)), (tr["user"].to_numpy(), tr["item"].to_numpy())), shape=(ds.n_users, ds.n_items))
    r.data[:] = 1.0
    return build_report(codes, docs, cfg.model.n_codes, top_terms, links={"user": r, "item": r.T.tocsr()})


def _rows(report: VocabReport, name: str) -> list[CodeEntry]:
    return [e for e in report.books[name] if e.n_entities > 0]


_SOURCE = {"own": "own texts", "interacted": "interacted-with texts", "none": "—"}


def write_markdown(report: VocabReport, path: Path) -> None:
    side_n = {"user": report.n_users, "item": report.n_items}
    lines = ["# Behavior vocabulary", "",
             f"{report.n_users} users, {report.n_items} items, {report.n_codes} codes per codebook. Terms: top TF-IDF "
             "words and bigrams of the training texts of the entities that carry each code (codes ordered by how "
             "many carry them; unused codes omitted). *From*: the carriers' own training texts, or, when none of them "
             "has any, the texts of what they interacted with.", ""]
    for name in BOOKS:
        rows = _rows(report, name)
        side = name.split("_")[0]
        lines += [f"## {name.replace('_', ' ')} ({len(rows)} of {report.n_codes} codes used)", "",
                  f"| token | {side}s | share | terms | from | e.g. {side} ids |", "|---|---|---|---|---|---|"]
        for e in rows:
            lines.append(f"| <{name}_{e.code}> | {e.n_entities} | {e.n_entities / side_n[side]:.1%} | "
                         f"{', '.join(e.terms) or '—'} | {_SOURCE[e.source]} | {', '.join(map(str, e.examples))} |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
nav a{margin-right:1rem}
input{font-size:1rem;padding:.4rem .6rem;width:22rem;margin:.5rem 0 1rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #e3e3e3;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f6f6;position:sticky;top:0}
td.tok{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:nowrap}
td.n{text-align:right;white-space:nowrap}
.bar{display:inline-block;height:.7rem;background:#4c78a8;vertical-align:middle;margin-right:.4rem}
.term{display:inline-block;background:#eef3fa;border-radius:3px;padding:0 .35rem;margin:.1rem .15rem}
.term.via{background:#f4f4f4;color:#555;font-style:italic}
.none{color:#999}
"""

_JS = """
function filt(){const q=document.getElementById('q').value.toLowerCase();
for(const tr of document.querySelectorAll('tbody tr')){tr.style.display=tr.textContent.toLowerCase().includes(q)?'':'none';}}
"""


def write_html(report: VocabReport, path: Path) -> None:
    """A static page: one table per codebook with bars for coverage and a filter box (no external files)."""
    side_n = {"user": report.n_users, "item": report.n_items}
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Behavior vocabulary</title>",
             f"<style>{_CSS}</style><script>{_JS}</script></head><body>",
             "<h1>Behavior vocabulary</h1>",
             f"<p>{report.n_users} users, {report.n_items} items, {report.n_codes} codes per codebook. "
             "<b>Terms</b> are the top TF-IDF words and bigrams of the training texts of the entities that carry a "
             "code; <i class='term via'>grey italic terms</i> come from the texts of what the carriers interacted "
             "with, for codes none of whose carriers has text of its own. Codes are ordered by how many entities "
             "carry them; unused codes are omitted.</p>",
             "<nav>" + "".join(f"<a href='#{n}'>{n.replace('_', ' ')}</a>" for n in BOOKS) + "</nav>",
             "<input id='q' oninput='filt()' placeholder='filter: a word, a token id…'>"]
    for name in BOOKS:
        rows = _rows(report, name)
        side = name.split("_")[0]
        top = max((e.n_entities for e in rows), default=1)
        parts += [f"<h2 id='{name}'>{html.escape(name.replace('_', ' '))} — {len(rows)} of {report.n_codes} codes used</h2>",
                  f"<table><thead><tr><th>token</th><th>{side}s</th><th>terms</th><th>e.g. {side} ids</th></tr></thead><tbody>"]
        for e in rows:
            width = max(1, int(80 * e.n_entities / top))
            terms = "".join(f"<span class='term{' via' if e.source == 'interacted' else ''}'>{html.escape(t)}</span>"
                            for t in e.terms) or "<span class='none'>no training text</span>"
            parts.append(f"<tr><td class='tok'>&lt;{name}_{e.code}&gt;</td>"
                         f"<td class='n'><span class='bar' style='width:{width}px'></span>{e.n_entities} "
                         f"({e.n_entities / side_n[side]:.1%})</td><td>{terms}</td>"
                         f"<td>{', '.join(map(str, e.examples))}</td></tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts) + "\n")


def write_report(report: VocabReport, out_dir: str | Path) -> tuple[Path, Path]:
    """``vocab.md`` and ``vocab.html`` under ``out_dir``; also ``vocab.json`` for programs."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, page = out / "vocab.md", out / "vocab.html"
    write_markdown(report, md)
    write_html(report, page)
    (out / "vocab.json").write_text(json.dumps({k: [e._asdict() for e in v] for k, v in report.books.items()}) + "\n")
    return md, page
