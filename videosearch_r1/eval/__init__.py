"""Metrics (pure functions, metrics.py) and `vsr1 evaluate` (evaluate.py); definitions in docs/metrics.md."""
from videosearch_r1.eval.evaluate import evaluate_rows, format_table, read_predictions
from videosearch_r1.eval.metrics import (GT, Pred, Turn, paper_metrics, temporal_iou, tvr_metrics, valid_span,
                                         verification_correct)

__all__ = ["GT", "Pred", "Turn", "evaluate_rows", "format_table", "paper_metrics", "read_predictions",
           "temporal_iou", "tvr_metrics", "valid_span", "verification_correct"]
