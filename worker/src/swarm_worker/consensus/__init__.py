"""The root's replicas agreeing on each outer step: PBFT phases, proposals, state transfer."""
