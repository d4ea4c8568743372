"""failtune: train a language model on its own real benchmark failures, and prove it helped."""

from failtune.errors import FailtuneError
from failtune.evaluation.extraction import ExtractResult, extract
from failtune.training.sft import TrainResult, train
from failtune.validation.paired import validate

__version__ = "0.1.0"

__all__ = [
    "ExtractResult",
    "FailtuneError",
    "TrainResult",
    "__version__",
    "extract",
    "train",
    "validate",
]
