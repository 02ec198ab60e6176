"""Local state: the trust store now, the patch registry next (docs/registry.md)."""
