"""Training and research beside the served engine: `python -m ml train|evaluate|small-faces` and
`python -m ml.training.remote`. Nothing here is imported by the service or its worker."""
