"""In-process publish/subscribe of domain events."""
