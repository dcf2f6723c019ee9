"""The voice registry: saved voices, their assets and design previews, on Redis (docs/registry.md)."""
