"""Segmentation evaluation: voxel and topology metrics, autoPET FPV/FNV, lesion-wise detection,
per-task aggregation with bootstrap intervals, and the folder / manifest runner behind ``unipet evaluate``."""
from unipet.evaluate.aggregate import aggregate, bootstrap_ci, table1
from unipet.evaluate.autopet import autopet_metrics, false_negative_volume, false_positive_volume
from unipet.evaluate.lesions import LesionDetection, match_lesions
from unipet.evaluate.metrics import cldice, confusion, dice, hd95, iou, precision, recall, skeleton, voxel_metrics
from unipet.evaluate.runner import EvaluationConfig, EvaluationResult, evaluate, evaluate_case

__all__ = [
    "EvaluationConfig", "EvaluationResult", "LesionDetection", "aggregate", "autopet_metrics", "bootstrap_ci",
    "cldice", "confusion", "dice", "evaluate", "evaluate_case", "false_negative_volume", "false_positive_volume",
    "hd95", "iou", "match_lesions", "precision", "recall", "skeleton", "table1", "voxel_metrics",
]
