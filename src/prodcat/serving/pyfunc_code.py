"""The code MLflow runs to load a logged prodcat model ("models from code", not a pickle):
it names the pyfunc class, which reads the model folder in `load_context`. See pyfunc.py."""

from mlflow.models import set_model

from prodcat.serving.pyfunc import ClassifierModel

set_model(ClassifierModel())
