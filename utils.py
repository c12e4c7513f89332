"""The helpers the notebooks call, one import: `import utils`. Each name is listed here with the module of
`studykit` that defines it; a name defined twice fails at import (see `_check_unique` below), and
tests/test_api.py checks that every name the notebooks, tests and benches use is listed.

Layers point one way (README, "Code layout"): grid -> training -> methods, runs, config -> data, modeling;
results, analysis, findings and plots read run folders only; memory estimates from configs.
"""
from studykit.adapters import (DEFAULT_ADAPTER_SIZE, BottleneckAdapter, add_adapters, adapter_parameter_count, count_parameters,
                               format_parameter_report)
from studykit.analysis import (DuplicateSeedWarning, class_balance, compare_methods, confusion_matrices, curve_facts,
                               describe_collapse, describe_comparisons, describe_curve_facts, describe_selection,
                               duplicate_seeds, majority_level, min_wilcoxon_p, never_predicted, paired_statistics,
                               per_class_scores, per_class_table, select_runs, selection_table, test_labels,
                               what_seeds_decide)
from studykit.config import NotRunnableHere, RunConfig
from studykit.costs import training_memory
from studykit.data import DataError, audit_dataset, describe_overlaps, get_dataset
from studykit.findings import (adapter_share, describe_time_per_epoch, settings_beside_report, summary_box,
                               task2_findings, task3_findings, time_per_epoch, what_did_not_run, what_ran)
from studykit.grid import (NothingFinished, SettingsError, check_settings, describe_grid, failure_record,
                           launch_grid, run_grid)
from studykit.hardware import cpu_supports_bf16, describe_machine, resolve_precision
from studykit.memory import (MODEL_CONFIGS, SCHEMES, TOTAL_TOLERANCE, activation_bytes, activation_terms,
                             answers_side_by_side, breakdown_table, bytes_per_parameter, compare_with_anchors,
                             count_model_parameters, estimate_memory, gpus_that_fit, korthikanti_layer_bytes,
                             measure_memory, memory_explorer, memory_summary, plan_study, plot_memory_breakdown,
                             plot_report_walk, report_walk, step_timeline, validate_estimates)
from studykit.methods import FullFineTuning, HoulsbyAdapters, LoRA
from studykit.modeling import ModelUnavailable, load_model_and_tokenizer, pooler_statistics, resolve_model
from studykit.plots import method_colours, plot_confusions, plot_curves
from studykit.profiles import PROFILES, describe_setup, from_env, study_configs
from studykit.results import (REPORT_CLAIMS, check_claims, describe_ranking, describe_runs, format_summary,
                              load_metrics, load_results, overlap_effect, paired_comparison, summarize)
from studykit.training import TrainingDiverged, estimate_training_seconds, train_run

__all__ = [
    # data and models
    "DataError", "get_dataset", "audit_dataset", "describe_overlaps",
    "ModelUnavailable", "resolve_model", "load_model_and_tokenizer", "pooler_statistics",
    # settings and profiles
    "RunConfig", "NotRunnableHere", "PROFILES", "study_configs", "from_env", "describe_setup",
    "cpu_supports_bf16", "resolve_precision",
    # training and grids
    "train_run", "TrainingDiverged", "estimate_training_seconds", "run_grid", "launch_grid", "check_settings",
    "SettingsError", "NothingFinished", "describe_grid", "failure_record",
    # our adapters
    "FullFineTuning", "HoulsbyAdapters", "LoRA",
    "DEFAULT_ADAPTER_SIZE", "BottleneckAdapter", "add_adapters", "adapter_parameter_count", "count_parameters", "format_parameter_report",
    # results: loading, statistics, findings, plots
    "load_results", "load_metrics", "select_runs", "duplicate_seeds", "DuplicateSeedWarning", "summarize",
    "format_summary", "describe_runs", "describe_ranking", "paired_comparison", "paired_statistics",
    "compare_methods", "describe_comparisons", "min_wilcoxon_p", "what_seeds_decide", "selection_table",
    "describe_selection", "per_class_scores", "per_class_table", "test_labels", "never_predicted", "describe_collapse",
    "confusion_matrices", "class_balance", "majority_level", "curve_facts", "describe_curve_facts", "overlap_effect",
    "REPORT_CLAIMS", "check_claims", "what_ran", "what_did_not_run", "summary_box", "task2_findings",
    "task3_findings", "settings_beside_report", "adapter_share", "time_per_epoch", "describe_time_per_epoch",
    "training_memory", "method_colours", "plot_curves", "plot_confusions",
    # memory
    "estimate_memory", "step_timeline", "SCHEMES", "MODEL_CONFIGS", "count_model_parameters", "bytes_per_parameter",
    "activation_terms", "activation_bytes", "korthikanti_layer_bytes", "measure_memory", "validate_estimates",
    "TOTAL_TOLERANCE", "compare_with_anchors", "answers_side_by_side", "report_walk", "plot_report_walk",
    "breakdown_table", "plot_memory_breakdown", "memory_summary", "memory_explorer", "gpus_that_fit",
    "describe_machine", "plan_study",
]


def _check_unique(names) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ImportError(f"utils lists {repeated} twice: each public name has one home")
    missing = [n for n in names if n not in globals()]
    if missing:
        raise ImportError(f"utils lists {missing} but imports no such name")


_check_unique(__all__)
