"""Shared by the API and the worker: settings, database, tables, repositories, enqueueing."""
