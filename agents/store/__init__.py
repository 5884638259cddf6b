"""Where the rules' state lives: key layout, versioned values, stores.

``keys`` lays out every entry of a subject under keys that start with the
subject id, so one subject's records, commands and bookkeeping are contiguous
and a range scan lists them (see ``docs/state.md``). ``layer`` is the
read/overlay protocol the rules see; ``memory`` and ``faust_store`` implement
it in memory (tests, benchmarks) and on Faust's RocksDB tables (the worker).
"""
