"""The one training loop: train_and_evaluate(config, workdir). See loop.py for the workdir files."""

from attention_zoo.train.loop import NonFiniteError, build_model, train_and_evaluate  # noqa: F401
from attention_zoo.train.workdir import ConfigMismatchError  # noqa: F401
