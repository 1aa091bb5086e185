"""Full-ranking evaluation at catalogue scale: transrec's chunked exact ranking vs a naive full score matrix.

    python benchmarks/ranking_scale.py            # 10k users x {10k, 100k, 1M} items x d {64, 256}, ~10 min
    python benchmarks/ranking_scale.py --patched  # also times exact_ranks with benchmarks/ranking_patch.diff applied
    python benchmarks/ranking_scale.py --quick    # 2k users x {10k, 100k} items

Synthetic user and item embeddings (float32, Gaussian), one target and 50 history items per user, history
excluded (the default protocol). Each case runs in its own subprocess, so its peak memory is that process's
max RSS (os.wait4); "extra" is the peak minus the RSS once the inputs exist, i.e. what ranking itself costs.

- ours:          `transrec.evaluation.ranking.exact_ranks`, called per user batch as the evaluator does
- naive-compare: full [users, items] score matrix, history masked to -inf, rank = count of scores >= target's
- naive-argsort: full score matrix, masked, argsort each row, rank = the target's position
- floor:         2 * users * items * d FLOPs at this CPU's measured float32 GEMM rate (4096^3 matmul)

A naive case whose estimated memory exceeds --mem-limit-gb is skipped and says what it would need. Writes
benchmarks/results/ranking_scale.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
PATCH = Path(__file__).resolve().parent / "ranking_patch.diff"
HISTORY = 50
GB = 1e9


def make_inputs(users: int, items: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(users, d, generator=g)
    V = torch.randn(items + 1, d, generator=g).div_(d**0.5)  # in place: no second copy inflates the peak
    targets = torch.randint(1, items + 1, (users,), generator=g)
    history = torch.randint(1, items + 1, (users, HISTORY), generator=g)
    history[history == targets[:, None]] = 0  # padding: a target is not also in its history here
    return U, V, targets, history


def load_exact_ranks(patched: bool):
    """transrec's exact_ranks, or (patched) the one in a temp copy of ranking.py with ranking_patch.diff applied."""
    if not patched:
        from transrec.evaluation.ranking import exact_ranks

        return exact_ranks
    import importlib.util
    import shutil
    import tempfile

    import transrec.evaluation.ranking as mod

    tmp = Path(tempfile.mkdtemp()) / "ranking.py"
    shutil.copy(mod.__file__, tmp)
    proc = subprocess.run(["patch", "--forward", "--quiet", str(tmp), str(PATCH)], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{PATCH.name} does not apply to {mod.__file__} (already applied?): {proc.stdout}{proc.stderr}")
    spec = importlib.util.spec_from_file_location("ranking_patched", tmp)
    patched_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patched_mod)
    return patched_mod.exact_ranks


def ranks_ours(U, V, targets, history, batch: int, chunk: int, fn):
    return torch.cat([fn(U[i:i + batch], V, targets[i:i + batch], history[i:i + batch],
                         exclude_history=True, chunk_size=chunk) for i in range(0, len(U), batch)])


def _masked_scores(U, V, targets, history):
    S = U @ V.T
    S[:, 0] = -torch.inf
    S.scatter_(1, history, -torch.inf)  # history (padding 0 included) never ranks
    return S


def ranks_naive_compare(U, V, targets, history):
    S = _masked_scores(U, V, targets, history)
    from transrec.evaluation.ranking import TIE_RTOL  # the same tie rule as ours, so ranks agree exactly

    s_t = (U * V[targets]).sum(1, keepdim=True)
    S.scatter_(1, targets[:, None], -torch.inf)
    return (S >= s_t - TIE_RTOL * (s_t.abs() + 1)).sum(1)


def ranks_naive_argsort(U, V, targets, history):
    S = _masked_scores(U, V, targets, history)
    order = S.argsort(dim=1, descending=True)
    return (order == targets[:, None]).int().argmax(1)


def naive_bytes(method: str, users: int, items: int) -> float:
    """Peak working memory of a naive method: the score matrix plus what the method adds per entry."""
    # scores 4; compare: bool 1 + the int64 copy that bool.sum makes 8; argsort: values 4 + indices 8 + bool 1 + int 4
    per_entry = {"naive-compare": 4 + 1 + 8, "naive-argsort": 4 + 4 + 8 + 1 + 4}[method]
    return users * (items + 1) * per_entry


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def gemm_gflops(n: int = 4096, reps: int = 8) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(2):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def run_case(case: dict) -> dict:
    """Child process: build inputs, time one method (best of up to 3 runs within ~3 s; after a warm-up)."""
    rate = gemm_gflops(2048, 4)  # the GEMM rate now: the machine may be shared, so each case has its own floor
    U, V, targets, history = make_inputs(case["users"], case["items"], case["d"])
    base = rss()
    method = case["method"]
    if method.startswith("ours"):
        exact = load_exact_ranks(method == "ours, patched")
        fn = lambda u, v, t, h: ranks_ours(u, v, t, h, case["batch"], case["chunk"], exact)  # noqa: E731
    else:
        fn = {"naive-compare": ranks_naive_compare, "naive-argsort": ranks_naive_argsort}[method]
    fn(U[:64], V[:4097], targets[:64] % 4096 + 1, history[:64] % 4096 + 1)  # warm-up (threads, kernels)
    seconds, spent = float("inf"), 0.0
    for _ in range(3):
        t = time.perf_counter()
        ranks = fn(U, V, targets, history)
        seconds = min(seconds, time.perf_counter() - t)
        spent += time.perf_counter() - t
        if spent > 3.0:
            break
    return {"seconds": seconds, "base_rss": base, "rank_sum": int(ranks.sum()), "case_gemm_gflops": rate,
            "floor_seconds": 2 * case["users"] * case["items"] * case["d"] / (rate * 1e9)}


