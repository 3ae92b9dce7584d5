"""The lean decoder (``beatrec.align.decode``) against Hugging Face's ``generate``, one prompt at a time: same
tokens for greedy and beam search, batched or not, with or without the shared-prefix cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from beatrec.align.config import GenerateConfig
from beatrec.align.decode import decode, prefill, shared_prefix
from beatrec.align.fastlm import (
    FastStep,
    KVBuffers,
    PackedWeight,
    can_pack,
    int8_rows,
    linear,
    pack,
    packable,
)


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from tiny_lm import save_tiny_lm
    from transformers import AutoModelForCausalLM

    path = save_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny", init_std=0.3)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return model


def prompts(lm, n: int, prefix: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """n left-padded prompts of different lengths sharing their first ``prefix`` embeddings. -> (B, L, d), (B, L)."""
    g = torch.Generator().manual_seed(seed)
    emb = lm.get_input_embeddings().weight.detach()
    head = torch.randint(3, emb.shape[0], (prefix,), generator=g)
    rows = [torch.cat([head, torch.randint(3, emb.shape[0], (2 + i % 4,), generator=g)]) for i in range(n)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = r
        mask[b, width - len(r):] = 1
    return emb[ids], mask


def hf(lm, embeds: torch.Tensor, mask: torch.Tensor, cfg: GenerateConfig, eos: int) -> list[list[int]]:  # noqa: ANN001
    """generate() on each prompt alone (no padding), generated ids up to and including the end token."""
    out = []
    for b in range(len(embeds)):
        real = mask[b].bool()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = lm.generate(inputs_embeds=embeds[b : b + 1, real], attention_mask=mask[b : b + 1, real],
                            max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams, do_sample=False,
                            length_penalty=cfg.length_penalty if cfg.num_beams > 1 else None,
                            repetition_penalty=cfg.repetition_penalty,
                            no_repeat_ngram_size=cfg.no_repeat_ngram_size or None,
                            min_new_tokens=cfg.min_new_tokens or None, pad_token_id=0, eos_token_id=eos,
                            use_cache=True)[0].tolist()
        out.append(g[: g.index(eos) + 1] if eos in g else g)
    return out


def ours(lm, embeds, mask, cfg, eos, share_prefix=True, fast=None) -> list[list[int]]:  # noqa: ANN001
    got = decode(lm, embeds, mask, cfg, 0, eos, share_prefix, fast).tolist()
    return [g[: g.index(eos) + 1] if eos in g else [x for x in g if x != 0] for g in got]


def eos_of(lm) -> int:  # noqa: ANN001
    return 2  # the tiny tokenizer's <|im_end|>


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("use_fast", [False, True])
def test_decode_equals_generate_prompt_by_prompt(lm, beams: int, share: bool, use_fast: bool) -> None:  # noqa: ANN001
    embeds, mask = prompts(lm, 6)
    cfg = GenerateConfig(num_beams=beams, max_new_tokens=12, repetition_penalty=1.3, no_repeat_ngram_size=2,
                         min_new_tokens=2)
    want = hf(lm, embeds, mask, cfg, eos_of(lm))
    fast = FastStep(lm) if use_fast else None
    assert ours(lm, embeds, mask, cfg, eos_of(lm), share, fast) == want


def test_fast_step_computes_the_model_s_logits(lm) -> None:  # noqa: ANN001
    """FastStep over buffers filled from a prefilled cache: the LM's own next-token logits, step after step, also
    after rows are dropped and reordered."""
    from transformers import DynamicCache

    embeds, mask = prompts(lm, 4)
    pre = prefill(lm, embeds, mask)
    twin = prefill(lm, embeds, mask)
    fast, kv = FastStep(lm), KVBuffers.from_cache(twin.cache, 5)
    cache: DynamicCache = pre.cache
    tokens, m, pos = pre.logits.argmax(-1), pre.mask, pre.next_pos
    for step in range(4):
        m = torch.cat([m, torch.ones(len(m), 1, dtype=m.dtype)], dim=1)
        with torch.no_grad():
            ref = lm(input_ids=tokens[:, None], attention_mask=m, position_ids=pos[:, None], past_key_values=cache,
                     use_cache=True).logits[:, -1]
        got = fast(tokens, pos, kv, m)
        assert torch.allclose(got, ref, atol=1e-4), (step, (got - ref).abs().max())
        rows = torch.tensor([2, 0, 0]) if step == 1 else torch.arange(len(tokens))  # drop one, repeat one
        cache.reorder_cache(rows)
        kv.select(rows)
        tokens, m, pos = ref.argmax(-1)[rows], m[rows], pos[rows] + 1
    with pytest.raises(ValueError, match="cannot run this LM"):
        FastStep(torch.nn.Module())


@pytest.mark.parametrize("beams", [1, 3])
def test_rows_finish_at_different_steps_and_leave_the_batch(lm, beams: int) -> None:  # noqa: ANN001
    """With an end token that some prompts reach early, the others' tokens are unchanged (rows are dropped)."""
    embeds, mask = prompts(lm, 8, seed=3)
    cfg = GenerateConfig(num_beams=beams, max_new_tokens=16, repetition_penalty=1.0, no_repeat_ngram_size=0)
    free = ours(lm, embeds, mask, cfg, eos=-1)  # no end token: every row runs 16 steps
    first = [r[3] for r in free]  # make a token some rows emit at step 4 the end token
    eos = max(set(first), key=first.count)
    got = ours(lm, embeds, mask, cfg, eos)
    assert got == hf(lm, embeds, mask, cfg, eos)
    assert {len(g) for g in got} != {16}  # rows did end early


