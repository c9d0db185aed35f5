"""Testing agents hermetically: the pytest plugin and cassettes.

- `lllm.testing.plugin` is a pytest plugin that every project which installs lllm gets (entry point `pytest11`):
  the fixtures `scripted_model`, `sandbox` and `log_store`, real model requests blocked by default
  (`LLLM_ALLOW_MODEL_REQUESTS=0`; the marker `allow_model_requests` or `--lllm-allow-model-requests` lets them
  through), and the markers `lllm_sandbox` and `lllm_cassette`. See docs/guide/testing.md.
- `cassette(path, mode)` records a run's model requests and CALL_API answers once and replays them
  (`lllm.testing.cassettes`); `LLLM_CASSETTE=path.yaml` does the same for a whole process.

Importing this package loads nothing else: pytest imports the plugin in every session of every user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lllm._lazy import lazy_getattr

if TYPE_CHECKING:
    from lllm.testing.cassettes import Cassette, cassette

_LAZY = {"Cassette": "lllm.testing.cassettes", "cassette": "lllm.testing.cassettes"}

__all__ = ["Cassette", "cassette"]

__getattr__ = lazy_getattr("lllm.testing", _LAZY, globals())
