"""The benchmark, one entry point: `python -m experiments.bench <section> [flags]` (__main__.py).

Each section is a module of this package with its absl flags and main(argv); the dispatcher
imports only the section asked for, so each section's flags are defined once per process.
"""
