"""Small transformer building blocks written with plain MatMul/Softmax so they export cleanly to ONNX and run on tract."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        assert dim % heads == 0
        self.h, self.dh = heads, dim // heads
        kv_dim = kv_dim or dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.o = nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, dh]
        b, t, _ = x.shape
        return x.reshape(b, t, self.h, self.dh).transpose(1, 2)

    def attend(self, q, k, v, mask=None):
        a = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.dh))
        if mask is not None:
            a = a + mask
        a = torch.softmax(a, dim=-1)
        y = torch.matmul(a, v)  # [B, H, T, dh]
        b, _, t, _ = y.shape
        return self.o(y.transpose(1, 2).reshape(b, t, self.h * self.dh))

    def forward(self, x, kv=None, mask=None):
        kv = x if kv is None else kv
        return self.attend(self.split(self.q(x)), self.split(self.k(kv)), self.split(self.v(kv)), mask)


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Pre-norm self-attention block."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.n1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.n2, self.mlp = nn.LayerNorm(dim), MLP(dim)

    def forward(self, x, mask=None):
        x = x + self.attn(self.n1(x), mask=mask)
        return x + self.mlp(self.n2(x))


class DecoderBlock(nn.Module):
    """Pre-norm self-attention (masked) + cross-attention + MLP.

    `self_attn=False` drops the self-attention (the tokens only read `mem`): for the student's waypoint queries, whose
    graph on tract is mostly per-node overhead, that is a third of the block's nodes."""

    def __init__(self, dim: int, heads: int, mem_dim: int | None = None, self_attn: bool = True,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        if self_attn:
            self.n1, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads)
        else:
            self.n1 = self.self_attn = None
        self.n2, self.cross = nn.LayerNorm(dim), Attention(dim, heads, kv_dim=mem_dim)
        self.n3, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x, mem, mask=None):
        if self.self_attn is not None:
            x = x + self.self_attn(self.n1(x), mask=mask)
        x = x + self.cross(self.n2(x), kv=mem)
        return x + self.mlp(self.n3(x))


def causal_mask(t: int, device=None) -> torch.Tensor:
    """Additive [t, t] mask: 0 on and below the diagonal, -1e9 above."""
    return torch.triu(torch.full((t, t), -1e9, device=device), diagonal=1)


def cond_features(speed: torch.Tensor, target_points: torch.Tensor, speed_cap: float | None = None) -> torch.Tensor:
    """[B,1] speed (m/s) + [B,2,2] target points (m) -> [B,5] roughly unit-scale conditioning vector.

    `speed_cap` (m/s): the plan reads min(speed, cap); 0 = it cannot read the speed at all, None = the full speed.
    Why: a plan that reads the speed learns inertia -- the expert's next 2.5 s are mostly its speed times the time,
    so the waypoints follow the speed and not the car ahead (README, "The teacher did not look" and "Inertia: the
    speed input"); without it the plan must read the distance to what is ahead from the pixels. The op is left out
    of the graph when there is no cap, so models trained before it export the same graph."""
    if speed_cap is not None:
        speed = speed.clamp(max=speed_cap)
    return torch.cat([speed / 10.0, target_points.reshape(-1, 4) / 25.0], dim=1)


WP_SCALE = 10.0  # waypoint heads predict metres / WP_SCALE

EGO_DIM = 6 + 2 * 20 + 2 * 10


def ego_features(speed, speed_prev, target_points, path, speed_wps) -> torch.Tensor:
    """What a snapshot stores around a keyframe tick -- ego speed now and 0.5 s before (its window), the two target
    points and the driving branch's plan (20 path points, 10 speed waypoints) -- as one roughly unit-scale
    [B, EGO_DIM] vector for the language branch: whether the car accelerates, keeps its speed or stops is in the
    speed change and the plan, not in the pixels."""
    b = speed.shape[0]
    return torch.cat([cond_features(speed, target_points), (speed - speed_prev) / 2.0, path.reshape(b, -1) / WP_SCALE,
                      speed_wps.reshape(b, -1) / WP_SCALE], dim=1)