def test_shared_prefix_finds_the_common_head(lm) -> None:  # noqa: ANN001
    embeds, mask = prompts(lm, 4, prefix=5)
    assert shared_prefix(embeds, mask) == 5
    assert shared_prefix(embeds[:1], mask[:1]) == 0  # one prompt: nothing to share
    pre = prefill(lm, embeds, mask)
    plain = prefill(lm, embeds, mask, share_prefix=False)
    assert torch.allclose(pre.logits, plain.logits, atol=1e-4)
    assert torch.equal(pre.next_pos, mask.sum(1))



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_matrices_compute_the_same_products(lm, dtype: torch.dtype) -> None:  # noqa: ANN001
    """oneDNN-packed matrices (generate.pack): the product of the plain matrix, for 1 to 33 rows, and the
    fast step's logits and beam-search tokens unchanged; a dtype oneDNN cannot run natively stays unpacked."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 32, generator=g).to(dtype)
    p = pack(w)
    if not can_pack(dtype):
        assert p is w
        pytest.skip(f"oneDNN does not run {dtype} natively on this CPU")
    assert isinstance(p, PackedWeight) and p.shape == (48, 32)
    for rows in (1, 4, 33):
        x = torch.randn(rows, 32, generator=g).to(dtype)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        assert torch.allclose(linear(x, p).float(), (x.float() @ w.float().T), rtol=tol, atol=tol * 10)
    if dtype != torch.float32:
        return
    fast, packed = FastStep(lm), FastStep(lm, pack_weights=True)
    assert isinstance(packed.layers[0].qkv, PackedWeight) and isinstance(packed.head, PackedWeight)
    embeds, mask = prompts(lm, 4)
    cfg = GenerateConfig(num_beams=3, max_new_tokens=10, repetition_penalty=1.2)
    assert ours(lm, embeds, mask, cfg, eos_of(lm), fast=packed) == ours(lm, embeds, mask, cfg, eos_of(lm), fast=fast)


def test_int8_rows_by_hand() -> None:
    """Per-row symmetric int8: scale max|w|/127, q = round(w / scale); an all-zero row keeps scale 1; the product
    in the kernel (packable shapes) and dequantised (other shapes) is W·x to within the rounding."""
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    q = int8_rows(w, torch.float32)
    assert q.q.tolist() == [[64, -127, 32], [0, 0, 0]]  # 63.5 rounds half to even -> 64; 31.75 -> 32
    assert torch.allclose(q.scale, torch.tensor([2 / 127, 1.0]))
    assert not packable(2, 3) and packable(8, 32) and not packable(7, 32) and not packable(8, 24)
    g = torch.Generator().manual_seed(0)
    for n, k in ((40, 64), (7, 24)):  # the kernel, and the dequantised path
        w = torch.randn(n, k, generator=g)
        x = torch.randn(5, k, generator=g).bfloat16()
        got = linear(x, int8_rows(w)).float()
        bound = (w.abs().amax(1) / 127 / 2)[None, :] * x.float().abs().sum(1, keepdim=True)  # |rounding| <= s/2
        assert ((got - x.float() @ w.T).abs() <= bound + 0.02 * (x.float() @ w.T).abs() + 0.05).all(), (n, k)


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_fast_step_with_smaller_weights_stays_near_the_model(lm, weights: str) -> None:  # noqa: ANN001
    """``generate.fast_weights``: bfloat16 or int8 step weights (products in bfloat16) give logits near
    the float32 model's (bfloat16 rounds to ~3 significant digits per operation), whose top 3 holds their choice;
    the model itself is untouched."""
    embeds, mask = prompts(lm, 4)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    pre, twin = prefill(lm, embeds, mask), prefill(lm, embeds, mask)
    exact, small = FastStep(lm), FastStep(lm, weights)
    assert small.mm_dtype == torch.bfloat16 and exact.mm_dtype == torch.float32 and small.dtype == torch.float32
    kv, kv_small = KVBuffers.from_cache(pre.cache, 3), KVBuffers.from_cache(twin.cache, 3, small.dtype)
    tokens, m, pos = pre.logits.argmax(-1), pre.mask, pre.next_pos
    for _ in range(3):
        m = torch.cat([m, torch.ones(len(m), 1, dtype=m.dtype)], dim=1)
        ref, got = exact(tokens, pos, kv, m), small(tokens, pos, kv_small, m)
        assert got.dtype == torch.float32
        err = (got - ref).abs()
        assert err.max() < 0.1 * ref.abs().max() and err.mean() < 0.02 * ref.abs().max(), (err.max(), err.mean())
        assert (ref.topk(3).indices == got.argmax(-1)[:, None]).any(1).all()  # its choice among the model's top 3
        tokens, pos = ref.argmax(-1), pos + 1
    assert all(torch.equal(v, before[k]) for k, v in lm.state_dict().items())
    with pytest.raises(ValueError, match="fast decoder weights"):
        FastStep(lm, "int4")


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("decoder", ["lean", "fast"])
def test_a_run_explains_the_same_with_either_decoder(served: tuple[Path, Path], beams: int, decoder: str) -> None:
    """On an aligned run (LoRA merged): ``generate.decoder=lean`` writes, pair by pair, what ``generate`` writes
    for the pair alone, and a pair's explanation does not depend on the batch it is in."""
    from beatrec.align.explain import check_pairs, explain, load_aligned

    _, run = served
    sets = [f"generate.num_beams={beams}", "generate.max_new_tokens=10", "generate.batch_size=8",
            "generate.dtype=float32"]
    lean = load_aligned(run, [*sets, f"generate.decoder={decoder}"])
    hf_run = load_aligned(run, [*sets, "generate.decoder=generate"])
    pairs = check_pairs(lean, [{"uid": u, "iid": i, "title": t} for u, i, t in
                               [(0, 1, "A"), (3, 4, "A much longer title than the others"), (5, 2, "Mid title")]], "x")
    alone = [explain(hf_run, [p])[0] for p in pairs]
    assert [explain(lean, [p])[0] for p in pairs] == alone
    assert explain(lean, pairs) == alone


