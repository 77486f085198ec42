"""Model families, one file each; importing this package registers the built-in ones."""

from prodcat.models import cnn, encoder, ensemble, linear, mlp, rnn, transformer
from prodcat.models.base import TextClassifier

__all__ = ["TextClassifier", "cnn", "encoder", "ensemble", "linear", "mlp", "rnn", "transformer"]
