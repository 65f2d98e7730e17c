"""Real model families as cases: one layer, and a tiny whole model, built from `transformers` configs.

Random weights from a fixed seed, no download; eager attention, dropout 0, no KV cache, so that every
run computes the same thing. For each family, two subjects:

- `<family>.layer`: its first decoder (or encoder) layer, fed as its model feeds it (the model's own
  mask and rotary helpers), forward and backward;
- `<family>.model`: the whole tiny model, forward (logits), backward (gradients of every parameter
  from the logits) and `train`: loss, gradients and one AdamW step, whose loss and updated
  parameters are compared like any output.

Case ids: `models/<family>.<layer|model>/<dtype>/<direction>`, e.g. `models/mixtral.model/bfloat16/train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from opsuite.catalog import Case, Sample
from opsuite.catalog.modules import (buffers, call, describe, generator, library_facts, module_sample, parameters,
                                     randn, seeded)

DTYPES = ("float32", "bfloat16")
LAYER_DIRECTIONS = ("forward", "backward")
MODEL_DIRECTIONS = ("forward", "backward", "train")
SEQ_LENS = (8, 12)  # two samples: a second sequence length makes a compiling backend recompile
BATCH = 2

# A tiny config shared by every family: 2 layers, hidden 64 in 4 heads of 16 (2 key/value heads where
# the family has grouped-query attention), feed-forward 128, vocabulary 128.
LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB, MAX_POSITIONS = 2, 64, 4, 2, 16, 128, 128, 64
MASK_TOKEN = 3  # BERT's masked-LM input token

# One AdamW step from a warm state (step 10), so the update is a smooth function of the gradient
# (from a zero state Adam's first step is about sign(gradient), which flips for near-zero gradients).
ADAMW = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "step": 10}


def _llama_like(config_class: str, **extra: Any) -> Callable[[], Any]:
    def config():
        import transformers

        return getattr(transformers, config_class)(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
            max_position_embeddings=MAX_POSITIONS, attention_dropout=0.0, **extra)
    return config


def _gpt2_config() -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=MAX_POSITIONS,
                      n_inner=FFN, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)


def _bert_config() -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def _t5_config() -> Any:
    from transformers import T5Config

    return T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=HEAD_DIM, d_ff=FFN, num_layers=LAYERS, num_heads=HEADS,
                    dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0)


# ---------------------------------------------------------------- layers, fed as their models feed them

class RopeDecoderLayer(nn.Module):
    """A Llama-style decoder layer (Llama, Qwen3, Mistral, Mixtral) with the model's causal (or
    sliding-window) mask and rotary position embeddings."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.config = model.config
        self.layer = model.model.layers[0]
        self.rotary_emb = model.model.rotary_emb

    def forward(self, hidden):
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
        sliding = getattr(self.config, "sliding_window", None)
        make_mask = create_sliding_window_causal_mask if sliding else create_causal_mask
        mask = _causal_mask(make_mask, self.config, hidden, position_ids)
        return self.layer(hidden, attention_mask=mask, position_ids=position_ids,
                          position_embeddings=self.rotary_emb(hidden, position_ids))


def _causal_mask(make_mask: Callable[..., Any], config: Any, hidden: torch.Tensor,
                 position_ids: torch.Tensor) -> Any:
    """The model's mask for `hidden` without padding or cache, from a transformers mask helper.

    The cache goes by position: transformers renamed that parameter from `past_key_values` (5.17) to
    `cache` (5.24), and a keyword ties opsuite to one side of the rename.
    """
    return make_mask(config, hidden, None, None, position_ids=position_ids)


class Gpt2Layer(nn.Module):
    """GPT-2's first block with the model's causal mask."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.config = model.config
        self.layer = model.transformer.h[0]

    def forward(self, hidden):
        from transformers.masking_utils import create_causal_mask

        position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
        mask = _causal_mask(create_causal_mask, self.config, hidden, position_ids)
        return self.layer(hidden, attention_mask=mask)


class BertLayer(nn.Module):
    """BERT's first encoder layer: bidirectional, no padding, so no mask."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.layer = model.bert.encoder.layer[0]

    def forward(self, hidden):
        return self.layer(hidden)