def test_int8_weights_on_load(served: tuple[Path, Path]) -> None:
    """``generate.quantize=int8``: every Linear of the LM is int8 (the head too), the logits stay close to the
    float32 model's, and a setting it cannot honour is an error that names it."""
    from beatrec.align.batch import collate_prompt
    from beatrec.align.explain import check_pairs, explain, load_aligned
    from beatrec.errors import RunError

    _, run = served
    f32 = load_aligned(run, ["generate.dtype=float32"])
    q = load_aligned(run, ["generate.quantize=int8"])  # keeps the LM float32 whatever generate.dtype says
    kinds = {type(m) for m in q.model.lm.modules()}
    assert torch.ao.nn.quantized.dynamic.Linear in kinds and torch.nn.Linear not in kinds
    pairs = check_pairs(q, [{"uid": 0, "iid": 1, "title": "A"}, {"uid": 3, "iid": 4, "title": "B"}], "x")
    batch = collate_prompt(q.builder, pairs)
    with torch.no_grad():
        lf = f32.model.lm(inputs_embeds=f32.model.embed(batch)[0], attention_mask=batch.attention_mask).logits
        lq = q.model.lm(inputs_embeds=q.model.embed(batch)[0], attention_mask=batch.attention_mask).logits
    assert not torch.equal(lf, lq) and (lf - lq).abs().max() < 0.1 * lf.abs().max()
    assert all(isinstance(t, str) for t in explain(q, pairs))
    for bad in (["lm.dtype=bfloat16"], ["generate.merge_lora=false"]):
        with pytest.raises(RunError, match="quantize=int8"):
            load_aligned(run, ["generate.quantize=int8", *bad])


