"""Speaker encoder of the Qwen3-TTS Base checkpoints (architecture spec §3).

An ECAPA-TDNN style network that turns a log-mel spectrogram of a reference recording into one
"x-vector" of `enc_dim` values (the talker's hidden size). The vector is inserted as-is into the
talker prompt of a voice clone request.

    24 kHz mono waveform ──mel_spectrogram──▶ (B, frames, 128) log-mel
        ──blocks.0 (TDNN k5)──▶ blocks.1..3 (SE-Res2Net, dilation 2, 3, 4)
        ──concat(blocks 1..3)──▶ mfa (TDNN k1) ──▶ asp (attentive statistics pooling)
        ──▶ fc (k1 conv) ──▶ (B, enc_dim)

Every convolution is `Conv1d(padding="same", padding_mode="reflect")` with bias; there is no
batch norm. Module attribute names follow the checkpoint keys under `speaker_encoder.`, so
`load_module_weights(encoder, tensors, "speaker_encoder.", path)` loads the released weights.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import CheckpointError, load_module_weights, parse_dtype, read_safetensors
from models.qwen3_tts.configuration_qwen3_tts import Qwen3TTSConfig, Qwen3TTSSpeakerEncoderConfig
from shared.audio import MODEL_SAMPLE_RATE, AudioError, prepare_reference_audio

# Front end constants (fixed by the released models; spec §3.1).
SAMPLE_RATE = MODEL_SAMPLE_RATE  # the mel front end is fixed at the codec's rate
N_FFT = 1024
HOP_LENGTH = 256
WIN_LENGTH = 1024
N_MELS = 128
F_MIN = 0.0
F_MAX = 12000.0
MAGNITUDE_EPS = 1e-9
LOG_CLAMP = 1e-5
FRAME_PAD = (N_FFT - HOP_LENGTH) // 2  # 384 reflected samples on each side


# ---------------------------------------------------------------------------------------------
# Mel front end
# ---------------------------------------------------------------------------------------------


# Slaney's auditory scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above.
_MEL_LINEAR_STEP = 200.0 / 3
_MEL_LOG_START_HZ = 1000.0
_MEL_LOG_START = _MEL_LOG_START_HZ / _MEL_LINEAR_STEP
_MEL_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MEL_LOG_START + np.log(np.maximum(hz, 1e-300) / _MEL_LOG_START_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _MEL_LOG_START_HZ, log_part, hz / _MEL_LINEAR_STEP)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _MEL_LOG_START_HZ * np.exp(_MEL_LOG_STEP * (mel - _MEL_LOG_START))
    return np.where(mel >= _MEL_LOG_START, log_part, mel * _MEL_LINEAR_STEP)


@functools.lru_cache(maxsize=8)
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular mel filters, (n_mels, n_fft // 2 + 1) float32.

    The same matrix as `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)` with its defaults
    (htk=False, norm="slaney"), computed in float64 and rounded to float32 in the same two steps
    (triangles, then the area normalisation), so it matches to the last bit.
    """
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges_mel = np.linspace(_hz_to_slaney_mel(f_min), _hz_to_slaney_mel(f_max), n_mels + 2)
    edges_hz = _slaney_mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_bins)
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area_norm = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    weights = (triangles * area_norm[:, None]).astype(np.float32)
    weights.flags.writeable = False
    return weights


@functools.lru_cache(maxsize=8)
def _front_end_tensors(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    basis = torch.from_numpy(mel_filterbank().copy()).to(device)
    window = torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32).to(device)
    return basis, window


