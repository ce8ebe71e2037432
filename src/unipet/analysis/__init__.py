"""Dataset-level analyses of trained models (layer 5): what a model learned, shown on the data."""
