"""Look inside runs: load_run for notebooks, attention / SE maps, sweep reports."""

from attention_zoo.analysis.load import load_config, load_run  # noqa: F401
from attention_zoo.analysis.run import analyze_run  # noqa: F401
