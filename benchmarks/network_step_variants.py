"""Kernel variants of the bare network step (forward + backward + AdamW of facediff's default U-Net on one
fixed batch, one thread): NCHW vs channels-last, fp32 vs bf16 autocast, eager vs torch.compile.

    OMP_NUM_THREADS=1 python benchmarks/network_step_variants.py 32 std 6      # NCHW, fp32
    OMP_NUM_THREADS=1 python benchmarks/network_step_variants.py 32 cl 6       # channels-last
    OMP_NUM_THREADS=1 python benchmarks/network_step_variants.py 32 std-bf16 3 # bf16 autocast
    OMP_NUM_THREADS=1 python benchmarks/network_step_variants.py 32 compile 8  # torch.compile (first step = compile)

Measured on the AVX2-only EPYC (2026-12-02, alone): std 14.5-16.8 img/s, cl 13.4-13.9, std-bf16 0.89,
compile 12.5 after 197 s of compilation. Prints the first step's seconds and the steady images/s.
"""
import sys, time, torch, torch.nn.functional as F
from facediff.config import load_config
from facediff.models.unet import build_unet
torch.set_num_threads(1)
size = int(sys.argv[1]); mode = sys.argv[2]; steps = int(sys.argv[3]) if len(sys.argv) > 3 else 6
cfg = load_config("default-32", ["model.conditioning=none"])
torch.manual_seed(0)
net = build_unet(cfg.model, size)
print("params", sum(p.numel() for p in net.parameters()))
fused = "fused" in mode
opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True) if fused else torch.optim.AdamW(net.parameters(), lr=1e-4)
cl = "cl" in mode
if cl: net = net.to(memory_format=torch.channels_last)
f = net
if "compile" in mode:
    f = torch.compile(net)
x = torch.randn(32, 3, size, size)
if cl: x = x.contiguous(memory_format=torch.channels_last)
t = torch.randint(0, 1000, (32,))
ts = []
for i in range(steps):
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in mode):
        out = f(x, t).sample
    loss = F.mse_loss(out.float(), x)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0, foreach=True if fused else None)
    opt.step(); opt.zero_grad(set_to_none=True)
    ts.append(time.perf_counter() - t0)
print(mode, size, "first %.1fs" % ts[0], "img/s %.2f" % (32 / (sum(ts[2:]) / len(ts[2:]))))
