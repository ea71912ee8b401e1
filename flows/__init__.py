"""The orchestration layer: Prefect flows over the library, and the command line on top.

``online_inference`` (``flows.online``, also ``python -m flows.online``) runs a job's rounds,
``campaign_inference`` (``flows.campaign``) one run per observation, ``run_report``
(``flows.report``) a run's HTML report; ``flows.server`` and ``flows.cluster`` start Prefect's
server and the Dask cluster. The flows compose the Prefect tasks of ``tasks/`` and the library
``sbi_rounds``, never the other way round. ``flows.cli`` is the command-line front end, the
top layer: only it (and the ``if __name__ == "__main__":`` doors of the flow modules) imports
it. The layers are checked by the import-linter contract in ``pyproject.toml``.
"""

__all__: list[str] = []
