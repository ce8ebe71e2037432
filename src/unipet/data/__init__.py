"""Data: phantom cohorts, preprocessing, the training cache, sampling and augmentation."""
