"""What every config shares: `call_with_arg` (a config function called with a "key=value,..."
arg), `base_config` (the loop's fields), the model helpers (each model family's defaults, read
from its options dataclass) and the sweep axes (read from the registries).

A task x model config is a function `config(**fields)` that starts from `base_config()` and sets
task, model_name, model and a few train fields; every field the loop reads is defined (and
commented) here, once; a model's fields and their defaults are its options dataclass's.
`get_config(arg)` only parses the arg and calls `config`.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, TypeVar

import ml_collections
from ml_collections import config_dict

from attention_zoo.models import precision
from attention_zoo.models.seq2seq import Seq2SeqOptions
from attention_zoo.models.transformer_blocks import BlockOptions
from attention_zoo.registry import Registry

T = TypeVar('T')


def _cast(key: str, value: str, default: Any) -> Any:
  if isinstance(default, bool):
    if value.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'arg {key!r}: expected true/false, got {value!r}')
    return value.lower() in ('true', '1')
  if default is None or isinstance(default, str):
    return value
  return type(default)(value)


def parse_arg(arg: str | None, **defaults: Any) -> types.SimpleNamespace:
  """Parses 'k1=v1,k2=v2' into a namespace over `defaults`, cast to each default's type.

  An unknown key raises ValueError listing the valid ones. Example:
    parse_arg('score=dot,size=tiny', score='additive', size='small').score == 'dot'
  """
  values = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    key = key.strip()
    if not sep:
      raise ValueError(f'config arg {item!r} is not key=value; valid keys: {sorted(defaults)}')
    if key not in defaults:
      raise ValueError(f'unknown config arg {key!r}; valid keys: {sorted(defaults)}')
    values[key] = _cast(key, value.strip(), defaults[key])
  return types.SimpleNamespace(**values)


def call_with_arg(fn: Callable[..., T], arg: str | None) -> T:
  """fn(**fields) with the fields of `arg` ('k1=v1,k2=v2', parsed once by parse_arg against fn's
  keyword defaults, each value cast to its default's type); the other fields keep their defaults.

  Example: get_config('score=dot') of a config is call_with_arg(config, 'score=dot'), that is
  config(score='dot').
  """
  defaults = {name: p.default for name, p in inspect.signature(fn).parameters.items()}
  return fn(**vars(parse_arg(arg, **defaults)))


def pick(name: str, value: str, table: dict[str, Any]) -> Any:
  """table[value], or ValueError naming the arg and its valid values (e.g. sizes)."""
  if value not in table:
    raise ValueError(f'config arg {name}={value!r}; valid values: {sorted(table)}')
  return table[value]


def base_config() -> ml_collections.ConfigDict:
  """The fields of one run, with defaults; task / model_name / model are set by each config."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # the one source of randomness: init, data order, dropout
  c.task = ml_collections.ConfigDict(dict(name=''))  # attention_zoo.data.get_task(config.task)
  c.model_name = ''  # attention_zoo.models registry name
  c.model = ml_collections.ConfigDict()  # **kwargs of the model constructor (plus task.model_dims)

  c.train = ml_collections.ConfigDict()  # the optimizer; when to log, evaluate, save
  c.train.steps = 1_000  # optimizer steps in total
  c.train.batch_size = 64  # global batch, split over all devices (a multiple of the device count)
  c.train.batching = 'padded'  # padded | bucketed (by length; seq2seq / lm): train/batching.py
  c.train.bucket_lengths = ()  # bucketed: static lengths, increasing; (): chosen from the data
  c.train.num_buckets = 8  # bucketed, bucket_lengths (): at most N, multiples of 8, least padding
  c.train.batch_tokens = 0  # bucketed: > 0 gives batches of ~batch_tokens positions; 0: batch_size
  c.train.optimizer = 'adam'  # attention_zoo.train.optim.OPTIMIZERS: adam | adamw | sgd
  c.train.lr = 1e-3  # peak learning rate
  c.train.schedule = 'constant'  # SCHEDULES after warmup: constant | cosine | linear | step | rsqrt
  c.train.warmup_steps = 0  # linear warmup from 0 to lr (rsqrt: the warmup of Vaswani eq. 3)
  c.train.rsqrt_dim = optional(int)  # rsqrt's d (lr is its scale); None: model.d_model
  c.train.b1 = 0.9  # adam / adamw beta1 (optax's default; Vaswani 5.3: 0.9)
  c.train.b2 = 0.999  # adam / adamw beta2 (optax's default; Vaswani 5.3: 0.98)
  c.train.eps = 1e-8  # adam / adamw epsilon (optax's default; Vaswani 5.3: 1e-9)
  c.train.label_smoothing = 0.0  # Szegedy 2016 (Vaswani 5.4: 0.1); metric `loss` stays plain CE
  c.train.clip_norm = 0.0  # gradient-norm clipping; 0 = off
  c.train.clip_scope = 'global'  # optim.CLIPS: global (one norm) | matrix (each weight on its own)
  c.train.batch_cost = 'mean'  # mean | sum: the loss averaged or summed over the batch
  c.train.decay_every = optional(int)  # the 'step' schedule: updates between decays
  c.train.decay_factor = optional(float)  # the 'step' schedule: lr multiplier at each decay
  c.train.weight_decay = 0.0  # adamw only
  c.train.momentum = 0.9  # sgd only; 0 = plain sgd
  c.train.log_every = 50  # write train metrics every N steps
  c.train.eval_every = 500  # validation (and decoded samples) every N steps; 0 = only at the end
  c.train.checkpoint_every = 500  # save every N steps (and always at the end)
  c.train.keep_checkpoints = 2  # keep the last N checkpoints

  c.eval = ml_collections.ConfigDict()  # evaluation of the validation / test splits
  c.eval.batch_size = 256  # batch for evaluation and generation
  c.eval.max_examples = 0  # evaluate on the first N examples of a split; 0 = all
  c.eval.generate = True  # seq2seq: greedy model.generate -> task.generation_metrics_fn ('gen_*')
  c.eval.num_samples = 3  # seq2seq: decoded samples written to samples.jsonl per evaluation
  c.eval.average_checkpoints = 1  # final evaluation: mean params of the last N checkpoints; 1 = off
  c.eval.beam_size = 1  # final evaluation (seq2seq): beam search; 1 = greedy, as every validation
  c.eval.length_penalty = 0.6  # final beam search: GNMT alpha, ((5 + |Y|) / 6)^alpha (Wu 2016)
  return c


def apply_size(c: ml_collections.ConfigDict, size: dict[str, dict[str, Any]]) -> None:
  """Updates c.task / c.model / c.train / c.eval from one entry of a config's SIZES table."""
  for section, values in size.items():
    c[section].update(values)


def seeds(n: int = 3) -> range:
  """The seeds of a sweep (every variant runs with each, for error bars)."""
  return range(n)


def optional(kind: type) -> Any:
  """A field that is None by default and can be set from the command line to a `kind` value."""
  return config_dict.placeholder(kind)


def finish(c: ml_collections.ConfigDict, sizes: dict[str, dict[str, dict[str, Any]]], size: str,
           **train: Any) -> ml_collections.ConfigDict:
  """Sets the config's training fields, applies SIZES[size] on top, and caps the warmup at a
  tenth of the steps (so that small sizes still reach the peak learning rate)."""
  c.train.update(train)
  apply_size(c, pick('size', size, sizes))
  c.train.warmup_steps = min(c.train.warmup_steps, c.train.steps // 10)  # at most 10% of steps
  return c


# A smoke run of a generated task: a few hundred examples, 20 steps (the `tiny` size of configs).
TINY_SPLITS = dict(num_train=512, num_validation=64, num_test=64)
TINY_TRAIN = dict(steps=20, batch_size=32, log_every=5, eval_every=10, checkpoint_every=10)


def generated_task(name: str, **options: Any) -> dict[str, Any]:
  """The fields of a task generated in code (dates, addition, copy, listops, ...); `options` add
  the task's own fields or override these."""
  return dict(
      name=name,  # attention_zoo.data task name
      num_train=20_000,  # training examples
      num_validation=1_000,  # validation examples
      num_test=1_000,  # test examples
      tfds_dir=optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
  ) | options


def dates_task() -> dict[str, Any]:
  """Date normalization, the demo's task, for the seq2seq and Transformer configs alike."""
  return generated_task(
      'dates',  # human-written dates -> YYYY-MM-DD
      reverse_source=False,  # feed the source reversed (Sutskever et al. 2014)
  )


def model_fields(options: type, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
  """The fields of a model family's options dataclass with the model's defaults (what each means:
  the comment of the dataclass field); a None default becomes a placeholder of the field's type,
  so that it can be set from the command line. A field without a default is left to the config.
  """
  types_ = typing.get_type_hints(options)
  fields = {}
  for field in dataclasses.fields(options):
    if not field.init or field.name in leave_out or field.default is dataclasses.MISSING:
      continue
    kind = next(t for t in typing.get_args(types_[field.name]) or (types_[field.name],)
                if t is not type(None))
    fields[field.name] = optional(kind) if field.default is None else field.default
  return fields


def seq2seq_model(**options: Any) -> dict[str, Any]:
  """The fields of attention_zoo.models.seq2seq.Seq2Seq with its defaults (Seq2SeqOptions);
  `options` override them. A None field takes the style's paper default (models/seq2seq.py
  STYLE_DEFAULTS: bahdanau = bi-GRU, s_0 from the backward encoder, maxout read-out; luong = LSTM
  with input feeding)."""
  fields = model_fields(Seq2SeqOptions, leave_out=(
      'score_dim',  # A defaults to K; left out of the seq2seq configs since they were written
      'capture_weights',  # set by the analysis (analysis.load_run), not by a run's config
  ))
  return fields | _known(options, 'seq2seq_model', tuple(fields))


# The seq2seq wiring that the dates, addition and sequence configs were measured with (the
# demo's table comes from it); NOT the papers': an LSTM, a unidirectional encoder, the decoder
# starting from the encoder's final state, Bahdanau's read-out [s_i; c_i] without E y_{i-1} or
# maxout, and Luong without input feeding.
PRE_PAPER_SEQ2SEQ = dict(cell='lstm', bidirectional=False, init_state='final', readout='state',
                         input_feeding=False)


def transformer_model(max_len: int, **options: Any) -> dict[str, Any]:
  """The fields every Transformer takes with their defaults (models.transformer_blocks.
  BlockOptions) and max_len, the longest sequence the positions cover (each config sets its
  own); `options` override them or add a model's own (pooling, tie_output, share_embeddings)."""
  return model_fields(BlockOptions, leave_out=(
      'capture_weights',  # set by the analysis (analysis.load_run), not by a run's config
  )) | dict(max_len=max_len) | options


def precision_fields() -> dict[str, Any]:
  """model.dtype and model.param_dtype for a model family without an options dataclass (MemN2N,
  the ResNets; the others get them from theirs): names in models.precision.DTYPES."""
  return dict(
      dtype=precision.DEFAULT,  # computation dtype: float32 | bfloat16 (mixed precision)
      param_dtype=precision.DEFAULT,  # parameter dtype: float32 (keep it under bfloat16 compute)
  )


def _known(options: dict[str, Any], what: str, valid: tuple[str, ...]) -> dict[str, Any]:
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f'{what}: unknown field(s) {unknown}; valid: {sorted(valid)}')
  return options


def axis(registry: Registry, first: str | None = None, **left_out: str) -> list[str]:
  """A sweep axis: every name of `registry` (attention_zoo.attention.SCORES, COMBINES, ...) but
  those left out, each named with the reason why, in the registry's order; `first` (e.g. the
  sweep report's baseline, to which it compares the other rows) first. A newly registered name
  joins every such axis."""
  named = set(left_out) | ({first} if first else set())
  unknown = sorted(named - set(registry))
  if unknown:
    raise ValueError(f'axis: {unknown} are not registered; known: {registry.names()}')
  rest = [name for name in registry if name != first and name not in left_out]
  return [first] + rest if first else rest


def multi30k_task(source_language: str, target_language: str, **options: Any) -> dict[str, Any]:
  """The Multi30k translation task (attention_zoo/data/multi30k.py); `options` override."""
  return dict(
      name='multi30k',  # WMT16 multimodal task 1: 29,000 / 1,014 / 1,000 caption pairs
      source_language=source_language,  # de | en
      target_language=target_language,  # en | de
      tokenization='sentencepiece',  # sentencepiece | word | char | byte
      vocab_size=8_000,  # SentencePiece pieces
      sentencepiece_type='bpe',  # bpe | unigram
      joint_vocab=True,  # one vocabulary for both languages (embeddings can be shared)
      max_train_len=optional(int),  # drop longer train pairs (pieces per side); None: keep all
      data_dir=optional(str),  # raw files (None: $ATTENTION_ZOO_DATA/multi30k)
      tfds_dir=optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
  ) | options


# Translation trains on length buckets: far fewer padded positions than padding every batch to
# the longest sentence (`experiments.bench batching` measures the tokens/s of both on Multi30k).
BUCKETED = dict(batching='bucketed', num_buckets=8)
