"""Turning settings into the objects a run is made of: the prior, the networks, user code.

Owns the import of user code by ``module:function`` path (``imports``: simulators, priors,
embedding nets), the prior built from its settings or from a run file (``priors``) and the
neural networks built through sbi's builders from settings that rebuild them exactly
(``networks``). It may import ``config`` and ``methods`` (which network a method trains);
it never imports the store, the stages, Prefect or ``flows``.
"""

__all__: list[str] = []
