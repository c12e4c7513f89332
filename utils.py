"""The helpers the notebooks call, one import: `import utils`. Each name is listed here with the module of
`studykit` that defines it; a name defined twice fails at import (see `_check_unique` below), and
tests/test_api.py checks that every name the notebooks, tests and benches use is listed.

Layers point one way (README, "Code layout"): grid -> training -> methods, runs, config -> data, modeling;
reporting reads run folders only, in layers: results (loading) -> statistics -> analysis, costs -> findings,
claims -> plots and notebooks; memory estimates from configs.
"""
from studykit.adapters import (DEFAULT_ADAPTER_SIZE, BottleneckAdapter, add_adapters, adapter_parameter_count, count_parameters,
                               format_parameter_report)
from studykit.analysis import (class_balance, confusion_matrices, curve_facts, majority_level, never_predicted,
                               overlap_effect, per_class_scores, per_class_table, selection_table, test_labels)
from studykit.claims import REPORT_CLAIMS, WHY_HYPOTHESES, check_claims, describe_claims
from studykit.config import NotRunnableHere, RunConfig
from studykit.costs import (adapter_share, describe_adapter_shares, describe_model_costs, describe_time_per_epoch,
                            method_costs, time_per_epoch, training_memory)
from studykit.data import DataError, audit_dataset, describe_overlaps, get_dataset
from studykit.findings import (describe_class_differences, describe_collapse, describe_comparisons,
                               describe_curve_facts, describe_model_comparisons, describe_ranking, describe_selection,
                               describe_sizes, task2_findings, task3_findings, describe_method_costs, describe_budgets,
                               task3_answers)
from studykit.summary import describe_learning_rates, settings_beside_report, summary_box, what_did_not_run, what_ran
from studykit.attempt import failure_record
from studykit.grid import NothingFinished, SettingsError, check_settings, describe_grid, launch_grid, run_grid
from studykit.hardware import cpu_supports_bf16, describe_machine, resolve_precision
from studykit.memory import (MODEL_CONFIGS, SCHEMES, TOTAL_TOLERANCE, activation_bytes, activation_terms,
                             answers_side_by_side, breakdown_table, bytes_per_parameter, compare_with_anchors,
                             count_model_parameters, estimate_memory, gpus_that_fit, korthikanti_layer_bytes,
                             measure_memory, memory_explorer, memory_summary, plan_study, plot_memory_breakdown,
                             plot_report_walk, report_walk, step_timeline, validate_estimates,
                             validate_on_study)
from studykit.methods import FullFineTuning, HoulsbyAdapters, LoRA
from studykit.modeling import ModelUnavailable, describe_heads, load_model_and_tokenizer, pooler_statistics, resolve_model
from studykit.plots import method_colours, plot_confusions, plot_curves
from studykit.profiles import PROFILES, describe_setup, from_env, models_run_on, study_configs
from studykit.results import (DuplicateSeedWarning, compared_configs, describe_runs, duplicate_seeds, load_metrics,
                              load_results, load_study, missing_cells, select_runs)
from studykit.statistics import (compare_methods, compare_models, compare_models_per_class, compare_sizes,
                                 format_summary, independent_comparison, min_wilcoxon_p, paired_comparison, summarize,
                                 verdict, what_seeds_decide)
from studykit.training import TrainingDiverged, estimate_training_seconds, train_run

__all__ = [
    # data and models
    "DataError", "get_dataset", "audit_dataset", "describe_overlaps",
    "ModelUnavailable", "resolve_model", "load_model_and_tokenizer", "pooler_statistics", "describe_heads",
    # settings and profiles
    "RunConfig", "NotRunnableHere", "PROFILES", "study_configs", "models_run_on", "from_env", "describe_setup",
    "cpu_supports_bf16", "resolve_precision",
    # training and grids
    "train_run", "TrainingDiverged", "estimate_training_seconds", "run_grid", "launch_grid", "check_settings",
    "SettingsError", "NothingFinished", "describe_grid", "failure_record",
    # our adapters
    "FullFineTuning", "HoulsbyAdapters", "LoRA",
    "DEFAULT_ADAPTER_SIZE", "BottleneckAdapter", "add_adapters", "adapter_parameter_count", "count_parameters", "format_parameter_report",
    # results: loading
    "load_results", "load_metrics", "load_study", "compared_configs", "select_runs", "missing_cells", "duplicate_seeds",
    "DuplicateSeedWarning", "describe_runs",
    # results: statistics (paired by seed within a model, independent samples across models; one verdict)
    "summarize", "format_summary", "paired_comparison", "independent_comparison", "verdict", "min_wilcoxon_p",
    "what_seeds_decide", "compare_methods", "compare_models", "compare_models_per_class", "compare_sizes",
    # results: analysis of predictions and curves, costs
    "selection_table", "per_class_scores", "per_class_table", "test_labels", "never_predicted", "confusion_matrices",
    "class_balance", "majority_level", "curve_facts", "overlap_effect", "training_memory", "time_per_epoch",
    "method_costs", "describe_model_costs", "adapter_share", "describe_adapter_shares",
    # results: findings in sentences, the report's claims, plots
    "what_ran", "what_did_not_run", "summary_box", "task2_findings", "task3_findings", "describe_ranking",
    "describe_comparisons", "describe_model_comparisons", "describe_class_differences", "describe_sizes",
    "describe_learning_rates", "describe_selection", "describe_collapse", "describe_curve_facts",
    "describe_time_per_epoch", "describe_method_costs", "describe_budgets", "task3_answers", "settings_beside_report",
    "REPORT_CLAIMS",
    "WHY_HYPOTHESES", "check_claims", "describe_claims",
    "method_colours", "plot_curves", "plot_confusions",
    # memory
    "estimate_memory", "step_timeline", "SCHEMES", "MODEL_CONFIGS", "count_model_parameters", "bytes_per_parameter",
    "activation_terms", "activation_bytes", "korthikanti_layer_bytes", "measure_memory", "validate_estimates",
    "validate_on_study", "TOTAL_TOLERANCE", "compare_with_anchors", "answers_side_by_side", "report_walk", "plot_report_walk",
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
