#!/usr/bin/env python3
"""PyTorch eager replica of ddlab's DDPM U-Net (crates/core/src/nn/unet.rs), to measure the
CPU time ddlab is compared against.

Same layers, channel counts, attention placement, GroupNorm groups, dropout, time embedding
and skip wiring as the Rust model, so the parameter count matches exactly (1,623,169 for the
mnist preset). Initialisation is irrelevant to speed and left at PyTorch's defaults.

One training step = ε-loss forward (q_sample on a linear β schedule, T = 1000) → backward →
global grad-norm clipping at 1.0 → AdamW (lr 2e-4) → EMA update (decay 0.999), as
`Trainer::train_step`. One sampling step = the network under `torch.no_grad()` plus the
ancestral DDPM update.

With --compile the network goes through `torch.compile` (default mode, inductor): the training
forward and the no-grad sampling forward are compiled separately during the warm-up steps
(at least three of each, so compilation never lands in a timed step).

Usage: python benchmarks/pytorch_unet.py --preset mnist --batch 64 [--device cuda] [--bf16] [--compile]
Prints one JSON object: medians in seconds, parameter count, peak RSS.
"""

import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # in_channels, base, mult, res blocks, attention_at (downsampling factors), heads,
    # dropout, groups, default image size
    "tiny": dict(in_ch=1, ch=8, mult=(1, 2), nres=1, attn=(2,), heads=1, dropout=0.0,
                 groups=4, size=16, img_ch=3),
    "small": dict(in_ch=3, ch=32, mult=(1, 2), nres=1, attn=(2,), heads=1, dropout=0.0,
                  groups=8, size=16, img_ch=3),
    "mnist": dict(in_ch=1, ch=32, mult=(1, 2, 2), nres=2, attn=(4,), heads=1, dropout=0.1,
                  groups=32, size=28, img_ch=1),
    "cifar": dict(in_ch=3, ch=128, mult=(1, 2, 2, 2), nres=2, attn=(2,), heads=1,
                  dropout=0.1, groups=32, size=32, img_ch=3),
}


def timestep_embedding(t, dim):
    half = dim // 2
    scale = math.log(10000.0) / (max(half, 2) - 1)
    freqs = torch.exp(-scale * torch.arange(half, dtype=torch.float64, device=t.device))
    a = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1).float()


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, temb_dim, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.temb_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x, temb_act):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb_act)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) if self.skip is not None else x) + h


