"""Task quality: small models trained with a variant as their sequence mixer (MQAR), for quality cells.

`mqar` makes the data, `mixer` puts a registered variant in a model through
its public `prepare`, `model` is the model, `train` the loop and `cell` the
quality cell a worker runs. Imports torch.
"""
