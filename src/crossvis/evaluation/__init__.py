"""The official YouTube-VIS metric, results files and identity diagnostics (no dependency on modeling)."""

from crossvis.evaluation.results import write_results
from crossvis.evaluation.ytvis_eval import STAT_NAMES, EvalResult, Evaluator, evaluate

__all__ = ["STAT_NAMES", "EvalResult", "Evaluator", "evaluate", "write_results"]
