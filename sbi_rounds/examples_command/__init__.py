"""Example external simulators for ``simulator.kind: command`` (see ``sbi_rounds.simulation``).

* ``linear_gaussian.py``: the linear Gaussian model as a standalone Python program (standard
  library only), run as ``python -m sbi_rounds.examples_command.linear_gaussian IN OUT SEED``.
* ``linear_gaussian.c``: the same program in C, the usual shape of compiled simulators;
  build it with ``cc -O2 -o linear_gaussian linear_gaussian.c -lm``.

Both read the parameters' CSV file and write the summaries' CSV file of the protocol, and
draw their noise from a generator seeded by the chunk's seed.
"""

__all__: list[str] = []
