"""``python -m sbi_rounds.cluster RUN.yaml``: print the worker job script of a run config."""

from sbi_rounds.cluster.jobqueue import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
