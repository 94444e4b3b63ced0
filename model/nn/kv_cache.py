"""The decoder's self-attention cache for generation: room set aside up front, each step written in place.

transformers' DynamicCache concatenates every step; a PreallocatedCache (PromptBart.decoder_hidden's
`cache_capacity`) holds PreallocatedLayers instead, which the sampler can also shrink (rows that
finished) and extend (stragglers joining) in place: model/generation/batch.py.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A DynamicLayer that keeps spare room after the cached positions and writes each step into it.

    DynamicLayer.update concatenates, copying the whole cache of every row at every step (quadratic in
    the record length; a third of the sampler's decoder time at batch 256). Here a step writes its new
    positions in place and the layer hands out views of the filled part; the room doubles when full.
    Storage is (batch, position, head, head_dim), the projections' own layout, so a step's write is one
    contiguous block per row; dropping rows compacts them in place (no new, untouched memory to fault in).
    Values are the same as DynamicLayer's (attention reads the same numbers, only the strides differ)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = max(1, int(capacity))
        self.length = 0
        self._k: torch.Tensor | None = None  # (B, room, H, d)
        self._v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._k = self._v = None
        self.length = 0
        self.is_initialized = True

    def _make_room(self, need: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        room = self._k.shape[1] if self._k is not None else self.capacity
        while room < need:
            room *= 2
        B, H, _, d = key_states.shape
        k = key_states.new_empty(B, room, H, d)
        v = value_states.new_empty(B, room, H, value_states.shape[-1])
        if self.length:
            k[:, : self.length] = self._k[:, : self.length]
            v[:, : self.length] = self._v[:, : self.length]
        self._k, self._v = k, v

    def _views(self) -> None:
        self.keys = self._k[:, : self.length].transpose(1, 2)  # (B, H, T, d)
        self.values = self._v[:, : self.length].transpose(1, 2)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._k is None or end > self._k.shape[1]:
            self._make_room(end, key_states, value_states)
        self._k[:, self.length: end] = key_states.transpose(1, 2)
        self._v[:, self.length: end] = value_states.transpose(1, 2)
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices`, in place when the batch does not grow: only the rows that change place
        are copied (their filled positions), so a caller that fills the places of dropped rows with rows
        from the end moves few rows."""
        if self._k is None or self.length == 0:
            return
        n, T = indices.numel(), self.length
        if n > self._k.shape[0]:  # more rows than before: new buffers
            self._k, self._v = self._k.index_select(0, indices), self._v.index_select(0, indices)
        else:
            moved = (indices != torch.arange(n, device=indices.device)).nonzero().squeeze(1)
            if moved.numel():
                src = indices[moved]
                self._k[moved, :T] = self._k[src, :T]
                self._v[moved, :T] = self._v[src, :T]
            self._k, self._v = self._k[:n], self._v[:n]
        self._views()

    def append_rows(self, other: PreallocatedLayer) -> None:
        """Add the rows of `other`, a layer holding as many positions, after this layer's rows."""
        if other._k is None:
            return
        if self._k is None:
            self._k, self._v, self.length = other._k, other._v, other.length
            self._views()
            return
        if other.length != self.length:
            raise ValueError(f"cannot join caches of {self.length} and {other.length} positions")
        T, room = self.length, max(self._k.shape[1], other._k.shape[1])
        a, b = self._k.shape[0], other._k.shape[0]
        k = self._k.new_empty((a + b, room, *self._k.shape[2:]))
        v = self._v.new_empty((a + b, room, *self._v.shape[2:]))
        k[:a, :T], k[a:, :T] = self._k[:, :T], other._k[:, :T]
        v[:a, :T], v[a:, :T] = self._v[:, :T], other._v[:, :T]
        self._k, self._v = k, v
        self._views()

    def reset(self) -> None:
        self._k = self._v = None
        self.length = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("PreallocatedLayer does not crop")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("PreallocatedLayer does not repeat rows")


class PreallocatedCache(DynamicCache):
    """DynamicCache of PreallocatedLayers (a DynamicCache, so EncoderDecoderCache.batch_select_indices accepts it)."""

    def __init__(self, n_layers: int, capacity: int):
        Cache.__init__(self, layers=[PreallocatedLayer(capacity) for _ in range(n_layers)])