class T5Layer(nn.Module):
    """T5's first encoder block, which computes the relative position bias the later blocks reuse."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.layer = model.encoder.block[0]

    def forward(self, hidden):
        return self.layer(hidden)[0]


# ---------------------------------------------------------------- inputs of whole models

def _causal_lm_batch(seq: int, gen: torch.Generator, train: bool) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (BATCH, seq), generator=gen)
    return {"input_ids": ids, "labels": ids.clone()} if train else {"input_ids": ids}


def _masked_lm_batch(seq: int, gen: torch.Generator, train: bool) -> dict[str, torch.Tensor]:
    ids = torch.randint(MASK_TOKEN + 1, VOCAB, (BATCH, seq), generator=gen)
    masked = torch.rand((BATCH, seq), generator=gen) < 0.25
    masked[:, 0] = True  # at least one predicted token per row
    batch = {"input_ids": ids.masked_fill(masked, MASK_TOKEN)}
    if train:
        batch["labels"] = ids.masked_fill(~masked, -100)
    return batch


def _seq2seq_batch(seq: int, gen: torch.Generator, train: bool) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (BATCH, seq), generator=gen)
    target = torch.randint(1, VOCAB, (BATCH, seq // 2), generator=gen)
    if train:  # the model shifts the labels right into decoder inputs itself
        return {"input_ids": ids, "labels": target}
    decoder_ids = torch.cat([torch.zeros((BATCH, 1), dtype=torch.long), target[:, :-1]], dim=1)
    return {"input_ids": ids, "decoder_input_ids": decoder_ids}


@dataclass(frozen=True)
class Family:
    """A model family: its tiny config, its model class, how to wrap its first layer, its inputs."""

    config: Callable[[], Any]
    model_class: str
    layer: Callable[[nn.Module], nn.Module]
    batch: Callable[[int, torch.Generator, bool], dict[str, torch.Tensor]]


FAMILIES: dict[str, Family] = {
    "llama": Family(_llama_like("LlamaConfig"), "LlamaForCausalLM", RopeDecoderLayer, _causal_lm_batch),
    "qwen3": Family(_llama_like("Qwen3Config"), "Qwen3ForCausalLM", RopeDecoderLayer, _causal_lm_batch),
    "mistral": Family(_llama_like("MistralConfig", sliding_window=4), "MistralForCausalLM", RopeDecoderLayer,
                      _causal_lm_batch),
    # The experts as Mixtral's reference code runs them (a loop over the experts hit, index_add).
    "mixtral": Family(_llama_like("MixtralConfig", num_local_experts=4, num_experts_per_tok=2, sliding_window=None,
                                  router_jitter_noise=0.0, experts_implementation="eager"),
                      "MixtralForCausalLM", RopeDecoderLayer, _causal_lm_batch),
    "gpt2": Family(_gpt2_config, "GPT2LMHeadModel", Gpt2Layer, _causal_lm_batch),
    "bert": Family(_bert_config, "BertForMaskedLM", BertLayer, _masked_lm_batch),
    "t5": Family(_t5_config, "T5ForConditionalGeneration", T5Layer, _seq2seq_batch),
}


def build_model(family: str) -> nn.Module:
    """The family's tiny model with random weights from the fixed seed, eager attention, no KV cache."""
    import transformers

    spec = FAMILIES[family]
    config = spec.config()
    config._attn_implementation = "eager"
    config.use_cache = False
    return seeded(lambda: getattr(transformers, spec.model_class)(config))


# ---------------------------------------------------------------- the train step

