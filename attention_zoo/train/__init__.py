"""Training: the loop (loop.train_and_evaluate) and its pieces, one module each.

  from attention_zoo.train.loop import train_and_evaluate
  results = train_and_evaluate(config, 'runs/dates')

The package imports none of its modules, so that analysis can import checkpoints.py or
workdir.py without the loop.
"""
