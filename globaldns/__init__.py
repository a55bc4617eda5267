"""globaldns: a global DNS resolver for multi-cluster Kubernetes."""

__version__ = "0.1.0"