def test_fast_step_weights_from_the_run_config(served: tuple[Path, Path]) -> None:
    """``generate.fast_weights=int8`` on an aligned run: explanations come out (strings, one per pair), the step
    holds int8 weights, and an unknown value is an error that names the field."""
    from beatrec.align.explain import check_pairs, explain, load_aligned
    from beatrec.errors import ConfigError

    _, run = served
    a = load_aligned(run, ["generate.fast_weights=int8", "generate.max_new_tokens=6"])
    pairs = check_pairs(a, [{"uid": 0, "iid": 1, "title": "A"}, {"uid": 3, "iid": 4, "title": "B"}], "x")
    out = explain(a, pairs)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert a.model.fast_step("int8").layers[0].qkv.q.dtype == torch.int8
    with pytest.raises(ConfigError, match="generate.fast_weights"):
        load_aligned(run, ["generate.fast_weights=int4"])


def test_sorting_by_prompt_length_keeps_the_rows_order(served: tuple[Path, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``generate.sort_by_length`` batches prompts of similar length; with the lean decoder the explanations, in
    the rows' order, are those of unsorted batches."""
    from beatrec.align.batch import prompt_lengths
    from beatrec.align.explain import check_pairs, explain, load_aligned

    _, run = served
    sets = ["generate.decoder=lean", "generate.batch_size=2", "generate.max_new_tokens=8"]
    titles = ["A long title of many words here", "B", "C medium title", "D", "Another long long title indeed"]
    a = load_aligned(run, sets)
    pairs = check_pairs(a, [{"uid": k, "iid": k + 1, "title": t} for k, t in enumerate(titles)], "x")
    lengths = prompt_lengths(a.builder, pairs)
    assert lengths[1] < lengths[2] < lengths[0]
    plain = explain(a, pairs)
    import beatrec.align.generate as G

    seen: list[list[str]] = []
    real = G.collate_prompt
    monkeypatch.setattr(G, "collate_prompt", lambda b, rows: seen.append([r["title"][0] for r in rows]) or real(b, rows))
    assert explain(load_aligned(run, [*sets, "generate.sort_by_length=true"]), pairs) == plain
    assert seen == [["B", "D"], ["C", "A"], ["A"]]  # shortest prompts first


def test_bfloat16_inference_merges_first_then_casts(served: tuple[Path, Path]) -> None:
    """``generate.dtype=bfloat16``: the LoRA delta is merged at float32, then the whole LM is bfloat16; logits stay
    close to float32's and the decoders agree with each other."""
    from beatrec.align.batch import collate_prompt
    from beatrec.align.explain import check_pairs, explain, load_aligned

    _, run = served
    f32 = load_aligned(run, ["generate.dtype=float32"])
    bf = load_aligned(run, ["generate.dtype=bfloat16"])
    assert {p.dtype for p in bf.model.lm.parameters()} == {torch.bfloat16}
    merged = [m for m in bf.model.lm.modules() if hasattr(m, "merged") and hasattr(m, "base_layer")]
    assert merged and all(m.merged for m in merged)
    for (n, w32), (_, w16) in zip(f32.model.lm.named_parameters(), bf.model.lm.named_parameters(), strict=True):
        assert torch.equal(w32.bfloat16(), w16), n  # the float32 merged weights, rounded once
    pairs = check_pairs(bf, [{"uid": 0, "iid": 1, "title": "A"}, {"uid": 3, "iid": 4, "title": "B"}], "x")
    batch = collate_prompt(bf.builder, pairs)
    with torch.no_grad():
        lf = f32.model.lm(inputs_embeds=f32.model.embed(batch)[0], attention_mask=batch.attention_mask).logits
        lb = bf.model.lm(inputs_embeds=bf.model.embed(batch)[0], attention_mask=batch.attention_mask).logits.float()
    assert not torch.equal(lf, lb) and (lf - lb).abs().max() < 0.05 * lf.abs().max()
    lean = load_aligned(run, ["generate.dtype=bfloat16", "generate.decoder=lean"])
    assert [explain(lean, [p])[0] for p in pairs] == [explain(bf, [p])[0] for p in pairs]
    q = load_aligned(run, ["generate.dtype=bfloat16", "generate.quantize=int8"])  # int8 quantises float32 weights
    assert q.model.lm.get_input_embeddings().weight.dtype == torch.float32


def test_fast_decoder_falls_back_where_it_cannot_run(served: tuple[Path, Path]) -> None:
    """An unmerged adapter (or an LM other than Llama) decodes as ``lean``: same texts, no fast step built."""
    from beatrec.align.explain import check_pairs, explain, load_aligned
    from beatrec.align.fastlm import supported

    _, run = served
    sets = ["generate.num_beams=2", "generate.max_new_tokens=8", "generate.merge_lora=false"]
    fast = load_aligned(run, [*sets, "generate.decoder=fast"])
    lean = load_aligned(run, [*sets, "generate.decoder=lean"])
    assert "unmerged LoRA" in supported(fast.model.lm) and fast.model.fast_step() is None
    pairs = check_pairs(fast, [{"uid": 0, "iid": 1, "title": "A"}, {"uid": 3, "iid": 4, "title": "B"}], "x")
    assert explain(fast, pairs) == explain(lean, pairs)
    assert supported(load_aligned(run, ["generate.decoder=fast"]).model.lm) is None


def test_a_run_loads_packed_and_explains_as_unpacked(served: tuple[Path, Path]) -> None:
    """generate.pack (default): the LM's Linear layers and the fast step's matrices packed for oneDNN on load;
    explanations equal the unpacked model's (float32; both decoders)."""
    from beatrec.align.explain import check_pairs, explain, load_aligned
    from beatrec.align.fastlm import PackedLinear

    _, run = served
    plain = load_aligned(run, ["generate.dtype=float32", "generate.pack=false", "generate.num_beams=2"])
    packed = load_aligned(run, ["generate.dtype=float32", "generate.num_beams=2"])
    assert packed.cfg.generate.pack and not any(isinstance(m, PackedLinear) for m in plain.model.lm.modules())
    n = sum(isinstance(m, PackedLinear) for m in packed.model.lm.modules())
    assert n == sum(type(m) is torch.nn.Linear for m in plain.model.lm.modules()) > 0
    pairs = check_pairs(plain, [{"uid": u, "iid": (3 * u) % 7} for u in range(6)], "test")
    for decoder in ("fast", "lean"):
        over = load_aligned(run, ["generate.dtype=float32", f"generate.decoder={decoder}", "generate.num_beams=2"])
        under = load_aligned(run, ["generate.dtype=float32", "generate.pack=false", f"generate.decoder={decoder}",
                                   "generate.num_beams=2"])
        assert explain(over, pairs) == explain(under, pairs)
    assert isinstance(packed.model.fast_step("model", True).layers[0].qkv, PackedWeight)
