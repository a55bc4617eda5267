"""The sources that fill the registry: static config, active health checks, Kubernetes."""
