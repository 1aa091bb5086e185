"""GPU check: a few bf16 training steps of a BERT-base + ViT-base TransRec model, and full ranking of 1M items.

    python benchmarks/gpu_check.py [--steps 20] [--batch 32] [--max-len 20] [--tiny]

Random weights built from configs (no download). Reports sequences/s, peak GPU memory, model FLOP
utilisation (MFU: achieved forward+backward FLOPs / the device's bf16 peak) and the time to rank
1M items for 10k users exactly. `--tiny` runs the same code with tiny encoders (a CPU smoke test).
Writes JSON to $OUT/gpu_check.json when $OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from transrec.data.content import IMAGE, TEXT
from transrec.evaluation.ranking import exact_ranks
from transrec.models.recommender import SequentialRecommender
from transrec.objectives import create_objective

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, per GPU


class FakeStore:
    """Random token ids and pixels for `num_items` items, half text and half image (no files)."""

    def __init__(self, num_items: int, seq_len: int, image_size: int, vocab: int):
        g = torch.Generator().manual_seed(0)
        self.num_items = num_items
        self.modality = torch.tensor([0] + [TEXT if i % 2 else IMAGE for i in range(1, num_items + 1)])
        self.input_ids = torch.randint(1000, vocab, (num_items + 1, seq_len), generator=g)
        self.attention_mask = torch.ones_like(self.input_ids)
        self.image_size = image_size
        self.problems: list = []

    def text_inputs(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        items = items.cpu()
        return {"input_ids": self.input_ids[items], "attention_mask": self.attention_mask[items]}

    def image_inputs(self, items: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(items.sum()))
        return torch.randn(len(items), 3, self.image_size, self.image_size, generator=g)


def build(tiny: bool, num_items: int, text_len: int) -> tuple[SequentialRecommender, int]:
    if tiny:
        text = {"model": "tiny-bert", "trainable_blocks": -1}
        image = {"model": "tiny-vit", "trainable_blocks": -1}
        image_size = 32
    else:
        bert_base = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512}
        text = {"model": "tiny-bert", "trainable_blocks": -1, "backbone_config": bert_base, "max_length": text_len}
        image = {"model": "tiny-vit", "trainable_blocks": -1,
                 "model_kwargs": {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12}}
        image_size = 224
    model = SequentialRecommender(num_items=num_items, user_encoder="sasrec", item_encoder="mixture", dim=256,
                                  max_len=50, encoder_args={"num_layers": 2, "num_heads": 4},
                                  item_encoder_args={"text": text, "image": image})
    return model, image_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--text-len", type=int, default=32)
    parser.add_argument("--rank-items", type=int, default=1_000_000)
    parser.add_argument("--rank-users", type=int, default=10_000)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model, image_size = build(args.tiny, args.items, args.text_len)
    model.attach_content(FakeStore(args.items, args.text_len, image_size, 30522))
    model.to(device).train()
    params = sum(p.numel() for p in model.parameters())
    objective = create_objective("inbatch", torch.ones(args.items + 1), 1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.steps + 2):
        items = torch.randint(1, args.items + 1, (args.batch, args.max_len + 1), device=device)
        start = time.perf_counter()
        with autocast:
            loss = model(items[:, :-1], items[:, 1:], objective)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    step_time = sorted(times)[len(times) // 2]
    # distinct items per step ~ batch * (max_len + 1); each runs through its encoder: 6 * params * tokens FLOPs
    tokens = args.batch * (args.max_len + 1) * (args.text_len + (image_size // 16) ** 2) / 2
    flops = 6 * params * tokens / step_time
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    result = {"device": name, "params": params, "seq_per_s": args.batch / step_time, "step_s": step_time,
              "loss": float(loss), "approx_tflops": flops / 1e12,
              "mfu": flops / (peak * 1e12) if peak else None,
              "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    n, u = (20_000, 1_000) if args.tiny else (args.rank_items, args.rank_users)
    item_vecs = torch.randn(n + 1, 256, device=device)
    user_vecs = torch.randn(u, 256, device=device)
    targets = torch.randint(1, n + 1, (u,), device=device)
    start = time.perf_counter()
    for i in range(0, u, 4096):
        exact_ranks(user_vecs[i:i + 4096], item_vecs, targets[i:i + 4096], None, chunk_size=262_144)
    if device.type == "cuda":
        torch.cuda.synchronize()
    result.update(rank_items=n, rank_users=u, rank_seconds=time.perf_counter() - start)
    print(json.dumps(result, indent=2))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
