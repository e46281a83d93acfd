"""Jobs that run many trainings to choose a recipe: cross-validation, label audit, tuning."""
