"""Shell helpers for train.py: the end-of-grid report, and the `fetch` sub-command."""
from __future__ import annotations

__all__ = ["grid_report", "RESULT_COLUMNS"]

RESULT_COLUMNS = ("dataset", "model_name", "seed", "status", "accuracy", "f1_macro")


def grid_report(table) -> tuple[str, int]:
    """The table of a grid's runs and a closing line, and the exit code (1 when no run finished).

    Works when every run failed: failed rows have no metric columns, so only the columns present are shown.
    """
    if table.empty:
        return "no runs in this grid", 1
    columns = [c for c in RESULT_COLUMNS if c in table.columns]
    lines = [table[columns].to_string()]
    finished = table["status"].isin(["finished"]).sum() if "status" in table else 0
    failed = table[table["status"].astype(str).str.startswith("failed")] if "status" in table else table.iloc[:0]
    if len(failed):
        reasons = failed["error"].dropna().astype(str).map(lambda e: e.splitlines()[0][:400]) if "error" in failed \
            else []
        lines.append(f"{len(failed)} of {len(table)} runs failed (reasons in each run's failed.json):")
        lines += [f"  {n} x {reason}" for reason, n in reasons.value_counts().items()] if len(reasons) else []
        lines.append("Fix the cause, then rerun with --retry-failed; finished runs are skipped.")
    lines.append(f"{finished} of {len(table)} runs finished.")
    return "\n".join(lines), 0 if finished else 1
