"""Flow tests: YAML suites run in-process against the compiled flows with mocked endpoints."""
