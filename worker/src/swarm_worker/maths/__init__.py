"""Pure maths of a round: compression, common support, robust rules, reputation."""
