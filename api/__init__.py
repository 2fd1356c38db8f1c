"""The HTTP API: app factory, routes, services, schemas and the error envelope."""
