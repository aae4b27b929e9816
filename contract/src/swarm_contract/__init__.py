"""The contract between the operator and the pods: spec, tree, records, labels (torch-free)."""
