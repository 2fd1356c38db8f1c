"""The `labtrain` command: `up` runs the service, `worker` adds a worker, `migrate` the schema."""
