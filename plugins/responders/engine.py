"""A compact CPU decode engine for Llama-family models: fused weights, per-sequence KV caches, batched steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Quantize = Literal["none", "int8", "fp16", "bf16"]
HeadQuantize = Literal["same", "none", "int8", "fp16"]
KVFormat = Literal["float32", "float16"]


def supports(model: Any) -> bool:
    """Whether the engine can run this transformers model (plain Llama decoders); others use `generate`."""
    cfg = getattr(model, "config", None)
    return (
        cfg is not None
        and getattr(cfg, "model_type", "") == "llama"
        and getattr(cfg, "hidden_act", "") == "silu"
        and getattr(cfg, "pretraining_tp", 1) == 1
        and type(model).__name__ == "LlamaForCausalLM"
    )


@dataclass
class KVCache:
    """The keys and values of one sequence, preallocated to `capacity` positions; `length` are filled."""

    keys: list[Tensor]  # per layer: [kv_heads, capacity, head_dim], in the engine's KV format
    values: list[Tensor]
    capacity: int
    length: int = 0
    tokens: list[int] = field(default_factory=list)
    addresses: list[int] = field(default_factory=list)  # per layer: keys, values (for the native decode step)

    def copy_from(self, other: KVCache, length: int | None = None) -> None:
        """Start this cache with the first `length` positions (default: all) of another's contents (a cached
        system-prompt prefix, or the part an earlier prompt shares with this one)."""
        n = other.length if length is None else min(length, other.length)
        for dst, src in zip(self.keys + self.values, other.keys + other.values, strict=True):
            dst[:, :n].copy_(src[:, :n])
        self.length, self.tokens = n, list(other.tokens[:n])


@dataclass(frozen=True)
class KVBlock:
    """The keys and values of a run of tokens computed once, to be spliced into prompts that contain it.

    `origin` is the position its first token had when computed; keys are turned from there to where it is placed.
    """

    tokens: tuple[int, ...]
    origin: int
    keys: list[Tensor]  # per layer: [kv_heads, length, head_dim], float16
    values: list[Tensor]

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


class _Layer(nn.Module):
    def __init__(self, layer: Any) -> None:
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
        self.o = _fuse([attn.o_proj])
        self.gate_up = _fuse([mlp.gate_proj, mlp.up_proj])
        self.down = _fuse([mlp.down_proj])
        self.norm1 = layer.input_layernorm.weight.detach().clone()
        self.norm2 = layer.post_attention_layernorm.weight.detach().clone()


def _rotate_half(x: Tensor) -> Tensor:
    """The rotary embedding's partner of each value along the last axis (as transformers pairs them)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _fuse(linears: list[nn.Linear]) -> nn.Linear:
    """One Linear computing the given ones side by side (one matmul instead of several).

    A single Linear shares the model's weight instead of copying it (conversions replace, never modify, it).
    """
    weight = torch.cat([lin.weight.detach() for lin in linears]) if len(linears) > 1 else linears[0].weight.detach()
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=linears[0].bias is not None, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if linears[0].bias is not None:
        fused.bias = nn.Parameter(torch.cat([lin.bias.detach() for lin in linears]), requires_grad=False)
    return fused


