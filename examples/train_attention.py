"""Train a small causal transformer with tilec attention (forward and FlashAttention-2
backward through ``torch.ops.tilec.attention``) and, from the same initial weights on the same
batches, the same model with torch's scaled_dot_product_attention; the two loss curves must
agree.

The task is synthetic next-token prediction: each sequence counts upward modulo the vocabulary
from a random start with a random stride, so a token follows from the two before it, which
only attention can see.

    python examples/train_attention.py [--steps 300] [--seq 32] [--heads 4] [--dim 64]
"""
from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

import ops.torch  # noqa: F401  (torch.ops.tilec.attention and its autograd)


class Block(nn.Module):
    """Pre-norm transformer block: causal multi-head attention and an MLP, both residual."""

    def __init__(self, dim: int, heads: int, use_tilec: bool):
        super().__init__()
        self.heads, self.use_tilec = heads, use_tilec
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        b, n, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if self.use_tilec:
            a = torch.ops.tilec.attention(q, k, v, True, None)
        else:
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, dim))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab: int, seq: int, dim: int, heads: int, layers: int = 2):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, dim), nn.Parameter(torch.randn(seq, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, use_tilec=True) for _ in range(layers))
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def batch(gen, size: int, seq: int, vocab: int):
    start = torch.randint(0, vocab, (size, 1), generator=gen)
    stride = torch.randint(1, 5, (size, 1), generator=gen)
    tokens = (start + stride * torch.arange(seq + 1)) % vocab
    return tokens[:, :-1], tokens[:, 1:]


def train(steps: int, seq: int, heads: int, dim: int, vocab: int = 32, size: int = 16) -> tuple[list, list]:
    torch.manual_seed(0)
    model = TinyLM(vocab, seq, dim, heads)
    reference = copy.deepcopy(model)
    for block in reference.blocks:
        block.use_tilec = False
    curves = []
    for m in (model, reference):
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(1)       # the same batches for both
        losses = []
        for _ in range(steps):
            x, y = batch(gen, size, seq, vocab)
            loss = nn.functional.cross_entropy(m(x).reshape(-1, vocab), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        curves.append(losses)
    return curves[0], curves[1]


def main(steps: int, seq: int, heads: int, dim: int) -> None:
    ours, ref = train(steps, seq, heads, dim)
    worst = max(abs(a - b) / b for a, b in zip(ours, ref))
    for i in sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1}):
        print(f"step {i:4d}  loss tilec {ours[i]:.4f}  torch {ref[i]:.4f}")
    print(f"loss fell from {ours[0]:.3f} to {ours[-1]:.3f}; largest relative difference between the "
          f"curves {worst:.2e}")
    if not (ours[-1] < 0.5 * ours[0] and worst < 2e-2):
        raise SystemExit("the tilec curve does not match torch's, or did not learn")
    print("loss curves match")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=64)
    a = p.parse_args()
    main(a.steps, a.seq, a.heads, a.dim)
