#!/usr/bin/python3
"""PyTorch baseline for `causalrm bench train`.

Trains the paper's reward model (d -> 256 -> 64 -> 1, LeakyReLU 0.01, Adam
lr 5e-4 with L2 weight decay 1e-6, batch 512) with the causalrm-ips loss the
way the authors' scripts do: a forward pass over the whole batch and the
observation mask applied in the loss. Reads the same safetensors file the Go
side trains on and prints one JSON line with the measured rows/s.
Run it with Debian's /usr/bin/python3 (python3-torch + OpenBLAS), or with
--device cuda[:N] on a GPU (a CUDA build of torch): the model and every data
tensor then live on the device, and the clock is read after
torch.cuda.synchronize(), so the timed steps have finished on the GPU.
"""
import argparse
import json
import struct
import time

import numpy as np
import torch


def read_safetensors(path, names):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        dtypes = {"F32": np.float32, "F64": np.float64, "U8": np.uint8, "I64": np.int64, "BOOL": np.bool_}
        for name in names:
            info = header[name]
            lo, hi = info["data_offsets"]
            f.seek(base + lo)
            buf = f.read(hi - lo)
            out[name] = np.frombuffer(buf, dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        return out


def load_rows(path):
    """X, o, y and the clipped propensity of the training split."""
    t = read_safetensors(path, ["X_train", "mask_train", "y_train_binary", "propensity_train"])
    X = torch.from_numpy(np.array(t["X_train"], dtype=np.float32))
    o = torch.from_numpy(np.array(t["mask_train"], dtype=np.float32)).reshape(-1)
    y = torch.from_numpy(np.array(t["y_train_binary"], dtype=np.float32)).reshape(-1)
    p = torch.from_numpy(np.array(t["propensity_train"], dtype=np.float32)).reshape(-1).clamp(0.1, 1.0)
    return X, o, y, p


def make_model(d):
    """The paper's reward model: d -> 256 -> 64 -> 1 with LeakyReLU(0.01)."""
    model = torch.nn.Sequential(
        torch.nn.Linear(d, 256), torch.nn.LeakyReLU(0.01),
        torch.nn.Linear(256, 64), torch.nn.LeakyReLU(0.01),
        torch.nn.Linear(64, 1))
    return model


def causalrm_ips_loss(f, ob, yb, pb, r01, r10):
    """o * lt(f, y) / p averaged over the batch (docs/method.md, "The estimators")."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    D = max(1 - r01 - r10, 1e-6)
    l1 = bce(f, torch.ones_like(f), reduction="none")
    l0 = bce(f, torch.zeros_like(f), reduction="none")
    lt = torch.where(yb > 0.5, ((1 - r10) * l1 - r01 * l0) / D, ((1 - r01) * l0 - r10 * l1) / D)
    return (ob * lt / pb).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rho01", type=float, default=0.1)
    ap.add_argument("--rho10", type=float, default=0.2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    on_gpu = dev.type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("--device %s: torch %s has no usable CUDA" % (args.device, torch.__version__))
    X, o, y, p = (t.to(dev) for t in load_rows(args.data))
    model = make_model(X.shape[1]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-6)
    n = X.shape[0]
    g = torch.Generator().manual_seed(0)

    def sync():
        if on_gpu:
            torch.cuda.synchronize(dev)

    def step(idx):
        xb, ob, yb, pb = X[idx], o[idx], y[idx], p[idx]
        f = model(xb).squeeze(-1)
        loss = causalrm_ips_loss(f, ob, yb, pb, args.rho01, args.rho10)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    perm = torch.randperm(n, generator=g).to(dev)
    def batch(i):
        lo = (i * args.batch) % max(n - args.batch, 1)
        return perm[lo:lo + args.batch]
    for i in range(args.warmup):
        step(batch(i))
    sync()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(batch(args.warmup + i))
    sync()
    el = time.perf_counter() - t0
    name = str(dev)
    if on_gpu:
        name += " " + torch.cuda.get_device_name(dev)
    print(json.dumps({"rows_per_s": args.steps * args.batch / el, "steps": args.steps, "batch": args.batch,
                      "threads": args.threads, "device": name, "torch": torch.__version__, "seconds": el}))


if __name__ == "__main__":
    main()