class LlamaEngine:
    """Runs prefill and batched decode steps for a transformers Llama model with its own weight copies.

    Args:
        model: a loaded `LlamaForCausalLM` (any checkpoint; LoRA already merged if wanted).
        quantize: `int8` (dynamic per-row int8 matmuls), `fp16` (float16 weights, float32 arithmetic),
            `bf16` (bfloat16 weights and matmuls) or `none` (float32).
        head_quantize: the output projection's format (`same` as the blocks, or `none`, `int8`, `fp16`). With
            a 49k vocabulary it is a fifth of the weights but the largest single matmul of a decode step, and the
            one that grows most with the batch; greedy answers only need its arg-max.
        native: with fp16 weights, run decode steps in the compiled step of `native/decode.c` when it builds on
            this machine (`self.native` says whether it did); prefill always runs through torch.
        kv: the KV caches' number format. `float16` halves the bytes a decode step reads from them (at 8 sequences
            of 600 tokens as many as the weights themselves); arithmetic stays float32 (keys and values are widened
            as they are read), only the stored keys and values are rounded.
    """

    def __init__(
        self,
        model: Any,
        quantize: Quantize = "none",
        head_quantize: HeadQuantize = "same",
        native: bool = True,
        kv: KVFormat = "float32",
    ) -> None:
        cfg = model.config
        self.quantize = quantize
        self.kv = kv
        self._kv_dtype = torch.float16 if kv == "float16" else torch.float32
        self.head_quantize = quantize if head_quantize == "same" else head_quantize
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.vocab = cfg.vocab_size
        self.max_positions = cfg.max_position_embeddings
        inner = model.model
        self.embed = inner.embed_tokens.weight.detach()
        self.final_norm = inner.norm.weight.detach().clone()
        rotary = inner.rotary_emb
        self._inv_freq = rotary.inv_freq.detach().float().clone()
        self._rope_scale = float(rotary.attention_scaling)
        layers = [_Layer(layer) for layer in inner.layers]
        self._native: _NativeStep | None = None
        if native and quantize == "fp16" and self.head_quantize == "fp16" and self.heads % self.kv_heads == 0:
            self._native = _NativeStep.create(self, layers, model.lm_head.weight)
        blocks = _convert(nn.ModuleList(layers), quantize)
        self._dtype = torch.bfloat16 if quantize == "bf16" else torch.float32
        self._head_dtype = torch.bfloat16 if self.head_quantize == "bf16" else torch.float32
        self.layers: list[Any] = list(blocks)
        self.lm_head: nn.Module = _convert(nn.ModuleList([_fuse([model.lm_head])]), self.head_quantize)[0]
        for layer in self.layers:  # norms stay float32 (as transformers computes them)
            layer.norm1, layer.norm2 = layer.norm1.float(), layer.norm2.float()
        self._cos = torch.empty(0)
        self._sin = torch.empty(0)

    @property
    def native(self) -> bool:
        """Whether decode steps run in the compiled native step."""
        return self._native is not None

    def new_cache(self, capacity: int) -> KVCache:
        """An empty KV cache for one sequence of up to `capacity` tokens."""
        capacity = min(capacity, self.max_positions)
        shape = (self.kv_heads, capacity, self.head_dim)
        n = len(self.layers)
        dtype = self._kv_dtype
        return KVCache(
            [torch.empty(shape, dtype=dtype) for _ in range(n)],
            [torch.empty(shape, dtype=dtype) for _ in range(n)],
            capacity,
        )

    def _rope(self, upto: int) -> tuple[Tensor, Tensor]:
        if self._cos.shape[0] < upto:  # the same float math as transformers' rotary embedding
            size = max(upto, 2 * self._cos.shape[0], 256)
            freqs = torch.arange(size).float()[:, None] * self._inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            self._cos, self._sin = emb.cos() * self._rope_scale, emb.sin() * self._rope_scale
        return self._cos, self._sin

    @torch.inference_mode()
    def prefill(self, ids: list[int], cache: KVCache) -> Tensor:
        """Append `ids` to the sequence in `cache`; return the next-token logits (float32, [vocab]).

        Raises:
            ValueError: the sequence would not fit in the cache.
        """
        start = cache.length
        if start + len(ids) > cache.capacity:
            raise ValueError(f"{start + len(ids)} tokens do not fit a {cache.capacity}-token context.")
        x = F.embedding(torch.tensor([ids]), self.embed)
        positions = torch.arange(start, start + len(ids))
        out = self._forward(x, [cache], positions[None, :])
        cache.tokens.extend(ids)
        return out[0]

    @torch.inference_mode()
    def block(self, ids: list[int], context: KVCache) -> KVBlock:
        """The keys and values of `ids` computed after `context` (left unchanged), stored in float16."""
        cache = self.new_cache(context.length + len(ids))
        cache.copy_from(context)
        self.prefill(ids, cache)
        span = slice(context.length, context.length + len(ids))
        keys = [k[:, span].to(torch.float16) for k in cache.keys]
        values = [v[:, span].to(torch.float16) for v in cache.values]
        return KVBlock(tuple(ids), context.length, keys, values)

    @torch.inference_mode()
    def prefill_spliced(
        self,
        ids: list[int],
        cache: KVCache,
        blocks: list[tuple[int, KVBlock]],
        recompute: float = 0.0,
        context: Sequence[int] | None = None,
    ) -> Tensor:
        """Complete the prompt `ids` (its first `cache.length` positions already in `cache`) from stored blocks.

        Each block's keys and values are copied in at its start position (keys turned to that position), and only
        the other tokens are computed, in one pass: each of them sees every position before it, blocks included.
        A block's own tokens saw only the context it was computed in, not the passages before it here; with
        `recompute`, that share of the spliced tokens is computed again (see `_forward`). A block placed right
        after the very `context` it was computed after (the blocks' common context, e.g. the first passage of a
        prompt without history) saw exactly what it sees here: it is taken as it is, unless `recompute` is 1
        (every token computed again). The last token of `ids` must not lie in a block. Returns the next-token
        logits (float32, [vocab]).

        Raises:
            ValueError: the prompt would not fit in the cache, or a block does not fit the prompt.
        """
        start, total = cache.length, len(ids)
        if total > cache.capacity:
            raise ValueError(f"{total} tokens do not fit a {cache.capacity}-token context.")
        live = torch.ones(total, dtype=torch.bool)
        live[:start] = False
        exact = torch.zeros(total, dtype=torch.bool)
        lead = list(context) if context is not None and recompute < 1 else None
        for at, block in blocks:
            end = at + block.length
            if at < start or end >= total or not bool(live[at:end].all()):
                raise ValueError(f"A stored block does not fit positions {at}..{end} of a {total}-token prompt.")
            live[at:end] = False
            exact[at:end] = at == block.origin and lead is not None and ids[:at] == lead
            cos, sin = self._turn(at - block.origin)
            for layer in range(len(self.layers)):
                k = block.keys[layer].float()
                cache.keys[layer][:, at:end] = k * cos + _rotate_half(k) * sin
                cache.values[layer][:, at:end] = block.values[layer]
        if recompute > 0:  # the other stored positions go through the first layer; the most changed ones go on
            positions = start + (~exact[start:]).nonzero()[:, 0]
            x = F.embedding(torch.tensor([ids])[:, positions], self.embed)
            extra = round(recompute * int((~live[start:]).sum()))  # of every spliced token, exact blocks too
            out = self._forward(x, [cache], positions[None, :], ~live[positions], extra)
        else:
            positions = live.nonzero()[:, 0]
            x = F.embedding(torch.tensor([ids])[:, positions], self.embed)
            out = self._forward(x, [cache], positions[None, :])
        cache.tokens = list(ids)
        return out[0]

    def _turn(self, delta: int) -> tuple[Tensor, Tensor]:
        """cos and sin that move rotary-embedded keys `delta` positions on (a pure rotation: no scaling)."""
        freqs = float(delta) * self._inv_freq.double()
        emb = torch.cat((freqs, freqs)).float()
        return emb.cos(), emb.sin()

    @torch.inference_mode()
    def decode(self, tokens: list[int], caches: list[KVCache]) -> Tensor:
        """One step for several sequences at once: token i extends caches[i]; returns logits [batch, vocab]."""
        for cache in caches:
            if cache.length + 1 > cache.capacity:
                raise ValueError(f"The {cache.capacity}-token context is full.")
        if self._native is not None:
            out = self._native.step(self, tokens, caches)
        else:
            x = F.embedding(torch.tensor(tokens)[:, None], self.embed)
            positions = torch.tensor([[c.length] for c in caches])
            out = self._forward(x, caches, positions)
        for cache, token in zip(caches, tokens, strict=True):
            cache.tokens.append(token)
        return out

    def _forward(
        self, x: Tensor, caches: list[KVCache], positions: Tensor, stored: Tensor | None = None, extra: int = 0
    ) -> Tensor:
        """Run the layers on `x` ([batch, steps, hidden]) at `positions`, writing keys and values into the caches.

        `stored` (a prefill of one sequence only) marks the rows whose keys and values were spliced in from stored
        blocks: they are computed through the first layer, and then only the `extra` of them whose second-layer
        values differ most from the stored ones go on with the other rows (the rest keep their stored values).
        """
        batch, steps, _ = x.shape
        hd, nh, nkv = self.head_dim, self.heads, self.kv_heads
        cos_t, sin_t = self._rope(int(positions.max()) + 1)
        cos, sin = cos_t[positions][:, :, None, :], sin_t[positions][:, :, None, :]  # [B, T, 1, hd]
        starts = [c.length for c in caches]
        mask = None
        spots: Tensor | None = None  # a prefill's positions, when they are not one run after the cached prefix
        total = int(positions[0, -1]) + 1
        if steps > 1:  # prefill: token i sees every position up to its own (a cached prefix, stored blocks)
            mask = torch.arange(total)[None, :] <= positions[0, :, None]
            if total != starts[0] + steps or stored is not None:
                spots, starts = positions[0], [total - steps]
        for i, layer in enumerate(self.layers):
            h = F.rms_norm(x, (x.shape[-1],), layer.norm1, self.eps)
            qkv = layer.qkv(h.to(self._dtype)).float()
            if i == 1 and stored is not None and spots is not None and mask is not None:
                fresh = qkv[0, :, (nh + nkv) * hd :].view(steps, nkv, hd)
                drift = (fresh - caches[0].values[i][:, spots].transpose(0, 1).float()).square().sum((1, 2))
                drift[~stored] = float("inf")  # the prompt's own tokens always go on
                chosen = drift.topk(min(steps, int((~stored).sum()) + extra)).indices.sort().values
                x, qkv, cos, sin = x[:, chosen], qkv[:, chosen], cos[:, chosen], sin[:, chosen]
                spots, mask, steps = spots[chosen], mask[chosen], len(chosen)
                starts = [total - steps]
            qk = qkv[..., : (nh + nkv) * hd].view(batch, steps, nh + nkv, hd)
            qk = qk * cos + _rotate_half(qk) * sin
            q = qk[:, :, :nh].transpose(1, 2)  # [B, nh, T, hd]
            k = qk[:, :, nh:].transpose(1, 2)
            v = qkv[..., (nh + nkv) * hd :].view(batch, steps, nkv, hd).transpose(1, 2)
            outs = []
            for b, cache in enumerate(caches):
                end = starts[b] + steps
                if spots is None:
                    cache.keys[i][:, starts[b] : end] = k[b]
                    cache.values[i][:, starts[b] : end] = v[b]
                else:
                    cache.keys[i][:, spots] = k[b].to(cache.keys[i].dtype)
                    cache.values[i][:, spots] = v[b].to(cache.values[i].dtype)
                outs.append(
                    F.scaled_dot_product_attention(
                        q[b : b + 1],
                        cache.keys[i][None, :, :end].float(),  # no copy for a float32 cache
                        cache.values[i][None, :, :end].float(),
                        attn_mask=mask,
                        enable_gqa=True,
                    )
                )
            attn = (torch.cat(outs) if batch > 1 else outs[0]).transpose(1, 2).reshape(batch, steps, nh * hd)
            x = x + layer.o(attn.to(self._dtype)).float()
            h = F.rms_norm(x, (x.shape[-1],), layer.norm2, self.eps)
            gate, up = layer.gate_up(h.to(self._dtype)).float().chunk(2, dim=-1)
            x = x + layer.down((F.silu(gate) * up).to(self._dtype)).float()
        for b, cache in enumerate(caches):
            cache.length = starts[b] + steps
        last = F.rms_norm(x[:, -1], (x.shape[-1],), self.final_norm, self.eps)
        logits: Tensor = self.lm_head(last.to(self._head_dtype)).float()
        return logits