def adamw_step(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
               exp_avg: dict[str, torch.Tensor], exp_avg_sq: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One AdamW update (decoupled weight decay, bias-corrected moments), written with plain tensor ops."""
    lr, beta1, beta2, eps = ADAMW["lr"], ADAMW["beta1"], ADAMW["beta2"], ADAMW["eps"]
    step = ADAMW["step"]
    correction1, correction2 = 1 - beta1 ** step, 1 - beta2 ** step
    updated = {}
    for name, param in params.items():
        grad = grads[name]
        moment = exp_avg[name] * beta1 + grad * (1 - beta1)
        second = exp_avg_sq[name] * beta2 + grad * grad * (1 - beta2)
        update = (moment / correction1) / ((second / correction2).sqrt() + eps)
        updated[name] = param * (1 - lr * ADAMW["weight_decay"]) - lr * update
    return updated


class TrainStep:
    """Forward with labels, the loss's gradients of every parameter, one AdamW step: (loss, new parameters).

    The loss is returned in the parameters' dtype: models compute it in float32 from logits in their
    own dtype, so a bfloat16 model's loss is only as precise as bfloat16, and is judged as such.
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, params: dict, bufs: dict, exp_avg: dict, exp_avg_sq: dict, **batch: Any):
        loss = call(self.module, params, bufs, **batch).loss
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            updated = adamw_step(params, dict(zip(params, grads)), exp_avg, exp_avg_sq)
        return loss.detach().to(next(iter(params.values())).dtype), updated

    def __repr__(self) -> str:
        return f"train_step({type(self.module).__name__})"


def _optimizer_state(params: dict[str, torch.Tensor], gen: torch.Generator) -> tuple[dict, dict]:
    """A warm AdamW state: first moments about gradient-sized, second moments positive."""
    exp_avg = {n: (torch.randn(p.shape, generator=gen) * 3e-3).to(p.dtype) for n, p in params.items()}
    exp_avg_sq = {n: ((torch.randn(p.shape, generator=gen) * 5e-3) ** 2 + 1e-6).to(p.dtype)
                  for n, p in params.items()}
    return exp_avg, exp_avg_sq


def train_sample(model: nn.Module, dtype: torch.dtype, batch: dict[str, torch.Tensor], gen: torch.Generator,
                 label: str) -> Sample:
    """A `train` sample of a model that returns its loss given labels: TrainStep from a warm AdamW state."""
    params = parameters(model, dtype, requires_grad=True)
    return Sample(fn=TrainStep(model), args=(params, buffers(model), *_optimizer_state(params, gen)),
                  kwargs=batch, label=label)


def _logits(out: Any) -> torch.Tensor:
    return out.logits


# ---------------------------------------------------------------- the source

class ModelSource:
    """Cases from every family: layer (forward, backward) and model (forward, backward, train) x dtype."""

    kind = "models"

    def cases(self) -> Iterable[Case]:
        for family in FAMILIES:
            for subject, directions in (("layer", LAYER_DIRECTIONS), ("model", MODEL_DIRECTIONS)):
                for dtype in DTYPES:
                    for direction in directions:
                        yield Case(self.kind, f"{family}.{subject}", dtype, direction)

    def samples(self, case: Case, limit: int | None) -> list[Sample]:
        family, subject = case.name.split(".")
        model = build_model(family)
        layer = FAMILIES[family].layer(model)
        dtype = case.torch_dtype
        samples = []
        for seq in SEQ_LENS[:limit]:
            gen = generator(seq)
            if subject == "layer":
                hidden = randn(gen, (BATCH, seq, HIDDEN), dtype)
                samples.append(module_sample(layer, dtype, case.direction, (hidden,),
                                             label=f"seq {seq}: {describe(hidden=hidden)}"))
                continue
            batch = FAMILIES[family].batch(seq, gen, case.direction == "train")
            label = f"seq {seq}: {type(model).__name__} {describe(**batch)}"
            if case.direction == "train":
                samples.append(train_sample(model, dtype, batch, gen, label))
            else:
                samples.append(module_sample(model, dtype, case.direction, (), kwargs=batch, label=label,
                                             output_process=_logits))
        return samples

    def shape_only_reason(self, case: Case) -> str | None:
        return None

    def facts(self) -> dict[str, Any]:
        return library_facts()
