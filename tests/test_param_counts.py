"""Pinned parameter counts of every registered model at its default size.

A model whose count changes, or a registered model with no pinned count, fails here: update
PINNED (and say why) when a change of size is intended.
"""

import jax
import pytest
from flax import nnx

from attention_zoo.models import registry

# Small task sizes per model (the loop gets them from task.model_dims); {} when none are needed.
TASK_DIMS = {
    'transformer': dict(src_vocab_size=40, tgt_vocab_size=13),
    'transformer_lm': dict(vocab_size=65),
    'transformer_classifier': dict(vocab_size=20, num_classes=10),
    'seq2seq': dict(src_vocab_size=40, tgt_vocab_size=13),
    'memn2n': dict(vocab_size=40, num_classes=40, memory_size=50, sentence_len=8),
}

PINNED = {
    # Transformers: d = 128, ffn 256, 2 layers. Per layer: MHA 4·(128·128 + 128) = 66_048,
    # FFN 128·256 + 256 + 256·128 + 128 = 65_920, LayerNorm 2·128 per sublayer.
    # Encoder layer 132_480, decoder layer (self + source-target) 198_784.
    # 40·128 + 13·128 embeds + 2·132_480 + 2·198_784 + output 128·13 + 13
    'transformer': 670_989,
    # 65·128 embed + 2·132_480 (decoder layers without cross-attention) + output 128·65 + 65
    'transformer_lm': 281_665,
    # 20·128 embed + 128 [CLS] + 2·132_480 + head 128·10 + 10
    'transformer_classifier': 268_938,
    # CIFAR ResNets, 10 classes, 3 input channels, option-B (1x1 conv + BN) projections:
    # He et al.'s option-A 269_722 for ResNet-20 + 2_752 projection params (tests/test_resnet.py
    # checks every count against a formula). SE adds 2·C·C/r + C/r + C per block, r = 16.
    'resnet20': 272_474,
    'resnet32': 466_906,
    'resnet56': 855_770,
    'resnet110': 1_730_714,
    'resnet_small': 19_954,  # 1 block per stage, widths 8/16/32
    'se_resnet20': 274_847,
    'se_resnet32': 470_861,
    'se_resnet56': 862_889,
    'se_resnet110': 1_744_952,
    'se_resnet_small': 20_696,  # r = 4
    # embeds 40·32 + 13·32, encoder + decoder LSTM 2·4·(32·128 + 128·128 + 128),
    # readout 128·13 + 13
    'seq2seq': 168_237,
    # adjacent tying, K = 3 hops, d = 20, TE: (K + 1)·40·20 words + (K + 1)·50·20 times
    'memn2n': 7_200,
}


# The seq2seq styles at their papers' defaults (models/seq2seq.py STYLE_DEFAULTS), with the
# 'seq2seq' task dims above: E = 32, F = 128. A GRU E -> F has 3·(E·F + F) + 3·F·F (flax's
# nnx.GRUCell: input biases only); an LSTM 4·(E·F + F·F + F).
SEQ2SEQ_STYLES_PINNED = {
    # embeds 1_696; bi-GRU encoder G = F: 2·61_824; W_s 128·128 + 128; additive score with
    # K = 2F = 256, A = K: 128·256 + 256·256 + 256; decoder GRU on [E y; c] (288 -> 128):
    # 160_128; maxout on [s; c; E y] (416) -> 2L = 128 (+ bias), L = 64 -> 13: 53_376 + 845
    'bahdanau': (dict(score='additive', style='bahdanau'), 454_765),
    # embeds 1_696; LSTM encoder 82_432; general W_a 128·128; W_c (128 + 128)·128 (no bias);
    # decoder LSTM on [E y; h~] (160 -> 128): 147_968; read-out 128·13 + 13
    'luong': (dict(score='general', style='luong'), 282_925),
    # the pre-paper wiring of the configs (configs/common.PRE_PAPER_SEQ2SEQ) with Luong general:
    # 'seq2seq' above + W_a 16_384 + W_c 32_768
    'luong_pre_paper': (dict(score='general', style='luong', input_feeding=False), 217_389),
}


def count_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def registered() -> list[str]:
  registry._load_all()  # pylint: disable=protected-access
  return registry.MODELS.names()


@pytest.mark.parametrize('name', sorted(PINNED))
def test_param_count_is_pinned(name):
  model = nnx.eval_shape(lambda: registry.get_model(name, rngs=nnx.Rngs(0),
                                                    **TASK_DIMS.get(name, {})))
  assert count_params(model) == PINNED[name]


def test_every_registered_model_has_a_pinned_count():
  missing = sorted(set(registered()) - set(PINNED))
  assert not missing, f'registered models without a pinned parameter count: {missing}'


@pytest.mark.parametrize('score_dim', [4, 32])
def test_transformer_score_dim_is_the_additive_size_per_head(score_dim):
  # One layer each side: 3 MHAs (encoder self, decoder self, cross), head dim 64 / 4 = 16;
  # each additive score has W_q, W_k [16, A] and v [A].
  def count(**kw):
    return count_params(nnx.eval_shape(lambda: registry.get_model(
        'transformer', src_vocab_size=40, tgt_vocab_size=13, d_model=64, num_heads=4,
        num_layers=1, ffn_dim=64, score='additive', rngs=nnx.Rngs(0), **kw)))
  per_score = lambda a: 2 * 16 * a + a
  assert count(score_dim=score_dim) - count() == 3 * (per_score(score_dim) - per_score(16))


def test_transformer_rejects_a_bad_score_dim():
  with pytest.raises(ValueError, match='score_dim'):
    registry.get_model('transformer', src_vocab_size=40, tgt_vocab_size=13, score='additive',
                       score_dim=0, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('name', sorted(SEQ2SEQ_STYLES_PINNED))
def test_seq2seq_style_param_count_is_pinned(name):
  options, want = SEQ2SEQ_STYLES_PINNED[name]
  model = nnx.eval_shape(lambda: registry.get_model('seq2seq', rngs=nnx.Rngs(0),
                                                    **TASK_DIMS['seq2seq'], **options))
  assert count_params(model) == want
