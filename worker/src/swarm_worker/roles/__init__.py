"""The node roles (worker, aggregator, root): I/O shells on the layers below, never on each other."""
