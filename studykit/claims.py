"""The seed report's claims and the "why" hypotheses (ours), checked against our runs: a claim's status from
`statistics`' one decision (the 95 % interval of the claimed advantage), with the evidence in words.

Within one model (adapters against full fine-tuning) the runs are paired by seed; across models (which model
is best) they are two independent samples: Welch's interval and P(a run of one beats a run of the other), never
pairs of seeds (`statistics`' docstring says why)."""
from __future__ import annotations

import pandas as pd

from .results import one_config_per_group
from .statistics import decide, format_interval, independent_comparison, paired_comparison

__all__ = ["REPORT_CLAIMS", "WHY_HYPOTHESES", "CLAIM_STATUS", "check_claims", "describe_claims"]

# Each claim as the report states it, and how to test it on a results table: `better` (one method beats
# another on a dataset, paired by seed) or `best_model` (a model has the best mean metric among the models
# fully fine-tuned on each dataset, and its lead over each other model is beyond seed noise, as independent
# samples).
REPORT_CLAIMS = [
    dict(claim="Adapters beat full fine-tuning on acl", kind="better", dataset="acl_sup", metric="f1_macro",
         winner="adapter", loser="full"),
    dict(claim="roberta-base has the lowest eval loss on restaurant and agnews", kind="best_model",
         datasets=["restaurant_sup", "agnews_sup"], metric="eval_loss", model="roberta-base",
         higher_is_better=False),
]

# Not the report's: the two reasons the assignment's "and why" points to, as hypotheses the runs can test: size
# within the general domain (`larger_model`: the largest model fully fine-tuned against each smaller one, whatever
# the models are), and the domain of the pre-training text (SciBERT's scientific papers against acl's citations).
WHY_HYPOTHESES = [
    dict(claim="Why (hypothesis): a larger general-domain encoder has a lower eval loss on restaurant and agnews",
         kind="larger_model", datasets=["restaurant_sup", "agnews_sup"], metric="eval_loss", higher_is_better=False),
    dict(claim="Why (hypothesis): a science-domain encoder (SciBERT) is best on acl, citations from scientific papers",
         kind="best_model", datasets=["acl_sup"], metric="f1_macro", model="allenai/scibert_scivocab_uncased",
         missing="no encoder pre-trained on scientific text among these runs"),
]

# A claim's status from the decision on the claimed advantage (`statistics.decide`).
CLAIM_STATUS = {"higher": "holds", "lower": "does not hold (the opposite, beyond seed noise)",
                "undecided": "cannot decide (within seed noise)", "too few": "cannot decide (too few seeds)"}


def _check_better(results, claim):
    part = results[results["dataset"] == claim["dataset"]]
    if part.empty:
        return [("not testable here", f"no runs on {claim['dataset']}")]
    rows = []
    for _, runs in part.groupby("model_name"):
        full = sorted(runs.loc[runs["training_method"] == "full", "label"].unique())  # LoRA is neither side
        adapters = sorted(runs.loc[runs["training_method"] == "adapter", "label"].unique())
        if not full or not adapters:
            continue
        winners, losers = (adapters, full) if claim["winner"] == "adapter" else (full, adapters)
        for loser in losers:
            for winner in winners:
                cmp = paired_comparison(runs, loser, winner, claim["metric"])
                evidence = (f"{winner} - {loser}: {claim['metric']} {cmp['mean_diff']:+.3f}, 95 % CI "
                            f"{format_interval(cmp['ci95'])}, higher in {cmp['b_wins']} of {cmp['n']} seeds "
                            "(paired by seed)")
                rows.append((CLAIM_STATUS[decide(cmp["ci95"], cmp["n"])], evidence))
    return rows or [("not testable here", f"no model has both adapter and full fine-tuning runs on {claim['dataset']}")]


