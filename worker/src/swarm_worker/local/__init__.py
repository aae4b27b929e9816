"""`swarm run`: the local launcher and its report."""
