"""Any seqrec run, whatever trained it: evaluation dispatched on ``run.json``'s model (SASRec / EAGER / TIGER
runs to :func:`beatrec.seqrec.train.evaluate_run`, LLM-BS runs to :func:`beatrec.seqrec.llmbs.run.evaluate_llmbs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from beatrec.errors import ConfigError
from beatrec.seqrec.rundir import read_run_json


def evaluate_any(run: str | Path, data: str | Path | None = None, progress: bool = True, device: str = "auto",
                 merge: str | None = None, beam_size: int | None = None, out_name: str = "evaluation.json"
                 ) -> dict[str, Any]:
    """Reload and score any seqrec run (see :func:`beatrec.seqrec.train.evaluate_run` for the arguments)."""
    if read_run_json(Path(run))["model"] == "llmbs":
        from beatrec.seqrec.llmbs.run import evaluate_llmbs  # loads transformers: only for LLM-BS runs

        if merge is not None or beam_size is not None:
            raise ConfigError(f"{run}: --merge and --beam-size apply to EAGER / TIGER runs, not to LLM-BS")
        return evaluate_llmbs(Path(run), data, progress)
    from beatrec.seqrec.train import evaluate_run

    return evaluate_run(run, data, progress, device, merge, beam_size, out_name)
