"""MViT (Fan et al., 2021) and MViTv2 (Li et al., 2022): transformers over spatiotemporal patches
whose attention pools its queries (shrinking the token map stage by stage) and its keys and values.

One network covers both, as in PySlowFast, whose names and config keys it uses (``blocks.3.attn.qkv``,
``pool_q_stride``, ``dim_mul``): MViTv1 adds absolute position embeddings (``abs_pos``) and widens
a block after its MLP; MViTv2 adds relative positions to the attention (``rel_pos``), adds the
pooled query back to the attention's output (``residual_pooling``) and widens a block in its
attention (``dim_mul_in_att``). torchvision's and PyTorchVideo's names are renamed by the key maps
registered here; PyTorchVideo's separate q, k and v projections are fused into ``qkv``.

Every token count is fixed when the network is built from the clip contract (frames, crop), so
the graph has static shapes except the batch, and nothing writes into a slice of a tensor: the
class token's row and column are padded with zeros instead, which exports cleanly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import VideoNetwork, register_model
from streamrec.models.checkpoint_keys import rename, renamed_keys
from streamrec.models.resnet3d import average_positions, check_head_average

LAYER_NORM_EPS = 1e-6  # every reference's blocks and final norm


def round_width(width: float, multiplier: float, divisor: int = 1) -> int:
    """PySlowFast's rounding of a scaled width (or head count) to a multiple of ``divisor``, at least 1."""
    scaled = width * multiplier
    rounded = max(1, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


@dataclass(frozen=True)
class BlockShape:
    """One block's widths, heads and pooling, and the token map (T, H, W) it receives."""

    dim: int
    dim_out: int
    heads: int
    thw: tuple[int, int, int]
    kernel_q: tuple[int, ...]
    stride_q: tuple[int, ...]
    kernel_kv: tuple[int, ...]
    stride_kv: tuple[int, ...]


def block_shapes(*, thw: tuple[int, int, int], depth: int, embed_dim: int, num_heads: int,
                 dim_mul: Sequence[Sequence[float]], head_mul: Sequence[Sequence[float]],
                 pool_q_stride: Sequence[Sequence[int]], pool_kv_stride_adaptive: Sequence[int] | None,
                 pool_kvq_kernel: Sequence[int] | None, dim_mul_in_att: bool) -> list[BlockShape]:
    """Each block's shape from PySlowFast's MVIT config keys, computed as PySlowFast computes them."""
    dim_muls, head_muls = [1.0] * (depth + 1), [1.0] * (depth + 1)
    for name, rows in (("dim_mul", dim_mul), ("head_mul", head_mul)):
        for index, _ in rows:
            if not 0 <= index <= depth:
                raise StreamrecError(f"model.{name} names block {index}; blocks are 0..{depth} (model.depth {depth})")
    for index, value in dim_mul:
        dim_muls[int(index)] = value
    for index, value in head_mul:
        head_muls[int(index)] = value
    stride_q: list[tuple[int, ...]] = [()] * depth
    kernel_q: list[tuple[int, ...]] = [()] * depth
    for index, *stride in pool_q_stride:
        if not 0 <= index < depth:
            raise StreamrecError(f"model.pool_q_stride names block {index}; blocks are 0..{depth - 1}")
        stride_q[index] = tuple(stride)
        kernel_q[index] = tuple(pool_kvq_kernel) if pool_kvq_kernel else tuple(s + 1 if s > 1 else s for s in stride)
    stride_kv: list[tuple[int, ...]] = [()] * depth
    if pool_kv_stride_adaptive is not None:
        adaptive = list(pool_kv_stride_adaptive)
        for i in range(depth):
            if stride_q[i]:
                adaptive = [max(a // s, 1) for a, s in zip(adaptive, stride_q[i])]
            stride_kv[i] = tuple(adaptive)
    kernel_kv = [(tuple(pool_kvq_kernel) if pool_kvq_kernel else tuple(s + 1 if s > 1 else s for s in stride))
                 if stride else () for stride in stride_kv]

    shapes, dim, heads = [], embed_dim, num_heads
    for i in range(depth):
        heads = round_width(heads, head_muls[i])
        if dim_mul_in_att:
            dim_out = round_width(dim, dim_muls[i], divisor=round_width(heads, head_muls[i]))
        else:
            dim_out = round_width(dim, dim_muls[i + 1], divisor=round_width(heads, head_muls[i + 1]))
        shapes.append(BlockShape(dim, dim_out, heads, thw, kernel_q[i], stride_q[i], kernel_kv[i], stride_kv[i]))
        if stride_q[i]:
            thw = tuple(size // stride for size, stride in zip(thw, stride_q[i]))  # type: ignore[assignment]
        dim = dim_out
    return shapes


def _conv_output(thw: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                 padding: Sequence[int] | None = None) -> tuple[int, int, int]:
    """The map a convolution or pool leaves (padding: half the kernel unless given)."""
    padding = [k // 2 for k in kernel] if padding is None else padding
    sizes = ((size + 2 * p - k) // s + 1 for size, k, s, p in zip(thw, kernel, stride, padding))
    return tuple(sizes)  # type: ignore[return-value]


def pool_tokens(x: torch.Tensor, pool: nn.Module, thw: tuple[int, int, int]) -> torch.Tensor:
    """Pool the position tokens of ``[B, G, 1 + T*H*W, C]`` over their (T, H, W) map; the class token
    (first) passes through (PySlowFast's ``attention_pool``, before its norm)."""
    groups, channels = x.shape[1], x.shape[3]
    positions = x[:, :, 1:, :].reshape(-1, *thw, channels).permute(0, 4, 1, 2, 3)
    pooled = pool(positions).flatten(2).transpose(1, 2)  # B*G, T'*H'*W', C
    return torch.cat([x[:, :, :1, :], pooled.reshape(-1, groups, pooled.shape[1], channels)], dim=2)


def _along(queries: torch.Tensor, table: torch.Tensor, axis: int) -> torch.Tensor:
    """``out[..., a, ..., k] = sum_c queries[..., a, ..., c] * table[a, k, c]`` for ``a`` on ``axis``
    (a batched matrix product, which every runtime has, rather than an einsum)."""
    moved = queries.movedim(axis, 0)
    product = torch.matmul(moved.reshape(moved.shape[0], -1, moved.shape[-1]), table.transpose(1, 2))
    return product.reshape(*moved.shape[:-1], table.shape[1]).movedim(0, axis)


class MultiScaleAttention(nn.Module):
    """Multi-head attention whose queries, keys and values are pooled by depthwise 3D convolutions over
    the token map, each followed by a layer norm (``pool_q``/``norm_q``, ...); with ``rel_pos``,
    MViTv2's decomposed relative positions: for a query at (t, h, w) and a key at (t', h', w'),
    ``q . (R_t[t - t'] + R_h[h - h'] + R_w[w - w'])``, distances rescaled where the maps differ."""

    def __init__(self, dim: int, dim_out: int, shape: BlockShape, qkv_bias: bool, rel_pos: bool,
                 residual_pooling: bool, pool_norm_eps: float):
        super().__init__()
        self.heads = shape.heads
        self.head_dim = dim_out // shape.heads
        self.dim_out = dim_out
        self.thw = shape.thw
        self.tokens = 1 + math.prod(shape.thw)
        self.scale = self.head_dim ** -0.5
        self.residual_pooling = residual_pooling
        self.qkv = nn.Linear(dim, 3 * dim_out, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        self.q_thw = self.kv_thw = shape.thw
        for name, kernel, stride in (("q", shape.kernel_q, shape.stride_q), ("k", shape.kernel_kv, shape.stride_kv),
                                     ("v", shape.kernel_kv, shape.stride_kv)):
            pools = bool(kernel) and (math.prod(kernel) > 1 or math.prod(stride) > 1)
            setattr(self, f"pool_{name}", nn.Conv3d(self.head_dim, self.head_dim, kernel, stride=stride,
                                                    padding=tuple(k // 2 for k in kernel), groups=self.head_dim,
                                                    bias=False) if pools else None)
            setattr(self, f"norm_{name}", nn.LayerNorm(self.head_dim, eps=pool_norm_eps) if pools else None)
            if pools and name in ("q", "k"):
                setattr(self, f"{name if name == 'q' else 'kv'}_thw", _conv_output(shape.thw, kernel, stride))
        self.q_tokens = 1 + math.prod(self.q_thw)
        if rel_pos:
            size = max(shape.thw[1:])
            q_size = size // shape.stride_q[1] if shape.stride_q else size
            kv_size = size // shape.stride_kv[1] if shape.stride_kv else size
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * max(q_size, kv_size) - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * max(q_size, kv_size) - 1, self.head_dim))
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * shape.thw[0] - 1, self.head_dim))
            for table in (self.rel_pos_h, self.rel_pos_w, self.rel_pos_t):
                nn.init.trunc_normal_(table, std=0.02)
        self.rel_pos = rel_pos

    def _pool(self, x: torch.Tensor, name: str) -> torch.Tensor:
        pool, norm = getattr(self, f"pool_{name}"), getattr(self, f"norm_{name}")
        return x if pool is None else norm(pool_tokens(x, pool, self.thw))

    @staticmethod
    def _relative_table(table: torch.Tensor, q_size: int, k_size: int) -> torch.Tensor:
        """The table's rows for every (query, key) distance, ``[q_size, k_size, C]``."""
        length = 2 * max(q_size, k_size) - 1
        if table.shape[0] != length:  # another map size than the table's: resample it
            table = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear").squeeze(0).t()
        q_ratio, k_ratio = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
        distance = torch.arange(q_size)[:, None] * q_ratio - torch.arange(k_size)[None, :] * k_ratio
        return table[(distance + (k_size - 1) * k_ratio).long()]

    def _relative_positions(self, q: torch.Tensor) -> torch.Tensor:
        """The relative position terms of the position tokens, ``[B, heads, Lq, Lk]``."""
        (qt, qh, qw), (kt, kh, kw) = self.q_thw, self.kv_thw
        queries = q[:, :, 1:, :].reshape(-1, self.heads, qt, qh, qw, self.head_dim)
        rel_t = _along(queries, self._relative_table(self.rel_pos_t, qt, kt), 2)  # B, heads, qt, qh, qw, kt
        rel_h = _along(queries, self._relative_table(self.rel_pos_h, qh, kh), 3)
        rel_w = _along(queries, self._relative_table(self.rel_pos_w, qw, kw), 4)
        terms = rel_t[..., :, None, None] + rel_h[..., None, :, None] + rel_w[..., None, None, :]
        return terms.reshape(-1, self.heads, qt * qh * qw, kt * kh * kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x).reshape(-1, self.tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = self._pool(qkv[0], "q"), self._pool(qkv[1], "k"), self._pool(qkv[2], "v")  # B, heads, L, C
        attention = torch.matmul(q * self.scale, k.transpose(-2, -1))
        if self.rel_pos:  # zeros for the class token's row and column
            attention = attention + F.pad(self._relative_positions(q), (1, 0, 1, 0))
        x = torch.matmul(attention.softmax(dim=-1), v)
        if self.residual_pooling:  # the pooled query joins the output, the class token's row excepted
            x = x + F.pad(q[:, :, 1:, :], (0, 0, 1, 0))
        return self.proj(x.transpose(1, 2).reshape(-1, self.q_tokens, self.dim_out))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dim_out: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MultiScaleBlock(nn.Module):
    """norm -> pooled attention (+ the max-pooled input) -> norm -> MLP (+ its input); a width change
    projects the shortcut from the normalised tokens (in the attention: ``dim_mul_in_att``)."""

    def __init__(self, shape: BlockShape, mlp_ratio: float, qkv_bias: bool, rel_pos: bool, residual_pooling: bool,
                 dim_mul_in_att: bool, pool_norm_eps: float):
        super().__init__()
        dim, dim_out = shape.dim, shape.dim_out
        attention_dim = dim_out if dim_mul_in_att else dim
        self.dim_mul_in_att = dim_mul_in_att
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = MultiScaleAttention(dim, attention_dim, shape, qkv_bias, rel_pos, residual_pooling, pool_norm_eps)
        self.norm2 = nn.LayerNorm(attention_dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(attention_dim, int(attention_dim * mlp_ratio), dim_out)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.thw = shape.thw
        self.pool_skip = None
        if shape.stride_q and math.prod(shape.stride_q) > 1:
            kernel = tuple(s + 1 if s > 1 else s for s in shape.stride_q)
            self.pool_skip = nn.MaxPool3d(kernel, stride=tuple(shape.stride_q), padding=tuple(k // 2 for k in kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        attended = self.attn(normed)
        if self.dim_mul_in_att and self.proj is not None:
            x = self.proj(normed)
        if self.pool_skip is not None:
            x = pool_tokens(x.unsqueeze(1), self.pool_skip, self.thw).squeeze(1)
        x = x + attended
        normed = self.norm2(x)
        if not self.dim_mul_in_att and self.proj is not None:
            x = self.proj(normed)
        return x + self.mlp(normed)


class MViTHead(nn.Module):
    """Dropout and a linear projection of the class token; ``average`` as in `streamrec.models.resnet3d.Head`
    (one position: ``softmax`` returns log-probabilities, ``logits`` the logits)."""

    def __init__(self, dim: int, num_classes: int, dropout: float, average: str):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(dim, num_classes)
        self.average = check_head_average(average)

    def forward(self, class_token: torch.Tensor) -> torch.Tensor:
        logits = self.projection(self.dropout(class_token))
        return average_positions(logits[:, None, None, None, :], self.average)


class MViT(VideoNetwork):
    """Arguments as in the `mvit` builder, which holds the defaults."""

    classifier_name = "head.projection"

    def __init__(self, *, num_classes: int, frames: int, crop_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, qkv_bias: bool, patch_kernel: Sequence[int], patch_stride: Sequence[int],
                 patch_padding: Sequence[int], dim_mul: Sequence[Sequence[float]], head_mul: Sequence[Sequence[float]],
                 pool_q_stride: Sequence[Sequence[int]], pool_kv_stride_adaptive: Sequence[int] | None,
                 pool_kvq_kernel: Sequence[int] | None, abs_pos: bool, rel_pos: bool, dim_mul_in_att: bool,
                 residual_pooling: bool, pool_norm_eps: float, dropout: float, head_average: str):
        super().__init__()
        self.patch_embed = nn.Module()  # PySlowFast's PatchEmbed: one convolution, named proj
        self.patch_embed.proj = nn.Conv3d(3, embed_dim, tuple(patch_kernel), stride=tuple(patch_stride),
                                          padding=tuple(patch_padding))
        self.thw = thw = _conv_output((frames, crop_size, crop_size), patch_kernel, patch_stride, patch_padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.abs_pos = abs_pos
        if abs_pos:  # separate spatial and temporal tables (PySlowFast's SEP_POS_EMBED)
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, thw[1] * thw[2], embed_dim))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, thw[0], embed_dim))
            self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, embed_dim))
        shapes = block_shapes(thw=thw, depth=depth, embed_dim=embed_dim, num_heads=num_heads, dim_mul=dim_mul,
                              head_mul=head_mul, pool_q_stride=pool_q_stride,
                              pool_kv_stride_adaptive=pool_kv_stride_adaptive, pool_kvq_kernel=pool_kvq_kernel,
                              dim_mul_in_att=dim_mul_in_att)
        self.blocks = nn.ModuleList(
            MultiScaleBlock(shape, mlp_ratio, qkv_bias, rel_pos, residual_pooling, dim_mul_in_att, pool_norm_eps)
            for shape in shapes
        )
        self.norm = nn.LayerNorm(shapes[-1].dim_out, eps=LAYER_NORM_EPS)
        self.head = MViTHead(shapes[-1].dim_out, num_classes, dropout, head_average)
        with torch.no_grad():  # PySlowFast's initialisation of the embeddings (any trained weights replace it)
            for parameter in (self.cls_token, *((self.pos_embed_spatial, self.pos_embed_temporal, self.pos_embed_class)
                                                 if abs_pos else ())):
                nn.init.trunc_normal_(parameter, std=0.02)

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        x = self.patch_embed.proj(pathways[0]).flatten(2).transpose(1, 2)  # B, T*H*W, C
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.abs_pos:
            positions = (self.pos_embed_spatial.repeat(1, self.thw[0], 1)
                         + torch.repeat_interleave(self.pos_embed_temporal, self.thw[1] * self.thw[2], dim=1))
            x = x + torch.cat([self.pos_embed_class, positions], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def fuse_qkv(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Separate ``attn.q``, ``attn.k``, ``attn.v`` projections (PyTorchVideo, PySlowFast's SEPARATE_QKV)
    as the one ``attn.qkv`` they compute together: their outputs stacked in that order."""
    fused = dict(state_dict)
    for key in state_dict:
        if m := re.fullmatch(r"(.*\.attn)\.q\.(weight|bias)", key):
            parts = [f"{m[1]}.{p}.{m[2]}" for p in "qkv"]
            if all(part in state_dict for part in parts):
                fused[f"{m[1]}.qkv.{m[2]}"] = torch.cat([fused.pop(part) for part in parts])
    return fused


POOLS = r"(pool_[qkv])"
TORCHVISION_RENAMES = (
    rename(r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1"),
    rename(r"pos_encoding\.class_token", "cls_token"),  # torchvision drops the unit dims: fitted on loading
    rename(r"pos_encoding\.spatial_pos", "pos_embed_spatial"),
    rename(r"pos_encoding\.temporal_pos", "pos_embed_temporal"),
    rename(r"pos_encoding\.class_pos", "pos_embed_class"),
    rename(r"blocks\.(\d+)\.attn\.project\.0\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    rename(rf"blocks\.(\d+)\.attn\.{POOLS}\.pool\.weight", r"blocks.\1.attn.\2.weight"),
    rename(rf"blocks\.(\d+)\.attn\.{POOLS}\.norm_act\.0\.(weight|bias)",
           lambda m: f"blocks.{m[1]}.attn.norm_{m[2][-1]}.{m[3]}"),
    rename(r"blocks\.(\d+)\.mlp\.0\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    rename(r"blocks\.(\d+)\.mlp\.3\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    rename(r"blocks\.(\d+)\.project\.(weight|bias)", r"blocks.\1.proj.\2"),
    rename(r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.rel_pos_[hwt])(\.weight|\.bias|)", r"blocks.\1.\2\3"),
    rename(r"norm\.(weight|bias)", r"norm.\1"),
    rename(r"head\.1\.(weight|bias)", r"head.projection.\1"),
)
PYTORCHVIDEO_RENAMES = (
    rename(r"patch_embed\.patch_model\.(weight|bias)", r"patch_embed.proj.\1"),
    rename(r"cls_positional_encoding\.(cls_token|pos_embed_spatial|pos_embed_temporal|pos_embed_class)", r"\1"),
    rename(r"blocks\.(\d+)\.(norm[12]|attn\.qkv|attn\.proj|attn\.(?:pool|norm)_[qkv]|mlp\.fc[12]|proj)\.(weight|bias)",
           r"blocks.\1.\2.\3"),
    rename(r"norm_embed\.(weight|bias)", r"norm.\1"),
    rename(r"head\.proj\.(weight|bias)", r"head.projection.\1"),
)


@register_model("mvit", checkpoint_keys={"torchvision": renamed_keys(TORCHVISION_RENAMES),
                                          "pytorchvideo": renamed_keys(PYTORCHVIDEO_RENAMES)},
                checkpoint_tensors={"pytorchvideo": fuse_qkv, "pyslowfast": fuse_qkv})
def mvit(
    *,
    clip: ClipConfig,
    num_classes: int,
    embed_dim: int = 96,
    depth: int = 16,
    num_heads: int = 1,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    patch_kernel: Sequence[int] = (3, 7, 7),
    patch_stride: Sequence[int] = (2, 4, 4),
    patch_padding: Sequence[int] = (1, 3, 3),
    dim_mul: Sequence[Sequence[float]] = ((1, 2.0), (3, 2.0), (14, 2.0)),
    head_mul: Sequence[Sequence[float]] = ((1, 2.0), (3, 2.0), (14, 2.0)),
    pool_q_stride: Sequence[Sequence[int]] = ((1, 1, 2, 2), (3, 1, 2, 2), (14, 1, 2, 2)),
    pool_kv_stride_adaptive: Sequence[int] | None = (1, 8, 8),
    pool_kvq_kernel: Sequence[int] | None = (3, 3, 3),
    abs_pos: bool = True,
    rel_pos: bool = False,
    dim_mul_in_att: bool = False,
    residual_pooling: bool = False,
    pool_norm_eps: float = 1e-6,
    dropout: float = 0.5,
    head_average: str = "logits",
) -> MViT:
    """MViT for a clip contract; the defaults are MViTv1-B (PySlowFast's MVIT_B_16x4_CONV).

    The arguments are PySlowFast's MVIT config keys, lower-cased: ``embed_dim``, ``depth``, ``num_heads``,
    ``mlp_ratio``, ``qkv_bias``, ``patch_kernel/stride/padding`` (the patch embedding), ``dim_mul`` and
    ``head_mul`` ([block, factor]: where width and heads grow), ``pool_q_stride`` ([block, t, h, w]:
    where queries are pooled), ``pool_kv_stride_adaptive`` (the keys' and values' first stride, divided
    by each query stride), ``pool_kvq_kernel``; ``abs_pos`` (USE_ABS_POS with SEP_POS_EMBED),
    ``rel_pos`` (REL_POS_SPATIAL and REL_POS_TEMPORAL), ``dim_mul_in_att``, ``residual_pooling``.
    ``pool_norm_eps``: the pooling norms' epsilon (1e-6 in PySlowFast and torchvision, 1e-5 in
    PyTorchVideo). ``dropout``, ``head_average``: as in `slowfast`; the network runs at the clip's crop.
    """
    if clip.alpha:
        raise StreamrecError("arch 'mvit' is single-pathway: remove clip.alpha (or set it to null)")
    return MViT(num_classes=num_classes, frames=clip.num_frames, crop_size=clip.crop_size, embed_dim=embed_dim,
                depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, patch_kernel=patch_kernel,
                patch_stride=patch_stride, patch_padding=patch_padding, dim_mul=dim_mul, head_mul=head_mul,
                pool_q_stride=pool_q_stride, pool_kv_stride_adaptive=pool_kv_stride_adaptive,
                pool_kvq_kernel=pool_kvq_kernel, abs_pos=abs_pos, rel_pos=rel_pos, dim_mul_in_att=dim_mul_in_att,
                residual_pooling=residual_pooling, pool_norm_eps=pool_norm_eps, dropout=dropout,
                head_average=head_average)