class _NativeStep:
    """The engine's weights as the native decode step reads them: float16 matrices, float32 norms, addresses."""

    def __init__(self, lib: Any, engine: LlamaEngine, layers: list[_Layer], head: Tensor) -> None:
        self._lib = lib
        self._keep: list[Tensor] = []  # the tensors whose addresses the library reads
        addresses: list[int] = []
        for layer in layers:
            for linear in (layer.qkv, layer.o, layer.gate_up, layer.down):
                addresses.append(self._held(linear.weight.detach().to(torch.float16)))
            addresses += [self._held(layer.norm1.float()), self._held(layer.norm2.float())]
        addresses += [self._held(engine.final_norm.float()), self._held(head.detach().to(torch.float16))]
        self._weights = torch.tensor(addresses, dtype=torch.int64)
        hidden = int(engine.embed.shape[1])
        inter = int(layers[0].down.weight.shape[1])
        dims = [len(layers), hidden, inter, engine.heads, engine.kv_heads, engine.head_dim, engine.vocab]
        self._dims = torch.tensor(dims, dtype=torch.int64)

    def _held(self, tensor: Tensor) -> int:
        tensor = tensor.contiguous()
        self._keep.append(tensor)
        return int(tensor.data_ptr())

    @classmethod
    def create(cls, engine: LlamaEngine, layers: list[_Layer], head: Tensor) -> _NativeStep | None:
        """The native step for these weights, or None when the library cannot be had here."""
        from plugins.responders.native import library

        lib = library()
        return cls(lib, engine, layers, head) if lib is not None else None

    def step(self, engine: LlamaEngine, tokens: list[int], caches: list[KVCache]) -> Tensor:
        """Logits [batch, vocab] for one new token per cache; writes each token's keys and values at its position."""
        batch = len(tokens)
        x = engine.embed[torch.tensor(tokens)].float().contiguous()  # the library reads float32 rows
        positions = torch.tensor([c.length for c in caches], dtype=torch.int64)
        cos, sin = engine._rope(int(positions.max()) + 1)
        for cache in caches:
            if not cache.addresses:
                pairs = zip(cache.keys, cache.values, strict=True)
                cache.addresses = [int(t.data_ptr()) for pair in pairs for t in pair]
        addresses = torch.tensor([a for c in caches for a in c.addresses], dtype=torch.int64)
        capacities = torch.tensor([c.capacity for c in caches], dtype=torch.int64)
        logits = torch.empty(batch, engine.vocab)
        failed = self._lib.sb_decode(
            self._dims.data_ptr(),
            engine.eps,
            self._weights.data_ptr(),
            batch,
            x.data_ptr(),
            positions.data_ptr(),
            addresses.data_ptr(),
            capacities.data_ptr(),
            int(engine.kv == "float16"),
            cos.data_ptr(),
            sin.data_ptr(),
            logits.data_ptr(),
            torch.get_num_threads(),
        )
        if failed:
            raise MemoryError("The native decode step could not allocate its scratch memory.")
        for cache in caches:
            cache.length += 1
        return logits


def _convert(blocks: nn.ModuleList, quantize: str) -> nn.ModuleList:
    """The Linear layers of `blocks` in the given weight format (float32 stays as it is)."""
    if quantize == "int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # One scale per output row: a single scale per matrix loses the small rows (answers drift).
        return quantize_dynamic(blocks, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    if quantize == "fp16":
        from torch.ao.quantization import float16_dynamic_qconfig, quantize_dynamic

        # float16 weights, float32 arithmetic (fbgemm): half the bytes read per token.
        return quantize_dynamic(blocks, {nn.Linear: float16_dynamic_qconfig}, inplace=True)
    if quantize == "bf16":
        return blocks.to(torch.bfloat16)
    return blocks
