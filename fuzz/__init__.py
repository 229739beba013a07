"""Property-based fuzzing of zigraph: random architectures, the engine's promises, malformed inputs.

* ``fuzz.arch`` — a printable spec grammar of networks, built into ``nn.Module`` and exported to ONNX;
* ``fuzz.strategies`` — hypothesis strategies that draw valid specs (and removal seeds, exporters);
* ``fuzz.properties`` — the promises checked on each spec (exact pruning in onnxruntime and torch,
  torch/ONNX frontend agreement, optimizers' contract);
* ``fuzz.malformed`` — mutations of valid models and the bad-input contract of the CLI;
* ``python -m fuzz --minutes N [--seed S]`` — all of it within a time budget (``fuzz.runner``).

See docs/fuzzing.md for fuzzing your own op rules or optimizer with these strategies.
"""
