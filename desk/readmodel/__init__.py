"""The desk's read model: the pipeline's topics projected into SQL tables.

``tables`` declares the schema (migrated by Alembic, ``migrations/``),
``state_projection`` is the one module that reads the worker's internal state
changelogs, ``contracts`` reads the public Avro topics, ``store`` applies both
with the consumed offsets in one transaction, ``queries`` answers the desk and
``projector`` is the Kafka loop.
"""
