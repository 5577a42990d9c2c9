"""The optimizer and schedule registries of config.train."""

import jax

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from attention_zoo.train import optim, start_phase


def _cfg(**kw):
  base = dict(optimizer='adam', lr=1.0, schedule='constant', warmup_steps=0, steps=100,
              clip_norm=0.0, weight_decay=0.0, momentum=0.9, b1=0.9, b2=0.999, eps=1e-8,
              rsqrt_dim=None, clip_scope='global', batch_cost='mean')
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


def _updates(tx, steps=3):
  """Updates of `tx` for a fixed sequence of gradients (Adam's moments make them differ)."""
  params = {'w': jnp.array([0.5, -1.0, 2.0])}
  state, out = tx.init(params), []
  for i in range(steps):
    grads = {'w': jnp.array([0.1, -0.02, 0.3]) * 4.0 ** i + jnp.array([0.0, 1e-4, 0.0])}
    updates, state = tx.update(grads, state, params)
    out.append(np.asarray(updates['w']))
  return np.stack(out)


@pytest.mark.parametrize('name', ['adam', 'adamw'])
def test_adam_betas_and_eps_are_config_fields(name):
  decay = {'adamw': {'weight_decay': 0.0}}.get(name, {})  # _cfg has weight_decay 0
  vaswani = optim.make_optimizer(_cfg(optimizer=name, lr=0.1, b1=0.9, b2=0.98, eps=1e-9))
  want = getattr(optax, name)(0.1, b1=0.9, b2=0.98, eps=1e-9, **decay)
  np.testing.assert_array_equal(_updates(vaswani), _updates(want))
  default = _updates(optim.make_optimizer(_cfg(optimizer=name, lr=0.1)))
  np.testing.assert_array_equal(default, _updates(getattr(optax, name)(0.1, **decay)))  # optax's
  assert not np.allclose(default, _updates(vaswani), rtol=1e-4)  # the fields reach the optimizer


def _vaswani(n, d=512, warmup=4000, scale=1.0):
  """Vaswani et al. (2017), eq. (3), at step_num n."""
  return scale * d ** -0.5 * min(n ** -0.5, n * warmup ** -1.5)


def test_rsqrt_schedule_is_vaswani_eq_3():
  lr = optim.learning_rate(_cfg(schedule='rsqrt', lr=1.0, warmup_steps=4000), {'d_model': 512})
  counts = [0, 1, 99, 1999, 3998, 3999, 4000, 9999, 99_999]
  # optax's count c (updates done) is the paper's step_num c + 1
  np.testing.assert_allclose([float(lr(c)) for c in counts],
                             [_vaswani(c + 1) for c in counts], rtol=1e-6)
  np.testing.assert_allclose(float(lr(3999)), (512 * 4000) ** -0.5, rtol=1e-6)  # the peak
  assert float(lr(0)) > 0  # the first update is not wasted
  jitted = jax.jit(lr)(jnp.int32(9999))  # traceable: the loop calls it inside train_step
  np.testing.assert_allclose(float(jitted), _vaswani(10_000), rtol=1e-6)


def test_rsqrt_scale_dim_and_no_warmup():
  cfg = _cfg(schedule='rsqrt', lr=2.0, warmup_steps=100, rsqrt_dim=64)
  lr = optim.learning_rate(cfg, {'d_model': 512})  # rsqrt_dim wins over model.d_model
  np.testing.assert_allclose([float(lr(c)) for c in (0, 50, 500)],
                             [_vaswani(n, 64, 100, 2.0) for n in (1, 51, 501)], rtol=1e-6)
  flat = optim.learning_rate(_cfg(schedule='rsqrt', warmup_steps=0), {'d_model': 16})
  np.testing.assert_allclose([float(flat(c)) for c in (0, 3, 99)],
                             [16 ** -0.5 * n ** -0.5 for n in (1, 4, 100)], rtol=1e-6)
  with pytest.raises(ValueError, match='train.rsqrt_dim'):
    optim.learning_rate(_cfg(schedule='rsqrt', warmup_steps=10), {'hidden': 64})
  tx = optim.make_optimizer(_cfg(schedule='rsqrt', lr=1.0, warmup_steps=4000), {'d_model': 512})
  params = {'w': jnp.zeros(1)}
  updates, _ = tx.update({'w': jnp.ones(1)}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], [-_vaswani(1)], rtol=1e-4)  # Adam's first step: -lr


