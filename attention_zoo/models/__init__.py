"""The model zoo, found by name: get_model(name, rngs=..., **config.model)."""

from attention_zoo.models.registry import MODELS, get_model, register_model  # noqa: F401
