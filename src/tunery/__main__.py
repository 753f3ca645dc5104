"""`python -m tunery` runs the CLI (the worker subprocess of `tunery serve` starts this way)."""

from tunery.cli import main

main()
