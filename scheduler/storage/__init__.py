"""PostgreSQL storage by aggregate, each module running the named queries of its .sql file."""
