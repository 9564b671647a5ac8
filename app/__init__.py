"""White-blood-cell classification service."""
