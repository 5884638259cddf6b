"""The hash-chained audit trail: chain, proofs, the per-partition writer, verification."""
