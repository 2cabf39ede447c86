#!/usr/bin/python3
"""PyTorch DDP baseline for `causalrm bench train --workers N`.

N processes on 127.0.0.1 with the gloo backend train the paper's reward model
(d -> 256 -> 64 -> 1, Adam lr 5e-4 wd 1e-6) with the causalrm-ips loss on a
global batch of 512 rows (512/N per process), like torch_reward.py. Prints one
JSON line: global rows/s. With --device cuda[:N] every process trains on that
GPU (gloo all-reduces the CUDA gradients through host memory, as the Go
workers' ring does), and the clock is read after torch.cuda.synchronize().
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torch_reward import causalrm_ips_loss, load_rows, make_model


def worker(rank, args, port, out):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    on_gpu = dev.type == "cuda"
    if on_gpu:
        torch.cuda.set_device(dev)
    dist.init_process_group("gloo", rank=rank, world_size=args.workers)
    torch.manual_seed(0)
    X, o, y, p = (t.to(dev) for t in load_rows(args.data))
    net = make_model(X.shape[1]).to(dev)
    model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev] if on_gpu else None)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-6)
    local = args.batch // args.workers
    n = X.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(dev)

    def sync():
        if on_gpu:
            torch.cuda.synchronize(dev)

    def step(i):
        lo = (i * args.batch) % max(n - args.batch, 1) + rank * local
        idx = perm[lo:lo + local]
        xb, ob, yb, pb = X[idx], o[idx], y[idx], p[idx]
        f = model(xb).squeeze(-1)
        loss = causalrm_ips_loss(f, ob, yb, pb, 0.1, 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    sync()
    dist.barrier()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    sync()
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
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (every process on that GPU)")
    args = ap.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device %s: torch %s has no usable CUDA" % (args.device, torch.__version__))
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
                      "steps": args.steps, "batch": args.batch, "device": args.device, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
