"""Use cases of the API, between the routes and core's repositories."""
