"""prodcat: train, compare and serve neural classifiers of product titles.

The package's public face, above every layer: `Classifier` (loaded on first use: importing
torch costs a second, and `prodcat data stats` should not pay it), the user errors and the
version. No module of prodcat imports this one.
"""

from prodcat.errors import ConfigError, DataError, ProdcatError
from prodcat.version import __version__

__all__ = ["Classifier", "ConfigError", "DataError", "ProdcatError", "__version__"]


def __getattr__(name: str):
    if name == "Classifier":
        from prodcat.serving.predictor import Classifier

        return Classifier
    raise AttributeError(name)
