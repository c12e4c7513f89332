"""GPU memory of fine-tuning, full vs PEFT: an estimator you can read, and a measurement to check it.

`estimate_memory(model, **assumptions)` adds up bytes per component, per GPU, for one training step:
weights, gradients (trainable parameters only), optimizer_state, master_weights (mixed precision's
fp32 copy), activations (tensors autograd keeps for backward) and overhead (CUDA context and
allocator slack, a stated assumption). GB = 10^9 bytes throughout.

The package, one room per concern:
- catalog    shipped configs (no download), precision schemes, optimizers, GPU sizes
- counting   exact parameter counts and the layer shape (model built on the meta device)
- formula    the closed-form activation count per component (Korthikanti et al. 2022), for teaching
- trace      the exact activation count: the real model run on fake tensors (any architecture)
- estimate   `estimate_memory`, `bytes_per_parameter`
- measure    `measure_memory` (a real step) and `validate_estimates` (estimate vs measurement)
- plan       `plan_study`: what each cell of a study needs, which batch fits which card
- widgets    tables, figures, the explorer (static output without a front end)
"""
from .catalog import (ALLOCATOR_FRACTION, COMPONENTS, CUDA_CONTEXT_BYTES, DEFAULT_ASSUMPTIONS, FORMULA_TYPES, GB,
                      GPUS, MODEL_CONFIGS, OPTIMIZERS, PRECISIONS, PRESETS, VALIDATION_CONFIGS, get_config,
                      model_class)
from .counting import architecture, count_model_parameters, formula_covers
from .estimate import bytes_per_parameter, estimate_memory
from .formula import activation_terms, korthikanti_layer_bytes
from .measure import (ACTIVATION_TOLERANCE, MEASURABLE_PRECISIONS, TOTAL_TOLERANCE, measure_memory,
                      validate_estimates, validation_cases)
from .plan import cells_that_do_not_fit, largest_batch_that_fits, plan_study
from .trace import traced_activations
from .widgets import (breakdown_table, describe_machine, format_bytes, gpu_label, gpus_that_fit,
                      has_widget_front_end, memory_explorer, memory_summary, plot_memory_breakdown,
                      plot_report_walk, report_walk)

__all__ = [
    "COMPONENTS", "MODEL_CONFIGS", "VALIDATION_CONFIGS", "PRECISIONS", "OPTIMIZERS", "PRESETS",
    "DEFAULT_ASSUMPTIONS", "GPUS", "CUDA_CONTEXT_BYTES", "ALLOCATOR_FRACTION", "GB", "FORMULA_TYPES",
    "ACTIVATION_TOLERANCE", "TOTAL_TOLERANCE", "MEASURABLE_PRECISIONS",
    "get_config", "model_class", "architecture", "count_model_parameters", "formula_covers",
    "bytes_per_parameter", "activation_terms", "korthikanti_layer_bytes", "traced_activations",
    "estimate_memory", "measure_memory", "validation_cases", "validate_estimates", "gpus_that_fit",
    "plan_study", "cells_that_do_not_fit", "largest_batch_that_fits",
    "format_bytes", "gpu_label", "breakdown_table", "plot_memory_breakdown", "memory_summary", "memory_explorer",
    "has_widget_front_end", "report_walk", "plot_report_walk", "describe_machine",
]
