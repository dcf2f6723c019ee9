"""PyTorch modules of the Qwen3-TTS 12 Hz speech tokenizer (codec).

Decoder (codes -> 24 kHz waveform), written here; module attribute names follow the checkpoint
keys under `decoder.` so the weights load by name:

    quantizer        split RVQ lookup: 1 semantic codebook (`rvq_first`) + 15 acoustic (`rvq_rest`)
    pre_conv         causal conv codebook_dim -> latent_dim, k=3
    pre_transformer  8 pre-norm layers, sliding-window (72 frames, current included) causal attention
                     with RoPE, SwiGLU MLP, layer scales; input/output projections and a final RMSNorm
    upsample.{0,1}   causal transposed conv (x2) + ConvNeXt block
    decoder.0        causal conv latent_dim -> decoder_dim, k=7
    decoder.1..4     SnakeBeta + causal transposed conv (x8, x5, x4, x3) + 3 residual units (dil. 1, 3, 9)
    decoder.5, .6    SnakeBeta + causal conv -> 1 channel, then clamp to [-1, 1]

Every stage is causal, so the decoder streams exactly: `Qwen3TTSTokenizerDecoder.forward(codes, state)` decodes
the next frames of a stream given a `DecoderState` that carries, per stream,

    * the attention keys/values of the last `sliding_window - 1` frames of every layer,
    * the last (k - 1) * dilation input samples of every causal conv with k > 1,
    * the (k - stride) output samples of every overlapping transposed conv that the next frames
      still add to (the "overlap tail"; the full-sequence decode trims exactly these on the right),
    * the absolute frame position (for RoPE).

Decoding a sequence in one call or in chunks of any size through one state gives the same samples
(up to float rounding), and the samples of a frame are final as soon as that frame is pushed: no
stage looks ahead. With `state=None` the call is a fresh full-sequence decode.

Encoder (audio -> codes): transformers' `MimiModel` with its decoder half dropped; see
`Qwen3TTSTokenizerEncoder`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import load_module_weights
from models.layers import RMSNorm, SwiGLUMLP, rotate_half

from .configuration_tokenizer_12hz import Qwen3TTSTokenizerConfig, Qwen3TTSTokenizerDecoderConfig

# --------------------------------------------------------------------------------------------------
# Streaming state
# --------------------------------------------------------------------------------------------------


class DecoderState:
    """The streaming state of a batch of decoder rows, in buffers of fixed size.

    `slots[i]` belongs to the stateful module whose `state_slot` is i: a conv history
    (B, C_in, left_pad), a transposed-conv tail (B, C_out, overlap), or a layer's (keys, values),
    each (B, kv_heads, sliding_window - 1, head_dim) with the last frames right-aligned. A decoder
    call reads and overwrites them in place; their shapes never change. Zeros are exactly the zero
    left padding of a full-sequence decode, so a new row starts from zeros; cached frames from
    before a row's start are masked by its position.

    `positions` (B,) int64, on the model's device: the frames each row has decoded (RoPE positions
    and the attention validity). `max_position` is a host-side bound on them that sizes the RoPE
    table without reading the device.

    A `DecoderState` of many rows also serves as the resident store of many streams (one row
    each): `select` gathers a batch of rows, the decoder advances it, and `assign` writes it back.
    """

    __slots__ = ("slots", "positions", "max_position")

    def __init__(self, slots: list, positions: torch.Tensor, max_position: int = 0):
        self.slots = slots
        self.positions = positions
        self.max_position = max_position

    @property
    def batch(self) -> int:
        return self.positions.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        return [t for item in self.slots for t in (item if isinstance(item, tuple) else (item,))]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def _map(self, fn) -> DecoderState:
        slots = [tuple(fn(t) for t in item) if isinstance(item, tuple) else fn(item) for item in self.slots]
        return DecoderState(slots, fn(self.positions), self.max_position)

    def select(self, rows: torch.Tensor, max_position: int) -> DecoderState:
        """A new state holding copies of `rows` (a device index tensor)."""
        state = self._map(lambda t: t.index_select(0, rows))
        state.max_position = max_position
        return state

    def assign(self, rows: torch.Tensor, other: DecoderState) -> None:
        """Write `other`'s rows back to `rows` (the inverse of `select`)."""
        for mine, theirs in zip(self.tensors() + [self.positions], other.tensors() + [other.positions]):
            mine.index_copy_(0, rows, theirs)

    def reset(self, rows: torch.Tensor) -> None:
        """Make `rows` fresh: zero state at position 0."""
        for t in self.tensors() + [self.positions]:
            t.index_fill_(0, rows, 0)

    def grown(self, batch: int) -> DecoderState:
        """A copy with `batch` rows: these rows, then fresh ones."""

        def grow(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros((batch, *t.shape[1:]))
            out[: t.shape[0]] = t
            return out

        return self._map(grow)


# --------------------------------------------------------------------------------------------------
# Convolutions and activations
# --------------------------------------------------------------------------------------------------


class Qwen3TTSTokenizerCausalConv1d(nn.Module):
    """Stride-1 causal conv: left zero padding of (k - 1) * dilation + 1 - stride, no right padding.

    (The reference's right "extra padding" is zero for every stride-1 conv, and the decoder has no
    other kind.) In a stream the left padding is replaced by the previous input samples.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups)
        self.left_pad = (kernel_size - 1) * dilation  # effective kernel - stride, stride 1
        self.state_slot: int | None = None

    @property
    def stateful(self) -> bool:
        return self.left_pad > 0

    def empty_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(batch, self.conv.in_channels, self.left_pad)

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        if self.left_pad == 0:
            return self.conv(x)
        if state is None:
            return self.conv(F.pad(x, (self.left_pad, 0)))
        history = state.slots[self.state_slot]
        x = torch.cat([history, x], dim=-1)
        history.copy_(x[..., x.shape[-1] - self.left_pad :])
        return self.conv(x)


class Qwen3TTSTokenizerCausalTransposedConv1d(nn.Module):
    """ConvTranspose1d(k, stride) whose last k - stride output samples are trimmed (right only).

    The output for input frames [0, n) is then n * stride samples, and no later input frame adds
    to them (frame i writes to [i * stride, i * stride + k)), so they are final. In a stream the
    trimmed samples (the partial sums frame n - 1 leaves for positions >= n * stride) are kept and
    added to the start of the next chunk's output.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        self.stride = stride
        self.overlap = kernel_size - stride
        self.state_slot: int | None = None

    @property
    def stateful(self) -> bool:
        return self.overlap > 0

    def empty_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(batch, self.conv.out_channels, self.overlap)

    def _overlapping_parts(self, x: torch.Tensor) -> torch.Tensor:
        """conv_transpose1d(x) without bias and untrimmed: (B, C_out, L * stride + overlap).

        For k a multiple of the stride (every transposed conv here) it is one matmul giving each
        input sample's k outputs, then an overlap-add of the k / stride shifted blocks; PyTorch's
        CPU ConvTranspose1d takes a slow path for these shapes (4x slower at 16 input samples).
        """
        k, s = self.conv.kernel_size[0], self.stride
        if k % s:
            return F.conv_transpose1d(x, self.conv.weight, None, stride=s)
        batch, c_in, length = x.shape
        c_out, m = self.conv.out_channels, k // s
        weight = self.conv.weight.reshape(c_in, c_out * k).t()  # (C_out * k, C_in)
        z = torch.matmul(weight, x).view(batch, c_out, m, s, length)
        if m == 1:
            return z[:, :, 0].transpose(-1, -2).reshape(batch, c_out, length * s)
        y = x.new_zeros(batch, c_out, length + m - 1, s)
        for j in range(m):
            y[:, :, j : j + length] += z[:, :, j].transpose(-1, -2)
        return y.view(batch, c_out, (length + m - 1) * s)

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        y = self._overlapping_parts(x)
        keep = x.shape[-1] * self.stride
        if self.overlap > 0 and state is not None:
            tail = state.slots[self.state_slot]
            y[..., : self.overlap] += tail
            tail.copy_(y[..., keep:])
        y = y[..., :keep]
        if self.conv.bias is not None:
            y = y + self.conv.bias[:, None]
        return y


class Qwen3TTSTokenizerSnakeBeta(nn.Module):
    """x + 1 / (exp(beta) + 1e-9) * sin(x * exp(alpha))^2, with alpha and beta stored in log scale."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        alpha = torch.exp(self.alpha)[None, :, None]
        beta = torch.exp(self.beta)[None, :, None]
        return x + (1.0 / (beta + 1e-9)) * torch.pow(torch.sin(x * alpha), 2)


class Qwen3TTSTokenizerConvNeXtBlock(nn.Module):
    """Causal depthwise conv (k=7), LayerNorm(eps 1e-6), Linear x4, exact GELU, Linear, gamma, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = Qwen3TTSTokenizerCausalConv1d(dim, dim, kernel_size=7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        h = self.dwconv(x, state).transpose(1, 2)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class Qwen3TTSTokenizerResidualUnit(nn.Module):
    """x + conv2(snake2(conv1(snake1(x)))), conv1 causal k=7 with dilation, conv2 k=1."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.act1 = Qwen3TTSTokenizerSnakeBeta(dim)
        self.conv1 = Qwen3TTSTokenizerCausalConv1d(dim, dim, kernel_size=7, dilation=dilation)
        self.act2 = Qwen3TTSTokenizerSnakeBeta(dim)
        self.conv2 = Qwen3TTSTokenizerCausalConv1d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        h = self.conv1(self.act1(x), state)
        h = self.conv2(self.act2(h), state)
        return x + h


class Qwen3TTSTokenizerDecoderBlock(nn.Module):
    """Qwen3TTSTokenizerSnakeBeta, causal transposed conv (k = 2 * rate, stride = rate), residual units (1, 3, 9)."""

    def __init__(self, in_dim: int, out_dim: int, rate: int):
        super().__init__()
        self.block = nn.ModuleList(
            [
                Qwen3TTSTokenizerSnakeBeta(in_dim),
                Qwen3TTSTokenizerCausalTransposedConv1d(in_dim, out_dim, 2 * rate, rate),
            ]
            + [Qwen3TTSTokenizerResidualUnit(out_dim, dilation) for dilation in (1, 3, 9)]
        )

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        for layer in self.block:
            x = layer(x, state)
        return x


# --------------------------------------------------------------------------------------------------
# Quantizer (decode side)
# --------------------------------------------------------------------------------------------------


class Qwen3TTSTokenizerCodebook(nn.Module):
    """Rows `embedding_sum / clamp(cluster_usage, 1e-5)`, divided after the lookup: the same
    elementwise division as on the whole table, without caching a table (a cache keyed on the
    weights' identity would break a traced graph) or dividing all rows per call."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self.embedding_sum = nn.Parameter(torch.zeros(codebook_size, dim))
        self.cluster_usage = nn.Parameter(torch.ones(codebook_size))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (...) -> (..., dim)."""
        usage = F.embedding(codes, self.cluster_usage[:, None]).clamp(min=1e-5)
        return F.embedding(codes, self.embedding_sum) / usage


class Qwen3TTSTokenizerCodebookLayer(nn.Module):
    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self._codebook = Qwen3TTSTokenizerCodebook(codebook_size, dim)


class Qwen3TTSTokenizerCodebookStack(nn.Module):
    def __init__(self, num_layers: int, codebook_size: int, dim: int):
        super().__init__()
        self.layers = nn.ModuleList([Qwen3TTSTokenizerCodebookLayer(codebook_size, dim) for _ in range(num_layers)])


class Qwen3TTSTokenizerResidualVectorQuantizer(nn.Module):
    """Sequential sum of codebook lookups (in the model dtype), then a k=1 output projection.

    `input_proj` only serves the encoder of the original training code; it is kept so that the
    checkpoint loads strictly.
    """

    def __init__(self, num_layers: int, codebook_size: int, dim: int, io_dim: int):
        super().__init__()
        self.input_proj = nn.Conv1d(io_dim, dim, 1, bias=False)
        self.output_proj = nn.Conv1d(dim, io_dim, 1, bias=False)
        self.vq = Qwen3TTSTokenizerCodebookStack(num_layers, codebook_size, dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T, n_q) -> (B, io_dim, T)."""
        # The reference starts from a 0-d float32 zero, which does not promote a bf16 sum.
        total = None
        for j, layer in enumerate(self.vq.layers):
            vectors = layer._codebook.lookup(codes[..., j]).transpose(1, 2)
            total = vectors if total is None else total + vectors
        return self.output_proj(total)


class Qwen3TTSTokenizerSplitResidualVectorQuantizer(nn.Module):
    """Qwen3TTSTokenizerCodebook 0 through `rvq_first` (semantic), codebooks 1.. through `rvq_rest` (acoustic)."""

    def __init__(self, config: Qwen3TTSTokenizerDecoderConfig):
        super().__init__()
        dim = config.codebook_dim // 2
        self.rvq_first = Qwen3TTSTokenizerResidualVectorQuantizer(1, config.codebook_size, dim, config.codebook_dim)
        self.rvq_rest = Qwen3TTSTokenizerResidualVectorQuantizer(
            config.num_quantizers - 1, config.codebook_size, dim, config.codebook_dim
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.rvq_first(codes[..., :1]) + self.rvq_rest(codes[..., 1:])


# --------------------------------------------------------------------------------------------------
# Pre-transformer
# --------------------------------------------------------------------------------------------------


class Qwen3TTSTokenizerLayerScale(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class Qwen3TTSTokenizerAttention(nn.Module):
    """Causal sliding-window MHA/GQA with rotate-half RoPE and no q/k norm.

    A query at frame i sees keys at frames j with i - sliding_window < j <= i. In a stream the
    keys/values of the last sliding_window - 1 frames are kept, which is all a later query can see.
    """

    def __init__(self, config: Qwen3TTSTokenizerDecoderConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.window = config.sliding_window
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        self.state_slot: int | None = None

    stateful = True

    def empty_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch, self.num_kv_heads, self.window - 1, self.head_dim)
        return like.new_zeros(shape), like.new_zeros(shape)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor, state: DecoderState | None
    ) -> torch.Tensor:
        """`mask` is `Qwen3TTSTokenizerPreTransformer.attention_mask` for these frames and state."""
        batch, n, _ = x.shape
        q = self.q_proj(x).view(batch, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin

        if state is not None:
            past_k, past_v = state.slots[self.state_slot]
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
            start = k.shape[2] - past_k.shape[2]
            past_k.copy_(k[:, :, start:])
            past_v.copy_(v[:, :, start:])

        if self.num_kv_heads != self.num_heads:
            groups = self.num_heads // self.num_kv_heads
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim**-0.5)
        return self.o_proj(out.transpose(1, 2).reshape(batch, n, -1))


class Qwen3TTSTokenizerTransformerLayer(nn.Module):
    def __init__(self, config: Qwen3TTSTokenizerDecoderConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Qwen3TTSTokenizerAttention(config)
        self.self_attn_layer_scale = Qwen3TTSTokenizerLayerScale(config.hidden_size)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLUMLP(config.hidden_size, config.intermediate_size)
        self.mlp_layer_scale = Qwen3TTSTokenizerLayerScale(config.hidden_size)

    def forward(self, x, cos, sin, mask, state):
        x = x + self.self_attn_layer_scale(self.self_attn(self.input_layernorm(x), cos, sin, mask, state))
        return x + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(x)))


class Qwen3TTSTokenizerPreTransformer(nn.Module):
    def __init__(self, config: Qwen3TTSTokenizerDecoderConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.rope_theta = config.rope_theta
        self.window = config.sliding_window
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None
        self.input_proj = nn.Linear(config.latent_dim, config.hidden_size)
        self.layers = nn.ModuleList(
            [Qwen3TTSTokenizerTransformerLayer(config) for _ in range(config.num_hidden_layers)]
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.output_proj = nn.Linear(config.hidden_size, config.latent_dim)

    def rope_table(self, length: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (>= length, head_dim) of frames 0, 1, ..., computed in float32 and cast to the
        model dtype; kept, and regrown (doubling) only when a longer stream needs it."""
        table = self._rope
        if table is None or table[0].shape[0] < length or table[0].dtype != dtype or table[0].device != device:
            size = max(length, 2 * table[0].shape[0] if table is not None else 1024)
            exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
            inv_freq = 1.0 / (self.rope_theta**exponent)
            freqs = torch.arange(size, device=device, dtype=torch.float32)[:, None] * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            table = self._rope = (emb.cos().to(dtype), emb.sin().to(dtype))
        return table

    def attention_mask(self, n: int, state: DecoderState | None, device) -> torch.Tensor:
        """Which keys each of the n new queries sees: (n, n) without a state, else
        (B, 1, n, sliding_window - 1 + n) over the cached then the new keys. A cached key is real
        only if its frame is at or after the row's start (index >= cached - position)."""
        cached = self.window - 1 if state is not None else 0
        keys = torch.arange(cached + n, device=device)
        distance = torch.arange(n, device=device)[:, None] + cached - keys
        mask = (distance >= 0) & (distance < self.window)
        if state is None:
            return mask
        real = keys[None, :] >= cached - state.positions[:, None]
        return mask[None, None] & real[:, None, None, :]

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        """x (B, T, latent_dim) -> (B, T, latent_dim); positions continue from `state.positions`."""
        x = self.input_proj(x)
        n = x.shape[1]
        cos, sin = self.rope_table((state.max_position if state is not None else 0) + n, x.dtype, x.device)
        if state is None:
            cos, sin = cos[None, None, :n], sin[None, None, :n]
        else:
            frames = state.positions[:, None] + torch.arange(n, device=x.device)
            cos, sin = cos[frames][:, None], sin[frames][:, None]
        mask = self.attention_mask(n, state, x.device)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, state)
        return self.output_proj(self.norm(x))


# --------------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------------


class Qwen3TTSTokenizerUpsampleStage(nn.ModuleList):
    """`upsample.{i}.0` causal transposed conv (k = stride = ratio), `upsample.{i}.1` ConvNeXt."""

    def __init__(self, dim: int, ratio: int):
        super().__init__(
            [Qwen3TTSTokenizerCausalTransposedConv1d(dim, dim, ratio, ratio), Qwen3TTSTokenizerConvNeXtBlock(dim)]
        )

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, state)
        return x


class Qwen3TTSTokenizerDecoder(nn.Module):
    """Codes (B, T, num_quantizers) -> waveform (B, T * samples_per_frame) in [-1, 1]."""

    def __init__(self, config: Qwen3TTSTokenizerDecoderConfig):
        super().__init__()
        self.config = config
        self.samples_per_frame = config.samples_per_frame
        self.quantizer = Qwen3TTSTokenizerSplitResidualVectorQuantizer(config)
        self.pre_conv = Qwen3TTSTokenizerCausalConv1d(config.codebook_dim, config.latent_dim, kernel_size=3)
        self.pre_transformer = Qwen3TTSTokenizerPreTransformer(config)
        self.upsample = nn.ModuleList(
            [Qwen3TTSTokenizerUpsampleStage(config.latent_dim, r) for r in config.upsampling_ratios]
        )
        stages: list[nn.Module] = [Qwen3TTSTokenizerCausalConv1d(config.latent_dim, config.decoder_dim, kernel_size=7)]
        dim = config.decoder_dim
        for rate in config.upsample_rates:
            stages.append(Qwen3TTSTokenizerDecoderBlock(dim, dim // 2, rate))
            dim //= 2
        stages += [Qwen3TTSTokenizerSnakeBeta(dim), Qwen3TTSTokenizerCausalConv1d(dim, 1, kernel_size=7)]
        self.decoder = nn.ModuleList(stages)

        self._stateful = [m for m in self.modules() if getattr(m, "stateful", False)]
        for slot, module in enumerate(self._stateful):
            module.state_slot = slot

    def new_state(self, batch: int = 1) -> DecoderState:
        """Fresh state (zeros, position 0) for `batch` rows, in the model's dtype and device."""
        like = next(self.parameters())
        slots = [module.empty_state(batch, like) for module in self._stateful]
        return DecoderState(slots, torch.zeros(batch, dtype=torch.int64, device=like.device))

    def forward(self, codes: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        """Decode `codes` (B, T, K), the next T frames of the stream(s) behind `state`.

        `state=None` decodes a whole sequence from scratch. With a state, the call continues where
        the previous one stopped and updates the state; the returned T * samples_per_frame samples
        are final.
        """
        if codes.shape[-1] != self.config.num_quantizers:
            raise ValueError(f"expected {self.config.num_quantizers} codebooks, got {codes.shape[-1]}")
        if state is not None and state.batch != codes.shape[0]:
            raise ValueError(f"state has {state.batch} rows, codes have {codes.shape[0]}")
        hidden = self.quantizer(codes)
        hidden = self.pre_conv(hidden, state).transpose(1, 2)
        hidden = self.pre_transformer(hidden, state).transpose(1, 2)
        for stage in self.upsample:
            hidden = stage(hidden, state)
        for stage in self.decoder:
            hidden = stage(hidden, state)
        if state is not None:
            state.positions.add_(codes.shape[1])
            state.max_position += codes.shape[1]
        return hidden.squeeze(1).clamp(min=-1.0, max=1.0)


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------

# Checkpoint keys (transformers 4.57's Mimi layout under `encoder.`) by MimiModel's state-dict
# names. From transformers 5.21 the encoder's parts sit under `encoder` (NESTED); 5.0-5.20 keep
# 4.57's flat layout (FLAT), and build the decoder half even when decoder_config is None.
_NESTED_RENAMES = (
    ("encoder.encoder_seanet.", "encoder.encoder."),
    ("encoder.encoder_transformer.", "encoder.encoder_transformer."),
    ("encoder.downsample.", "encoder.downsample."),
    ("quantizer.", "encoder.quantizer."),
)
_FLAT_RENAMES = (
    ("encoder.", "encoder.encoder."),
    ("encoder_transformer.", "encoder.encoder_transformer."),
    ("downsample.", "encoder.downsample."),
    ("quantizer.", "encoder.quantizer."),
)
_FLAT_DECODER_HALF = ("upsample", "decoder_transformer", "decoder")
# Mimi decoder-half weights a codec file could carry; the encoder never uses them.
_ENCODER_IGNORED = ("encoder.upsample.", "encoder.decoder_transformer.", "encoder.decoder.")


class Qwen3TTSTokenizerEncoder(nn.Module):
    """Audio (B, samples) at 24 kHz -> codes (B, num_quantizers, frames): transformers' Mimi encoder.

    `mimi` is a `transformers.MimiModel` built from `encoder_config` with `decoder_config=None`,
    so its decoder half is neither built nor loaded. Only the first `num_quantizers` (16 of 32)
    RVQ layers run: the RVQ is sequential, so these equal the first 16 of a full encode.
    """

    def __init__(self, config: Qwen3TTSTokenizerConfig):
        super().__init__()
        from transformers import MimiModel

        self.num_quantizers = config.encoder_valid_num_quantizers
        self.mimi = MimiModel(config.mimi_config())
        self.mimi.eval()
        nested = hasattr(self.mimi.encoder, "encoder_seanet")
        self._renames = _NESTED_RENAMES if nested else _FLAT_RENAMES
        if not nested:  # encode never runs the decoder half: drop it, its weights unloaded
            for name in _FLAT_DECODER_HALF:
                setattr(self.mimi, name, None)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        out = self.mimi.encode(audio[:, None, :], num_quantizers=self.num_quantizers, return_dict=True)
        return out.audio_codes

    def cast_(self, dtype: torch.dtype) -> Qwen3TTSTokenizerEncoder:
        """Cast parameters and persistent buffers only, keeping e.g. RoPE's float32 inv_freq."""
        persistent = set(self.state_dict().keys())
        for name, tensor in list(self.named_parameters()) + list(self.named_buffers()):
            if name in persistent and tensor.is_floating_point():
                tensor.data = tensor.data.to(dtype)
        self.reset_codebook_cache()
        return self

    def reset_codebook_cache(self) -> None:
        for module in self.modules():
            if hasattr(module, "_embed"):
                module._embed = None

    def file_key(self, name: str) -> str:
        """Checkpoint key of a `Qwen3TTSTokenizerEncoder` state-dict name."""
        assert name.startswith("mimi.")
        name = name[len("mimi.") :]
        for model_prefix, file_prefix in self._renames:
            if name.startswith(model_prefix):
                return file_prefix + name[len(model_prefix) :]
        raise KeyError(name)

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        """Strictly load the `encoder.*` tensors of a codec file; errors name the file and key."""
        load_module_weights(self, tensors, "encoder.", path, file_key=self.file_key, ignored=_ENCODER_IGNORED)
        self.reset_codebook_cache()
