"""attention_zoo: the classic attention mechanisms, written once, compared on shared tasks."""

__version__ = '0.1.0'
