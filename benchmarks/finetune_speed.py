"""Fine-tuning throughput: ``llm_validation.finetune`` against HF ``Trainer``, side by side.

Both train the same initialised model on the same packed Python-source blocks (the ``text`` format)
for the same number of steps with fused AdamW (Trainer's default on torch >= 2.8), a constant
learning rate and gradient clipping at 1.0, on one process. Each gets ``input_ids`` and ``labels``
only (text blocks have no padding, so neither needs an attention mask). The measured time is the
whole call (``finetune(...)`` / ``trainer.train()``), setup included, after one untimed warm-up
call each; the two alternate ``--repeats`` times and each keeps its best, since other processes
share the cores. The table gives tokens/s and ours / Trainer (target >= 1.0x).

    .venv/bin/python benchmarks/finetune_speed.py [--seconds 8] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import tempfile
import time

import torch
import transformers
from transformers import PreTrainedTokenizerFast, PrinterCallback, Trainer, TrainingArguments

from llm_validation.corpora import load_corpus
from llm_validation.finetune import FinetuneConfig, finetune
from llm_validation.finetune_data import Examples, load_examples
from llm_validation.models import build_model, count_parameters, olmo_config
from llm_validation.tokenizer import train_bpe_tokenizer

# (preset, batch_size, seq_len): a unit-test size, then the ~100k and ~1M sizes at the 8 x 128 the
# design notes measured pre-training at.
SHAPES = [("tiny", 8, 64), ("100k", 8, 128), ("1m", 8, 128)]
TRAIN_CHARS = 300_000


def write_python_source(path: str) -> PreTrainedTokenizerFast:
    """Standard-library source as ``text``-format JSONL at ``path``; returns a tokenizer trained on it."""
    texts = load_corpus("python", max_chars=TRAIN_CHARS).train
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"text": text}) + "\n" for text in texts)
    return train_bpe_tokenizer(texts, 512)


def ours(model, data: Examples, config: FinetuneConfig) -> float:
    start = time.perf_counter()
    finetune(model, data, config)
    return time.perf_counter() - start


def trainer(model, data: Examples, config: FinetuneConfig, folder: str) -> float:
    rows = [{"input_ids": ids, "labels": labels} for ids, labels in zip(data.input_ids, data.labels)]
    args = TrainingArguments(
        output_dir=folder,
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        lr_scheduler_type="constant",
        weight_decay=config.weight_decay,
        max_grad_norm=config.grad_clip,
        optim="adamw_torch_fused",
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    run = Trainer(model=model, args=args, train_dataset=rows)
    run.remove_callback(PrinterCallback)  # it prints the run's summary to stdout, into the table
    start = time.perf_counter()
    run.train()
    return time.perf_counter() - start


def measure(preset: str, batch_size: int, seq_len: int, seconds: float, repeats: int, folder: str, tokenizer) -> dict:
    data = load_examples(f"{folder}/python.jsonl", "text", tokenizer, seq_len)
    model_config = olmo_config(preset, vocab_size=len(tokenizer))
    base = FinetuneConfig(lr=1e-4, steps=3, batch_size=batch_size)
    # The warm-up calls; their time, setup included, overestimates a step, so runs come out shorter.
    per_step = ours(build_model(model_config), data, base) / base.steps
    trainer(build_model(model_config), data, base, folder)
    config = dataclasses.replace(base, steps=max(10, round(seconds / per_step)))
    times = {"ours": [], "trainer": []}
    for _ in range(repeats):
        # A finished Trainer leaves reference cycles behind; collect them untimed, or the next call's
        # automatic collection pays for them.
        gc.collect()
        times["ours"].append(ours(build_model(model_config), data, config))
        gc.collect()
        times["trainer"].append(trainer(build_model(model_config), data, config, folder))
    tokens = config.steps * batch_size * seq_len
    return {
        "preset": preset,
        "params": count_parameters(build_model(model_config)),
        "batch": f"{batch_size}x{seq_len}",
        "steps": config.steps,
        "ours": tokens / min(times["ours"]),
        "trainer": tokens / min(times["trainer"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="target length of one measurement")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()

    header = (
        f"{'preset':>6} {'params':>9} {'batch':>7} {'thr':>3} {'steps':>5} "
        f"{'Trainer tok/s':>14} {'ours tok/s':>11} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = write_python_source(f"{folder}/python.jsonl")
        for threads in args.threads:
            torch.set_num_threads(threads)
            for preset, batch_size, seq_len in SHAPES:
                row = measure(preset, batch_size, seq_len, args.seconds, args.repeats, folder, tokenizer)
                print(
                    f"{row['preset']:>6} {row['params']:>9,} {row['batch']:>7} {threads:>3} {row['steps']:>5} "
                    f"{row['trainer']:>14,.0f} {row['ours']:>11,.0f} {row['ours'] / row['trainer']:>5.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
