"""The topology cost model (docs/topology.md) in Python, and a step's projection from it.

Exchange: the model of comm::predict_all_to_all_seconds. One rank's share of
an all-to-all, for the bytes it sends to (or receives from) each rank:

    T(rank) = sum over link classes c of latency_c * n_c + B_c / bandwidth_c

(n_c the non-empty messages on class c, B_c their bytes); an all-to-all takes
the largest T over every rank's row and column. The byte matrix of uniform
routing is that of layers::forecast_exchange: rank s sends rank r one row per
token with at least one of its top-k experts on r, a chance of
1 - C(E - e_r, k) / C(E, k) with e_r the experts r holds (contiguous blocks);
the hierarchical exchange sends once per node to the rank of the same index
there, which forwards inside its node. The topology's round cost (round_s) is
added once per all-to-all hop, as `--exchange auto` charges it.

Step: compute plus the exchange's dispatch and combine (forward; twice that
with the backward), in sequence. Compute is measured in the same study at the
fewest nodes: its phases other than the exchange and the expert GEMMs scale
with the tokens per rank; the expert phases also with the expert GEMM rate,
which grows with the rows each expert receives (tokens x top_k x ranks /
experts, more with more ranks). The rate at a given rows per expert is
interpolated (linear in log rows) between the study's measured points
(`gemm_gflops`, runs with no more ranks than cores) and, at 4096 rows, the
same-run peak (`gemm_peak_gflops`, one 4096-row GEMM); beyond both ends it is
held.
"""
import json
import math

LINKS = ("self", "same_node", "other_node")
EXCHANGE_PHASES = ("dispatch", "combine", "dispatch_grad", "combine_grad")
EXPERT_PHASES = ("experts", "experts_grad", "expert_weights_grad")
PEAK_ROWS = 4096  # the rows of bench's same-run peak GEMM (gemm_peak_gflops)


def read_costs(path):
    """{class: (latency_s, bandwidth_bytes_per_s)} and round_s of a topology file."""
    with open(path) as f:
        topo = json.load(f)
    links = topo.get("links", {})
    costs = {c: (float(links[c]["latency_s"]), float(links[c]["bandwidth_bytes_per_s"])) for c in LINKS if c in links}
    return costs, float(topo.get("round_s", 0.0))


def link_class(node_of_rank, a, b):
    if a == b:
        return "self"
    return "same_node" if node_of_rank[a] == node_of_rank[b] else "other_node"


def _entry(b):
    """(messages, bytes) of a matrix entry: integer bytes are one message when non-zero; a pair
    (expected messages, expected bytes) is the projection's."""
    return b if isinstance(b, tuple) else (1 if b else 0, b)


def one_rank_seconds(costs, node_of_rank, rank, peer_bytes):
    """One direction of one rank's exchange: peer_bytes[peer] to or from each peer."""
    messages, total = {}, {}
    for peer, b in enumerate(peer_bytes):
        n, b = _entry(b)
        if n == 0:
            continue
        c = link_class(node_of_rank, rank, peer)
        if c not in costs:
            raise ValueError(f"topology: no cost for link class '{c}'")
        messages[c] = messages.get(c, 0) + n
        total[c] = total.get(c, 0) + b
    return sum(costs[c][0] * messages[c] + total[c] / costs[c][1] for c in messages)


def all_to_all_seconds(costs, node_of_rank, matrix):
    """comm::predict_all_to_all_seconds: matrix[s][r] bytes from s to r; the slowest row or column."""
    n = len(matrix)
    slowest = 0.0
    for r in range(n):
        send = one_rank_seconds(costs, node_of_rank, r, matrix[r])
        recv = one_rank_seconds(costs, node_of_rank, r, [matrix[s][r] for s in range(n)])
        slowest = max(slowest, send, recv)
    return slowest


def miss_chance(experts, held, top_k):
    """The chance that none of a token's top_k distinct uniform experts is among `held` given ones."""
    if held + top_k > experts:
        return 0.0
    p = 1.0
    for i in range(top_k):
        p *= (experts - held - i) / (experts - i)
    return p


def block_counts(total, parts):
    """runtime::BlockPartition: contiguous blocks, the first total % parts one larger."""
    base, extra = divmod(total, parts)
    return [base + (1 if p < extra else 0) for p in range(parts)]


def _rows(chance, tokens, row_bytes, expected):
    """The bytes of the rows `tokens` tokens send where each goes with `chance`: as forecast_exchange
    rounds them (llround), or expected = (messages, bytes) with the chance that any row goes at all."""
    if not expected:
        return math.floor(chance * tokens + 0.5) * row_bytes
    return (1.0 - (1.0 - chance) ** tokens, chance * tokens * row_bytes)


