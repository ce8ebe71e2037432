"""Training: recipes as data, losses, the training loop with checkpoints / resume, and DDP helpers."""
from unipet.train.recipes import RECIPES, Recipe, load_recipe
from unipet.train.trainer import TrainResult, train

__all__ = ["RECIPES", "Recipe", "TrainResult", "load_recipe", "train"]
