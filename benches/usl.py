#!/usr/bin/env python3
"""Fits the Universal Scalability Law to the costs `replicas.sh` measured and projects QPS and
p99 to 16 replicas and 12 shards. A PROJECTION, not a measurement; its assumptions:

- All processes of the run share one machine, so the measured QPS of N replicas is bounded by
  its cores. The fit therefore uses the server-side CPU per request (Quiver + Redis), which
  is what N replicas on their own machines would each spend: C(N) = N * D(1) / D(N).
- USL: C(N) = N / (1 + a (N - 1) + b N (N - 1)); a (contention) and b (coherency) from least
  squares on the linear form N / C(N) - 1 = a (N - 1) + b N (N - 1), clamped at 0.
- A replica runs on 2 dedicated cores, a Redis shard on 1 (Redis executes commands on one
  thread); both are loaded to at most 70 % of their CPU. Redis's CPU per request (summed
  over the primaries) spreads evenly over the shards (keys are hash-distributed).
- p99 at N replicas = the measured p99 of one replica at concurrency 32 (this machine,
  saturated) times the USL slowdown 1 + a (N - 1) + b N (N - 1): an upper-side estimate.

usage: usl.py replicas.jsonl
"""
import json
import statistics
import sys

CORES_PER_REPLICA, CORES_PER_SHARD, TARGET_LOAD = 2, 1, 0.7


def fit(costs):
    """(a, b) of the USL over {n: total CPU us per request}."""
    base = costs[1]
    rows = [(n - 1, n * (n - 1), n / (n * base / cost) - 1) for n, cost in costs.items() if n > 1]
    sxx = sum(x * x for x, _, _ in rows)
    sxy = sum(x * y for x, y, _ in rows)
    syy = sum(y * y for _, y, _ in rows)
    sxz = sum(x * z for x, _, z in rows)
    syz = sum(y * z for _, y, z in rows)
    det = sxx * syy - sxy * sxy
    if abs(det) < 1e-12:
        return max(0.0, sxz / sxx if sxx else 0.0), 0.0
    a = (sxz * syy - syz * sxy) / det
    b = (syz * sxx - sxz * sxy) / det
    return max(0.0, a), max(0.0, b)


def slowdown(a, b, n):
    return 1 + a * (n - 1) + b * n * (n - 1)


def main(path):
    cells = [json.loads(line) for line in open(path) if line.strip()]
    for batch in sorted({c["batch"] for c in cells}):
        mine = [c for c in cells if c["batch"] == batch]
        by_n = {}
        for c in mine:
            by_n.setdefault(c["replicas"], []).append(c)
        quiver = {n: statistics.mean(u for c in cs for u in c["quiver_cpu_us"]) for n, cs in by_n.items()}
        redis = {n: statistics.mean(c["redis_cpu_us"] for c in cs) for n, cs in by_n.items()}
        p99 = {n: statistics.mean(p for c in cs for p in c["p99_ms"]) for n, cs in by_n.items()}
        qps = {n: statistics.mean(sum(c["qps"]) for c in cs) for n, cs in by_n.items()}
        a, b = fit({n: quiver[n] + redis[n] for n in by_n})
        per_round = []
        for rnd in sorted({c["round"] for c in mine}):
            costs = {c["replicas"]: statistics.mean(c["quiver_cpu_us"]) + c["redis_cpu_us"]
                     for c in mine if c["round"] == rnd}
            if 1 in costs and len(costs) > 1:
                per_round.append(fit(costs))
        print(f"\n## batch {batch}: measured (this machine, every process on the same 2 cores)\n")
        print("| replicas | total QPS | p99 ms (mean of replicas) | Quiver CPU us/req | Redis CPU us/req |")
        print("|---|---|---|---|---|")
        for n in sorted(by_n):
            print(f"| {n} | {qps[n]:,.0f} | {p99[n]:.2f} | {quiver[n]:.1f} | {redis[n]:.1f} |")
        print(f"\nUSL fit on CPU per request (all rounds): contention a = {a:.4f}, coherency b = {b:.5f}; "
              "per round: " + ", ".join(f"a = {ra:.4f} b = {rb:.5f}" for ra, rb in per_round))
        print("A cost that stays within the rounds' noise gives a b that is noise too: the table shows "
              "the fit and, beside it, linear scaling (a = b = 0), the two ends of what the data allows.\n")
        print(f"## batch {batch}: PROJECTION (2 cores per replica, 1 per shard, {TARGET_LOAD:.0%} load)\n")
        print("| replicas | shards | projected QPS (fit) | bound by | projected QPS (linear) | bound by | projected p99 ms (fit) |")
        print("|---|---|---|---|---|---|---|")
        per_replica = TARGET_LOAD * CORES_PER_REPLICA * 1e6 / quiver[1]
        per_shard = TARGET_LOAD * CORES_PER_SHARD * 1e6 / redis[1]
        for n, shards in [(1, 3), (2, 3), (3, 3), (4, 3), (8, 6), (12, 12), (16, 12)]:
            cluster = per_shard * shards
            row = []
            for replicas in (per_replica * n / slowdown(a, b, n), per_replica * n):
                bound = "replicas" if replicas <= cluster else "redis shards"
                row.append(f"{min(replicas, cluster):,.0f} | {bound}")
            print(f"| {n} | {shards} | {' | '.join(row)} | {p99[1] * slowdown(a, b, n):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
