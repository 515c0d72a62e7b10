"""Fake provider servers: small ASGI apps that speak each provider's wire format."""
