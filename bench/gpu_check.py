"""One prepared GPU check (about 6-8 min on one NVIDIA GPU, no network, no `datasets` needed).

    python bench/gpu_check.py                   # on the GPU machine; prints one JSON line at the end
    python bench/gpu_check.py --dry-run         # tiny shapes on CPU: proves the script runs (the test does this)

1. Peak: the best bf16 matmul (8192^3) of the card, measured: the MFU denominator.
2. Training speed: roberta-base-shaped classifier (config shipped in bench/configs, random weights), batch
   64 x 128 random tokens, fused AdamW, in fp32, TF32 and bf16 autocast, each eager and torch.compile'd:
   samples/s and MFU = (6 N_nonembedding s + 12 L d s^2) x samples/s / peak.
3. Memory: measured peak allocated and reserved (studykit.memory.measure_memory: one real training step)
   against studykit.memory.estimate_memory, for roberta-base at 64 x 128 and a 2-layer slice of
   Llama-3.2-3B at 4 x 512 (pure fp32 with eager attention, pure bf16 with SDPA).
4. Packing: 1, 2 and 4 training processes side by side on the one GPU (roberta-base, bf16 autocast, batch
   64 x --pack-seq-len tokens, the study's short sequences): total samples/s in a common time window.
Nothing here is an estimate except what is labelled `estimate`.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROBERTA = Path(__file__).resolve().parent / "configs" / "roberta-base.json"
DRY_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                 vocab_size=1000)


def roberta_config(dry: bool, num_labels: int = 4):
    import transformers
    fields = json.loads(ROBERTA.read_text())
    fields.pop("_source")
    if dry:
        fields.update(DRY_SHAPE)
    return transformers.AutoConfig.for_model(**fields, num_labels=num_labels)


def flops_per_example(model, config, seq_len: int) -> float:
    """Training FLOPs of one example: 6 x non-embedding parameters x tokens + attention scores/values."""
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    return 6 * dense * seq_len + 12 * config.num_hidden_layers * config.hidden_size * seq_len ** 2


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, dry: bool) -> float:
    """Best bf16 (CPU dry run: fp32) matmul FLOP/s over a few repeats."""
    import torch
    n = 512 if dry else 8192
    dtype = torch.float32 if dry else torch.bfloat16
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(3 if dry else 20):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        best = max(best, 10 * 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def train_speed(device, mode: str, compiled: bool, batch: int, seq_len: int, steps: int, dry: bool,
                seconds: float | None = None) -> dict:
    """samples/s of full training steps (forward, backward, clip, fused AdamW) on random tokens."""
    import torch
    import transformers
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode in ("tf32", "bf16")
    if compiled:
        torch._dynamo.reset()
    config = roberta_config(dry)
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa").to(device)
    model.train()
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused)
    ids = torch.randint(3, config.vocab_size, (batch, seq_len), device=device)
    labels = torch.randint(0, config.num_labels, (batch,), device=device)
    forward = torch.compile(model) if compiled else model

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss = forward(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(3):   # warm-up; compilation happens here
        step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    t0, done = time.perf_counter(), 0
    while done < steps or (seconds and time.perf_counter() - t0 < seconds):
        step()
        done += 1
        if seconds and done >= steps and time.perf_counter() - t0 >= seconds:
            break
    _sync(device)
    elapsed = time.perf_counter() - t0
    out = {"precision": mode, "compile": compiled, "batch": batch, "seq_len": seq_len, "steps": done,
           "samples_per_s": round(batch * done / elapsed, 2), "warmup_s": round(warmup_s, 1),
           "flops_per_example": flops_per_example(model, config, seq_len)}
    del model, opt, forward
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def memory_check(device, dry: bool) -> list[dict]:
    """Measured (allocated, reserved) against estimate_memory for the two shapes."""
    import torch

    from studykit.memory import MODEL_CONFIGS, estimate_memory, get_config, measure_memory
    llama = dict(MODEL_CONFIGS["llama-3.2-3b"], num_hidden_layers=2)
    cases = [("roberta-base", "roberta-base", 64, 128), ("llama-3.2-3b 2-layer slice", llama, 4, 512)]
    if dry:
        cases = [("roberta-base (dry: tiny)", dict(MODEL_CONFIGS["roberta-base"], **DRY_SHAPE), 4, 32),
                 ("llama-3.2-3b 2-layer slice (dry: tiny)", dict(llama, hidden_size=64, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=1000, bos_token_id=0,
                  eos_token_id=0), 2, 64)]
    rows = []
    for label, model, batch, seq_len in cases:
        if isinstance(model, dict):
            fields = dict(model)
            from transformers import AutoConfig
            model = AutoConfig.for_model(fields.pop("model_type"), **fields)
        config = get_config(model)
        for precision, attention in (("fp32", "eager"), ("bf16", "sdpa")):
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            measured = measure_memory(config, batch_size=batch, seq_len=seq_len, scheme=precision,
                                      attn_implementation=attention, device=str(device))
            reserved = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None
            estimate = estimate_memory(config, scheme=precision, batch_size=batch, seq_len=seq_len,
                                       memory_efficient_attention=attention == "sdpa",
                                       device=device.type, optimizer="adamw")
            rows.append({"model": label, "batch": batch, "seq_len": seq_len, "precision": precision,
                         "attention": attention, "measured_allocated_bytes": int(measured["total"]),
                         "measured_reserved_bytes": reserved, "estimate_total_bytes": int(estimate["total"]),
                         "measured_activations_bytes": int(measured["activations"]),
                         "estimate_activations_bytes": int(estimate["activations"]),
                         "estimate_over_measured_allocated": round(estimate["total"] / measured["total"], 4)})
    return rows


def _pack_worker(args) -> None:
    """One packed process: warm up, say ready, wait for the common start, count steps in the window."""
    import torch
    device = torch.device(args.device)
    import transformers
    torch.backends.cuda.matmul.allow_tf32 = True
    config = roberta_config(args.dry_run)
    model = transformers.AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa").to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    ids = torch.randint(3, config.vocab_size, (args.pack_batch, args.pack_seq_len), device=device)
    labels = torch.randint(0, config.num_labels, (args.pack_batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    _sync(device)
    print("READY", flush=True)
    start, window = (float(v) for v in sys.stdin.readline().split())
    while time.time() < start:
        time.sleep(0.001)
    steps = 0
    while time.time() < start + window:
        step()
        _sync(device)   # a step counts only once it has run
        steps += 1
    print(json.dumps({"samples": steps * args.pack_batch}), flush=True)


def packing(n: int, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--pack-worker", "--device", args.device,
               "--pack-batch", str(args.pack_batch), "--pack-seq-len", str(args.pack_seq_len)]
    command += ["--dry-run"] if args.dry_run else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.device == "cpu" else dict(os.environ)
    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(n)]
    try:
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"a packed worker did not start (said {line!r}, exit {p.poll()})")
        start = time.time() + 1.0
        for p in procs:
            p.stdin.write(f"{start} {args.pack_window}\n")
            p.stdin.flush()
        samples = [json.loads(p.stdout.readline())["samples"] for p in procs]
    finally:
        for p in procs:
            p.wait(timeout=300)
    return {"processes": n, "batch": args.pack_batch, "seq_len": args.pack_seq_len, "window_s": args.pack_window,
            "samples_per_s_total": round(sum(samples) / args.pack_window, 2),
            "samples_per_s_each": [round(s / args.pack_window, 2) for s in samples]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU, no compile: checks the script")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per speed setting (default 30)")
    parser.add_argument("--pack-counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--pack-batch", type=int, default=64)
    parser.add_argument("--pack-seq-len", type=int, default=48, help="tokens per example when packing "
                        "(the study's data averages roughly 30-60 tokens)")
    parser.add_argument("--pack-window", type=float, default=None, help="seconds of the common window (default 20)")
    parser.add_argument("--skip", nargs="+", default=[], choices=["speed", "compile", "memory", "packing"])
    parser.add_argument("--budget-s", type=float, default=450, help="skip what is left after this many seconds "
                        "(default 450: the check must fit 8 minutes); skipped items are listed in the JSON")
    parser.add_argument("--out", help="also write the JSON line to this file")
    parser.add_argument("--pack-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    if args.pack_worker:
        _pack_worker(args)
        return 0
    device = torch.device(args.device)
    if device.type != "cuda" and not args.dry_run:
        parser.error("no CUDA GPU here: run on the GPU machine, or pass --dry-run to check the script on CPU")
    args.pack_window = args.pack_window or (2.0 if args.dry_run else 20.0)
    steps = args.steps or (2 if args.dry_run else 30)
    batch, seq_len = (4, 32) if args.dry_run else (64, 128)
    t_all = time.perf_counter()
    skipped = []

    def over_budget(item: str) -> bool:
        if time.perf_counter() - t_all > args.budget_s:
            skipped.append(item)
            return True
        return False

    result = {"check": "gpu_check", "dry_run": args.dry_run, "device": args.device,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "python": platform.python_version()}
    try:
        import transformers
        result["transformers"] = transformers.__version__
    except ImportError:
        pass
    peak = matmul_peak(device, args.dry_run)
    result["peak_matmul_flops"] = peak
    result["peak_matmul"] = "fp32 512^3 (dry run, CPU)" if args.dry_run else "bf16 8192^3, best of 20 x 10"
    print(f"peak matmul: {peak / 1e12:.1f} TFLOP/s", flush=True)
    result["speed"] = []
    if "speed" not in args.skip:
        compile_options = [False] if (args.dry_run or "compile" in args.skip) else [False, True]
        for compiled in compile_options:
            for mode in ("fp32", "tf32", "bf16"):
                if over_budget(f"speed {mode} compile={compiled}"):
                    continue
                try:
                    row = train_speed(device, mode, compiled, batch, seq_len, steps, args.dry_run)
                    row["mfu"] = round(row["flops_per_example"] * row["samples_per_s"] / peak, 4)
                except Exception as err:  # noqa: BLE001 - e.g. a compile failure: report it, go on
                    row = {"precision": mode, "compile": compiled, "error": f"{type(err).__name__}: {err}"[:300]}
                print(json.dumps(row), flush=True)
                result["speed"].append(row)
        if args.dry_run:
            result["compile"] = "not run in the dry run"
    result["memory"] = []
    if "memory" not in args.skip and not over_budget("memory"):
        for row in memory_check(device, args.dry_run):
            print(json.dumps(row), flush=True)
            result["memory"].append(row)
    result["packing"] = []
    if "packing" not in args.skip:
        for n in args.pack_counts:
            if over_budget(f"packing {n}"):
                continue
            try:
                row = packing(n, args)
            except Exception as err:  # noqa: BLE001 - e.g. out of memory at 4 processes: that is the answer
                row = {"processes": n, "error": f"{type(err).__name__}: {err}"[:300]}
            print(json.dumps(row), flush=True)
            result["packing"].append(row)
    result["skipped_for_time"] = skipped
    result["total_seconds"] = round(time.perf_counter() - t_all, 1)
    line = json.dumps(result)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
