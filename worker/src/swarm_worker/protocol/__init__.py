"""The wire: message codec and ZeroMQ transport."""
