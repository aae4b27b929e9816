"""The learning problem: built-in tasks, local training steps, the outer optimizer."""
