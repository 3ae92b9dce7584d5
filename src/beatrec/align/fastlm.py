"""A decode step of a Llama-architecture LM without the module stack (``generate.decoder=fast``, issue #38).

On 2 CPU cores a decode step of SmolLM2-135M spends more time in Python (30 layers of Hugging Face modules, mask
building, the cache's concatenations) than in its matrix products (`benchmarks/explain_speed.md`). :class:`FastStep`
computes the same step from the same weights with a handful of tensor operations per layer:

    x = h + W_o · attn(rope(W_q n), rope(W_k n), W_v n),   n = RMSNorm_1(h)          (Touvron et al. 2023, LLaMA)
    h' = x + W_down · (silu(W_gate m) ⊙ W_up m),            m = RMSNorm_2(x)

with W_q, W_k, W_v fused into one matrix and W_gate, W_up into another, and the keys and values written into
preallocated buffers (no concatenation per step). The prompt is prefilled by the model itself; its cache is copied
into the buffers once. Logits equal the model's to float rounding (tests/test_decode.py).

A decode step of a few rows reads every weight once and does little arithmetic with it, so it is bound by memory
bandwidth; ``weights`` picks the bytes it reads. ``"model"``: the LM's own weights. ``"bfloat16"``: a bfloat16
copy (half the bytes; the products in bfloat16). ``"int8"``: each matrix as int8 with one
float scale per output row, W ≈ diag(s)·Q, s_j = max_k |W_jk| / 127 (weight-only quantisation, as in
gpt-fast), applied by PyTorch's ``_weight_int8pack_mm`` to the activations cast to bfloat16 (a quarter of the bytes; the
activations keep their outliers, which per-tensor dynamic quantisation of activations loses). Everything between
the products (residual stream, norms, attention, key/value buffers) stays in float32. The prompt is prefilled by
the LM as loaded either way.

With ``pack_weights`` (``generate.pack``), float32 and bfloat16 matrices are reordered once into oneDNN's blocked layout
(:func:`pack`) and applied by its linear primitive: the same product (float32 accumulation), 2-5x faster than
``torch.mm`` for the few rows of a decode step on 2 cores (`benchmarks/explain_speed.md`). bfloat16 is packed only
where oneDNN supports bfloat16 on this CPU (:func:`can_pack`); elsewhere the matrix stays as it is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

STEP_WEIGHTS = ("model", "bfloat16", "int8")  # FastStep's weights (generate.fast_weights)


class Int8Weight(NamedTuple):
    """A (N, K) matrix as int8 rows and one scale per row: W ≈ scale[:, None] · q."""

    q: torch.Tensor  # (N, K) int8
    scale: torch.Tensor  # (N,) in the activations' dtype


class PackedWeight(NamedTuple):
    """A (N, K) matrix reordered by oneDNN for ``x · W^T`` (its linear primitive; the layout is opaque)."""

    packed: torch.Tensor
    shape: tuple[int, int]  # (N, K)


Weight = torch.Tensor | Int8Weight | PackedWeight


def can_pack(dtype: torch.dtype) -> bool:
    """Whether :func:`pack` reorders matrices of ``dtype`` on this build and CPU (float32 wherever oneDNN is
    built in; bfloat16 where oneDNN runs it natively)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    if dtype == torch.float32:
        return True
    return dtype == torch.bfloat16 and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack(w: torch.Tensor) -> Weight:
    """(N, K) float32/bfloat16 matrix -> :class:`PackedWeight` where :func:`can_pack`, else ``w`` unchanged."""
    if not can_pack(w.dtype):
        return w
    return PackedWeight(torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), None), tuple(w.shape))


def int8_rows(w: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> Int8Weight:
    """(N, K) float weight -> :class:`Int8Weight`, symmetric per output row (an all-zero row keeps scale 1)."""
    w = w.float()
    amax = w.abs().amax(dim=1)  # (N,)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return Int8Weight(q.contiguous(), scale.to(dtype))


def packable(n: int, k: int) -> bool:
    """Whether ``_weight_int8pack_mm`` computes a (N, K) matrix correctly on this CPU build: measured for torch
    2.13 (AVX2), it returns garbage (or crashes) unless K is a multiple of 16 and N of 4."""
    return k % 16 == 0 and n % 4 == 0


class PackedLinear(torch.nn.Linear):
    """An inference ``nn.Linear`` whose matrix is also held packed for oneDNN (:func:`pack`); it shares the
    original's parameters (a tied LM head stays tied). Inputs of another dtype, and gradients, take the plain path."""

    def __init__(self, base: torch.nn.Linear) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.packed = pack(base.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.packed
        if not isinstance(w, PackedWeight) or x.dtype != self.weight.dtype or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1]).contiguous()  # (rows, K)
        bias = None if self.bias is None else self.bias.detach()
        out = torch.ops.mkldnn._linear_pointwise(flat, w.packed, bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)


