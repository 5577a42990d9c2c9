"""Boolean attention masks: True = may attend, broadcastable to logits [B, N, Q, K].

Shapes: B batch, N heads, Q query positions, K key positions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def padding_mask(valid: jnp.ndarray) -> jnp.ndarray:
  """Key padding mask: valid [B, K] bool -> [B, 1, 1, K]."""
  valid = jnp.asarray(valid)
  if valid.ndim != 2:
    raise ValueError(f'padding_mask: valid must be [B, K], got shape {valid.shape}')
  return valid.astype(bool)[:, None, None, :]


def causal_mask(q_len: int, k_len: int | None = None, offset=0) -> jnp.ndarray:
  """Query i may attend key j iff j <= i + offset -> [1, 1, Q, K].

  `offset` places the queries after `offset` earlier keys: in incremental decoding the query of
  step t has offset t (it may be a traced scalar).
  """
  k_len = q_len if k_len is None else k_len
  q = jnp.arange(q_len)[:, None]  # [Q, 1]
  k = jnp.arange(k_len)[None, :]  # [1, K]
  return (k <= q + offset)[None, None]


def combine_masks(*masks: jnp.ndarray | None) -> jnp.ndarray | None:
  """Logical AND of the masks that are not None (broadcast); None when all are None."""
  present = [jnp.asarray(m, bool) for m in masks if m is not None]
  if not present:
    return None
  out = present[0]
  for m in present[1:]:
    out = jnp.logical_and(out, m)
  return out


def check_mask(mask: jnp.ndarray | None, logits_shape: tuple[int, ...], name: str = 'mask'):
  """Raises ValueError unless `mask` is a bool array of rank 4 broadcastable to [B, N, Q, K]."""
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_:
    raise ValueError(f'{name} must be bool (True = may attend), got dtype {mask.dtype}')
  if mask.ndim != 4:
    raise ValueError(f'{name} must have rank 4, broadcastable to [B, N, Q, K] = {logits_shape}; '
                     f'got shape {mask.shape}')
  for got, want in zip(mask.shape, logits_shape):
    if got not in (1, want):
      raise ValueError(f'{name} of shape {mask.shape} does not broadcast to [B, N, Q, K] = '
                       f'{tuple(logits_shape)}')
  return mask


def block_mask(mask, causal: bool, q_pos, k_pos, k_len: int):
  """The mask of one block: the caller's mask sliced to it, AND causal, AND real (unpadded) keys.

  q_pos [Qc], k_pos [Kc] are absolute positions; `mask` is already padded to the blocked lengths.
  """
  valid = (k_pos < k_len)[None, None, None, :]  # [1, 1, 1, Kc]
  if causal:
    valid = jnp.logical_and(valid, (k_pos[None, :] <= q_pos[:, None])[None, None])
  if mask is not None:
    if mask.shape[2] > 1:
      mask = jax.lax.dynamic_slice_in_dim(mask, q_pos[0], q_pos.shape[0], axis=2)
    if mask.shape[3] > 1:
      mask = jax.lax.dynamic_slice_in_dim(mask, k_pos[0], k_pos.shape[0], axis=3)
    valid = jnp.logical_and(valid, mask)
  return valid
