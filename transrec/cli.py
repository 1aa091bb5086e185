"""Command line: `transrec train | evaluate | recommend | data synth`.

User errors (`TransrecError`) print one line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transrec.errors import TransrecError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transrec", description="Universal user representations for recommendation.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model from a config")
    train.add_argument("--config", help="YAML config (defaults if omitted)")
    train.add_argument("--output-dir", help="run folder (default runs/<name>)")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4")

    evaluate = sub.add_parser("evaluate", help="evaluate a saved model on a config's data")
    evaluate.add_argument("--model", required=True, help="model folder or Hub repo id")
    evaluate.add_argument("--config", help="YAML config naming the data and protocol")
    evaluate.add_argument("--split", choices=["valid", "test"], default="test")
    evaluate.add_argument("--output", help="write the metrics as JSON here")
    evaluate.add_argument("overrides", nargs="*")

    transfer = sub.add_parser("transfer", help="move a trained content model to a dataset of new items")
    transfer.add_argument("--model", help="trained content model folder or Hub repo id (not for heuristics)")
    transfer.add_argument("--config", help="YAML config naming the target data (and training for fine_tune/scratch)")
    transfer.add_argument("--mode", required=True, choices=["zero_shot", "fine_tune", "scratch", "heuristics"],
                          help="heuristics: the training-free baselines (pretrained-encoder cosine, TF-IDF, "
                               "each alone and with a popularity prior)")
    transfer.add_argument("--output-dir", help="run folder (default runs/<name>-<mode>)")
    transfer.add_argument("overrides", nargs="*")

    study = sub.add_parser("transfer-study", help="train on a source, transfer zero-shot to a target, and compare "
                                                  "with popularity, the training-free heuristics and an ID SASRec "
                                                  "trained on the target, in one table")
    study.add_argument("--source-config", required=True, help="YAML config of the content model and source data")
    study.add_argument("--target-config", required=True, help="YAML config naming the target data")
    study.add_argument("--output-dir", help="study folder (default runs/<source name>-study)")

    recommend = sub.add_parser("recommend", help="top-k items for one user's history")
    recommend.add_argument("--model", required=True)
    recommend.add_argument("--items", required=True, help="comma-separated item ids, oldest first")
    recommend.add_argument("-k", type=int, default=10)
    recommend.add_argument("--keep-seen", action="store_true", help="allow items already in the history")

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="write the synthetic multimodal world to a folder")
    synth.add_argument("out_dir")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--users", type=int, default=1000)
    synth.add_argument("--overwrite", action="store_true")
    info = data_sub.add_parser("info", help="load a dataset through a config and print its summary")
    info.add_argument("--config")
    info.add_argument("overrides", nargs="*")
    validate = data_sub.add_parser("validate", help="check a dataset folder; exit 2 if it cannot be trained on")
    validate.add_argument("path", help="canonical dataset folder (interactions, items, users)")
    validate.add_argument("--on-bad-content", choices=["fail", "placeholder"], default="fail",
                          help="placeholder: unreadable images and blank texts are warnings (data.on_bad_content)")
    broken = data_sub.add_parser("broken-example", help="write a small dataset folder with typical problems")
    broken.add_argument("out_dir")
    return parser


def cmd_train(args) -> None:
    from transrec.config import load_config
    from transrec.evaluation.metrics import format_table
    from transrec.training.trainer import train

    cfg = load_config(args.config, args.overrides)
    out = Path(args.output_dir or Path("runs") / cfg.name)
    if cfg.task in ("profile", "cold_start"):  # a downstream task on a pretrained backbone
        from transrec.training.finetune import finetune

        if args.resume:
            raise TransrecError("--resume is for sequence training; downstream fine-tunes are short, rerun them")
        result = finetune(cfg, out)
        if result.is_main_process:
            keys = ("accuracy", "macro_f1") if cfg.task == "profile" else ("HR@10", "NDCG@10", "MRR@10")
            for split in ("valid", "test", "baseline"):
                print(f"{split}: " + ", ".join(f"{k} {result.metrics[split][k]:.4f}" for k in keys))
            run = result.metrics["run"]
            print(f"trainable parameters: {run['trainable_params']} of {run['total_params']} "
                  f"({100 * run['trainable_share']:.2f}%)\nrun folder: {out}")
        return
    if cfg.task == "lifelong":  # Conure: one backbone learns lifelong.tasks in order, none forgotten
        from transrec.training.lifelong import run_lifelong

        if args.resume:
            raise TransrecError("--resume is for sequence training; rerun a lifelong sequence")
        lifelong = run_lifelong(cfg, out)
        print(f"task x time ({lifelong.method}, metric of each task after learning each task):\n{lifelong.table()}")
        shares = ", ".join(f"T{k} {100 * s:.1f}%" for k, s in enumerate(lifelong.capacity["tasks"], 1))
        print(f"capacity: {shares}, free {100 * lifelong.capacity['free']:.1f}%\nrun folder: {out}")
        return
    result = train(cfg, out, resume=args.resume)
    if result.is_main_process:
        rows = {f"{cfg.model.name} ({split})": result.metrics[split] for split in ("valid", "test")}
        if "popularity" in result.metrics:
            rows["popularity (test)"] = result.metrics["popularity"]["test"]
        print(format_table(rows))
        print(f"run folder: {out}")


def cmd_evaluate(args) -> None:
    from transrec.config import load_config
    from transrec.data.pipeline import prepare_data
    from transrec.evaluation.evaluator import evaluate
    from transrec.evaluation.metrics import format_table
    from transrec.hub import load_item_ids, load_model

    cfg = load_config(args.config, args.overrides)
    model = load_model(args.model)
    data = prepare_data(cfg.data)
    vocab = load_item_ids(args.model)
    if vocab != data.dataset.items.ids.to_list():
        raise TransrecError(f"{args.model}: the model's item vocabulary ({len(vocab)} items) differs from the "
                            f"dataset's ({data.num_items} items); evaluate on the data it was trained on")
    cases = data.split.test if args.split == "test" else data.split.valid
    from transrec.training.guards import check_memory

    check_memory(cfg, data.num_items, train=False)  # an impossible eval.chunk_size fails here, named
    metrics = evaluate(model, cases, cfg.eval, max_len=cfg.data.max_len)
    print(format_table({f"{args.model} ({args.split})": metrics}))
    if args.output:
        Path(args.output).write_text(json.dumps({args.split: metrics}, indent=2))


def cmd_transfer(args) -> None:
    from transrec.config import load_config
    from transrec.evaluation.metrics import format_table
    from transrec.training.transfer import transfer

    cfg = load_config(args.config, args.overrides)
    out = Path(args.output_dir or Path("runs") / f"{cfg.name}-{args.mode}")
    metrics = transfer(args.model, cfg, args.mode, out)
    if args.mode == "heuristics":
        rows = {name: r["test"] for name, r in metrics["heuristics"].items()}
        print(format_table({**rows, "popularity": metrics["popularity"]["test"]}))
        print(f"run folder: {out}")
        return
    if _is_main():
        rows = {f"{args.mode} (valid)": metrics["valid"], f"{args.mode} (test)": metrics["test"]}
        if "zero_shot_with_popularity" in metrics:
            rows["zero_shot + target popularity (test)"] = metrics["zero_shot_with_popularity"]["test"]
        print(format_table({**rows, "popularity (test)": metrics["popularity"]["test"]}))
        print(f"run folder: {out}")


def cmd_transfer_study(args) -> None:
    import time

    from transrec.config import load_config
    from transrec.training.study import run_study, study_table

    start = time.time()
    source = load_config(args.source_config, [])
    target = load_config(args.target_config, [])
    out = Path(args.output_dir or Path("runs") / f"{source.name}-study")
    result = run_study(source, target, out)
    print(f"source: {source.name}; target: {target.name} (test users, exact full ranking over the target's items)")
    print(study_table(result))
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()))
    print(f"wall time: {time.time() - start:.0f} s; study folder: {out}")


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def cmd_recommend(args) -> None:
    import torch

    from transrec.data.schema import IdMap
    from transrec.data.sequences import left_pad
    from transrec.hub import load_item_ids, load_model

    model = load_model(args.model)
    vocab = IdMap(load_item_ids(args.model))
    history = vocab.encode([s.strip() for s in args.items.split(",") if s.strip()])
    if len(history) == 0:
        raise TransrecError("--items is empty")
    model.eval()
    with torch.no_grad():
        users = model.encode_users({"items": left_pad([history[-model.max_len:]])})
        scores = model.score(users, model.all_item_vectors())[0]
        scores[0] = float("-inf")
        if not args.keep_seen:
            scores[torch.as_tensor(history)] = float("-inf")
        top = torch.topk(scores, min(args.k, vocab.__len__())).indices.tolist()
    for rank, idx in enumerate(top, 1):
        print(f"{rank}\t{vocab.ids[idx]}\t{scores[idx]:.4f}")


def cmd_data(args) -> None:
    if args.data_command == "synth":
        from transrec.data.synthetic import WorldConfig, generate_world

        path = generate_world(args.out_dir, WorldConfig(seed=args.seed, num_users=args.users), overwrite=args.overwrite)
        print(f"wrote {path}")
    elif args.data_command == "info":
        from transrec.config import load_config
        from transrec.data.pipeline import prepare_data

        cfg = load_config(args.config, args.overrides)
        data = prepare_data(cfg.data)
        print(data.dataset.summary())
        print(f"after filtering and split: {data.split.num_users} users")
    elif args.data_command == "validate":
        from transrec.data.validate import validate_folder

        report = validate_folder(args.path, on_bad_content=args.on_bad_content)
        print(report.format())
        if report.errors:
            raise TransrecError(f"{args.path}: {report.count('error')} error(s); fix them before training")
    elif args.data_command == "broken-example":
        from transrec.data.validate import write_broken_example

        print(f"wrote {write_broken_example(args.out_dir)}")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "transfer": cmd_transfer, "recommend": cmd_recommend,
            "data": cmd_data, "transfer-study": cmd_transfer_study}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except TransrecError as err:
        print(f"transrec: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transrec: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
