"""The privacy desk: a read model of the pipeline, a web application and the CLI.

Separate from the worker's runtime (``agents/``): the desk only reads the
pipeline's topics (``desk.readmodel``) and publishes desk events through the
publisher SDK, like any other publishing system.
"""
