"""Data-subject rights building blocks (N9-N13).

Pure functions and models only: deadlines (``deadlines``), identity evidence
(``identity``) and the answers sent to the subject (``report``). Nothing here
reads a clock, a table or Kafka; callers pass times and state in.
"""
