"""Key/value caches for the talker and the code predictor.

Attention is computed by the cache that holds the keys and values, because the two users store
them differently:

- `SequenceCache` belongs to one utterance (one engine session). The talker steps many sessions
  together whose histories have different lengths, so `RaggedBatchCache` attends row by row, each
  row against its own session's cache; the projections and MLPs around it still run batched.
- `LockstepCache` is for the code predictor, where every row of the batch has the same length
  (a fresh 16-position sequence per frame), so one attention call covers the batch.

Both grow without recomputing anything: a step costs attention over the stored keys only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _attend(q, k, v, causal_offset: int | None):
    """Scaled dot-product attention with grouped KV heads.

    `causal_offset` is the number of cached positions before the first query (queries attend to
    every cached key and causally among themselves); None means no mask (a single query).
    """
    if causal_offset is None or q.shape[-2] == 1:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    if causal_offset == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    t_q, t_k = q.shape[-2], k.shape[-2]
    allowed = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril(diagonal=causal_offset)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)


class SequenceCache:
    """Keys and values of one sequence for every layer, stored in buffers that grow by doubling."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, *, dtype, device, capacity: int = 64):
        shape = (1, num_kv_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = old.new_empty(old.shape[0], old.shape[1], capacity, old.shape[3])
                new[:, :, : self.length] = old[:, :, : self.length]
                store[i] = new

    def attend(self, layer: int, q, k, v):
        """Append `k`, `v` (1, kv_heads, t, head_dim) at the end and attend `q` to all keys."""
        t = k.shape[2]
        self._reserve(self.length + t)
        end = self.length + t
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return _attend(q, self.keys[layer][:, :, :end], self.values[layer][:, :, :end], self.length)

    def advance(self, t: int) -> None:
        self.length += t


class RaggedBatchCache:
    """A batch of sessions stepped together, each row with its own `SequenceCache`."""

    def __init__(self, caches: list[SequenceCache]):
        self.caches = caches

    def attend(self, layer: int, q, k, v):
        if len(self.caches) == 1:
            return self.caches[0].attend(layer, q, k, v)
        return torch.cat(
            [cache.attend(layer, q[b : b + 1], k[b : b + 1], v[b : b + 1]) for b, cache in enumerate(self.caches)]
        )

    def advance(self, t: int) -> None:
        for cache in self.caches:
            cache.advance(t)


class LockstepCache:
    """Caches of a batch whose rows all have the same length (the code predictor's frame)."""

    def __init__(
        self, num_layers: int, batch: int, num_kv_heads: int, head_dim: int, max_length: int, *, dtype, device
    ):
        shape = (batch, num_kv_heads, max_length, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0

    def attend(self, layer: int, q, k, v):
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return _attend(q, self.keys[layer][:, :, :end], self.values[layer][:, :, :end], self.length)

    def advance(self, t: int) -> None:
        self.length += t
