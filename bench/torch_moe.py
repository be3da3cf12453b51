#!/usr/bin/env python3
"""The `switchyard bench` MoE layer written in plain PyTorch, for comparison.

The layer is the one `switchyard bench` times, written the way a PyTorch user
would write it: expert-parallel over `torch.distributed` on CPU (gloo). Gloo
has no all-to-all, so each exchange sends per-peer row blocks with
point-to-point `isend`/`irecv`, after the ranks have exchanged their
per-expert row counts (one `all_gather`). The exchange is a
`torch.autograd.Function` whose backward is the reverse exchange, so
`--pass fwd_bwd` is plain autograd through the whole layer, router included.

  router   logits = x Wg^T in float32; mixtral / qwen2_moe / qwen3_moe: softmax,
           top-k, renormalised; deepseek_v3: sigmoid, group-limited top-k,
           renormalised, x 2.5 (routed_scaling_factor)
  experts  SwiGLU: down(silu(gate(x)) * up(x)), gate/up [I,H], down [H,I],
           F.linear per expert; experts in contiguous blocks over the ranks
           (the first E mod R ranks hold one more), as in Switchyard
  shared   qwen2_moe and deepseek_v3 add one ungated shared expert of size
           --ffn on every rank's own tokens (as `switchyard bench` does)
  dispatch every (token, choice) row goes to the owner of its expert, rows
           grouped by destination rank then expert; the owner regroups what it
           received per local expert, runs each expert on one batch, and sends
           the rows back; the sender sums them with the routing weights
  fwd      the forward under torch.inference_mode()
  fwd_bwd  forward, loss = 0.5 * (y * y).sum() (so dL/dy = y, the gradient
           `switchyard bench` feeds its backward), loss.backward(); gradients
           of x, router and all expert weights; grads set to None between steps
  f32/bf16 bf16: expert weights, shared expert and activations in
           torch.bfloat16 (`.to(torch.bfloat16)`); the router stays float32

Weights and inputs follow the distributions of `switchyard bench` (uniform in
+-1/sqrt(fan_in); inputs uniform in +-1; `--routing skewed` adds the same
shared direction to inputs and router rows) from torch's generator, so they
are not bit-identical to Switchyard's and per-expert loads differ by sampling
noise.

Timing, as `switchyard bench`: an iteration's time is the slowest rank's
(all_reduce MAX of the per-rank times), then p10/p50/p90 over the timed
iterations; tokens_per_s = tokens_per_rank * ranks / p50. Rank 0 prints one
line and, with --json FILE, appends one JSON line. `max_rel_error` is checked
on 4 tokens per rank against float64 (as `switchyard bench`: tolerance 1e-4
for f32, 3e-2 for bf16).

Run (from the repository root; the venv with torch is /tmp/pyref here):

  OMP_NUM_THREADS=1 /tmp/pyref/bin/torchrun --standalone --nproc_per_node 2 \\
      bench/torch_moe.py --pass fwd --dtype f32 --iters 5 --warmup 1 --json torch.jsonl

Same shapes as `OMP_NUM_THREADS=1 mpirun -np 2 build/launch/switchyard bench ...`.
`--threads N` (default 1) sets torch.set_num_threads(N) on every rank.
Without torchrun, `python bench/torch_moe.py` runs one rank, and
`python bench/torch_moe.py --nproc 2 ...` spawns 2 ranks itself
(torch.multiprocessing, FileStore rendezvous).

Correctness of the distributed layer (small shapes; all ranks' tokens through
a single-process dense float64 torch computation with the same routing
decisions; output, input gradient, router, expert and shared-expert weight
gradients; max relative error <= 1e-5 for f32, 3e-2 for bf16):

  OMP_NUM_THREADS=1 /tmp/pyref/bin/torchrun --standalone --nproc_per_node 2 \\
      bench/torch_moe.py --check [--arch qwen2_moe] [--routing skewed] [--experts 5]
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

ROUTER_ID, SHARED_ID, SKEW_ID = 1 << 20, (1 << 20) + 1, (1 << 20) + 2
BENCH_SHAPE = {"hidden": 1024, "ffn": 2048, "experts": 8, "top_k": 2, "tokens": 4096}
CHECK_SHAPE = {"hidden": 64, "ffn": 96, "experts": 8, "top_k": 2, "tokens": 37}
ARCHS = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, help="hidden size (default 1024; --check: 64)")
    p.add_argument("--ffn", type=int, help="expert intermediate size (default 2048; --check: 96)")
    p.add_argument("--experts", type=int, help="routed experts (default 8)")
    p.add_argument("--top-k", dest="top_k", type=int, help="experts per token (default 2)")
    p.add_argument("--tokens", type=int, help="tokens per rank (default 4096; --check: 37)")
    p.add_argument("--arch", default="mixtral", choices=ARCHS, help="router kind")
    p.add_argument("--pass", dest="pass_", default="fwd", choices=("fwd", "fwd_bwd"))
    p.add_argument("--dtype", default="f32", choices=("f32", "bf16"))
    p.add_argument("--iters", type=int, default=10, help="timed iterations")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--routing", default="uniform", choices=("uniform", "skewed"))
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic weights and inputs")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per rank")
    p.add_argument("--json", help="append one JSON line per run to this file (rank 0)")
    p.add_argument("--check", action="store_true",
                   help="verify against a single-process dense computation instead of timing")
    p.add_argument("--nproc", type=int, default=0,
                   help="without torchrun: spawn this many ranks (torch.multiprocessing, FileStore)")
    a = p.parse_args(argv)
    for k, v in (CHECK_SHAPE if a.check else BENCH_SHAPE).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    for k in ("hidden", "ffn", "experts", "top_k", "iters", "threads"):
        if getattr(a, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be positive")
    if a.tokens < 0 or a.warmup < 0:
        p.error("--tokens and --warmup must not be negative")
    if a.top_k > a.experts:
        p.error(f"--top-k {a.top_k} exceeds --experts {a.experts}")
    if a.arch == "deepseek_v3":
        topk_group, groups = topk_group_and_groups(a.experts)
        if a.top_k > topk_group * (a.experts // groups):
            p.error(f"--top-k {a.top_k} exceeds the {topk_group * (a.experts // groups)} experts of the kept "
                    f"deepseek_v3 groups")
    return a


def topk_group_and_groups(experts):
    """deepseek_v3 grouping of `switchyard bench`: 4 groups (keep 2) when E % 4 == 0 and E >= 8, else 1."""
    groups = 4 if experts % 4 == 0 and experts >= 8 else 1
    return (2 if groups == 4 else 1), groups


# ---------------------------------------------------------------- synthetic data
# A tensor is a function of (seed, tensor id), so any rank can rebuild any
# expert (the dense reference and the sampled error check need that).

def uniform(seed, tid, shape, scale):
    g = torch.Generator().manual_seed(seed * 1000003 + tid)
    return (torch.rand(shape, generator=g) * 2 - 1) * scale


def mlp_weights(seed, tid, H, I):
    """(gate [I,H], up [I,H], down [H,I]) in float32."""
    s_in, s_out = H ** -0.5, I ** -0.5
    return (uniform(seed, 3 * tid, (I, H), s_in), uniform(seed, 3 * tid + 1, (I, H), s_in),
            uniform(seed, 3 * tid + 2, (H, I), s_out))


def router_weights(a):
    w = uniform(a.seed, ROUTER_ID, (a.experts, a.hidden), a.hidden ** -0.5)
    if a.routing == "skewed":  # rows favour the shared direction u by expert index
        u = uniform(a.seed, SKEW_ID, (a.hidden,), 1.0)
        bias = 0.5 * (a.experts - torch.arange(a.experts, dtype=torch.float32)) / a.experts
        w += bias[:, None] * u[None, :] / a.hidden
    return w


def inputs(a, rank):
    x = uniform(a.seed + 17 + rank, 0, (a.tokens, a.hidden), 1.0)
    if a.routing == "skewed":
        x += 4.0 * uniform(a.seed, SKEW_ID, (a.hidden,), 1.0)
    return x


def has_shared(a):
    return a.arch in ("qwen2_moe", "deepseek_v3")


def placement(experts, ranks):
    """Contiguous blocks; the first experts % ranks ranks hold one more."""
    base, extra = divmod(experts, ranks)
    counts = [base + (r < extra) for r in range(ranks)]
    firsts = [sum(counts[:r]) for r in range(ranks)]
    return firsts, counts


# ---------------------------------------------------------------- the layer

def route(logits, a):
    """float32 logits [T,E] -> (weights [T,K] float32, differentiable; expert ids [T,K])."""
    K = a.top_k
    if a.arch == "deepseek_v3":
        scores = logits.sigmoid()
        topk_group, groups = topk_group_and_groups(a.experts)
        with torch.no_grad():
            T, E = scores.shape
            biased = scores  # + e_score_correction_bias, all zero in the benchmark
            group_scores = biased.view(T, groups, E // groups).topk(2, dim=-1).values.sum(-1)
            keep = group_scores.topk(topk_group, dim=-1).indices
            mask = torch.zeros(T, groups, dtype=torch.bool).scatter_(1, keep, True)
            mask = mask.repeat_interleave(E // groups, dim=1)
            idx = biased.masked_fill(~mask, float("-inf")).topk(K, dim=-1).indices
        w = scores.gather(1, idx)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * 2.5
    else:  # mixtral; qwen2_moe / qwen3_moe with norm_topk_prob = true
        probs = logits.softmax(dim=-1)
        w, idx = probs.topk(K, dim=-1)
        w = w / w.sum(-1, keepdim=True)
    return w, idx


def swiglu(x, gate, up, down):
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


def exchange_rows(x, send_splits, recv_splits):
    """Row block send_splits[p] of x goes to rank p; returns the blocks received, in rank order."""
    rank, world = dist.get_rank(), dist.get_world_size()
    x = x.contiguous()
    out = x.new_empty((sum(recv_splits),) + tuple(x.shape[1:]))
    send, recv = torch.split(x, send_splits), torch.split(out, recv_splits)
    reqs = []
    for step in range(1, world):
        src, dst = (rank - step) % world, (rank + step) % world
        if recv_splits[src]:
            reqs.append(dist.irecv(recv[src], src))
        if send_splits[dst]:
            reqs.append(dist.isend(send[dst], dst))
    recv[rank].copy_(send[rank])
    for r in reqs:
        r.wait()
    return out


class Exchange(torch.autograd.Function):
    """Differentiable point-to-point all-to-all: the backward sends the gradients back the reverse way."""

    @staticmethod
    def forward(ctx, x, send_splits, recv_splits):
        ctx.splits = (send_splits, recv_splits)
        return exchange_rows(x, send_splits, recv_splits)

    @staticmethod
    def backward(ctx, grad):
        send_splits, recv_splits = ctx.splits
        return exchange_rows(grad, recv_splits, send_splits), None, None


class ExpertParallelMoE:
    def __init__(self, a, rank, world, requires_grad):
        self.a, self.rank, self.world = a, rank, world
        dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
        self.dtype = dtype
        self.firsts, self.counts = placement(a.experts, world)
        self.first, self.n_local = self.firsts[rank], self.counts[rank]
        self.router = router_weights(a).requires_grad_(requires_grad)  # float32 always
        self.experts = [tuple(t.to(dtype).requires_grad_(requires_grad)
                              for t in mlp_weights(a.seed, e, a.hidden, a.ffn))
                        for e in range(self.first, self.first + self.n_local)]
        self.shared = None
        if has_shared(a):
            self.shared = tuple(t.to(dtype).requires_grad_(requires_grad)
                                for t in mlp_weights(a.seed, SHARED_ID, a.hidden, a.ffn))

    def parameters(self):
        ps = [self.router] + [w for ex in self.experts for w in ex]
        return ps + (list(self.shared) if self.shared else [])

    def __call__(self, x):
        a, R, K = self.a, self.world, self.a.top_k
        # 1. Route (float32).
        w, idx = route(F.linear(x.float(), self.router), a)
        # 2. Sort (token, choice) slots by expert: grouped by destination rank, then expert.
        flat = idx.reshape(-1)
        order = flat.argsort(stable=True)
        tok = torch.div(order, K, rounding_mode="floor")
        counts = torch.bincount(flat, minlength=a.experts)
        # 3. Exchange the per-expert counts, then the rows.
        gathered = [torch.empty_like(counts) for _ in range(R)]
        dist.all_gather(gathered, counts)
        recv_per = torch.stack(gathered)[:, self.first:self.first + self.n_local]  # [R, local experts]
        send_splits = [int(counts[f:f + n].sum()) for f, n in zip(self.firsts, self.counts)]
        recv_splits = recv_per.sum(1).tolist()
        recv = Exchange.apply(x.index_select(0, tok), send_splits, recv_splits)
        # 4. Regroup received rows per local expert; one batch per expert.
        key = torch.repeat_interleave(torch.arange(self.n_local).repeat(R), recv_per.reshape(-1))
        perm = key.argsort(stable=True)
        grouped = recv.index_select(0, perm)
        outs = [swiglu(xs, *ex) for ex, xs in zip(self.experts, grouped.split(recv_per.sum(0).tolist()))]
        out = torch.cat(outs).index_select(0, torch.argsort(perm))
        # 5. Send the results back; combine with the routing weights.
        back = Exchange.apply(out, recv_splits, send_splits)
        slot_w = w.reshape(-1)[order].to(x.dtype)
        y = torch.zeros_like(x).index_add(0, tok, back * slot_w[:, None])
        if self.shared is not None:
            y = y + swiglu(x, *self.shared)
        return y, (w.detach(), idx)


# ---------------------------------------------------------------- references

def dense_reference(a, world, routings, grads):
    """All ranks' tokens in one process, float64, dense over experts (every expert on every
    token, weighted by a [T,E] matrix that is zero off the chosen experts). The chosen experts
    are the distributed run's (`routings`, to be independent of float32 near-ties); the routing
    weights are recomputed in float64 from the router logits."""
    d = torch.float64
    router = router_weights(a).to(d).requires_grad_(grads)
    experts = [tuple(t.to(d).requires_grad_(grads) for t in mlp_weights(a.seed, e, a.hidden, a.ffn))
               for e in range(a.experts)]
    shared = (tuple(t.to(d).requires_grad_(grads) for t in mlp_weights(a.seed, SHARED_ID, a.hidden, a.ffn))
              if has_shared(a) else None)
    xs = [inputs(a, r).to(d).requires_grad_(grads) for r in range(world)]
    ys = []
    for x, (_, idx) in zip(xs, routings):
        logits = F.linear(x, router)
        scores = logits.sigmoid() if a.arch == "deepseek_v3" else logits.softmax(-1)
        w = scores.gather(1, idx)
        w = w / (w.sum(-1, keepdim=True) + (1e-20 if a.arch == "deepseek_v3" else 0.0))
        if a.arch == "deepseek_v3":
            w = w * 2.5
        dense_w = torch.zeros(x.shape[0], a.experts, dtype=d).scatter(1, idx, w)
        y = sum(dense_w[:, e:e + 1] * swiglu(x, *experts[e]) for e in range(a.experts))
        if shared is not None:
            y = y + swiglu(x, *shared)
        ys.append(y)
    out = {"y": [y.detach() for y in ys]}
    if grads:
        (0.5 * sum((y * y).sum() for y in ys)).backward()
        out.update(dx=[x.grad for x in xs], router=router.grad, experts=[[w.grad for w in ex] for ex in experts],
                   shared=[w.grad for w in shared] if shared else [])
    return out


def rel_error(got, ref):
    got, ref = got.detach().to(torch.float64), ref.to(torch.float64)
    if got.numel() == 0:
        return 0.0
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def sample_error(a, x, y, routing, samples=4):
    """Largest relative error of y on this rank's first tokens vs a float64 evaluation of the
    same routing decisions (what `switchyard bench` reports as max_rel_error)."""
    n = min(a.tokens, samples)
    if n == 0:
        return 0.0
    d = torch.float64
    xs = x[:n].detach().float().to(d)
    w, idx = routing
    ref = torch.zeros(n, a.hidden, dtype=d)
    cache = {}
    for t in range(n):
        for j in range(a.top_k):
            e = int(idx[t, j])
            if e not in cache:
                cache[e] = [m.to(d) for m in mlp_weights(a.seed, e, a.hidden, a.ffn)]
            ref[t] += float(w[t, j]) * swiglu(xs[t:t + 1], *cache[e])[0]
    if has_shared(a):
        ref += swiglu(xs, *[m.to(d) for m in mlp_weights(a.seed, SHARED_ID, a.hidden, a.ffn)])
    return rel_error(y[:n], ref)


# ---------------------------------------------------------------- modes

def run_check(a, rank, world):
    tol = 3e-2 if a.dtype == "bf16" else 1e-5
    layer = ExpertParallelMoE(a, rank, world, requires_grad=True)
    x = inputs(a, rank).to(layer.dtype).requires_grad_(True)
    with torch.inference_mode():
        y_fwd, _ = layer(x)
    y, routing = layer(x)
    (0.5 * (y * y).sum()).backward()
    # Every rank's routing decisions, so the reference chooses the same experts.
    idxs = [torch.empty_like(routing[1]) for _ in range(world)]
    dist.all_gather(idxs, routing[1].contiguous())
    ref = dense_reference(a, world, [(None, i) for i in idxs], grads=True)
    router_grad, shared_grads = layer.router.grad.clone(), [w.grad.float().clone() for w in layer.shared or ()]
    for g in [router_grad] + shared_grads:  # replicated parameters: sum over ranks
        dist.all_reduce(g)
    errs = {
        "y": rel_error(y, ref["y"][rank]),
        "y_inference_mode": rel_error(y_fwd, ref["y"][rank]),
        "dx": rel_error(x.grad, ref["dx"][rank]),
        "d_router": rel_error(router_grad, ref["router"]),
        "d_experts": max([rel_error(w.grad, r) for ex, rex in
                          zip(layer.experts, ref["experts"][layer.first:layer.first + layer.n_local])
                          for w, r in zip(ex, rex)], default=0.0),
    }
    if shared_grads:
        errs["d_shared"] = max(rel_error(g, r) for g, r in zip(shared_grads, ref["shared"]))
    vec = torch.tensor(list(errs.values()), dtype=torch.float64)
    dist.all_reduce(vec, op=dist.ReduceOp.MAX)
    errs = dict(zip(errs, vec.tolist()))
    ok = all(v <= tol for v in errs.values())
    if rank == 0:
        print(f"check ranks={world} arch={a.arch} dtype={a.dtype} routing={a.routing} H={a.hidden} I={a.ffn} "
              f"E={a.experts} k={a.top_k} tokens/rank={a.tokens} (max relative error over ranks, tolerance {tol:g})")
        for k, v in errs.items():
            print(f"  {k:18s} {v:.3e}")
        print("  PASS" if ok else "  FAIL")
    return ok


def percentiles(v):
    v = sorted(v)
    at = lambda q: v[int(q * (len(v) - 1) + 0.5)]  # noqa: E731  (as switchyard's bench)
    return at(0.1), at(0.5), at(0.9)


def run_bench(a, rank, world):
    backward = a.pass_ == "fwd_bwd"
    layer = ExpertParallelMoE(a, rank, world, requires_grad=backward)
    x = inputs(a, rank).to(layer.dtype).requires_grad_(backward)
    steps = []
    for it in range(a.warmup + a.iters):
        if backward:
            for p in layer.parameters() + [x]:
                p.grad = None
        t0 = time.perf_counter()
        if backward:
            y, routing = layer(x)
            (0.5 * (y * y).sum()).backward()
        else:
            with torch.inference_mode():
                y, routing = layer(x)
        t = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if it >= a.warmup:
            steps.append(float(t))
    p10, p50, p90 = percentiles(steps)
    maxima = torch.tensor([sample_error(a, x, y, routing),
                           resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0], dtype=torch.float64)
    dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
    err, rss = maxima.tolist()
    correct = err <= (3e-2 if a.dtype == "bf16" else 1e-4)
    if rank != 0:
        return True
    line = {"ranks": world, "hidden": a.hidden, "ffn": a.ffn, "experts": a.experts, "top_k": a.top_k,
            "tokens_per_rank": a.tokens, "arch": a.arch, "dtype": a.dtype, "pass": a.pass_, "routing": a.routing,
            "iters": a.iters, "step_ms_p10": p10 * 1e3, "step_ms_p50": p50 * 1e3, "step_ms_p90": p90 * 1e3,
            "tokens_per_s": a.tokens * world / p50, "threads": a.threads, "impl": "pytorch",
            "torch_version": torch.__version__, "max_rss_mb": rss, "max_rel_error": err, "correct": correct}
    print(f"pytorch ranks {world} threads {a.threads} {a.arch} {a.dtype} {a.pass_} {a.routing} "
          f"H={a.hidden} I={a.ffn} E={a.experts} k={a.top_k} tokens/rank={a.tokens}: "
          f"step p50 {p50 * 1e3:.2f} ms (p10 {p10 * 1e3:.2f}, p90 {p90 * 1e3:.2f}), "
          f"{a.tokens * world / p50:.0f} tok/s, max rel error {err:.1e} {'ok' if correct else 'WRONG'}, "
          f"max RSS {rss:.0f} MB", flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(line) + "\n")
    return correct


def worker(rank, world, a, store_path):
    """One rank. rank/world None: from torchrun's environment (or a lone process)."""
    torch.set_num_threads(a.threads)
    if rank is None and "RANK" in os.environ:
        dist.init_process_group("gloo")
    elif rank is None:  # plain `python bench/torch_moe.py`: one rank
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    else:
        dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        if world > a.experts:
            raise SystemExit(f"more ranks than experts: {world} ranks for {a.experts} experts")
        ok = run_check(a, rank, world) if a.check else run_bench(a, rank, world)
        flag = torch.tensor([0 if ok else 1])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        ok = flag.item() == 0
    finally:
        dist.destroy_process_group()
    if not ok:
        sys.exit(1)


def main():
    a = parse_args()
    if a.nproc and "RANK" not in os.environ:
        os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
        with tempfile.TemporaryDirectory() as tmp:
            torch.multiprocessing.spawn(worker, args=(a.nproc, a, os.path.join(tmp, "store")), nprocs=a.nproc)
    else:
        worker(None, None, a, None)


if __name__ == "__main__":
    main()
