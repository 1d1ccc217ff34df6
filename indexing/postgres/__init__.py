"""The PostgreSQL + pgvector backend: ``server`` (--db specs, the embedded server, connection errors),
``store`` (schema, transactional writes, queries), ``migrate`` (bundles to and from databases) and
``commands`` (the export commands of ``python -m indexing``). psycopg is imported only when a database is used."""
