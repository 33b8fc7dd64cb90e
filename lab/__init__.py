"""The local lab: a real Debian LB guest under QEMU and network namespaces."""
