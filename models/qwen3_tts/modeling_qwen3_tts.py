"""The Qwen3-TTS talker (codebook-0 language model) and its code predictor (codebooks 1-15).

Module and attribute names follow the checkpoint keys (`talker.model.layers.0.self_attn.q_proj`,
`talker.code_predictor.lm_head.3`, ...), so weights load by name. Both stacks are Qwen3 decoders:
pre-norm layers, grouped-query attention with per-head RMSNorm on queries and keys before a
rotate-half RoPE, SwiGLU MLPs, no biases. The talker's "multimodal" RoPE collapses to plain 1-D
RoPE because the released code always feeds three identical position streams.

Attention is delegated to a cache object (see kv_cache.py) so that the same layers serve batches
of sessions with different history lengths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.engine.kv_cache import LockstepCache, SequenceCache

from .configuration_qwen3_tts import DecoderConfig, TalkerConfig


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        # Cast back before the weight multiply, as the released models do.
        return self.weight * x.to(dtype)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._tables: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.autocast("cpu", enabled=False)
    def _table(self, length: int, dtype: torch.dtype):
        """cos/sin rows for positions 0..length-1 (at least), computed in float32 then cast, and
        kept: a decode step then costs an index instead of eight elementwise ops."""
        cached = self._tables.get(dtype)
        if cached is None or cached[0].shape[0] < length:
            size = max(64, 1 << (length - 1).bit_length())
            freqs = torch.arange(size, device=self.inv_freq.device).float()[:, None] * self.inv_freq.float()
            emb = torch.cat((freqs, freqs), dim=-1)
            cached = self._tables[dtype] = (emb.cos().to(dtype), emb.sin().to(dtype))
        return cached

    def forward(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos/sin of shape (B, T, head_dim) for integer `positions` (B, T)."""
        cos, sin = self._table(int(positions.max()) + 1, dtype)
        return cos[positions], sin[positions]


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x, cos, sin):
    """x: (B, heads, T, head_dim); cos/sin: (B, T, head_dim)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
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

    def forward(self, x, cos, sin, cache, layer: int):
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = cache.attend(layer, q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size)

    def forward(self, x, cos, sin, cache, layer: int):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderStack(nn.Module):
    """Layers + final norm + RoPE of a Qwen3 decoder fed with input embeddings."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)

    def forward(self, x, positions, cache):
        """x: (B, T, hidden); positions: (B, T). Returns the final-norm hidden states."""
        cos, sin = self.rotary_emb(positions, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)
        cache.advance(x.shape[1])
        return self.norm(x)


class TalkerModel(DecoderStack):
    def __init__(self, config: TalkerConfig):
        super().__init__(config)
        self.text_embedding = nn.Embedding(config.text_vocab_size, config.text_hidden_size)
        self.codec_embedding = nn.Embedding(config.vocab_size, config.hidden_size)


class TextProjection(nn.Module):
    """Maps text-embedding width to talker width: fc1 -> SiLU -> fc2, with biases."""

    def __init__(self, text_hidden: int, hidden: int):
        super().__init__()
        self.linear_fc1 = nn.Linear(text_hidden, text_hidden, bias=True)
        self.linear_fc2 = nn.Linear(text_hidden, hidden, bias=True)

    def forward(self, x):
        return self.linear_fc2(F.silu(self.linear_fc1(x)))


class CodePredictorModel(DecoderStack):
    def __init__(self, config: DecoderConfig, talker_hidden: int, num_code_groups: int):
        super().__init__(config)
        # Table j embeds codebook j+1, in talker width (projected afterwards).
        self.codec_embedding = nn.ModuleList(
            nn.Embedding(config.vocab_size, talker_hidden) for _ in range(num_code_groups - 1)
        )


class CodePredictor(nn.Module):
    """Predicts codebooks 1..15 of a frame from the talker state that produced codebook 0."""

    def __init__(self, config: DecoderConfig, talker_hidden: int, num_code_groups: int):
        super().__init__()
        self.config = config
        self.model = CodePredictorModel(config, talker_hidden, num_code_groups)
        self.lm_head = nn.ModuleList(
            nn.Linear(config.hidden_size, config.vocab_size, bias=False) for _ in range(num_code_groups - 1)
        )
        # The 1.7B predictor is narrower than its talker; the 0.6B one has no projection tensor.
        if config.hidden_size != talker_hidden:
            self.small_to_mtp_projection = nn.Linear(talker_hidden, config.hidden_size, bias=True)
        else:
            self.small_to_mtp_projection = nn.Identity()

    def new_cache(self, batch: int, *, dtype, device):
        return LockstepCache(
            len(self.model.layers),
            batch,
            self.config.num_key_value_heads,
            self.config.head_dim,
            len(self.lm_head) + 1,
            dtype=dtype,
            device=device,
        )

    def forward_step(self, inputs_embeds, cache):
        """Run the inputs (B, T, talker_hidden) at the cache's next positions; last hidden (B, hidden)."""
        b, t, _ = inputs_embeds.shape
        positions = torch.arange(cache.length, cache.length + t, device=inputs_embeds.device).expand(b, t)
        hidden = self.model(self.small_to_mtp_projection(inputs_embeds), positions, cache)
        return hidden[:, -1]


class Talker(nn.Module):
    def __init__(self, config: TalkerConfig):
        super().__init__()
        self.config = config
        self.model = TalkerModel(config)
        self.text_projection = TextProjection(config.text_hidden_size, config.hidden_size)
        self.codec_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.code_predictor = CodePredictor(config.code_predictor, config.hidden_size, config.num_code_groups)

    def embed_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Text-track vectors T(x) for token ids of any shape."""
        return self.text_projection(self.model.text_embedding(token_ids))

    def embed_codec(self, codec_ids: torch.Tensor) -> torch.Tensor:
        """Codec-track vectors C(c) for codebook-0 / control ids."""
        return self.model.codec_embedding(codec_ids)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Codec-track input of whole frames (..., 16): the sum of the 16 codebook embeddings.

        Stacked then summed in one reduction (not accumulated one by one), like the released model,
        so that results match bit for bit.
        """
        parts = [self.model.codec_embedding(frames[..., 0])]
        parts += [emb(frames[..., j + 1]) for j, emb in enumerate(self.code_predictor.model.codec_embedding)]
        return torch.stack(parts, dim=-2).sum(-2)

    def new_cache(self, *, dtype, device):
        c = self.config
        return SequenceCache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, dtype=dtype, device=device)

    def forward_step(self, inputs_embeds, positions, cache):
        """Run (B, T, hidden) inputs at `positions` (B, T); final-norm hidden states (B, T, hidden)."""
        return self.model(inputs_embeds, positions, cache)
