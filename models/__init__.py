"""Model registry: name -> builder of an *uncompiled* Keras model.

Every builder takes the input shape and class count so the same registry serves
MNIST, Fashion-MNIST, KMNIST and the synthetic set. Models output logits; the
trainers pair them with `from_logits=True` losses.
"""

from models.registry import build_model, model_names

__all__ = ["build_model", "model_names"]
