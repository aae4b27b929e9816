"""What every node process shares: runtime, telemetry, checkpoints, the round state machine."""
