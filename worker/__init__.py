"""The Celery worker: the app, the thin named tasks, and the code that runs one experiment."""
