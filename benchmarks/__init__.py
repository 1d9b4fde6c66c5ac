"""The benchmark suite: `python -m benchmarks [--json] [--quick]`. Not tests: nothing asserts."""
