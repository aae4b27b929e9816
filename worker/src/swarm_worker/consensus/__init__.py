"""The root's replicas agreeing on each outer step: commit points, certificates, PBFT phases."""
