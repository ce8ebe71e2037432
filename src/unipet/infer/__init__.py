"""Prediction: sliding-window predictor with TTA (``predictor``) and resumable, sharded batch jobs (``batch``)."""
from unipet.infer.batch import BatchReport, predict_batch
from unipet.infer.predictor import Prediction, Predictor, write_prediction

__all__ = ["BatchReport", "Prediction", "Predictor", "predict_batch", "write_prediction"]
