"""The gateway: HTTP API, web UI, Server-Sent Events, health and metrics; turns requests into
commands and events, and serves the read models (`app.create_app`)."""
