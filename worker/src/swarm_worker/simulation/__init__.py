"""Attack simulation: what a Byzantine worker of `spec.simulation` does."""