def pack_linears(lm: torch.nn.Module) -> int:
    """Replace every float32/bfloat16 ``nn.Linear`` of ``lm`` (LoRA base layers and the LM head included) by a
    :class:`PackedLinear` where :func:`can_pack` its dtype. In place, for inference (after a LoRA merge and a dtype
    cast). -> the number of layers packed."""
    todo = [(parent, name, child) for parent in lm.modules() for name, child in parent.named_children()
            if type(child) is torch.nn.Linear and can_pack(child.weight.dtype)]
    for parent, name, child in todo:
        setattr(parent, name, PackedLinear(child))
    return len(todo)


def linear(x: torch.Tensor, w: Weight) -> torch.Tensor:
    """(R, K) activations · W^T -> (R, N), for a dense W (N, K), a :class:`PackedWeight` (oneDNN's linear; ``x`` in
    the packed matrix's dtype) or an :class:`Int8Weight` (in the kernel where :func:`packable`, else dequantised
    first: the same product, slower)."""
    if isinstance(w, PackedWeight):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w.packed, None, "none", [], "")
    if isinstance(w, Int8Weight):
        if packable(*w.q.shape):
            return torch.ops.aten._weight_int8pack_mm(x, w.q, w.scale)
        return x @ (w.q.to(x.dtype) * w.scale[:, None]).T
    return x @ w.T


class LayerWeights(NamedTuple):
    ln1: torch.Tensor  # (d,)
    qkv: Weight  # ((H + 2·KV)·D, d)
    o: Weight  # (d, H·D)
    ln2: torch.Tensor  # (d,)
    gate_up: Weight  # (2·I, d)
    down: Weight  # (d, I)


def _weight(module: torch.nn.Module) -> torch.Tensor:
    """The weight a (merged) LoRA layer or a plain Linear applies; ValueError for an unmerged adapter."""
    if hasattr(module, "base_layer"):
        if not getattr(module, "merged", False) and getattr(module, "active_adapters", None):
            raise ValueError("generate.decoder=fast needs the LoRA adapter merged (generate.merge_lora=true)")
        module = module.base_layer
    if getattr(module, "bias", None) is not None:
        raise ValueError("generate.decoder=fast supports Linear layers without bias (Llama / SmolLM2)")
    return module.weight.detach()


