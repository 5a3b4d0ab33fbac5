"""The daemon's HTTP surface: the app, the ingest and OTLP receivers, the read API and the status page."""
