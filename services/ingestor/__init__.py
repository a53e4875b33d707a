"""The ingestor: owns the vector collection; chunks, embeds and indexes documents from the
ingest-command stream and answers `POST /search` (`app.create_app`)."""