def test_step_schedule_is_a_staircase():
  lr = optim.learning_rate(_cfg(schedule='step', lr=0.01, decay_every=700, decay_factor=0.5))
  for step in (0, 699, 700, 1400, 2799):
    assert float(lr(step)) == pytest.approx(0.01 * 0.5 ** (step // 700), rel=1e-6)
  with pytest.raises(ValueError, match='train.decay_every'):
    optim.learning_rate(_cfg(schedule='step'))


def test_summed_batch_cost_scales_the_gradient_before_clipping():
  params = {'w': jnp.zeros(2)}
  cfg = _cfg(optimizer='sgd', lr=0.1, momentum=0.0, clip_norm=1.0, batch_size=4, batch_cost='sum')
  tx = optim.make_optimizer(cfg)
  small, _ = tx.update({'w': jnp.array([0.1, 0.0])}, tx.init(params), params)
  np.testing.assert_allclose(small['w'], [-0.04, 0.0], rtol=1e-6)  # 4 x 0.1, unclipped, x lr
  big, _ = tx.update({'w': jnp.array([0.3, 0.4])}, tx.init(params), params)  # x4: norm 2
  np.testing.assert_allclose(big['w'], [-0.06, -0.08], rtol=1e-6)  # clipped to norm 1, x lr
  with pytest.raises(ValueError, match='batch_cost'):
    optim.make_optimizer(_cfg(batch_cost='average'))


def test_matrix_clipping_clips_each_matrix_on_its_own():
  grads = {'tables': jnp.stack([jnp.full((2, 2), 3.0), jnp.full((2, 2), 0.5)]),  # norms 6, 1
           'vector': jnp.array([0.0, 4.0])}  # norm 4
  params = jax.tree.map(jnp.zeros_like, grads)
  tx = optim.make_optimizer(_cfg(optimizer='sgd', lr=1.0, momentum=0.0, clip_norm=2.0,
                                 clip_scope='matrix'))
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['tables'][0], -np.full((2, 2), 1.0), rtol=1e-6)  # 6 -> 2
  np.testing.assert_allclose(updates['tables'][1], -np.full((2, 2), 0.5), rtol=1e-6)  # kept
  np.testing.assert_allclose(updates['vector'], [0.0, -2.0], rtol=1e-6)
  glob = optim.make_optimizer(_cfg(optimizer='sgd', lr=1.0, momentum=0.0, clip_norm=2.0))
  scale = 2.0 / np.sqrt(36 + 1 + 16)  # one global norm scales every gradient alike
  np.testing.assert_allclose(glob.update(grads, glob.init(params), params)[0]['vector'],
                             [0.0, -4.0 * scale], rtol=1e-6)


def test_start_phase_lr_then_the_schedule_and_its_plateau_rule():
  cfg = _cfg(optimizer='sgd', lr=0.01, momentum=0.0, schedule='step', decay_every=1,
             decay_factor=0.5, start_phase=ml_collections.ConfigDict(
                 dict(lr=0.005, patience=2, max_steps=0)))
  tx = optim.make_optimizer(cfg)
  params, grads = {'w': jnp.zeros(1)}, {'w': jnp.ones(1)}
  state = tx.init(params)
  lrs = []
  for losses in ([3.0], [2.0, 2.5], [1.0], [1.5, 1.7], [], []):  # validations between updates
    for loss in losses:
      state, ended = start_phase.record_validation(state, loss, cfg.start_phase.patience)
    updates, state = tx.update(grads, state, params)
    lrs.append(-float(updates['w'][0]))
    assert float(start_phase.applied_lr(state, jnp.float32(-1.0))) == pytest.approx(lrs[-1])
  # 2.5 is one validation without a new lowest (patience 2: on); 1.5, 1.7 are two: it ends, and
  # the schedule continues at its count (3 updates done: 0.01 / 2^3)
  np.testing.assert_allclose(lrs, [0.005, 0.005, 0.005, 0.01 / 8, 0.01 / 16, 0.01 / 32],
                             rtol=1e-6)
  assert ended and not bool(start_phase.phase_state(state).on)
  same, ended = start_phase.record_validation(state, 0.1, 2)
  assert same is state and not ended  # over: validations change nothing
  assert start_phase.phase_state(optim.make_optimizer(_cfg()).init(params)) is None


def test_start_phase_can_restart_the_schedule_when_it_ends():
  cfg = _cfg(optimizer='sgd', lr=0.01, momentum=0.0, schedule='step', decay_every=2,
             decay_factor=0.5, start_phase=ml_collections.ConfigDict(
                 dict(lr=0.005, patience=1, max_steps=0, restart_schedule=True)))
  tx = optim.make_optimizer(cfg)
  params, grads = {'w': jnp.zeros(1)}, {'w': jnp.ones(1)}
  state, lrs = tx.init(params), []
  for losses in ([2.0], [], [], [3.0], [], [], [], []):
    for loss in losses:
      state, _ = start_phase.record_validation(state, loss, 1, restart=True)
    updates, state = tx.update(grads, state, params)
    lrs.append(-float(updates['w'][0]))
  # 3 updates in the phase, then the schedule from count 0: 0.01, 0.01, 0.005, 0.005, 0.0025
  np.testing.assert_allclose(lrs, [0.005] * 3 + [0.01, 0.01, 0.005, 0.005, 0.0025], rtol=1e-6)
