"""Transformer building blocks as cases: the layers people port, forward and backward.

Each block is an `nn.Module` (from `transformers` where the library has one, else written out here as
models write it) with small, realistic shapes, run functionally so that its parameters are inputs (see
`modules.py`). Every block has float32 and bfloat16 cases, forward and backward, and two samples with
different sequence lengths, so that a compiling backend's compile count shows the recompilation.
Case ids: `blocks/<group>.<variant>/<dtype>/<direction>`, e.g. `blocks/rope.rotate_half/bfloat16/backward`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from opsuite.catalog import Case, Sample
from opsuite.catalog.modules import describe, generator, library_facts, module_sample, randn, seeded

DTYPES = ("float32", "bfloat16")
DIRECTIONS = ("forward", "backward")
SEQ_LENS = (8, 12)  # two samples: a second sequence length makes a compiling backend recompile

# Small shapes of a real decoder: hidden 64 in 4 heads of 16, 2 key/value heads for grouped-query.
BATCH, HEADS, KV_HEADS, HEAD_DIM = 2, 4, 2, 16
HIDDEN, FFN, VOCAB, MAX_POSITIONS = HEADS * HEAD_DIM, 128, 128, 64
EXPERTS, TOP_K = 4, 2
SLIDING_WINDOW = 4
CACHE_LEN, CACHE_START = 32, 4  # a static KV cache of 32 positions, 4 of them filled before the append


def _wide(dtype: torch.dtype) -> torch.dtype:
    """The dtype models upcast to for softmax and rotary math: float32, or wider when the input is."""
    return torch.promote_types(dtype, torch.float32)


# ---------------------------------------------------------------- configs of transformers' modules

def _llama_config() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_attention_heads=HEADS,
                       num_key_value_heads=KV_HEADS, max_position_embeddings=MAX_POSITIONS, hidden_act="silu")


def _mixtral_config(experts_implementation: str) -> Any:
    from transformers import MixtralConfig

    return MixtralConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_attention_heads=HEADS,
                         num_key_value_heads=KV_HEADS, num_local_experts=EXPERTS, num_experts_per_tok=TOP_K,
                         experts_implementation=experts_implementation)


def _init_normal(module: nn.Module) -> nn.Module:
    """Initialise every parameter ~ N(0, 1/fan_in): transformers' expert weights start as `torch.empty`."""
    for param in module.parameters():
        nn.init.normal_(param, std=param.shape[-1] ** -0.5)
    return module


# ---------------------------------------------------------------- attention

class Sdpa(nn.Module):
    """`F.scaled_dot_product_attention`, causal or with an explicit mask, optionally grouped-query."""

    def __init__(self, causal: bool, gqa: bool = False):
        super().__init__()
        self.causal, self.gqa = causal, gqa

    def forward(self, q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal, enable_gqa=self.gqa)


class WrittenOutAttention(nn.Module):
    """Attention as eager model code writes it: matmul, scale, causal (or sliding-window) mask, softmax, matmul."""

    def __init__(self, window: int | None = None):
        super().__init__()
        self.window = window

    def forward(self, q, k, v):
        positions = torch.arange(q.shape[-2], device=q.device)
        distance = positions[:, None] - positions[None, :]  # query minus key
        allowed = distance >= 0
        if self.window is not None:
            allowed = allowed & (distance < self.window)
        scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=_wide(q.dtype)).to(q.dtype)
        return torch.matmul(probs, v)


