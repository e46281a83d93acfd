"""bitmoji-ml: train, track, export and serve a gender classifier for Bitmoji faces."""

__version__ = "0.1.0"