def _check_best_model(results, claim):
    rows = []
    sign = 1 if claim.get("higher_is_better", True) else -1
    for dataset in claim["datasets"]:
        part = results[(results["dataset"] == dataset) & (results["training_method"] == "full")]
        models = sorted(part["model_name"].unique())
        if claim["model"] not in models or len(models) < 2:
            why = f" ({claim['missing']})" if "missing" in claim and claim["model"] not in models else ""
            rows.append(("not testable here", f"{dataset}: needs {claim['model']} and at least one other model "
                                               f"fully fine-tuned; these runs have {models or 'none'}{why}"))
            continue
        means = part.groupby("model_name")[claim["metric"]].mean().sort_values(ascending=sign < 0)
        rival = means.index[1] if means.index[0] == claim["model"] else means.index[0]
        cmp = independent_comparison(sign * part.loc[part.model_name == rival, claim["metric"]],
                                     sign * part.loc[part.model_name == claim["model"], claim["metric"]])
        evidence = (f"{dataset}: {claim['model']} {means[claim['model']]:.3f} ({cmp['n_b']} seeds) vs {rival} "
                    f"{means[rival]:.3f} ({cmp['n_a']} seeds); advantage {cmp['mean_diff']:+.3f}, Welch 95 % CI "
                    f"{format_interval(cmp['ci95'])} (independent samples); {claim['model']} better in "
                    f"{cmp['prob_b_beats_a']:.0%} of the {cmp['pairs']} pairs of runs")
        rows.append((CLAIM_STATUS[decide(cmp["ci95"], min(cmp["n_a"], cmp["n_b"]))], evidence))
    return rows


def _check_larger_model(results, claim):
    """The largest model fully fine-tuned on each dataset (by parameters) against each smaller one, as independent
    samples: "holds" when the larger one is better beyond seed noise."""
    rows = []
    sign = 1 if claim.get("higher_is_better", True) else -1
    for dataset in claim["datasets"]:
        part = results[(results["dataset"] == dataset) & (results["training_method"] == "full")]
        sizes = part.groupby("model_name")["total_params"].first().sort_values()
        if len(sizes) < 2:
            rows.append(("not testable here", f"{dataset}: needs two models of different size fully fine-tuned; "
                                               f"these runs have {list(sizes.index) or 'none'}"))
            continue
        larger, means = sizes.index[-1], part.groupby("model_name")[claim["metric"]].mean()
        for smaller in sizes.index[:-1]:
            cmp = independent_comparison(sign * part.loc[part.model_name == smaller, claim["metric"]],
                                         sign * part.loc[part.model_name == larger, claim["metric"]])
            rows.append((CLAIM_STATUS[decide(cmp["ci95"], min(cmp["n_a"], cmp["n_b"]))],
                         f"{dataset}: {larger} ({sizes[larger] / 1e6:.0f} M parameters) {means[larger]:.3f} vs "
                         f"{smaller} ({sizes[smaller] / 1e6:.0f} M) {means[smaller]:.3f}; advantage of the larger "
                         f"{cmp['mean_diff']:+.3f}, Welch 95 % CI {format_interval(cmp['ci95'])} (independent samples)"))
    return rows


def check_claims(results: pd.DataFrame, claims=None) -> pd.DataFrame:
    """One row per (claim, comparison): the claim's status from our runs and the evidence behind it.

    Statuses (`CLAIM_STATUS`): "holds" (the claimed direction, beyond seed noise), "does not hold" (the
    opposite, beyond seed noise), "cannot decide" (the 95 % interval includes 0, or too few seeds) and "not
    testable here" (the runs lack what the claim is about, e.g. roberta-base in a MiniLM-only profile).
    """
    results = one_config_per_group(results, what="check_claims")
    checks = {"better": _check_better, "best_model": _check_best_model, "larger_model": _check_larger_model}
    rows = []
    for claim in claims or REPORT_CLAIMS + WHY_HYPOTHESES:
        if claim["kind"] not in checks:
            raise ValueError(f"unknown claim kind {claim['kind']!r}; valid: {sorted(checks)}")
        verdicts = checks[claim["kind"]](results, claim) if len(results) else [("not testable here", "no runs")]
        if len(verdicts) > 1 and {v for v, _ in verdicts} == {"not testable here"}:  # one row says it once
            verdicts = [("not testable here", "; ".join(e for _, e in verdicts))]
        for status, evidence in verdicts:
            rows.append({"claim": claim["claim"], "verdict": status, "evidence": evidence})
    return pd.DataFrame(rows, columns=["claim", "verdict", "evidence"])


def describe_claims(table: pd.DataFrame) -> list[str]:
    """Sentences from `check_claims`: each claim once, with its verdicts and their evidence."""
    return [f"{claim}: " + "; ".join(f"{r.verdict} ({r.evidence})" for r in rows.itertuples()) + "."
            for claim, rows in table.groupby("claim", sort=False)]