class PaddedAttention(nn.Module):
    """Causal SDPA over a right-padded batch: the mask hides every key past each row's length."""

    def forward(self, q, k, v, lengths):
        positions = torch.arange(q.shape[-2], device=q.device)
        causal = positions[None, :] <= positions[:, None]
        real_key = positions[None, :] < lengths[:, None]  # (batch, key)
        mask = causal[None, None] & real_key[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _qkv(kv_heads: int) -> Callable[..., dict[str, Any]]:
    def make(module, seq, dtype, gen):
        return {"q": randn(gen, (BATCH, HEADS, seq, HEAD_DIM), dtype),
                "k": randn(gen, (BATCH, kv_heads, seq, HEAD_DIM), dtype),
                "v": randn(gen, (BATCH, kv_heads, seq, HEAD_DIM), dtype)}
    return make


def _qkv_mask(module, seq, dtype, gen):
    inputs = _qkv(HEADS)(module, seq, dtype, gen)
    # A causal mask with random holes; the diagonal stays so that no query row is fully masked.
    keep = torch.rand((BATCH, 1, seq, seq), generator=gen) < 0.7
    inputs["mask"] = torch.tril(keep | torch.eye(seq, dtype=torch.bool))
    return inputs


def _qkv_lengths(module, seq, dtype, gen):
    inputs = _qkv(HEADS)(module, seq, dtype, gen)
    inputs["lengths"] = torch.tensor([seq, seq - 3])
    return inputs


# ---------------------------------------------------------------- positions

class RotateHalfRope(nn.Module):
    """transformers' Llama rotary embedding: cos/sin from the position ids, then `apply_rotary_pos_emb`."""

    def __init__(self):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        self.rotary = LlamaRotaryEmbedding(config=_llama_config())

    def forward(self, q, k, position_ids):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        cos, sin = self.rotary(q, position_ids)
        return apply_rotary_pos_emb(q, k, cos, sin)


class ComplexRope(nn.Module):
    """Rotary embedding in the complex-multiply form (Meta's Llama code): `polar`, `view_as_complex`, multiply."""

    def __init__(self, head_dim: int = HEAD_DIM, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, q, k, positions):  # q, k: (batch, seq, heads, head_dim), as Meta's code lays them out
        wide = _wide(q.dtype)
        freqs = positions.to(wide)[:, None] * self.inv_freq.to(wide)[None, :]
        freqs_cis = torch.polar(torch.ones_like(freqs), freqs)[None, :, None, :]

        def rotate(x):
            pairs = torch.view_as_complex(x.to(wide).reshape(*x.shape[:-1], -1, 2))
            return torch.view_as_real(pairs * freqs_cis).flatten(3).to(x.dtype)

        return rotate(q), rotate(k)


class LearnedPositions(nn.Module):
    """Token embedding plus a learned position embedding (GPT-2's wte + wpe)."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, HIDDEN)
        self.wpe = nn.Embedding(MAX_POSITIONS, HIDDEN)

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        return self.wte(input_ids) + self.wpe(positions)


def _rope_heads_first(module, seq, dtype, gen):
    offsets = torch.tensor([[0], [3]])  # the second row continues after 3 earlier tokens
    return {"q": randn(gen, (BATCH, HEADS, seq, HEAD_DIM), dtype),
            "k": randn(gen, (BATCH, KV_HEADS, seq, HEAD_DIM), dtype),
            "position_ids": torch.arange(seq)[None, :] + offsets}


def _rope_seq_first(module, seq, dtype, gen):
    return {"q": randn(gen, (BATCH, seq, HEADS, HEAD_DIM), dtype),
            "k": randn(gen, (BATCH, seq, KV_HEADS, HEAD_DIM), dtype),
            "positions": torch.arange(seq)}


def _token_ids(module, seq, dtype, gen):
    return {"input_ids": torch.randint(0, VOCAB, (BATCH, seq), generator=gen)}


def _hidden(module, seq, dtype, gen):
    return {"hidden": randn(gen, (BATCH, seq, HIDDEN), dtype)}


# ---------------------------------------------------------------- norms and MLPs

def _rmsnorm() -> nn.Module:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(HIDDEN)
    nn.init.normal_(norm.weight, mean=1.0, std=0.1)  # a trained-looking scale rather than all ones
    return norm


def _swiglu() -> nn.Module:
    from transformers.models.llama.modeling_llama import LlamaMLP

    return LlamaMLP(_llama_config())


def _gelu_mlp(approximate: str) -> Callable[[], nn.Module]:
    return lambda: nn.Sequential(nn.Linear(HIDDEN, 4 * HIDDEN), nn.GELU(approximate=approximate),
                                 nn.Linear(4 * HIDDEN, HIDDEN))


def _gpt2_mlp() -> nn.Module:
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

    config = GPT2Config(n_embd=HIDDEN, activation_function="gelu_new", resid_pdrop=0.0)
    return _init_normal(GPT2MLP(4 * HIDDEN, config))


# ---------------------------------------------------------------- mixture of experts

def _router() -> nn.Module:
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    router = MixtralTopKRouter(_mixtral_config("eager"))
    nn.init.orthogonal_(router.weight)  # orthonormal expert directions: the inputs below set the scores
    return router


def _router_inputs(module, seq, dtype, gen):
    # Top-k is discontinuous at ties, and a tie broken the other way is no bug: draw each token's expert
    # scores as a permutation of levels 1.0 apart (bf16 rounding moves them by about 0.05), plus noise
    # orthogonal to every expert direction, which changes no score.
    weight = module.weight.detach()
    scores = torch.stack([torch.randperm(EXPERTS, generator=gen) for _ in range(BATCH * seq)]).float()
    noise = torch.randn((BATCH * seq, HIDDEN), generator=gen)
    noise = noise - (noise @ weight.T) @ weight
    hidden = (scores @ weight + noise).reshape(BATCH, seq, HIDDEN)
    return {"hidden": hidden.to(dtype).requires_grad_(True)}


def _mixtral_experts(experts_implementation: str) -> Callable[[], nn.Module]:
    def build():
        from transformers.models.mixtral.modeling_mixtral import MixtralExperts

        return _init_normal(MixtralExperts(_mixtral_config(experts_implementation)))
    return build


def _routed_tokens(module, seq, dtype, gen):
    tokens = BATCH * seq
    # Routing given as input (distinct experts per token) so these blocks test dispatch and combine alone.
    top_k_index = torch.rand((tokens, EXPERTS), generator=gen).argsort(dim=-1)[:, :TOP_K]
    top_k_weights = torch.softmax(torch.randn((tokens, TOP_K), generator=gen), dim=-1)
    return {"hidden": randn(gen, (tokens, HIDDEN), dtype), "top_k_index": top_k_index,
            "top_k_weights": top_k_weights.to(dtype).requires_grad_(True)}


class CapacityMoE(nn.Module):
    """Static-shape expert dispatch (GShard / Switch style), as written for compilers that need fixed shapes.

    Each expert has `capacity` slots; every (token, expert) pair is scattered into its slot of an
    (experts x capacity, hidden) buffer (pairs past capacity go to a spare row and are dropped), the
    experts run as one batched matmul, and results are gathered back, weighted and summed per token.
    """

    def __init__(self, capacity_factor: float = 1.0):
        super().__init__()
        self.capacity_factor = capacity_factor
        self.w_in = nn.Parameter(torch.empty(EXPERTS, HIDDEN, FFN))
        self.w_out = nn.Parameter(torch.empty(EXPERTS, FFN, HIDDEN))
        for weight in (self.w_in, self.w_out):
            nn.init.normal_(weight, std=weight.shape[1] ** -0.5)

    def forward(self, hidden, top_k_index, top_k_weights):
        tokens, dim = hidden.shape
        top_k = top_k_index.shape[-1]
        capacity = math.ceil(self.capacity_factor * tokens * top_k / EXPERTS)
        expert = top_k_index.reshape(-1)
        one_hot = F.one_hot(expert, EXPERTS)
        rank = ((one_hot.cumsum(dim=0) - 1) * one_hot).sum(dim=-1)  # arrival order within its expert
        kept = rank < capacity
        slot = torch.where(kept, expert * capacity + rank, EXPERTS * capacity)
        pairs = hidden.repeat_interleave(top_k, dim=0)
        buffer = hidden.new_zeros(EXPERTS * capacity + 1, dim).scatter(0, slot[:, None].expand(-1, dim), pairs)
        inner = F.silu(torch.bmm(buffer[:-1].view(EXPERTS, capacity, dim), self.w_in))
        out = torch.bmm(inner, self.w_out).reshape(EXPERTS * capacity, dim)
        out = torch.cat([out, out.new_zeros(1, dim)])  # the spare row contributes nothing
        weights = top_k_weights.reshape(-1) * kept.to(top_k_weights.dtype)
        return (out.index_select(0, slot) * weights[:, None]).view(tokens, top_k, dim).sum(dim=1)


# ---------------------------------------------------------------- embedding, loss, KV cache

class TiedEmbeddingHead(nn.Module):
    """Token embedding, a norm, and the LM head sharing the embedding matrix (tied weights)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)

    def forward(self, input_ids):
        return F.linear(self.norm(self.embed(input_ids)), self.embed.weight)


