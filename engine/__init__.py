"""The real Pulumi engine and a Kubernetes control plane, built from Go modules (see build.py)."""
