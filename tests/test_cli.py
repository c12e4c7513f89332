"""train.py's end-of-grid report: failures listed and counted, no KeyError when every run failed."""
import pandas as pd

from studykit.cli import grid_report


def test_all_failed_grid_reports_reasons_without_keyerror():
    table = pd.DataFrame([
        {"dataset": "acl_sup", "model_name": "x", "seed": s, "status": "failed", "error": "ValueError: cannot load model 'x'"}
        for s in (1, 2)] + [{"dataset": "acl_sup", "model_name": "y", "seed": 1, "status": "failed (skipped)",
                             "error": "OutOfMemoryError: CUDA out of memory\nmore"}])
    text, code = grid_report(table)
    assert code == 1
    assert "3 of 3 runs failed" in text and "2 x ValueError: cannot load model 'x'" in text
    assert "1 x OutOfMemoryError: CUDA out of memory" in text and "--retry-failed" in text
    assert "0 of 3 runs finished" in text and "accuracy" not in text


def test_mixed_grid_shows_metrics_and_exit_zero():
    table = pd.DataFrame([{"dataset": "acl_sup", "model_name": "x", "seed": 1, "status": "finished", "accuracy": 0.5,
                           "f1_macro": 0.4},
                          {"dataset": "acl_sup", "model_name": "x", "seed": 2, "status": "failed", "error": "E: boom"}])
    text, code = grid_report(table)
    assert code == 0 and "f1_macro" in text and "1 of 2 runs failed" in text and "1 of 2 runs finished" in text


def test_empty_grid():
    assert grid_report(pd.DataFrame()) == ("no runs in this grid", 1)
