"""The testcontainers suite: integration tests against Valkey and PostgreSQL in containers."""