def supported(lm: torch.nn.Module) -> str | None:
    """None when :class:`FastStep` can run ``lm``, else why not."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    cfg = getattr(base, "config", None)
    if cfg is None:
        return "not a Hugging Face causal LM"
    if getattr(cfg, "model_type", None) != "llama":
        return f"model_type {getattr(cfg, 'model_type', None)!r} (the fast step implements Llama only)"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r}"
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "biased projections"
    if type(base.model.rotary_emb).__name__ != "LlamaRotaryEmbedding":
        return "a custom rotary embedding"
    q = base.model.layers[0].self_attn.q_proj
    if not isinstance(getattr(q, "base_layer", q), torch.nn.Linear):
        return f"{type(getattr(q, 'base_layer', q)).__name__} projections (int8-quantised layers decode as lean)"
    for m in lm.modules():
        if hasattr(m, "base_layer") and not getattr(m, "merged", False) and getattr(m, "active_adapters", None):
            return "an unmerged LoRA adapter (generate.merge_lora=false or a half-precision LM)"
    return None


class FastStep:
    """Decode steps for rows whose prompts are prefilled in an HF cache (see :func:`beatrec.align.decode.prefill`).

    Args:
        lm: a Llama-architecture causal LM (peft-wrapped with its adapter merged, or plain).
        weights: one of :data:`STEP_WEIGHTS` (module docstring).
        pack_weights: reorder float32/bfloat16 matrices for oneDNN's linear (:func:`pack`; int8 weights are not packed).
    """

    def __init__(self, lm: torch.nn.Module, weights: str = "model", pack_weights: bool = False) -> None:
        why = supported(lm)
        if why is not None:
            raise ValueError(f"generate.decoder=fast cannot run this LM: {why}")
        if weights not in STEP_WEIGHTS:
            raise ValueError(f"fast decoder weights must be one of {STEP_WEIGHTS}, got {weights!r}")
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        cfg = base.config
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        m = base.model
        self.embed = m.embed_tokens.weight.detach()  # (V, d), looked up in its own dtype, then cast
        # the residual stream, norms, rotary embedding, attention and key/value buffers run in float32 (CPU attention
        # in bfloat16 costs ~8x float32's); only the matrix products run in the weights' dtype
        self.dtype = torch.float32
        self.mm_dtype = self.embed.dtype if weights == "model" else torch.bfloat16

        def conv(w: torch.Tensor) -> Weight:
            if weights == "int8":
                return int8_rows(w, self.mm_dtype)
            w = w.to(self.mm_dtype).contiguous()
            return pack(w) if pack_weights else w

        self.norm = m.norm.weight.detach().float()
        self.head = conv(_weight(base.lm_head))  # (V, d)
        self.inv_freq = m.rotary_emb.inv_freq.detach().float()  # (D/2,)
        self.rope_scale = float(getattr(m.rotary_emb, "attention_scaling", 1.0))
        self.layers = []
        for layer in m.layers:
            a, p = layer.self_attn, layer.mlp
            self.layers.append(LayerWeights(
                layer.input_layernorm.weight.detach().float(),
                conv(torch.cat([_weight(a.q_proj), _weight(a.k_proj), _weight(a.v_proj)])),
                conv(_weight(a.o_proj)), layer.post_attention_layernorm.weight.detach().float(),
                conv(torch.cat([_weight(p.gate_proj), _weight(p.up_proj)])), conv(_weight(p.down_proj))))
        self.inter = cfg.intermediate_size

    def rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """LlamaRMSNorm (float32 in and out)."""
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def mm(self, x: torch.Tensor, w: Weight) -> torch.Tensor:
        """float32 (R, K) · W^T in the weights' dtype -> float32 (R, N)."""
        y = linear(x if x.dtype == self.mm_dtype else x.to(self.mm_dtype), w)
        return y if y.dtype == torch.float32 else y.float()

    def rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R,) positions -> cos, sin (R, 1, 1, D) as LlamaRotaryEmbedding computes them."""
        freqs = pos.float()[:, None] * self.inv_freq[None, :]  # (R, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos() * self.rope_scale, emb.sin() * self.rope_scale
        return cos[:, None, None, :], sin[:, None, None, :]

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, kv: KVBuffers, mask: torch.Tensor) -> torch.Tensor:
        """One step: tokens (R,) at positions pos (R,), written at column ``kv.length`` of the buffers; mask (R, T+1)
        over the columns 0..T (1 = attend). -> (R, V) float32 logits."""
        r = len(tokens)
        h, nh, nkv = self.head_dim, self.n_heads, self.n_kv
        x = self.embed[tokens].float()  # (R, d)
        cos, sin = self.rope(pos)
        t = kv.length
        allowed = mask.bool()[:, None, None, :]  # (R, 1, 1, T+1)
        for i, w in enumerate(self.layers):
            n = self.rms(x, w.ln1)
            qkv = self.mm(n, w.qkv)  # (R, (H+2KV)·D)
            q = qkv[:, : nh * h].view(r, nh, 1, h)
            k = qkv[:, nh * h : (nh + nkv) * h].view(r, nkv, 1, h)
            v = qkv[:, (nh + nkv) * h :].view(r, nkv, 1, h)
            q, k = self.rotate(q, cos, sin), self.rotate(k, cos, sin)
            kv.keys[i][:, :, t : t + 1] = k
            kv.values[i][:, :, t : t + 1] = v
            att = F.scaled_dot_product_attention(q, kv.keys[i][:, :, : t + 1], kv.values[i][:, :, : t + 1],
                                                 attn_mask=allowed, enable_gqa=True)  # (R, H, 1, D)
            x = x + self.mm(att.reshape(r, nh * h), w.o)
            m = self.rms(x, w.ln2)
            gu = self.mm(m, w.gate_up)  # (R, 2I)
            x = x + self.mm(F.silu(gu[:, : self.inter]) * gu[:, self.inter :], w.down)
        kv.length = t + 1
        return self.mm(self.rms(x, self.norm), self.head)


class KVBuffers:
    """Per-layer key and value buffers (R, KV, T_max, D) filled up to ``length`` columns."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int) -> None:
        self.keys, self.values, self.length = keys, values, length

    @classmethod
    def from_cache(cls, cache, extra: int, dtype: torch.dtype | None = None) -> KVBuffers:  # noqa: ANN001 - an HF DynamicCache
        """The cache's keys and values with room for ``extra`` more columns, in ``dtype`` (default: the cache's)."""
        keys, values = [], []
        for layer in cache.layers:
            k, v = layer.keys, layer.values  # (R, KV, T, D)
            r, kvh, t, d = k.shape
            kb = k.new_empty(r, kvh, t + extra, d, dtype=dtype or k.dtype)
            vb = v.new_empty(r, kvh, t + extra, d, dtype=dtype or v.dtype)
            kb[:, :, :t] = k
            vb[:, :, :t] = v
            keys.append(kb)
            values.append(vb)
        return cls(keys, values, cache.layers[0].keys.shape[2])

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder to) ``rows`` (the beams' parents, the prompts still decoding)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
