"""failtune: train a language model on its own real benchmark failures, and prove it helped."""

from failtune.errors import FailtuneError
from failtune.extract import ExtractResult, extract
from failtune.train import TrainResult, train
from failtune.validate import validate

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
