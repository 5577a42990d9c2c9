"""On paper: FLOPs, memory per device and step time of Transformer runs past this machine.

For each WORKLOADS entry (the Multi30k Transformer `base`, Vaswani et al.'s base and big on
WMT14 en-de) and each TARGETS entry (1 and 8 H100 GPUs, a TPU v4-8), at an assumed MFU:
  FLOPs per step   flops.transformer_step_flops (the analytic count that equals the compiled
                   step's matmuls, tests/test_flops.py), over the padded positions;
  step time        FLOPs per step / (devices x bf16 peak (flops.PEAKS) x MFU);
  memory / device  the training loop's data parallelism (one 'data' mesh axis, parameters
                   replicated): f32 parameters 4 N bytes, gradients 4 N, Adam's two moments
                   8 N (N: the zoo model's exact parameter count), and the activations kept for
                   the backward pass of the device's share of the batch in bf16, per layer
                   s·b·h·(34 + 5·a·s/h) bytes (Korthikanti et al. 2022, eq. 1: s positions,
                   b sentences, h = d_model, a heads, no recomputation), a decoder layer's
                   cross-attention block added (13·t·b·h + 4·s·b·h + 5·a·t·s·b: its block
                   with query length t over s keys, and the encoder memory's keys and values),
                   and the f32 logits and their softmax for the loss (8·b·t·V).
These are estimates from counts, not measurements: `python -m experiments.bench paper` prints
them, BUILD.md's "On paper" section shows them (a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from attention_zoo.train import flops

MFU = 0.40  # assumed model FLOPs utilization of a well-fed bf16 Transformer step
GIB = 2.0 ** 30


@dataclasses.dataclass(frozen=True)
class Workload:
  """An encoder-decoder Transformer (shared embeddings) and its batch per step."""
  d_model: int
  num_heads: int
  num_layers: int  # per stack
  ffn_dim: int
  vocab_size: int  # joint source / target vocabulary
  sentences: int  # sentence pairs per step (the global batch)
  source_len: int  # padded positions per sentence
  target_len: int
  source: str  # where the sizes come from

  @property
  def tokens(self) -> int:
    return self.sentences * (self.source_len + self.target_len)


WORKLOADS = {
    # batch 256; Multi30k's pairs average 15.1 non-PAD BPE pieces a side (EOS included: the
    # small_long run's tokens/s / steps/s / 128 / 2, reproductions/multi30k_transformer), 16 here
    'Multi30k base': Workload(512, 8, 6, 2048, 8_000, 256, 16, 16,
                              'configs/multi30k_transformer.py:size=base'),
    # ~25,000 source and 25,000 target tokens a batch (sec. 5.1): 1,000 pairs of 25 positions
    'WMT14 en-de base': Workload(512, 8, 6, 2048, 37_000, 1_000, 25, 25,
                                 'Vaswani et al. (2017), table 3 base, sec. 5.1'),
    'WMT14 en-de big': Workload(1024, 16, 6, 4096, 37_000, 1_000, 25, 25,
                                'Vaswani et al. (2017), table 3 big, sec. 5.1'),
}


@dataclasses.dataclass(frozen=True)
class Target:
  devices: int  # jax devices: GPUs, or TPU chips
  peak: flops.Peak


TARGETS = {
    '1x H100 SXM': Target(1, flops.PEAKS['NVIDIA H100 80GB HBM3']),
    '8x H100 SXM': Target(8, flops.PEAKS['NVIDIA H100 80GB HBM3']),
    'TPU v4-8': Target(4, flops.PEAKS['TPU v4']),  # 4 chips (8 TensorCores): 4 jax devices
}


def param_count(w: Workload) -> int:
  """The exact parameter count of the zoo's Transformer of `w` (built abstractly: no memory)."""
  from attention_zoo.models import get_model  # pylint: disable=import-outside-toplevel
  model = nnx.eval_shape(lambda: get_model(
      'transformer', rngs=nnx.Rngs(0), src_vocab_size=w.vocab_size,
      tgt_vocab_size=w.vocab_size, share_embeddings=True, max_len=256, d_model=w.d_model,
      num_heads=w.num_heads, num_layers=w.num_layers, ffn_dim=w.ffn_dim))
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def step_flops(w: Workload) -> float:
  return flops.transformer_step_flops(
      d_model=w.d_model, ffn_dim=w.ffn_dim, num_layers=w.num_layers, vocab_size=w.vocab_size,
      batch_size=w.sentences, source_len=w.source_len, target_len=w.target_len)


def activation_bytes(w: Workload, sentences: float) -> float:
  """Bytes of activations kept for the backward pass of `sentences` pairs (module docstring)."""
  h, a, s, t, b = w.d_model, w.num_heads, w.source_len, w.target_len, sentences
  layer = lambda n: n * b * h * (34 + 5 * a * n / h)  # Korthikanti et al. (2022), eq. 1
  cross = 13 * t * b * h + 4 * s * b * h + 5 * a * t * s * b
  return w.num_layers * (layer(s) + layer(t) + cross) + 8 * b * t * w.vocab_size


def memory_per_device(w: Workload, devices: int, params: int) -> dict[str, float]:
  """Bytes per device under data parallelism over `devices` (parameters replicated)."""
  out = {'parameters': 4.0 * params, 'gradients': 4.0 * params, 'adam': 8.0 * params,
         'activations': activation_bytes(w, w.sentences / devices)}
  out['total'] = sum(out.values())
  return out


def rows(mfu: float = MFU) -> list[dict]:
  """One row per workload x target."""
  out = []
  for name, w in WORKLOADS.items():
    params, count = param_count(w), step_flops(w)
    for target_name, target in TARGETS.items():
      peak = target.devices * target.peak.bfloat16
      out.append(dict(workload=name, target=target_name, params=params,
                      tokens_per_step=w.tokens, flops_per_step=count,
                      step_s=count / (peak * mfu),
                      memory=memory_per_device(w, target.devices, params)))
  return out


def table(mfu: float = MFU) -> str:
  """rows() as the markdown table of BUILD.md."""
  lines = [f'| run | params | tokens / step | TFLOP / step | on | step at {mfu:.0%} MFU | '
           'memory / device: params + grads + Adam, activations (bf16) |',
           '|---|---|---|---|---|---|---|']
  for r in rows(mfu):
    m = r['memory']
    state = (m['parameters'] + m['gradients'] + m['adam']) / GIB
    lines.append(f"| {r['workload']} | {r['params'] / 1e6:.1f} M | {r['tokens_per_step']:,} | "
                 f"{r['flops_per_step'] / 1e12:.2f} | {r['target']} | "
                 f"{r['step_s'] * 1e3:.1f} ms | {state:.2f} GiB + "
                 f"{m['activations'] / GIB:.2f} GiB = {m['total'] / GIB:.2f} GiB |")
  return '\n'.join(lines)
