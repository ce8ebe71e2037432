"""Training: recipes as data (``recipes``), losses (``losses``), the one training loop (``engine``: any module whose
forward returns a loss dict), segmentation setup and resume (``trainer``), optimizer / scaler / RNG state beside a
checkpoint (``state``) and DDP helpers (``distributed``). Checkpoints themselves are ``unipet.checkpoint``."""
from unipet.train.engine import TrainResult
from unipet.train.recipes import RECIPES, Recipe, load_recipe
from unipet.train.trainer import train

__all__ = ["RECIPES", "Recipe", "TrainResult", "load_recipe", "train"]
