"""Training: a recipe (``recipe``) run end to end (``run``) through pre-training, distillation,
fine-tuning, calibration and the lexical part.

Imports run one way: ``loop`` (shared helpers) ← ``pretrain``, ``distill`` ← ``finetune``;
``calibrate`` ← ``distill``, ``lexical``; ``run`` imports them all and nothing here imports ``run``.
"""

from models.training.calibrate import calibrate_model_dir
from models.training.recipe import Recipe, RecipeError, load_recipe, recipe_from_dict
from models.training.run import train_model

__all__ = ["Recipe", "RecipeError", "calibrate_model_dir", "load_recipe", "recipe_from_dict", "train_model"]
