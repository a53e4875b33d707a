"""Other systems' architectures, rebuilt to run beside rag-poc in the benchmarks."""
