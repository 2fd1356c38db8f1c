"""Every SQL statement of labtrain, one module per aggregate. Functions take the caller's
session and never commit: the owner of the session (the API request, the worker's
`session_scope()`) does."""
