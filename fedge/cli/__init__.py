"""The top of the stack: the ``fedge`` command, the demo, the local-cluster harness and the simulation."""

from fedge.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
