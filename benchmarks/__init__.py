"""acwd benchmarks: virtual-time simulation, load against a real daemon, scale. See README.md."""
