"""The application layer: one module per use case (or family). The CLI, the worker's jobs
and the web console call these; nothing here parses arguments or prints."""
