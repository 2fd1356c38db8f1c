"""labtrain's machine-learning core: specs, datasets, networks, training and prediction.

Pure PyTorch and NumPy: nothing here imports HTTP, SQL or Celery, so every piece runs from a
plain Python prompt, e.g. ``ml.train.train(ml.spec.ExperimentSpec.model_validate(...))``.
"""
