"""End-to-end user paths on a real Kubernetes: our images, the chart, the operator, real training."""
