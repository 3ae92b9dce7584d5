"""Continuous batching (``beatrec.align.stream``): prompts that join a running batch between decode steps get
the tokens Hugging Face's ``generate`` gives each of them alone, whatever runs beside them."""

from __future__ import annotations

import pytest
from test_decode import eos_of, hf, lm, prompts  # noqa: F401 - the tiny LM fixture

from beatrec.align.config import GenerateConfig
from beatrec.align.fastlm import FastStep
from beatrec.align.stream import StreamDecoder

BEAM = GenerateConfig(num_beams=3, max_new_tokens=12, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=2)
GREEDY = GenerateConfig(num_beams=1, max_new_tokens=9, repetition_penalty=1.1, no_repeat_ngram_size=0)
BEAM2 = GenerateConfig(num_beams=2, max_new_tokens=7, length_penalty=0.5)


def run_waves(dec: StreamDecoder, waves: dict[int, list], limit: int = 200) -> dict:
    """Admit each wave (prompts, mask, cfg, keys) before the step its key names; step until all ended."""
    got, t = {}, 0
    while t < limit and (dec.busy() or any(s >= t for s in waves)):
        if t in waves:
            for embeds, mask, cfg, keys in waves[t]:
                dec.admit(embeds, mask, cfg, keys)
        for f in dec.step():
            assert f.key not in got
            got[f.key] = f.ids
        t += 1
    return got


def test_prompts_joining_a_running_batch_decode_as_alone(lm) -> None:  # noqa: F811, ANN001
    eos = eos_of(lm)
    a, am = prompts(lm, 5, seed=1)
    b, bm = prompts(lm, 4, prefix=3, seed=2)
    c, cm = prompts(lm, 3, seed=4)
    d, dm = prompts(lm, 2, seed=5)
    waves = {0: [(a, am, BEAM, [f"a{i}" for i in range(5)])],
             3: [(b, bm, GREEDY, [f"b{i}" for i in range(4)]), (d, dm, BEAM2, ["d0", "d1"])],
             6: [(c, cm, BEAM, [f"c{i}" for i in range(3)])]}
    dec = StreamDecoder(lm, FastStep(lm), pad=0, eos=eos)
    got = run_waves(dec, waves)
    for x, m, cfg, name in ((a, am, BEAM, "a"), (b, bm, GREEDY, "b"), (c, cm, BEAM, "c"), (d, dm, BEAM2, "d")):
        want = hf(lm, x, m, cfg, eos)
        assert [got[f"{name}{i}"] for i in range(len(x))] == want, name
    assert not dec.busy() and dec.kv is None


def test_the_buffers_drop_columns_no_live_row_attends_to(lm) -> None:  # noqa: F811, ANN001
    """Short decodes of long prompts end while a long decode of a short prompt goes on: later admissions start
    from the long row's own span, the columns only the finished rows attended to are gone."""
    dec = StreamDecoder(lm, FastStep(lm), pad=0, eos=-1)  # no end token: every search runs its full length
    long_cfg = GenerateConfig(num_beams=1, max_new_tokens=30, repetition_penalty=1.0, no_repeat_ngram_size=0)
    short = GenerateConfig(num_beams=2, max_new_tokens=4, repetition_penalty=1.0, no_repeat_ngram_size=0)
    w, wm = prompts(lm, 4, seed=9)  # prompts of 7..10 tokens
    x, m = prompts(lm, 1, seed=7)  # one prompt of 7 tokens
    waves = {0: [(w, wm, short, [f"w{i}" for i in range(4)])], 1: [(x, m, long_cfg, ["long"])]}
    for t in (8, 14, 20):
        y, ym = prompts(lm, 2, seed=t)
        waves[t] = [(y, ym, short, [f"s{t}a", f"s{t}b"])]
    widths = []
    got, t = {}, 0
    while dec.busy() or t <= 20:
        for wave in waves.get(t, []):
            dec.admit(*wave)
            widths.append(dec.mask.shape[1])
        got.update({f.key: f.ids for f in dec.step()})
        t += 1
    assert len(got["long"]) == 30 and all(len(got[k]) == 4 for k in got if k != "long")
    assert got["long"] == hf(lm, x, m, long_cfg, eos=-1)[0]
    assert [got[f"w{i}"] for i in range(4)] == hf(lm, w, wm, short, eos=-1)
    span = int(m.sum())  # before step t the long row holds its prompt and t - 1 generated tokens
    assert widths[0] == wm.shape[1] and widths[1] == wm.shape[1] + 1 > span
    assert widths[2:] == [span + t - 1 for t in (8, 14, 20)]


def test_bad_admissions_are_refused(lm) -> None:  # noqa: F811, ANN001
    dec = StreamDecoder(lm, FastStep(lm), pad=0, eos=eos_of(lm))
    x, m = prompts(lm, 2)
    with pytest.raises(ValueError, match="2 prompts but 1 keys"):
        dec.admit(x, m, BEAM, ["only one"])
    assert not dec.busy()
    assert dec.step() == []
