"""MLflow models-from-code entry point of the registered image model (no pickled objects):
MLflow runs this file when it loads the model, with the model's `code/` folder on sys.path."""

import mlflow

from bitmoji_ml.serving.image_model import BitmojiImageModel

mlflow.models.set_model(BitmojiImageModel())
