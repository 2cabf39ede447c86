#!/usr/bin/python3
"""PyTorch DDP baseline for `causalrm bench train --workers N`.

N processes on 127.0.0.1 with the gloo backend train the paper's reward model
(d -> 256 -> 64 -> 1, Adam lr 5e-4 wd 1e-6) with the causalrm-ips loss on a
global batch of 512 rows (512/N per process), like torch_reward.py. Prints one
JSON line: global rows/s.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torch_reward import read_safetensors


def worker(rank, args, port, out):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=args.workers)
    torch.manual_seed(0)
    t = read_safetensors(args.data, ["X_train", "mask_train", "y_train_binary", "propensity_train"])
    X = torch.from_numpy(np.array(t["X_train"], dtype=np.float32))
    o = torch.from_numpy(np.array(t["mask_train"], dtype=np.float32)).reshape(-1)
    y = torch.from_numpy(np.array(t["y_train_binary"], dtype=np.float32)).reshape(-1)
    p = torch.from_numpy(np.array(t["propensity_train"], dtype=np.float32)).reshape(-1).clamp(0.1, 1.0)
    d = X.shape[1]
    model = torch.nn.Sequential(
        torch.nn.Linear(d, 256), torch.nn.LeakyReLU(0.01),
        torch.nn.Linear(256, 64), torch.nn.LeakyReLU(0.01),
        torch.nn.Linear(64, 1))
    model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-6)
    r01, r10 = 0.1, 0.2
    D = 1 - r01 - r10
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    local = args.batch // args.workers
    n = X.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))

    def step(i):
        lo = (i * args.batch) % max(n - args.batch, 1) + rank * local
        idx = perm[lo:lo + local]
        xb, ob, yb, pb = X[idx], o[idx], y[idx], p[idx]
        f = model(xb).squeeze(-1)
        l1 = bce(f, torch.ones_like(f), reduction="none")
        l0 = bce(f, torch.zeros_like(f), reduction="none")
        lt = torch.where(yb > 0.5, ((1 - r10) * l1 - r01 * l0) / D, ((1 - r01) * l0 - r10 * l1) / D)
        loss = (ob * lt / pb).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    dist.barrier()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    dist.barrier()
    el = time.perf_counter() - t0
    if rank == 0:
        out.put(args.steps * args.batch / el)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per process")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=512, help="global batch")
    ap.add_argument("--port", type=int, default=29531)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, args, args.port, out)) for r in range(args.workers)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    if any(pr.exitcode != 0 for pr in procs):
        raise SystemExit("a DDP worker failed")
    print(json.dumps({"rows_per_s": out.get(), "workers": args.workers, "threads": args.threads,
                      "steps": args.steps, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
