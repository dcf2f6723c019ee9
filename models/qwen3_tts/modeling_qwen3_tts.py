"""The Qwen3-TTS talker (codebook-0 language model) and its code predictor (codebooks 1-15).

Module and attribute names follow the checkpoint keys (`talker.model.layers.0.self_attn.q_proj`,
`talker.code_predictor.lm_head.3`, ...), so weights load by name. Both stacks are Qwen3 decoders:
pre-norm layers, grouped-query attention with per-head RMSNorm on queries and keys before a
rotate-half RoPE, SwiGLU MLPs, no biases. The talker's "multimodal" RoPE collapses to plain 1-D
RoPE because the released code always feeds three identical position streams.

The layers work on a flat batch of tokens, (tokens, hidden), whatever utterance and position each
token belongs to: the caller passes each token's RoPE rows and an `attention(layer, q, k, v)`
callable that stores the keys and values where that token's utterance keeps them and attends
(models/engine/model_runner.py). So one matrix product per weight serves every token of a step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import RMSNorm, SwiGLUMLP, apply_rotary, fuse_linears, rms_norm

from .configuration_qwen3_tts import Qwen3TTSDecoderConfig, Qwen3TTSTalkerConfig

# attention(layer, q (tokens, heads, head_dim), k, v (tokens, kv_heads, head_dim)) -> (tokens, heads, head_dim)
Attention = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Qwen3TTSAttention(nn.Module):
    def __init__(self, config: Qwen3TTSDecoderConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        # Set by fuse(), which forward() needs: one projection for q, k and v, and the q and k
        # norm weights side by side per head, so that q and k heads are normalised and rotated
        # together (the same arithmetic per head, half the kernel launches).
        self.qkv_proj: nn.Linear | None = None
        self.register_buffer("qk_norm_weight", None, persistent=False)
        self.fused_cpu = False  # set by models.cpu_kernels.use_fused_ops(): norm and RoPE as CPU operators

    def fuse(self) -> None:
        self.qkv_proj = fuse_linears(self.q_proj, self.k_proj, self.v_proj)
        del self.q_proj, self.k_proj, self.v_proj
        weights = (self.q_norm.weight.expand(self.num_heads, -1), self.k_norm.weight.expand(self.num_kv_heads, -1))
        self.qk_norm_weight = torch.cat(weights).detach()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention: Attention) -> torch.Tensor:
        """x (tokens, hidden); cos/sin (tokens, head_dim)."""
        n = x.shape[0]
        heads, kv_heads = self.num_heads, self.num_kv_heads
        qk, v = self.qkv_proj(x).split([(heads + kv_heads) * self.head_dim, kv_heads * self.head_dim], dim=-1)
        qk = rms_norm(
            qk.reshape(n, heads + kv_heads, self.head_dim), self.qk_norm_weight, self.q_norm.eps, self.fused_cpu
        )
        q, k = apply_rotary(qk, cos, sin, self.fused_cpu).split([heads, kv_heads], dim=1)
        out = attention(self.layer_idx, q, k, v.reshape(n, kv_heads, self.head_dim))
        return self.o_proj(out.reshape(n, heads * self.head_dim))


class Qwen3TTSDecoderLayer(nn.Module):
    def __init__(self, config: Qwen3TTSDecoderConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Qwen3TTSAttention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLUMLP(config.hidden_size, config.intermediate_size)

    def forward(self, x, cos, sin, attention: Attention):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attention)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3TTSDecoderStack(nn.Module):
    """Layers and final norm of a Qwen3 decoder fed with input embeddings."""

    def __init__(self, config: Qwen3TTSDecoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(Qwen3TTSDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention: Attention) -> torch.Tensor:
        """x (tokens, hidden) -> final-norm hidden states (tokens, hidden)."""
        for layer in self.layers:
            x = layer(x, cos, sin, attention)
        return self.norm(x)

    def fuse(self) -> None:
        for layer in self.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()


class Qwen3TTSTalkerModel(Qwen3TTSDecoderStack):
    def __init__(self, config: Qwen3TTSTalkerConfig):
        super().__init__(config)
        self.text_embedding = nn.Embedding(config.text_vocab_size, config.text_hidden_size)
        self.codec_embedding = nn.Embedding(config.vocab_size, config.hidden_size)


class Qwen3TTSTextProjection(nn.Module):
    """Maps text-embedding width to talker width: fc1 -> SiLU -> fc2, with biases."""

    def __init__(self, text_hidden: int, hidden: int):
        super().__init__()
        self.linear_fc1 = nn.Linear(text_hidden, text_hidden, bias=True)
        self.linear_fc2 = nn.Linear(text_hidden, hidden, bias=True)

    def forward(self, x):
        return self.linear_fc2(F.silu(self.linear_fc1(x)))


class Qwen3TTSCodePredictorModel(Qwen3TTSDecoderStack):
    def __init__(self, config: Qwen3TTSDecoderConfig, talker_hidden: int, num_code_groups: int):
        super().__init__(config)
        # Table j embeds codebook j+1, in talker width (projected afterwards).
        self.codec_embedding = nn.ModuleList(
            nn.Embedding(config.vocab_size, talker_hidden) for _ in range(num_code_groups - 1)
        )


class Qwen3TTSCodePredictor(nn.Module):
    """Predicts codebooks 1..15 of a frame from the talker state that produced codebook 0."""

    def __init__(self, config: Qwen3TTSDecoderConfig, talker_hidden: int, num_code_groups: int):
        super().__init__()
        self.config = config
        self.model = Qwen3TTSCodePredictorModel(config, talker_hidden, num_code_groups)
        self.lm_head = nn.ModuleList(
            nn.Linear(config.hidden_size, config.vocab_size, bias=False) for _ in range(num_code_groups - 1)
        )
        # The 1.7B predictor is narrower than its talker; the 0.6B one has no projection tensor.
        if config.hidden_size != talker_hidden:
            self.small_to_mtp_projection = nn.Linear(talker_hidden, config.hidden_size, bias=True)
        else:
            self.small_to_mtp_projection = nn.Identity()

    def forward(self, inputs_embeds, cos, sin, attention: Attention) -> torch.Tensor:
        """Talker-width inputs (tokens, talker_hidden) -> final-norm hidden states (tokens, hidden)."""
        return self.model(self.small_to_mtp_projection(inputs_embeds), cos, sin, attention)


class Qwen3TTSTalker(nn.Module):
    def __init__(self, config: Qwen3TTSTalkerConfig):
        super().__init__()
        self.config = config
        self.model = Qwen3TTSTalkerModel(config)
        self.text_projection = Qwen3TTSTextProjection(config.text_hidden_size, config.hidden_size)
        self.codec_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.code_predictor = Qwen3TTSCodePredictor(config.code_predictor, config.hidden_size, config.num_code_groups)
        # Row offsets of each codebook's table in frame_embeddings (fuse()).
        self.register_buffer("frame_offsets", self._frame_offsets(), persistent=False)
        self.frame_embeddings: torch.Tensor | None = None

    def _frame_offsets(self) -> torch.Tensor:
        sizes = [self.config.vocab_size] + [self.config.code_predictor.vocab_size] * (self.config.num_code_groups - 1)
        return torch.tensor([0, *sizes[:-1]]).cumsum(0)

    def fuse(self) -> None:
        """Merge q/k/v and gate/up projections, and put the 16 codebook tables of a frame into one
        (the embedding modules become views of it), once the weights are loaded."""
        self.model.fuse()
        self.code_predictor.model.fuse()
        tables = [self.model.codec_embedding, *self.code_predictor.model.codec_embedding]
        self.frame_embeddings = torch.cat([t.weight.detach() for t in tables])
        for table, start in zip(tables, self.frame_offsets.tolist()):
            table.weight = nn.Parameter(
                self.frame_embeddings[start : start + table.num_embeddings], requires_grad=False
            )

    def embed_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Text-track vectors T(x) for token ids of any shape."""
        return self.text_projection(self.model.text_embedding(token_ids))

    def embed_codec(self, codec_ids: torch.Tensor) -> torch.Tensor:
        """Codec-track vectors C(c) for codebook-0 / control ids."""
        return self.model.codec_embedding(codec_ids)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Codec-track input of whole frames (..., 16): the sum of the 16 codebook embeddings.

        Gathered into (..., 16, hidden), then summed in one reduction (not accumulated one by
        one), like the released model, so that results match bit for bit."""
        if self.frame_embeddings is not None:
            return self.frame_embeddings[frames + self.frame_offsets].sum(-2)
        parts = [self.model.codec_embedding(frames[..., 0])]
        parts += [emb(frames[..., j + 1]) for j, emb in enumerate(self.code_predictor.model.codec_embedding)]
        return torch.stack(parts, dim=-2).sum(-2)
