"""The shared loop of the learning tests: Adam on one fixed batch, cross-entropy on integer
labels."""

import optax
from flax import nnx


def fit(model: nnx.Module, inputs: tuple, labels, *, steps: int, lr: float = 1e-2) -> float:
  """Trains `model(*inputs)` towards `labels` for `steps` Adam steps; returns the last loss."""
  optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    def loss_fn(model):
      logits = model(*inputs)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  for _ in range(steps):
    loss = train_step(model, optimizer)
  return float(loss)
