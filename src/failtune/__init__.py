"""failtune: train a language model on its own real benchmark failures, and prove it helped.

The Python API: `extract`, `train` and `validate` take their options as keywords (the fields
of ExtractOptions, TrainOptions, ValidateOptions) or as one options object (`options=`);
`run` runs a whole run config (as `failtune run` does) and `demo` the embedded demo.
"""

from failtune.config.options import ExtractOptions, TrainOptions, ValidateOptions
from failtune.config.run import RunConfig
from failtune.demo import demo
from failtune.errors import FailtuneError
from failtune.evaluation.extraction import ExtractResult, extract
from failtune.pipeline.config import load_config, resolve_config
from failtune.pipeline.runner import RunResult, run_pipeline
from failtune.training.sft import TrainResult, train
from failtune.validation.paired import ValidationResult, validate

__version__ = "0.1.0"

__all__ = [
    "ExtractOptions",
    "ExtractResult",
    "FailtuneError",
    "RunConfig",
    "RunResult",
    "TrainOptions",
    "TrainResult",
    "ValidateOptions",
    "ValidationResult",
    "__version__",
    "demo",
    "extract",
    "load_config",
    "resolve_config",
    "run_pipeline",
    "train",
    "validate",
]
