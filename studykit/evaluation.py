"""Evaluation during a run: metrics over a split (every example once, however many processes), and the
selection on the dev split that keeps the best evaluation's test metrics and weights."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

__all__ = ["evaluate", "DevSelection"]


@torch.inference_mode()
def evaluate(model, loader, accelerator, num_labels: int | None = None) -> dict:
    """Accuracy, macro-F1 over all `num_labels` classes (every class of the dataset, also on a subset where
    one is absent), micro-F1 (equal to accuracy for single-label data) and mean loss over the test set,
    every example once, plus `predictions`: the predicted label of each example in the test split's order."""
    model.eval()
    preds, labels, losses, index = [], [], [], []
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
        # Gathered once per batch, so the last batch's padding duplicates are dropped (see Accelerate docs).
        p, y, l, i = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"], loss, batch["idx"]))
        preds.append(p.cpu()), labels.append(y.cpu()), losses.append(l.float().cpu()), index.append(i.cpu())
        num_labels = num_labels or logits.shape[-1]
    model.train()
    y_pred, y_true = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    in_split_order = np.empty_like(y_pred)
    in_split_order[torch.cat(index).numpy()] = y_pred  # the loader is sorted by length
    classes = list(range(num_labels))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "f1_macro": float(f1_score(y_true, y_pred, average="macro", labels=classes, zero_division=0)),
            "f1_micro": float(f1_score(y_true, y_pred, average="micro")),
            "eval_loss": float(torch.cat(losses).mean()), "eval_examples": int(len(y_true)),
            "predictions": in_split_order.tolist()}



class DevSelection:
    """Selection on the dev split (`early_stopping_patience`): keeps the test metrics and predictions of the
    evaluation with the best dev macro-F1 (and, for methods that save weights, those weights), and says
    when `patience` evaluations in a row have not improved on it. Test is never used to choose."""

    def __init__(self, patience: int, keep_weights: bool):
        self.patience, self.keep_weights = patience, keep_weights
        self.best_f1, self.best, self.weights, self.since_best = -1.0, None, None, 0

    def update(self, dev_f1: float, test_metrics: dict, predictions, step: int, epoch: float, model) -> bool:
        """Record one evaluation; True when training should stop."""
        if dev_f1 > self.best_f1:
            self.best_f1, self.since_best = dev_f1, 0
            self.best = {"metrics": dict(test_metrics), "predictions": predictions, "step": step, "epoch": epoch}
            if self.keep_weights:  # trainable weights only (adapters, LoRA, head): small, kept on the host
                self.weights = {n: p.detach().to("cpu", copy=True)
                                for n, p in model.named_parameters() if p.requires_grad}
        else:
            self.since_best += 1
        return self.since_best >= self.patience

    def restore(self, model) -> None:
        """Put the selected weights back into `model` (the unwrapped one) before it is saved."""
        if self.weights:
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in self.weights.items():
                    params[name.removeprefix("module.")].copy_(value)
