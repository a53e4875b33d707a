"""Libraries shared by every rag-poc service."""
