r"""The demo's two models written in PyTorch, for the `train` section of the benchmark.

Only experiments/bench/train.py imports this module, and only where torch is importable: torch
is not a dependency of the package. Each model is the zoo model of the same config, written as a
PyTorch user would (nn.LSTM over whole sequences, nn.TransformerEncoder / Decoder layers), with
the same parameters (the trainable counts equal the zoo's), shapes, masks and loss:

  seq2seq (configs/dates_demo.py:family=seq2seq,score=additive; attention_zoo/models/seq2seq.py
    with configs/common.PRE_PAPER_SEQ2SEQ, Luong style without input feeding):
      encoder  LSTM over E x, padded steps skipped (packed sequences), keys h̄_1..S;
      decoder  LSTM over E y_{t-1} from the encoder's final state (h, c): h_t;
      score    e_ts = vᵀ tanh(W_q h_t + W_k h̄_s)  (additive, Bahdanau eq. 6; A = K), PAD masked;
      read-out h̃_t = tanh(W_c [c_t; h_t]) (no bias), logits = W_s h̃_t + b_s.
    flax's LSTM has one bias per gate where torch's has two (b_ih + b_hh): b_hh is kept at 0
    and frozen, so the function class and the trainable count are the zoo's. Without input
    feeding the decoder's recurrence does not read the attention, so this model runs the
    decoder LSTM over all T steps first and attends for all of them at once; the zoo attends
    inside its scan, step by step (the same numbers).
  transformer (configs/dates_demo.py:family=transformer,score=scaled_dot): Vaswani et al. (2017)
    post-norm, embeddings · √d + sinusoidal positions, LayerNorm eps 1e-6 (flax's), no final
    norm, encoder self-attention and source-target attention with the source PAD mask, causal
    decoder self-attention, an untied output layer.

Loss: cross-entropy over the non-PAD targets (mean), with the config's label smoothing (over all
V classes, PAD included, as attention_zoo/train/steps.py). Optimizer: global grad-norm clipping
at train.clip_norm, then torch.optim.Adam (fused=True, its fastest CPU implementation; b1, b2,
eps, and the lr of every step taken from the zoo's schedule). Under torch.compile, nn.LSTM and
packed sequences are graph breaks (torch._dynamo's allow_rnn is off by default): the seq2seq
model's recurrences stay eager there.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PAD = 0  # attention_zoo.specials.PAD, written here so that this module imports no jax


def _need(config_model: dict[str, Any], **expected: Any) -> None:
  """The options this PyTorch model implements; a config that differs raises, naming them."""
  wrong = {k: (config_model.get(k), v) for k, v in expected.items() if config_model.get(k) != v}
  if wrong:
    raise ValueError('bench train: the PyTorch model implements only ' +
                     ', '.join(f'{k}={v!r} (config: {got!r})' for k, (got, v) in wrong.items()))


class Seq2SeqAdditive(nn.Module):
  """source [B, S], target_in [B, T] -> logits [B, T, V] (see the module docstring)."""

  def __init__(self, src_vocab_size: int, tgt_vocab_size: int, model: dict[str, Any]):
    super().__init__()
    _need(model, cell='lstm', bidirectional=False, init_state='final', readout='state',
          input_feeding=False, peeky=False, score='additive', style='luong', dropout_rate=0.0)
    e, f = model['embed_dim'], model['hidden']
    a = model.get('score_dim') or f  # A defaults to the key dim K = F
    self.src_embed = nn.Embedding(src_vocab_size, e)
    self.tgt_embed = nn.Embedding(tgt_vocab_size, e)
    self.encoder = nn.LSTM(e, f, batch_first=True)
    self.decoder = nn.LSTM(e, f, batch_first=True)
    for lstm in (self.encoder, self.decoder):  # one bias per gate, as flax's LSTM cell
      nn.init.zeros_(lstm.bias_hh_l0)
      lstm.bias_hh_l0.requires_grad_(False)
    self.w_q = nn.Linear(f, a, bias=False)
    self.w_k = nn.Linear(f, a, bias=False)
    self.v = nn.Linear(a, 1, bias=False)
    self.w_c = nn.Linear(2 * f, f, bias=False)
    self.out = nn.Linear(f, tgt_vocab_size)

  def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
    valid = source != PAD  # [B, S]
    lengths = valid.sum(1).clamp(min=1).cpu()  # [B]
    packed = nn.utils.rnn.pack_padded_sequence(self.src_embed(source), lengths,
                                               batch_first=True, enforce_sorted=False)
    keys, state = self.encoder(packed)  # state: (h, c) [1, B, F] at each source's last token
    keys, _ = nn.utils.rnn.pad_packed_sequence(keys, batch_first=True,
                                               total_length=source.shape[1])  # [B, S, F]
    h, _ = self.decoder(self.tgt_embed(target_in), state)  # [B, T, F]
    hidden = torch.tanh(self.w_q(h)[:, :, None] + self.w_k(keys)[:, None])  # [B, T, S, A]
    logits = self.v(hidden)[..., 0].masked_fill(~valid[:, None], float('-inf'))  # [B, T, S]
    context = torch.softmax(logits, -1) @ keys  # [B, T, F]
    return self.out(torch.tanh(self.w_c(torch.cat([context, h], -1))))  # [B, T, V]


def sinusoidal(length: int, dim: int) -> torch.Tensor:
  """PE[pos, 2i] = sin(pos / 10000^(2i/F)), PE[pos, 2i+1] = cos(...) -> [L, F] (sec. 3.5)."""
  pos = np.arange(length)[:, None]
  inv = 10_000.0 ** (-np.arange(0, dim, 2) / dim)
  pe = np.zeros((length, dim), np.float32)
  pe[:, 0::2], pe[:, 1::2] = np.sin(pos * inv), np.cos(pos * inv)
  return torch.from_numpy(pe)


class Transformer(nn.Module):
  """source [B, S], target_in [B, T] -> logits [B, T, V] (see the module docstring)."""

  def __init__(self, src_vocab_size: int, tgt_vocab_size: int, model: dict[str, Any]):
    super().__init__()
    _need(model, norm='post', positional='sinusoidal', score='scaled_dot', combine='residual',
          kernel='dense', dropout_rate=0.0, attention_dropout_rate=0.0)
    d, heads, ffn = model['d_model'], model['num_heads'], model['ffn_dim']
    layer = dict(d_model=d, nhead=heads, dim_feedforward=ffn, dropout=0.0, activation='relu',
                 layer_norm_eps=1e-6, batch_first=True, norm_first=False)
    self.scale = math.sqrt(d)
    self.src_embed = nn.Embedding(src_vocab_size, d)
    self.tgt_embed = nn.Embedding(tgt_vocab_size, d)
    self.register_buffer('positions', sinusoidal(model['max_len'], d), persistent=False)
    self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer),
                                         model['num_layers'], enable_nested_tensor=False)
    self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer),
                                         model['num_layers'])
    self.out = nn.Linear(d, tgt_vocab_size)

  def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
    pad = source == PAD  # [B, S], True = not a key
    t = target_in.shape[1]
    x = self.src_embed(source) * self.scale + self.positions[:source.shape[1]]  # [B, S, F]
    y = self.tgt_embed(target_in) * self.scale + self.positions[:t]  # [B, T, F]
    memory = self.encoder(x, src_key_padding_mask=pad)  # [B, S, F]
    future = torch.triu(torch.ones(t, t, dtype=torch.bool, device=source.device), 1)  # [T, T]
    h = self.decoder(y, memory, tgt_mask=future, tgt_is_causal=True,
                     memory_key_padding_mask=pad)  # [B, T, F]
    return self.out(h)  # [B, T, V]


MODELS: dict[str, Callable[..., nn.Module]] = {'seq2seq': Seq2SeqAdditive,
                                               'transformer': Transformer}


def build(model_name: str, src_vocab_size: int, tgt_vocab_size: int,
          model: dict[str, Any]) -> nn.Module:
  """The PyTorch model of zoo registry name `model_name` with config.model `model`."""
  if model_name not in MODELS:
    raise ValueError(f'bench train: no PyTorch model for {model_name!r}; known: {sorted(MODELS)}')
  torch.manual_seed(0)
  return MODELS[model_name](src_vocab_size, tgt_vocab_size, model)


def param_count(model: nn.Module) -> int:
  """Trainable parameters."""
  return sum(p.numel() for p in model.parameters() if p.requires_grad)


class LossModel(nn.Module):
  """(source, target_in, target_out) -> mean cross-entropy over the non-PAD targets: what one
  torch.compile call compiles (forward and loss; the backward through AOTAutograd)."""

  def __init__(self, model: nn.Module, label_smoothing: float):
    super().__init__()
    self.model, self.label_smoothing = model, label_smoothing

  def forward(self, source, target_in, target_out):
    logits = self.model(source, target_in)  # [B, T, V]
    return F.cross_entropy(logits.flatten(0, 1), target_out.flatten(), ignore_index=PAD,
                           label_smoothing=self.label_smoothing)


def measure(spec: dict[str, Any], arrays: dict[str, np.ndarray], *, threads: int, warmup: int,
            windows: int, steps: int, compiled: bool) -> dict[str, Any]:
  """Trains the PyTorch model of `spec` on the batches of `arrays` -> steps/s (median of
  `windows` windows of `steps` steps, after `warmup` steps), compile_s (torch.compile: the first
  step, compile included), param_count.

  spec: {'model_name', 'model' (config.model), 'src_vocab_size', 'tgt_vocab_size', 'train'
  (config.train)}; arrays: 'source', 'target_in', 'target_out' [steps, B, L] and 'lr' [steps],
  the zoo schedule's lr of each step.
  """
  torch.set_num_threads(threads)
  tc = spec['train']
  if tc['optimizer'] != 'adam' or tc['clip_scope'] != 'global' or tc['batch_cost'] != 'mean':
    raise ValueError(f"bench train: the PyTorch step implements adam, global clipping and a mean "
                     f"batch cost; config: {tc['optimizer']}, {tc['clip_scope']}, "
                     f"{tc['batch_cost']}")
  model = build(spec['model_name'], spec['src_vocab_size'], spec['tgt_vocab_size'], spec['model'])
  model.train()
  loss_model = LossModel(model, tc['label_smoothing'])
  step_loss = torch.compile(loss_model) if compiled else loss_model
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.Adam(params, lr=tc['lr'], betas=(tc['b1'], tc['b2']), eps=tc['eps'],
                         fused=True)
  lrs = arrays['lr']
  last = len(lrs) - 1  # the scheduler also asks for the lr after the last step
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(lrs[min(s, last)]) / tc['lr'])
  batches = [tuple(torch.from_numpy(arrays[k][s]) for k in ('source', 'target_in', 'target_out'))
             for s in range(len(lrs))]

  def train_step(s: int) -> torch.Tensor:
    source, target_in, target_out = (x.long() for x in batches[s])
    opt.zero_grad(set_to_none=True)
    loss = step_loss(source, target_in, target_out)
    loss.backward()
    if tc['clip_norm'] > 0:
      nn.utils.clip_grad_norm_(params, tc['clip_norm'])
    opt.step()
    sched.step()
    return loss

  start = time.perf_counter()
  loss = train_step(0)
  first_s = time.perf_counter() - start
  for s in range(1, warmup):
    train_step(s)
  rates, s = [], max(warmup, 1)
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps):
      loss = train_step(s)
      s += 1
    rates.append(steps / (time.perf_counter() - start))
  return {'steps_per_s': float(np.median(rates)), 'window_steps_per_s': rates,
          'compile_s': first_s if compiled else None, 'param_count': param_count(model),
          'loss': float(loss), 'torch': torch.__version__}
