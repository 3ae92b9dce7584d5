"""Where a generated explanation looks: attention from each generated word to the behavior tokens (Fig. 5b).

For one (user, item) pair the explanation is generated greedily, then prompt + explanation are run once more
through the frozen LM with eager attention, and:

- **averaging**: the attention probabilities are averaged over all heads of all layers (every layer counts
  the same; the paper's figure does not name a layer, and single layers of a small LM are noisy);
- **query position**: generated token k is scored at the position that *produced* it (the last prompt position
  for the first token, token k−1's position after that), i.e. the attention that was in effect when the token
  was chosen;
- **input positions**: each row is restricted to the prompt (behavior-token slots and prompt text) and
  renormalised to sum to 1, so the shares are "of the attention paid to the input";
- **words**: the rows of a word's sub-word tokens are averaged (a word's row still sums to 1).

User share = the mass on the user's slots, item share = on the item's slots, text share = the rest of the prompt.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from beatrec.align.batch import collate_prompt
from beatrec.align.explain import Aligned
from beatrec.align.generate import generate_from_embeds


class AttentionMap(NamedTuple):
    uid: int
    iid: int
    explanation: str
    words: list[str]  # generated words, in order
    token_labels: list[str]  # the behavior-token slots, e.g. "user macro 12", "item micro_3 40"
    slot_share: np.ndarray  # (W, S) attention share of each word on each behavior-token slot
    text_share: np.ndarray  # (W,) share on the prompt's text positions
    user_share: float  # mean over words of the mass on user slots
    item_share: float  # ... on item slots

    def to_dict(self) -> dict:
        d = self._asdict()
        d["slot_share"] = np.round(self.slot_share, 6).tolist()
        d["text_share"] = np.round(self.text_share, 6).tolist()
        return d


def slot_labels(a: Aligned, uid: int, iid: int) -> list[str]:
    """Readable names of the S slots of a pair: side, part and token id."""
    names = ["macro"] + [f"micro_{j}" for j in range(1, a.model.vocab.n_micro + 1)]
    out = []
    for side, eid in (("user", uid), ("item", iid)):
        codes = a.model.vocab.codes(side, torch.tensor([eid]))[0]
        out += [f"{side} {names[p]} {int(codes[p])}" for p in a.model.parts]
    return out


def _word_groups(tok, ids: list[int]) -> tuple[list[str], list[list[int]]]:  # noqa: ANN001
    """Group generated token ids into whitespace-delimited words. -> (words, token indices per word).

    Tokens that decode to nothing or to whitespace only (EOS, newlines) belong to no word.
    """
    words: list[str] = []
    groups: list[list[int]] = []
    boundary = True
    for k, t in enumerate(ids):
        piece = tok.decode([t], skip_special_tokens=True)
        if not piece.strip():
            boundary = boundary or bool(piece)
            continue
        if boundary or piece[0].isspace():
            words.append(piece.strip())
            groups.append([k])
        else:
            words[-1] += piece.strip()
            groups[-1].append(k)
        boundary = piece[-1].isspace()
    return words, groups


@torch.no_grad()
def attention_map(a: Aligned, uid: int, iid: int, title: str | None = None) -> AttentionMap:
    """Generate the explanation of (uid, iid) and measure its attention on the behavior tokens."""
    m = a.model
    title = title if title is not None else a.titles.get(iid, "")
    row = {"uid": uid, "iid": iid, "title": title}
    if a.history is not None:
        a.history.attach([row])
    batch = collate_prompt(a.builder, [row])
    embeds, _, _ = m.embed(batch)  # (1, P, d)
    gen = generate_from_embeds(m, a.tok, embeds, batch.attention_mask, a.cfg.generate, a.builder.pad)[0]  # (T,)
    eos = a.tok.eos_token_id
    ids = [int(t) for t in gen.tolist()]
    if eos in ids:
        ids = ids[: ids.index(eos)]
    p = embeds.shape[1]
    if not ids:
        raise ValueError(f"the LM generated nothing for user {uid}, item {iid}")
    full = torch.cat([embeds, m.lm.get_input_embeddings()(torch.tensor([ids]))], dim=1)  # (1, P+T, d)
    prev = m.lm.config._attn_implementation
    m.lm.set_attn_implementation("eager")
    try:
        out = m.lm(inputs_embeds=full, attention_mask=torch.ones(full.shape[:2], dtype=torch.long),
                   output_attentions=True)
    finally:
        m.lm.set_attn_implementation(prev)
    att = torch.stack([x[0].float() for x in out.attentions]).mean(dim=(0, 1))  # (P+T, P+T) mean over layers, heads
    rows = att[p - 1 : p - 1 + len(ids), :p]  # (T, P): query that produced token k, keys = prompt
    rows = rows / rows.sum(dim=1, keepdim=True).clamp_min(1e-12)
    words, groups = _word_groups(a.tok, ids)
    w_rows = torch.stack([rows[g].mean(0) for g in groups]) if groups else rows[:0]  # (W, P)
    slots = batch.slot_pos[0]  # (S,)
    slot_share = w_rows[:, slots].numpy()  # (W, S)
    text_share = 1.0 - slot_share.sum(1)
    half = m.n_user_slots  # user slots first (none when the prompt has no user tokens)
    return AttentionMap(uid, iid, a.tok.decode(ids, skip_special_tokens=True).strip(), words,
                        slot_labels(a, uid, iid), slot_share, text_share,
                        float(slot_share[:, :half].sum(1).mean()) if len(words) else 0.0,
                        float(slot_share[:, half:].sum(1).mean()) if len(words) else 0.0)


def _printable(word: str, width: int = 18) -> str:
    """A tick label: non-printable characters as '?', long words cut with an ellipsis."""
    w = "".join(c if c.isprintable() else "?" for c in word)
    return w if len(w) <= width else w[: width - 1] + "…"


def plot_attention(am: AttentionMap, path, max_words: int = 40) -> None:  # noqa: ANN001
    """Heatmap PNG: generated words (rows) × behavior-token slots (columns) plus the text share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = min(len(am.words), max_words)
    mat = am.slot_share[:w]  # (W, S)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(2.0 + 0.55 * mat.shape[1] + 1.6, 2.2 + 0.28 * w), sharey=True,
                                 gridspec_kw={"width_ratios": [mat.shape[1], 2.5], "wspace": 0.05})
    im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(mat.shape[1]), am.token_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(w), [_printable(x) for x in am.words[:w]], fontsize=8)
    ax.axvline(mat.shape[1] / 2 - 0.5, color="white", lw=1.5)  # user tokens | item tokens
    # The prompt text takes most of the attention: its own panel, so it does not wash out the token colours.
    bx.barh(range(w), am.text_share[:w], color="#999999", height=0.8)
    bx.set_xlim(0, 1)
    bx.set_xlabel("share on\nprompt text", fontsize=8)
    bx.tick_params(labelsize=7)
    ax.set_title(f"user {am.uid} · item {am.iid} — mean over words: user tokens {am.user_share:.3f}, "
                 f"item tokens {am.item_share:.3f}, text {float(am.text_share.mean()):.3f}", fontsize=9, loc="left")
    cb = fig.colorbar(im, ax=[ax, bx], orientation="horizontal", fraction=0.5 / (2.2 + 0.28 * w), pad=0.12,
                      aspect=40)
    cb.set_label("share of the word's attention to the input, per behavior token", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
