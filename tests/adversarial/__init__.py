"""Adversarial tests (issue 12): a rogue peer of ours (rogue.py) against real node processes over
real loopback sockets, showing the defences of docs/threat-model.md that are in place today."""
