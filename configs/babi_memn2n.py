r"""End-to-end memory network on bAbI 1k: one of the 20 tasks, or the 20 at once (task_id=0).

  python -m experiments.main --workdir=runs/babi1_memn2n \
    --config=configs/babi_memn2n.py:task_id=1,size=small

Needs $ATTENTION_ZOO_DATA/babi/en (or --config.task.data_dir). Args: task_id = 1..20, or 0 for
joint training over the 20 tasks; encoding = position | bow; tying = adjacent | layerwise;
size = tiny | small (small: the paper's recipe below).

Sukhbaatar, Szlam, Weston, Fergus (2015), "End-To-End Memory Networks": the settings of its
best 1k model, PE LS RN, section by section:
  model (sec. 2, 4.1, 5): 3 hops, adjacent tying, position encoding (PE), temporal encoding,
    random noise (RN) of 10% empty memories, memory of the 50 most recent sentences, d = 20
    (independent training) or d = 50 (joint training, as in the authors' config_babi_joint.m).
  data (sec. 4.2): 10% of each task's 1,000 train questions held out for validation
    (task.num_validation = 100, a fixed seeded draw).
  training (sec. 4.2): SGD without momentum or weight decay, lr 0.01 halved every 25 epochs
    until 100 epochs (joint: every 15 epochs until 60); batch 32 with the cost summed, not
    averaged, over the batch; gradients clipped at norm 40, each weight matrix on its own (the
    authors' code, nn/Weight.m); N(0, 0.1²) initialization (models/memory.py).
  linear start (LS, sec. 4.2): no memory softmax, lr 0.005, until the validation loss stops
    falling; then the softmax is re-inserted (train.start_phase, see attention_zoo/train/loop.py).
An epoch is floor(train questions / 32) steps, as in the authors' train.m: 28 for one task (900
questions), 562 joint (18,000): 2,800 steps (decay every 700) and 33,720 (decay every 8,430).

Deviations kept (the paper does not pin these, or we chose otherwise):
  - After linear start the lr follows the step schedule where it stands (the count includes the
    LS steps) and training ends at 100 (60) epochs in total. The authors' code instead runs a
    fixed 20 (joint: 30) linear epochs at lr 0.005, then a full 100 (60) epochs restarting the
    schedule, from lr 0.005.
  - "Stopped falling": the first validation (one per epoch) whose loss is not below the lowest so
    far in LS ends it (train.start_phase.patience = 1); the paper does not say how often it
    checked.
  - Batches are epochs of a seeded shuffle (attention_zoo/train/batching.py); the authors' code
    draws each batch with replacement.
  - Clipping uses each matrix's Frobenius norm; the authors' code takes MATLAB's norm() of a
    matrix, its largest singular value. The temporal tables are clipped apart from the word
    tables (the authors' code stores them as extra rows of one matrix).
  - RN and the empty slots of short stories: see attention_zoo/models/memory.py.
  - The paper picks the best of 10 runs by training error; a sweep here runs `seeds` seeds.
"""

import ml_collections

from configs import common

QUESTIONS = 1_000  # train questions per task file (bAbI 1k)
HELD_OUT = 100  # of them held out for validation: 10% (sec. 4.2)
BATCH = 32  # sec. 4.2
# (epochs, epochs between halvings, d): sec. 4.2 independent / joint
RECIPES = {'independent': (100, 25, 20), 'joint': (60, 15, 50)}

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(model=dict(embed_dim=8, hops=2),
                 train=dict(steps=6, batch_size=16, log_every=2, eval_every=3, checkpoint_every=3),
                 eval=dict(batch_size=64, max_examples=128)),
    'small': dict(),  # the paper's recipe, as the sections below set it
}


def epoch_steps(task_id: int) -> int:
  """Steps of one epoch: floor(train questions / batch), as the authors' train.m counts them."""
  tasks = 20 if task_id == 0 else 1
  return tasks * (QUESTIONS - HELD_OUT) // BATCH


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, task_id=1, encoding='position', tying='adjacent', size='small')
  epochs, decay_epochs, embed_dim = RECIPES['joint' if arg.task_id == 0 else 'independent']
  epoch = epoch_steps(arg.task_id)
  c = common.base_config()
  c.task = dict(
      name='babi',  # bAbI QA: story + question -> one answer word
      task_id=arg.task_id,  # 1..20; 0: the 20 tasks at once, with per-task test splits
      memory_size=50,  # M, the most recent sentences kept (sec. 4.2)
      num_validation=HELD_OUT,  # train questions per task held out for validation (10%)
      unknown_words='unk',  # test words missing from train -> UNK (task 8 needs it)
      data_dir=common.optional(str),  # raw files (None: $ATTENTION_ZOO_DATA/babi/en)
      tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
  )
  c.model_name = 'memn2n'
  c.model = dict(
      embed_dim=embed_dim,  # E, the paper's d: 20 independent, 50 joint
      hops=3,  # memory hops (K = 3 in the paper's bAbI models)
      tying=arg.tying,  # adjacent | layerwise weight tying (sec. 2.2)
      encoding=arg.encoding,  # position | bow sentence encoding (sec. 4.1)
      temporal=True,  # learned temporal encodings T_A, T_C (sec. 4.1)
      random_noise=0.1,  # RN: P(empty memory before a sentence) in training (sec. 4.1: 10%)
      linear_start=True,  # LS: no memory softmax until train.start_phase ends (sec. 4.2)
  )
  return common.finish(
      c, SIZES, arg.size,
      optimizer='sgd',  # sec. 4.2: no momentum or weight decay
      momentum=0.0,  # plain SGD
      lr=0.01,  # sec. 4.2
      schedule='step',  # lr · decay_factor^floor(step / decay_every)
      decay_every=decay_epochs * epoch,  # 25 epochs (joint: 15)
      decay_factor=0.5,  # "anneals ... by η/2"
      steps=epochs * epoch,  # 100 epochs (joint: 60)
      batch_size=BATCH,  # sec. 4.2
      batch_cost='sum',  # sec. 4.2: "cost is not averaged over a batch"
      clip_norm=40.0,  # sec. 4.2: gradients of norm > 40 rescaled to 40
      clip_scope='matrix',  # each weight matrix on its own (the authors' nn/Weight.m)
      start_phase=dict(  # LS (sec. 4.2); ends when the validation loss stops falling
          lr=0.005,  # "In LS training, the initial learning rate is set to η = 0.005"
          patience=1,  # validations without a new lowest loss that end it
          max_steps=0,  # end it after this many steps regardless; 0: no limit
      ),
      eval_every=epoch,  # validation once an epoch (it decides the end of LS)
      log_every=epoch,  # train metrics once an epoch
      checkpoint_every=10 * epoch,  # every 10 epochs
  )


def get_sweep(arg: str | None = None) -> list[dict]:
  """PE LS RN (this config's defaults), `seeds` seeds (default 3) on tasks = one id (default 1),
  'all' (the 20 tasks trained independently) or 'joint' (task_id=0). E.g. 'tasks=all,seeds=10'
  gives the paper's 10 runs per task, from which it reports the best by training error."""
  arg = common.parse_arg(arg, size='small', seeds=3, tasks='1')
  ids = {'all': list(range(1, 21)), 'joint': [0]}.get(arg.tasks) or [int(arg.tasks)]
  return [{'config_arg': f'task_id={t},size={arg.size}', 'seed': seed}
          for t in ids for seed in common.seeds(arg.seeds)]
