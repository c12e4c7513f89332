"""What the bench measures with: model FLOPs, the machine's matmul peak per precision, MFU, padding, and a
profile of one training step.

FLOPs (model FLOPs, as in the PaLM paper and nanoGPT's MFU) per training example of s non-pad tokens:
    6 * N_enc * s              encoder weights, every token (2 forward + 4 backward per weight)
  + 6 * N_head                 pooler/classifier weights, used by the first token only
  + 12 * L * d * s**2          attention scores QK^T and the weighted sum AV (2*s*s*d each forward, x3)
Embeddings are lookups and count zero; padding is not counted (compute spent on pads is waste).

MFU = achieved FLOP/s / the matmul peak of the precision the run computes in: the best of a few large
n x n `torch.matmul` calls in that dtype (fp32, or bf16 where autocast sends the matmuls to bf16 kernels),
at the same thread count. Other users' load lowers a run's speed but not the best probe, so on a shared
machine MFU errs low.
"""
from __future__ import annotations

import math
import time

PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def count_train_flops(model, lengths) -> float:
    """Model FLOPs of one forward + backward pass over examples of the given non-pad lengths (see top)."""
    per_token = per_sequence = 0
    for name, p in model.named_parameters():
        if "embeddings" in name:
            continue
        if ".encoder." in f".{name}":
            per_token += p.numel()
        else:  # pooler / classification head: applied to the first token of each sequence
            per_sequence += p.numel()
    cfg = model.config
    layers, d = cfg.num_hidden_layers, cfg.hidden_size
    tokens = sum(lengths)
    return 6 * per_token * tokens + 6 * per_sequence * len(lengths) + 12 * layers * d * sum(s * s for s in lengths)


def _operands(precision: str, n: int):
    import torch
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"no matmul probe for precision {precision!r}; valid: {', '.join(PRECISION_DTYPES)}")
    dtype = getattr(torch, PRECISION_DTYPES[precision])
    return torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)


def matmul_peak(precision: str = "fp32", n: int = 2048, repeats: int = 3) -> float:
    """Best FLOP/s of `repeats` n x n matmuls in `precision` (after one warm-up), at torch's thread count."""
    import torch
    a, b = _operands(precision, n)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def matmul_sustained(precision: str = "fp32", n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of back-to-back n x n matmuls over `seconds`: what the machine delivers right now (a load
    indicator printed beside the peak, not a second MFU denominator)."""
    import torch
    a, b = _operands(precision, n)
    torch.matmul(a, b)
    calls, start = 0, time.perf_counter()
    while True:
        torch.matmul(a, b)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * 2 * n ** 3 / elapsed


def ratio(a, b):
    """a / b, or None when either is missing (a measurement below the timing noise, a skipped part)."""
    return None if a is None or b is None else a / b


def megabatch_steps(n_examples: int, batch_size: int) -> int:
    """Batches in one mega-batch of transformers' LengthGroupedSampler (its default `mega_batch_mult`)."""
    return max(1, min(n_examples // (batch_size * 4), 50))


def padding_fraction(lengths, order, batch_size: int) -> float:
    """Share of pad tokens when the examples are batched in `order` and padded to each batch's longest."""
    computed = sum(max(lengths[i] for i in order[k:k + batch_size]) * len(order[k:k + batch_size])
                   for k in range(0, len(order), batch_size))
    return 1 - sum(lengths[i] for i in order) / computed


def profile_step(model_name: str, num_labels: int, cache_dir, precision: str, batch_size: int, length: int,
                 threads: int, top: int = 25, seed: int = 1, dropout_kernel: str = "torch") -> dict:
    """Profile one training step as the engine runs it on CPU (forward and loss under the precision's
    autocast, backward, clipping, fused AdamW) on a fixed full-length batch, after two warm-up steps.

    `dropout_kernel`: "torch" (the model's own dropout) or "int16" (studykit/dropout.py).
    Returns the step time, its model FLOPs and the profiler's table of the `top` ops by self CPU time.
    """
    import contextlib

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from studykit.modeling import load_model_and_tokenizer
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, _ = load_model_and_tokenizer(model_name, num_labels, cache_dir)
    if dropout_kernel == "int16":
        from studykit.dropout import use_int16_dropout
        use_int16_dropout(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    input_ids = torch.randint(1, model.config.vocab_size, (batch_size, length))
    labels = torch.randint(0, num_labels, (batch_size,))
    mask = torch.ones(batch_size, length, dtype=torch.long)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())

    def step():
        with record_function("forward"), autocast:
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        with record_function("backward"):
            loss.backward()
        with record_function("clip + optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # allocations, lazy initialisation, oneDNN kernel selection
        step()
    t = time.perf_counter()
    step()
    step_s = time.perf_counter() - t
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    phases = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages()
              if e.key in ("forward", "backward", "clip + optimizer")}
    return {"step_s": step_s, "flops_per_step": count_train_flops(model, [length] * batch_size),
            "phases_s": phases, "table": table}
