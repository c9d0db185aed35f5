"""lllm.sandbox: where model-written code runs. Backends, pool, reaper, notebooks (names load lazily)."""
