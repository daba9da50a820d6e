"""Coverage-guided fuzzing (atheris) of whalecast's input parsers; see fuzz/README.md."""
