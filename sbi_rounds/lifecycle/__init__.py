"""A run's life before and around its stages: check it, lock it, open it, resolve it.

Owns the preflight (``preflight``, with the machine checks of ``environment`` and the code
fingerprint of ``fingerprint``), the one-writer lock (``locking``), the session that opens or
creates the run file and refuses settings that no longer fit (``session``), the resolved
:class:`~sbi_rounds.lifecycle.run.Run` every stage receives (``run``) and the contract every
stage keeps (``stage``). It may import ``config``, ``store``, ``methods``, ``builders``,
``simulation`` (the preflight probes the simulator), ``seeding`` and ``errors``; it never
imports ``stages``, ``diagnostics``, ``report`` (they build on it), Prefect or ``flows``.
"""

__all__: list[str] = []
