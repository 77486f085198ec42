"""Model families; importing this package registers them."""

from prodcat.models import cnn, encoder, linear, mlp, rnn, transformer
from prodcat.models.base import TextClassifier

__all__ = ["TextClassifier", "cnn", "encoder", "linear", "mlp", "rnn", "transformer"]