class AttentionBlock(nn.Module):
    def __init__(self, ch, groups, heads):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-5)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)
        self.heads = heads

    def forward(self, x):
        b, c, h, w = x.shape
        heads, hd, n = self.heads, c // self.heads, h * w
        qkv = self.qkv(self.norm(x)).reshape(b, 3, heads, hd, n)
        q = qkv[:, 0].reshape(b * heads, hd, n)
        k = qkv[:, 1].reshape(b * heads, hd, n)
        v = qkv[:, 2].reshape(b * heads, hd, n)
        logits = torch.bmm(q.transpose(1, 2), k) * (1.0 / math.sqrt(hd))
        attn = logits.softmax(dim=-1)
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Up(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    def __init__(self, in_ch, ch, mult, nres, attn, heads, dropout, groups):
        super().__init__()
        temb_dim = 4 * ch
        self.ch = ch
        self.temb = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(in_ch, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        skip_ch, cur, ds = [ch], ch, 1
        for level, m in enumerate(mult):
            out = ch * m
            for _ in range(nres):
                stage = nn.ModuleList([ResBlock(cur, out, temb_dim, groups, dropout)])
                cur = out
                if ds in attn:
                    stage.append(AttentionBlock(cur, groups, heads))
                self.down.append(stage)
                skip_ch.append(cur)
            if level + 1 < len(mult):
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, 2, 1)]))
                skip_ch.append(cur)
                ds *= 2
        self.mid = nn.ModuleList([
            ResBlock(cur, cur, temb_dim, groups, dropout),
            AttentionBlock(cur, groups, heads),
            ResBlock(cur, cur, temb_dim, groups, dropout),
        ])
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            out = ch * m
            for i in range(nres + 1):
                skip = skip_ch.pop()
                stage = nn.ModuleList([ResBlock(cur + skip, out, temb_dim, groups, dropout)])
                cur = out
                if ds in attn:
                    stage.append(AttentionBlock(cur, groups, heads))
                if level > 0 and i == nres:
                    stage.append(Up(cur))
                    ds //= 2
                self.up.append(stage)
        self.norm_out = nn.GroupNorm(groups, cur, eps=1e-5)
        self.conv_out = nn.Conv2d(cur, in_ch, 3, 1, 1)

    @staticmethod
    def _block(block, h, temb_act):
        return block(h, temb_act) if isinstance(block, ResBlock) else block(h)

    def forward(self, x, t):
        temb_act = F.silu(self.temb(timestep_embedding(t, self.ch)))
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down:
            for block in stage:
                h = self._block(block, h, temb_act)
            skips.append(h)
        for block in self.mid:
            h = self._block(block, h, temb_act)
        for stage in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for block in stage:
                h = self._block(block, h, temb_act)
        return self.conv_out(F.silu(self.norm_out(h)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mnist", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--channels", type=int)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast for the forward and backward (weights stay f32)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the network (default mode, inductor)")
    args = ap.parse_args()
    if args.compile:
        args.warmup = max(args.warmup, 3)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)

    def sync():
        # CUDA kernels run asynchronously: wait for them before reading the clock.
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16)

    p = dict(PRESETS[args.preset])
    size = args.image_size or p["size"]
    img_ch = args.channels or p["img_ch"]
    del p["size"], p["img_ch"]
    p["in_ch"] = img_ch
    model = UNet(**p).to(dev)
    ema = [q.detach().clone() for q in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    n_params = sum(q.numel() for q in model.parameters())
    net = torch.compile(model) if args.compile else model

    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alpha_bars = torch.cumprod(1 - betas, 0)
    sqrt_ab = alpha_bars.sqrt().float().to(dev)
    sqrt_1m_ab = (1 - alpha_bars).sqrt().float().to(dev)
    B = args.batch
    x0 = torch.rand(B, img_ch, size, size, device=dev) * 2 - 1

    def train_step():
        model.train()
        sync()
        t0 = time.perf_counter()
        t = torch.randint(0, T, (B,), device=dev)
        noise = torch.randn_like(x0)
        x_t = sqrt_ab[t].view(B, 1, 1, 1) * x0 + sqrt_1m_ab[t].view(B, 1, 1, 1) * noise
        with autocast():
            out = net(x_t, t)
        loss = (out.float() - noise).square().flatten(1).mean(1).mean()
        loss_value = loss.item()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for s, q in zip(ema, model.parameters()):
                s.mul_(0.999).add_(q, alpha=0.001)
        sync()
        t3 = time.perf_counter()
        assert math.isfinite(loss_value)
        return t3 - t0, t1 - t0, t2 - t1, t3 - t2

    x = torch.randn(B, img_ch, size, size, device=dev)

    def sample_step():
        nonlocal x
        model.eval()
        sync()
        t0 = time.perf_counter()
        with torch.no_grad(), autocast():
            ti = 500
            eps = net(x, torch.full((B,), ti, device=dev)).float()
            a, ab = 1 - betas[ti].item(), alpha_bars[ti].item()
            mean = (x - (1 - a) / math.sqrt(1 - ab) * eps) / math.sqrt(a)
            x = mean + math.sqrt(betas[ti].item()) * torch.randn_like(x)
        sync()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        train_step()
    steps = [train_step() for _ in range(args.iters)]
    for _ in range(args.warmup):
        sample_step()
    samples = [sample_step() for _ in range(args.iters)]

    med = lambda i: statistics.median(s[i] for s in steps)
    report = {
        "impl": "pytorch-compile" if args.compile else "pytorch-eager",
        "torch": torch.__version__,
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "dtype": "bf16-autocast" if args.bf16 else "f32",
        "threads": torch.get_num_threads(),
        "preset": args.preset,
        "batch": B,
        "image_size": size,
        "channels": img_ch,
        "params": n_params,
        "train_step_s": med(0),
        "forward_s": med(1),
        "backward_s": med(2),
        "optimizer_s": med(3),
        "sample_step_s": statistics.median(samples),
        "images_per_s": B / med(0),
        # ru_maxrss is in KiB on Linux; MB (10^6 bytes) like ddlab bench.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
    }
    if dev.type == "cuda":
        report["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 1e6
    print(json.dumps(report))


if __name__ == "__main__":
    main()
