"""pytest plugin (entry point ``pytest11``): attention benchmarks inside a team's own pytest suite."""
