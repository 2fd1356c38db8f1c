"""Routes declare the HTTP contract and call services; they hold no SQL."""