class CrossEntropy(nn.Module):
    """Token cross-entropy over (batch, seq, vocab) logits with ignored labels and label smoothing."""

    def forward(self, logits, labels):
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=0.1)


def _logits_labels(module, seq, dtype, gen):
    labels = torch.randint(0, VOCAB, (BATCH, seq), generator=gen)
    labels[torch.rand((BATCH, seq), generator=gen) < 0.25] = -100  # padding and prompt tokens
    return {"logits": randn(gen, (BATCH, seq, VOCAB), dtype, scale=2.0), "labels": labels}


class KVCacheAttention(nn.Module):
    """Append new keys and values to a static cache in place, then attend over the cache causally.

    `method` is how the append is written: `index_copy` (`index_copy_` at position ids), `slice`
    (`cache[:, :, start:end] = new`) or `scatter` (`scatter_` with expanded position ids).
    """

    def __init__(self, method: str):
        super().__init__()
        self.method = method

    def forward(self, k_cache, v_cache, q, k, v, start: int):
        new = k.shape[-2]
        positions = torch.arange(start, start + new, device=k.device)
        for cache, value in ((k_cache, k), (v_cache, v)):
            if self.method == "index_copy":
                cache.index_copy_(2, positions, value)
            elif self.method == "slice":
                cache[:, :, start:start + new] = value
            else:
                cache.scatter_(2, positions[None, None, :, None].expand_as(value), value)
        mask = torch.arange(cache.shape[-2], device=q.device)[None, :] <= positions[:, None]
        return F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask), k_cache, v_cache


