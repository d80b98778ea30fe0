"""Serving: a search index over a code base and the HTTP API."""
