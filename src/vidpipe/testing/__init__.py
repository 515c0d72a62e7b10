"""Test support shipped with vidpipe: fake provider servers and helpers."""
