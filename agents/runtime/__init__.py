"""The worker runtime: Faust app, the thin handler, scheduler, failure classes, metrics."""
