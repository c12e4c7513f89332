"""GPU memory of fine-tuning, full vs PEFT: an estimator of the training step's peak, and an independent
measurement to check it.

`estimate_memory(model, **assumptions)` gives the bytes live at the peak of one training step, per GPU, by
component (weights, gradients, optimizer_state, master_weights, activations, temporaries, overhead), the
phase that holds the peak (forward, backward or the optimizer step), and the older per-component sum under
its own name (`sum_of_components`: not the peak, and not a bound either). GB = 10^9 bytes throughout.

The package, one room per concern:
- catalog    shipped configs (no download), precision schemes, optimizers, GPU sizes
- counting   exact parameter counts (meta device, the trainer's method objects) and the layer shape
- timeline   the step's peak: torch's MemTracker on fake tensors (real tensors where a forward reads values)
- estimate   `estimate_memory`, `bytes_per_parameter`
- formula    the closed-form activation count of Korthikanti et al. 2022, for teaching
- measure    the true peak of a real step by another mechanism (the CPU allocator's events, or CUDA's
             counters), and `validate_estimates`
- anchors    published GPU figures (peft's method_comparison) beside our estimate
- plan       `plan_study`: what each cell of a study needs, which batch fits which card
- widgets    tables, figures, the explorer (static output without a front end)
"""
from .anchors import PEFT_ANCHORS, answers_side_by_side, compare_with_anchors
from .catalog import (ALLOCATOR_FRACTION, COMPONENTS, CUDA_CONTEXT_BYTES, DEFAULT_ASSUMPTIONS, FORMULA_TYPES, GB,
                      GPUS, MODEL_CONFIGS, OPTIMIZERS, PRESETS, SCHEMES, VALIDATION_CONFIGS, default_attention,
                      get_config, model_class)
from .counting import architecture, count_model_parameters, describe_method, formula_covers
from .estimate import bytes_per_parameter, estimate_memory
from .formula import activation_bytes, activation_terms, korthikanti_layer_bytes
from .measure import (MEASURABLE_SCHEMES, TOTAL_TOLERANCE, measure_memory, measured_peak, validate_estimates,
                      validate_on_study, validation_cases)
from .plan import cells_that_do_not_fit, largest_batch_that_fits, model_config, plan_study
from .timeline import PHASES, method_from, step_timeline
from .widgets import (breakdown_table, format_bytes, gpu_label, gpus_that_fit, memory_explorer, memory_summary,
                      plot_memory_breakdown, plot_report_walk, report_walk)

__all__ = [
    "COMPONENTS", "MODEL_CONFIGS", "VALIDATION_CONFIGS", "SCHEMES", "OPTIMIZERS", "PRESETS",
    "DEFAULT_ASSUMPTIONS", "GPUS", "CUDA_CONTEXT_BYTES", "ALLOCATOR_FRACTION", "GB", "FORMULA_TYPES",
    "TOTAL_TOLERANCE", "MEASURABLE_SCHEMES", "PHASES", "PEFT_ANCHORS",
    "get_config", "model_class", "architecture", "count_model_parameters", "describe_method", "formula_covers",
    "bytes_per_parameter", "activation_terms", "activation_bytes", "korthikanti_layer_bytes", "step_timeline",
    "method_from", "estimate_memory", "measure_memory", "measured_peak", "validation_cases", "validate_estimates",
    "validate_on_study", "default_attention",
    "compare_with_anchors", "answers_side_by_side", "gpus_that_fit", "plan_study", "cells_that_do_not_fit",
    "largest_batch_that_fits", "model_config",
    "format_bytes", "gpu_label", "breakdown_table", "plot_memory_breakdown", "memory_summary", "memory_explorer",
    "report_walk", "plot_report_walk",
]
