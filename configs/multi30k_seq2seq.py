r"""RNN encoder-decoder on Multi30k (de -> en by default): plain, Bahdanau or Luong attention.

  python -m experiments.main --workdir=runs/multi30k_bahdanau \
    --config=configs/multi30k_seq2seq.py:style=bahdanau,size=small

Styles (attention_zoo/models/seq2seq.py, with the papers' wiring by default):
  plain     an LSTM encoder-decoder without attention (Sutskever et al. 2014; the source reversed);
  bahdanau  a bidirectional GRU encoder, s_0 = tanh(W_s h<-_1), the additive score queried with
            s_{i-1}, a maxout read-out (Bahdanau et al. 2015, sec. 3, app. A);
  luong     an LSTM, the general score queried with h_t, h~_t = tanh(W_c[c_t; h_t]) and input
            feeding (Luong et al. 2015, sec. 3.1, 3.3).
Deviations from the papers, all styles: one layer, `hidden` 256 in `small` (Bahdanau: 1,000
units; Luong: 4 layers of 1,000), Adam lr 1e-3 with cosine decay (Bahdanau: Adadelta; Luong: SGD
lr 1 halved after epoch 5), gradient norm clipped at 5 (Luong), dropout 0.2 (Luong), a joint BPE
vocabulary of 8,000 pieces (the papers: 30,000 and 50,000 words), batches of 128 sentences in
length buckets, beam 4 with length penalty 0.6 at the final evaluation. `small` is sized for a
2-core CPU; its BLEU, one seed per style, is the multi30k_seq2seq card of REPRODUCTIONS.md.
Args: style = plain | bahdanau | luong, source, target = de | en, size = tiny | small | base.
"""

import ml_collections

from configs import common

STYLES = {  # style arg -> model fields
    'plain': dict(score='none', cell='lstm'),
    'bahdanau': dict(score='additive', style='bahdanau'),
    'luong': dict(score='general', style='luong'),
}
SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=dict(vocab_size=500), model=dict(embed_dim=8, hidden=16),
                 train=dict(steps=6, batch_size=16, log_every=2, eval_every=3,
                            checkpoint_every=3, num_buckets=2),
                 eval=dict(batch_size=64, max_examples=64, beam_size=2)),
    'small': dict(model=dict(embed_dim=256, hidden=256),
                  train=dict(steps=2_500, batch_size=128, checkpoint_every=500)),
    'base': dict(model=dict(embed_dim=620, hidden=1_000),
                 train=dict(steps=50_000, batch_size=80, checkpoint_every=2_000)),
}


def config(style: str = 'bahdanau', source: str = 'de', target: str = 'en',
           size: str = 'small') -> ml_collections.ConfigDict:
  c = common.base_config()
  plain = style == 'plain'
  c.task = common.multi30k_task(
      source, target,
      reverse_source=plain,  # the plain encoder-decoder reads the source reversed (Sutskever)
  )
  c.model_name = 'seq2seq'
  c.model = common.seq2seq_model(dropout_rate=0.2, **common.pick('style', style, STYLES))
  c.eval.update(beam_size=4, length_penalty=0.6)  # the final test evaluation
  return common.finish(c, SIZES, size,
                       lr=1e-3, clip_norm=5.0, schedule='cosine', warmup_steps=200,
                       eval_every=500, **common.BUCKETED)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def get_sweep(arg: str | None = None) -> list[dict]:
  """The three styles, de -> en at `size`, `seeds` seeds each (default 3)."""
  arg = common.parse_arg(arg, size='small', seeds=3)
  return [{'config_arg': f'style={s},size={arg.size}', 'seed': seed}
          for s in STYLES for seed in common.seeds(arg.seeds)]