def spawn(case: dict) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--case", json.dumps(case)], stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    result["extra_rss"] = result["peak_rss"] - result["base_rss"]
    return result


def fmt_time(s: float) -> str:
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def write_outputs(rows: list[dict], meta: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# Full-ranking evaluation at catalogue scale\n",
        f"{meta['users']:,} users, float32 embeddings, 1 target + {HISTORY} history items per user (history "
        f"excluded). CPU: {meta['cpu']}, {meta['threads']} torch threads; measured float32 GEMM rate "
        f"{meta['gemm_gflops']:.0f} GFLOP/s (4096x4096 matmul, at the start). Floor = 2 x users x items x d / "
        f"GEMM rate, with the rate each case's process measured just before it ran (2048x2048 matmul; the "
        f"machine is shared, so the rate moves; it is in the json). "
        f"ours = `exact_ranks` with user batch {meta['batch']}, item chunk {meta['chunk']:,}{meta['variant_note']}. "
        f"Peak = max RSS of the case's process; extra = peak minus RSS with the inputs in memory. Naive "
        f"cases estimated above {meta['mem_limit_gb']:g} GB are skipped. Command: `{meta['command']}`.\n",
        "| items | d | method | time | x floor | peak RSS | extra RSS |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['items']:,} | {r['d']} | {r['method']} | {r['skipped']} | | | |")
        else:
            lines.append(f"| {r['items']:,} | {r['d']} | {r['method']} | {fmt_time(r['seconds'])} | "
                         f"{r['seconds'] / r['floor_seconds']:.2f} | {r['peak_rss'] / GB:.2f} GB | "
                         f"{r['extra_rss'] / GB:.2f} GB |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, RESULTS / f"{stem}.png", meta)


def plot(rows: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["d"] for r in rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(5 * len(dims), 3.8), squeeze=False)
    for ax, d in zip(axes[0], dims):
        sub = [r for r in rows if r["d"] == d]
        items = sorted({r["items"] for r in sub})
        for method, style in (("ours", "o-"), ("ours, patched", "o-"), ("naive-compare", "s--"),
                              ("naive-argsort", "^:")):
            pts = [(r["items"], r["seconds"]) for r in sub if r["method"] == method and "seconds" in r]
            if pts:
                ax.plot(*zip(*pts), style, label=method)
        floor = [2 * meta["users"] * i * d / (meta["gemm_gflops"] * 1e9) for i in items]
        ax.plot(items, floor, "k-", alpha=0.5, label=f"GEMM floor ({meta['gemm_gflops']:.0f} GFLOP/s)")
        ax.set(xscale="log", yscale="log", xlabel="items", ylabel="seconds",
               title=f"{meta['users']:,} users, d={d}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2k users, 10k and 100k items")
    ap.add_argument("--users", type=int, default=None)
    ap.add_argument("--items", type=int, nargs="+", default=None)
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--batch", type=int, default=4096, help="users per exact_ranks call")
    ap.add_argument("--chunk", type=int, default=16384, help="exact_ranks chunk_size (items per GEMM)")
    ap.add_argument("--mem-limit-gb", type=float, default=8.0, help="skip naive cases estimated above this")
    ap.add_argument("--patched", action="store_true", help=f"also time exact_ranks with {PATCH.name} applied")
    ap.add_argument("--stem", default="ranking_scale", help="output file stem under benchmarks/results/")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return

    users = args.users or (2000 if args.quick else 10_000)
    item_grid = args.items or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    rate = gemm_gflops()
    meta = {"users": users, "batch": args.batch, "chunk": args.chunk, "gemm_gflops": rate,
            "mem_limit_gb": args.mem_limit_gb, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu": _cpu_name(), "variant_note": "", "command": "python " + " ".join(
                [os.path.relpath(__file__)] + sys.argv[1:])}
    print(f"GEMM {rate:.0f} GFLOP/s; {users} users; batch {args.batch}, chunk {args.chunk}", flush=True)
    methods = ["ours", "ours, patched"] if args.patched else ["ours"]
    methods += ["naive-compare", "naive-argsort"]
    rows = []
    for d in args.dims:
        for items in item_grid:
            floor = 2 * users * items * d / (rate * 1e9)  # at the rate measured at the start; cases re-measure
            ranks = {}
            for method in methods:
                row = {"items": items, "d": d, "method": method, "floor_seconds": floor}
                need = naive_bytes(method, users, items) if not method.startswith("ours") else 0
                if need > args.mem_limit_gb * GB:
                    row["skipped"] = f"skipped: needs {need / GB:.0f} GB"
                else:
                    row.update(spawn({"method": method, "users": users, "items": items, "d": d,
                                      "batch": args.batch, "chunk": args.chunk}))
                    ranks[method] = row["rank_sum"]
                rows.append(row)
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            # same inputs in every process: exact methods agree (argsort may order exact ties differently)
            if len(set(v for k, v in ranks.items() if k != "naive-argsort")) > 1:
                raise AssertionError(f"exact methods disagree at items={items}, d={d}: {ranks}")
            write_outputs(rows, meta, args.stem)
    print((RESULTS / f"{args.stem}.md").read_text())


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