def _cache_append(module, seq, dtype, gen):
    def cache():
        # Filled up to CACHE_START; the cache is state, not a leaf: its gradient is not asked for.
        filled = randn(gen, (BATCH, HEADS, CACHE_LEN, HEAD_DIM), dtype, grad=False)
        filled[:, :, CACHE_START:] = 0
        return filled

    return {"k_cache": cache(), "v_cache": cache(), "q": randn(gen, (BATCH, HEADS, seq, HEAD_DIM), dtype),
            "k": randn(gen, (BATCH, HEADS, seq, HEAD_DIM), dtype),
            "v": randn(gen, (BATCH, HEADS, seq, HEAD_DIM), dtype), "start": CACHE_START}


# ---------------------------------------------------------------- the catalog of blocks

@dataclass(frozen=True)
class Block:
    """A block: how to build its module, and its inputs for one sequence length (by argument name)."""

    build: Callable[[], nn.Module]
    inputs: Callable[[nn.Module, int, torch.dtype, torch.Generator], dict[str, Any]]


BLOCKS: dict[str, Block] = {
    "attention.sdpa_causal": Block(lambda: Sdpa(causal=True), _qkv(HEADS)),
    "attention.sdpa_mask": Block(lambda: Sdpa(causal=False), _qkv_mask),
    "attention.sdpa_gqa": Block(lambda: Sdpa(causal=True, gqa=True), _qkv(KV_HEADS)),
    "attention.written_out": Block(WrittenOutAttention, _qkv(HEADS)),
    "attention.sliding_window": Block(lambda: WrittenOutAttention(window=SLIDING_WINDOW), _qkv(HEADS)),
    "attention.padding_mask": Block(PaddedAttention, _qkv_lengths),
    "rope.rotate_half": Block(RotateHalfRope, _rope_heads_first),
    "rope.complex": Block(ComplexRope, _rope_seq_first),
    "position.learned": Block(LearnedPositions, _token_ids),
    "norm.rmsnorm": Block(_rmsnorm, _hidden),
    "norm.layernorm": Block(lambda: nn.LayerNorm(HIDDEN), _hidden),
    "mlp.swiglu": Block(_swiglu, _hidden),
    "mlp.gelu": Block(_gelu_mlp("none"), _hidden),
    "mlp.gelu_tanh": Block(_gelu_mlp("tanh"), _hidden),
    "mlp.gpt2_gelu_new": Block(_gpt2_mlp, _hidden),
    "moe.router_topk": Block(_router, _router_inputs),
    "moe.experts_index_add": Block(_mixtral_experts("eager"), _routed_tokens),
    "moe.experts_batched_mm": Block(_mixtral_experts("batched_mm"), _routed_tokens),
    "moe.capacity_scatter": Block(CapacityMoE, _routed_tokens),
    "embedding.tied_lm_head": Block(TiedEmbeddingHead, _token_ids),
    "loss.cross_entropy": Block(CrossEntropy, _logits_labels),
    "kv_cache.index_copy": Block(lambda: KVCacheAttention("index_copy"), _cache_append),
    "kv_cache.slice_assign": Block(lambda: KVCacheAttention("slice"), _cache_append),
    "kv_cache.scatter": Block(lambda: KVCacheAttention("scatter"), _cache_append),
}


class BlockSource:
    """Cases from every block: block x float32/bfloat16 x forward/backward."""

    kind = "blocks"

    def cases(self) -> Iterable[Case]:
        for name in BLOCKS:
            for dtype in DTYPES:
                for direction in DIRECTIONS:
                    yield Case(self.kind, name, dtype, direction)

    def samples(self, case: Case, limit: int | None) -> list[Sample]:
        block = BLOCKS[case.name]
        module = seeded(block.build)
        samples = []
        for seq in SEQ_LENS[:limit]:
            inputs = block.inputs(module, seq, case.torch_dtype, generator(seq))
            tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            scalars = " ".join(f"{k}={v}" for k, v in inputs.items() if k not in tensors)
            samples.append(module_sample(module, case.torch_dtype, case.direction, tuple(inputs.values()),
                                         label=f"seq {seq}: {describe(**tensors)} {scalars}".strip()))
        return samples

    def shape_only_reason(self, case: Case) -> str | None:
        return None

    def facts(self) -> dict[str, Any]:
        return library_facts()
