"""The optimizer and schedule registries of config.train."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from attention_zoo.train import optim


def _cfg(**kw):
  base = dict(optimizer='adam', lr=1.0, schedule='constant', warmup_steps=0, steps=100,
              clip_norm=0.0, weight_decay=0.0, momentum=0.9)
  return ml_collections.ConfigDict(dict(base, **kw))


def test_warmup_then_cosine_and_linear():
  lr = optim.learning_rate(_cfg(schedule='cosine', warmup_steps=10, steps=110))
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110)], [0, 0.5, 1, 0.5, 0],
                             atol=1e-6)
  lin = optim.learning_rate(_cfg(schedule='linear', steps=100))
  np.testing.assert_allclose([lin(0), lin(25), lin(100)], [1, 0.75, 0], atol=1e-6)
  const = optim.learning_rate(_cfg(schedule='constant'))
  assert float(const(99)) == 1.0


def test_unknown_names_list_the_known_ones():
  with pytest.raises(ValueError, match='known: adam, adamw, sgd'):
    optim.make_optimizer(_cfg(optimizer='adamm'))
  with pytest.raises(ValueError, match="did you mean 'cosine'"):
    optim.learning_rate(_cfg(schedule='cosin'))


def test_sgd_momentum_and_clipping():
  params = {'w': jnp.zeros(2)}
  grads = {'w': jnp.array([3.0, 4.0])}  # global norm 5
  tx = optim.make_optimizer(_cfg(optimizer='sgd', lr=0.1, momentum=0.5, clip_norm=1.0))
  state = tx.init(params)
  u1, state = tx.update(grads, state, params)
  u2, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(u1['w'], [-0.06, -0.08], rtol=1e-6)  # clipped to norm 1, times lr
  np.testing.assert_allclose(u2['w'], [-0.09, -0.12], rtol=1e-6)  # momentum: g + 0.5 g


def test_adamw_decays_weights():
  params = {'w': jnp.ones(1)}
  tx = optim.make_optimizer(_cfg(optimizer='adamw', lr=0.1, weight_decay=0.5))
  updates, _ = tx.update({'w': jnp.zeros(1)}, tx.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)['w'], [1 - 0.1 * 0.5], rtol=1e-6)
