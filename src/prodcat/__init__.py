"""prodcat: train, compare and serve neural classifiers of product titles."""

from prodcat.errors import ConfigError, DataError, ProdcatError

__version__ = "0.1.0"

__all__ = ["Classifier", "ConfigError", "DataError", "ProdcatError", "__version__"]


def __getattr__(name: str):
    # Importing torch costs a second; `prodcat data stats` should not pay it.
    if name == "Classifier":
        from prodcat.serving.predictor import Classifier

        return Classifier
    raise AttributeError(name)
