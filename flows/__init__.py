"""Prefect flows: ``online_inference`` (``python -m flows.online``) and the run report."""