def uniform_matrices(nodes, ranks_per_node, experts, top_k, tokens, row_bytes, expected=False):
    """Byte matrices of uniform routing: the flat dispatch, and the hierarchical one's two hops."""
    R = nodes * ranks_per_node
    node_of = [r // ranks_per_node for r in range(R)]
    held = block_counts(experts, R)
    node_held = [sum(held[n * ranks_per_node:(n + 1) * ranks_per_node]) for n in range(nodes)]
    chance = [1.0 - miss_chance(experts, held[r], top_k) for r in range(R)]
    flat_row = [_rows(c, tokens, row_bytes, expected) for c in chance]
    flat = [list(flat_row) for _ in range(R)]
    first = [[0] * R for _ in range(R)]
    second = [[0] * R for _ in range(R)]
    senders = [0] * R  # the ranks whose first hop reaches r
    for s in range(R):
        for r in range(R):
            if r % ranks_per_node == s % ranks_per_node:
                first[s][r] = _rows(1.0 - miss_chance(experts, node_held[node_of[r]], top_k), tokens, row_bytes,
                                    expected)
                senders[r] += 1
    for r in range(R):
        for d in range(node_of[r] * ranks_per_node, (node_of[r] + 1) * ranks_per_node):
            # r forwards to d the rows of every sender whose first hop reached r
            second[r][d] = (_rows(chance[d], tokens * senders[r], row_bytes, True) if expected
                            else flat_row[d] * senders[r])
    return node_of, flat, first, second


def forecast_exchange(costs, round_s, nodes, ranks_per_node, experts, top_k, tokens, row_bytes, expected=False):
    """Seconds of one dispatch, {"flat": s, "hierarchical": s}: layers::forecast_exchange, or with
    expected message counts and bytes (expected=True: no rounding of a fraction of a row away)."""
    node_of, flat, first, second = uniform_matrices(nodes, ranks_per_node, experts, top_k, tokens, row_bytes,
                                                    expected)
    return {"flat": all_to_all_seconds(costs, node_of, flat) + round_s,
            "hierarchical": all_to_all_seconds(costs, node_of, first) + all_to_all_seconds(costs, node_of, second)
            + 2 * round_s}


def wire_row_bytes(hidden, wire):
    return hidden * (2 if wire == "bf16" else 4)


def exchange_ms(costs, round_s, bench, nodes, ranks_per_node, tokens, exchange):
    """The step's modelled exchange: forward dispatch + combine (x2 with the backward)."""
    f = forecast_exchange(costs, round_s, nodes, ranks_per_node, bench["experts"], bench["top_k"], tokens,
                          wire_row_bytes(bench["hidden"], bench["wire"]), expected=True)
    one = min(f.values()) if exchange == "auto" else f[exchange]
    return one * 2 * (2 if bench["pass"] == "fwd_bwd" else 1) * 1e3


def split_phases(phase_ms):
    """A measured step's time outside its exchanges: (the expert GEMM phases, every other phase)."""
    experts = sum(v for k, v in phase_ms.items() if k in EXPERT_PHASES)
    other = sum(v for k, v in phase_ms.items() if k not in EXCHANGE_PHASES and k not in EXPERT_PHASES)
    return experts, other


def rows_per_expert(bench, ranks, tokens):
    """Expected rows per local expert: each rank receives tokens x top_k rows (uniform), over experts / ranks."""
    return tokens * bench["top_k"] * ranks / bench["experts"]


def gemm_rate(curve, rows):
    """The expert GEMM rate at `rows` rows per expert: linear in log(rows) between the curve's points
    [(rows, GFLOP/s), ...], held at its ends."""
    curve = sorted(curve)
    if rows <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if rows <= x1:
            t = (math.log(rows) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return curve[-1][1]


def project_step(reference, curve, costs, round_s, bench, nodes, ranks_per_node, tokens, exchange, slowdown=1.0):
    """{compute_ms, exchange_ms, step_ms, tokens_per_s} of one configuration.

    reference: {"tokens_per_rank", "ranks", "experts_ms", "other_ms", "peak", "slowdown"} measured in
    the study. Its other phases scale with the tokens per rank; its expert phases also with the GEMM
    rate (`curve`: a fraction of the peak) at the new rows per expert over that at its own; all of it
    by `slowdown` over the reference's (how much slower a core computes at the point, e.g. when one
    host runs the ranks of several nodes)."""
    scale = tokens / reference["tokens_per_rank"]
    rate_ref = gemm_rate(curve, rows_per_expert(bench, reference["ranks"], reference["tokens_per_rank"]))
    rate = gemm_rate(curve, rows_per_expert(bench, nodes * ranks_per_node, tokens))
    compute = (reference["other_ms"] + reference["experts_ms"] * rate_ref / rate) * scale
    compute *= slowdown / reference["slowdown"]
    xchg = exchange_ms(costs, round_s, bench, nodes, ranks_per_node, tokens, exchange)
    step = compute + xchg
    return {"compute_ms": compute, "exchange_ms": xchg, "step_ms": step, "gemm_gflops": rate * reference["peak"],
            "tokens_per_s": tokens * nodes * ranks_per_node / (step / 1e3)}
