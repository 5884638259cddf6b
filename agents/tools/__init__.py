"""Tools around the pipeline: the demo, the event simulator and the reference downstream."""
