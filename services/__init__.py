"""The rag-poc services: gateway, runner, ingestor, projector, mockai, and the `ragpoc` CLI."""