def mel_spectrogram(wav: torch.Tensor) -> torch.Tensor:
    """Log-mel spectrogram of 24 kHz waveforms: (B, N) float32 -> (B, frames, 128) float32.

    frames = (N + 2*384 - 1024) // 256 + 1 = N // 256. Steps: reflect pad 384 samples each side,
    STFT (n_fft 1024, hop 256, periodic Hann, no centring), magnitude sqrt(re² + im² + 1e-9),
    Slaney mel filters, natural log of max(mel, 1e-5). Always computed in float32.
    """
    if wav.ndim != 2:
        raise ValueError(f"mel_spectrogram expects a (batch, samples) waveform, got shape {tuple(wav.shape)}")
    if wav.shape[-1] <= FRAME_PAD:
        raise ValueError(
            f"waveform of {wav.shape[-1]} samples is too short for the mel front end: "
            f"it needs more than {FRAME_PAD} samples at {SAMPLE_RATE} Hz"
        )
    wav = wav.to(torch.float32)
    basis, window = _front_end_tensors(wav.device)
    padded = F.pad(wav.unsqueeze(1), (FRAME_PAD, FRAME_PAD), mode="reflect").squeeze(1)
    spectrum = torch.stft(
        padded,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        win_length=WIN_LENGTH,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    magnitude = torch.sqrt(torch.view_as_real(spectrum).pow(2).sum(-1) + MAGNITUDE_EPS)
    mel = torch.matmul(basis, magnitude)  # (B, n_mels, frames)
    return torch.log(torch.clamp(mel, min=LOG_CLAMP)).transpose(1, 2)


def mel_frames(num_samples: int) -> int:
    """Number of mel frames for `num_samples` samples at 24 kHz."""
    return (num_samples + 2 * FRAME_PAD - N_FFT) // HOP_LENGTH + 1


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


def _conv(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        dilation=dilation,
        padding="same",
        padding_mode="reflect",
    )


class Qwen3TTSTimeDelayNetBlock(nn.Module):
    """A (dilated) 1-D convolution over time followed by ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = _conv(in_channels, out_channels, kernel_size, dilation)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(hidden_states))


class Qwen3TTSRes2NetBlock(nn.Module):
    """Res2Net: split channels into `scale` groups; group i (i >= 1) is convolved after adding the
    previous group's output, which widens the receptive field hierarchically. Group 0 passes through.
    """

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int):
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels ({channels}) must be divisible by res2net scale ({scale})")
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList(
            Qwen3TTSTimeDelayNetBlock(width, width, kernel_size, dilation) for _ in range(scale - 1)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        groups = torch.chunk(hidden_states, self.scale, dim=1)
        outputs = [groups[0]]
        previous = None
        for block, group in zip(self.blocks, groups[1:]):
            previous = block(group if previous is None else group + previous)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class Qwen3TTSSqueezeExcitationBlock(nn.Module):
    """Channel gating from the time-averaged activations: x * sigmoid(W2 relu(W1 mean_t(x)))."""

    def __init__(self, channels: int, se_channels: int):
        super().__init__()
        self.conv1 = _conv(channels, se_channels)
        self.conv2 = _conv(se_channels, channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate = hidden_states.mean(dim=2, keepdim=True)
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(gate))))
        return hidden_states * gate


class Qwen3TTSSqueezeExcitationRes2NetBlock(nn.Module):
    """x + SE(TDNN2(Res2Net(TDNN1(x)))), with k=1 TDNNs around the dilated Res2Net."""

    def __init__(self, in_channels: int, channels: int, scale: int, se_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        if in_channels != channels:
            raise ValueError(
                f"SE-Res2Net block has a residual connection: in ({in_channels}) and out ({channels}) "
                "channels must be equal"
            )
        self.tdnn1 = Qwen3TTSTimeDelayNetBlock(in_channels, channels)
        self.res2net_block = Qwen3TTSRes2NetBlock(channels, scale, kernel_size, dilation)
        self.tdnn2 = Qwen3TTSTimeDelayNetBlock(channels, channels)
        self.se_block = Qwen3TTSSqueezeExcitationBlock(channels, se_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.tdnn1(hidden_states)
        out = self.res2net_block(out)
        out = self.tdnn2(out)
        out = self.se_block(out)
        return out + hidden_states


def _weighted_statistics(
    hidden_states: torch.Tensor, weights: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over time under weights that sum to one: (B, C, 1) each."""
    mean = (weights * hidden_states).sum(dim=2, keepdim=True)
    variance = (weights * (hidden_states - mean).pow(2)).sum(dim=2, keepdim=True)
    return mean, torch.sqrt(variance.clamp(min=eps))


class Qwen3TTSAttentiveStatisticsPooling(nn.Module):
    """Pool (B, C, T) to (B, 2C, 1): attention-weighted mean and std over time, per channel.

    The attention sees each frame together with the utterance's global mean and std.
    """

    eps = 1e-12

    def __init__(self, channels: int, attention_channels: int):
        super().__init__()
        self.tdnn = Qwen3TTSTimeDelayNetBlock(channels * 3, attention_channels)
        self.conv = _conv(attention_channels, channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        frames = hidden_states.shape[-1]
        # Uniform weights 1/T, formed in the activations' dtype (as the reference does).
        ones = hidden_states.new_ones(1, 1, frames)
        uniform = ones / ones.sum(dim=2, keepdim=True)
        mean, std = _weighted_statistics(hidden_states, uniform, self.eps)
        context = torch.cat([hidden_states, mean.expand(-1, -1, frames), std.expand(-1, -1, frames)], dim=1)
        scores = self.conv(torch.tanh(self.tdnn(context)))
        attention = torch.softmax(scores, dim=2)
        mean, std = _weighted_statistics(hidden_states, attention, self.eps)
        return torch.cat([mean, std], dim=1)


class Qwen3TTSSpeakerEncoder(nn.Module):
    """ECAPA-TDNN style speaker encoder: log-mel (B, frames, mel_dim) -> x-vector (B, enc_dim)."""

    def __init__(self, config: Qwen3TTSSpeakerEncoderConfig):
        super().__init__()
        channels = tuple(config.enc_channels)
        kernels = tuple(config.enc_kernel_sizes)
        dilations = tuple(config.enc_dilations)
        if not (len(channels) == len(kernels) == len(dilations)) or len(channels) < 3:
            raise ValueError(
                "speaker encoder config: enc_channels, enc_kernel_sizes and enc_dilations must have the "
                f"same length (>= 3), got {len(channels)}, {len(kernels)}, {len(dilations)}"
            )
        if sum(channels[1:-1]) != channels[-1]:
            raise ValueError(
                f"speaker encoder config: the SE-Res2Net outputs ({'+'.join(map(str, channels[1:-1]))}) "
                f"are concatenated into the aggregation layer, which takes enc_channels[-1]={channels[-1]}"
            )
        if config.sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"speaker encoder config: sample_rate {config.sample_rate} is not supported; "
                f"the mel front end is fixed at {SAMPLE_RATE} Hz"
            )
        self.config = config

        self.blocks = nn.ModuleList([Qwen3TTSTimeDelayNetBlock(config.mel_dim, channels[0], kernels[0], dilations[0])])
        for i in range(1, len(channels) - 1):
            self.blocks.append(
                Qwen3TTSSqueezeExcitationRes2NetBlock(
                    channels[i - 1],
                    channels[i],
                    scale=config.enc_res2net_scale,
                    se_channels=config.enc_se_channels,
                    kernel_size=kernels[i],
                    dilation=dilations[i],
                )
            )
        self.mfa = Qwen3TTSTimeDelayNetBlock(channels[-1], channels[-1], kernels[-1], dilations[-1])
        self.asp = Qwen3TTSAttentiveStatisticsPooling(channels[-1], config.enc_attention_channels)
        self.fc = _conv(channels[-1] * 2, config.enc_dim)

        widest_pad = 0
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                span = module.dilation[0] * (module.kernel_size[0] - 1)
                widest_pad = max(widest_pad, span - span // 2)  # larger (right) side of 'same'
        self._min_frames = widest_pad + 1

    # -- limits --------------------------------------------------------------------------------

    @property
    def min_frames(self) -> int:
        """Fewest mel frames the network accepts: reflect 'same' padding needs pad < frames."""
        return self._min_frames

    @property
    def min_samples(self) -> int:
        """Fewest 24 kHz samples `embed` accepts: more than the 384-sample reflect pad, and enough
        for `min_frames` mel frames."""
        return max(FRAME_PAD + 1, (self.min_frames - 1) * HOP_LENGTH + N_FFT - 2 * FRAME_PAD)

    @property
    def min_duration_s(self) -> float:
        return self.min_samples / SAMPLE_RATE

    # -- forward -------------------------------------------------------------------------------

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, frames, mel_dim) log-mel in the module's dtype -> (B, enc_dim)."""
        if mels.ndim != 3 or mels.shape[-1] != self.config.mel_dim:
            raise ValueError(f"expected mels of shape (batch, frames, {self.config.mel_dim}), got {tuple(mels.shape)}")
        if mels.shape[1] < self.min_frames:
            raise ValueError(
                f"{mels.shape[1]} mel frames are too few for the speaker encoder; it needs at least "
                f"{self.min_frames} ({self.min_duration_s:.4f} s of audio)"
            )
        hidden_states = mels.transpose(1, 2)
        outputs = []
        for block in self.blocks:
            hidden_states = block(hidden_states)
            outputs.append(hidden_states)
        hidden_states = self.mfa(torch.cat(outputs[1:], dim=1))
        hidden_states = self.asp(hidden_states)
        return self.fc(hidden_states).squeeze(-1)

    @torch.no_grad()
    def embed(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
        """The speaker embedding (enc_dim,) of one recording, in the module's dtype and device.

        `audio` is a float (T,) or (T, C) array at `sample_rate`; it is downmixed, resampled to
        24 kHz (librosa soxr_hq), turned into a float32 log-mel on the CPU, then cast to the
        module's dtype. Raises `AudioError` (a ValueError) for empty, non-finite or too-short audio.
        """
        wav = prepare_reference_audio(audio, sample_rate, SAMPLE_RATE)
        if wav.shape[0] < self.min_samples:
            raise AudioError(
                f"reference audio is too short: {wav.shape[0] / SAMPLE_RATE:.4f} s "
                f"({wav.shape[0]} samples at {SAMPLE_RATE} Hz); the speaker encoder needs at least "
                f"{self.min_duration_s:.4f} s ({self.min_samples} samples at {SAMPLE_RATE} Hz)"
            )
        mels = mel_spectrogram(torch.from_numpy(wav).unsqueeze(0))
        parameter = next(self.parameters())
        return self(mels.to(device=parameter.device, dtype=parameter.dtype))[0]


def load_speaker_encoder(
    checkpoint_dir: Path,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    tensors: dict[str, torch.Tensor] | None = None,
) -> Qwen3TTSSpeakerEncoder:
    """The speaker encoder of a Base checkpoint directory (`config.json` + `model.safetensors`).

    Pass `tensors` (the already read `model.safetensors`) to avoid reading the file again.
    """
    checkpoint_dir = Path(checkpoint_dir)
    config_path = checkpoint_dir / "config.json"
    config = Qwen3TTSConfig.from_file(config_path)
    if config.speaker_encoder is None:
        raise CheckpointError(
            f"{config_path}: tts_model_type {config.tts_model_type!r} has no speaker encoder (only Base checkpoints do)"
        )
    weights_path = checkpoint_dir / "model.safetensors"
    if tensors is None:
        tensors = read_safetensors(weights_path)
    encoder = Qwen3TTSSpeakerEncoder(config.speaker_encoder)
    load_module_weights(encoder, tensors, "speaker_encoder.", weights_path)
    return encoder.to(device=device, dtype=parse_dtype(dtype)).eval()
