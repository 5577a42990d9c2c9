"""Tasks: datasets (TFDS array_record + grain), vocabularies and metrics, found by name.

  task = get_task({'name': 'dates', 'num_train': 20_000})
  for batch in task.batches('train', 128, seed=0): ...
"""

from attention_zoo.data.base import Task
from attention_zoo.specials import BOS, EOS, PAD
from attention_zoo.data.registry import TASKS, get_task, register_task, task_names

__all__ = ['BOS', 'EOS', 'PAD', 'TASKS', 'Task', 'get_task', 'register_task', 'task_names']
