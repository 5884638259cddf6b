"""Fault-injection ("chaos") suite: a real 3-node cluster, real workers, faults under traffic.

``make chaos`` (or ``python -m tests.chaos run``) starts its own 3-node KRaft
cluster (replication factor 3), two worker processes and one reference
downstream consumer per system under a supervisor that restarts whatever
exits, publishes a bounded, seeded traffic mix under the compressed demo
policy, injects faults one after another while traffic flows, and then checks
the pipeline's topics for what users rely on (``checks.py``).

Modules:

- ``config``     what to run, from ``CHAOS_*`` environment variables
- ``supervisor`` child processes, restarted when they exit, restarts counted
- ``traffic``    the seeded event plan and the thread that publishes it
- ``probes``     opt-outs published after each fault, to time the recovery
- ``faults``     the faults and their order
- ``snapshot``   everything on the pipeline's topics, decoded
- ``checks``     the consistency checks on a snapshot (pure; unit-tested)
- ``live``       checks that ask the cluster: consumer lag, ``lifecycle audit verify``
- ``report``     the report printed at the end and the figures in docs/chaos.md
- ``harness``    the whole run

The checker reads topics only, never a worker's internal state, so it holds
whatever the state model becomes; ``python -m tests.chaos check`` runs it
against any pipeline's topics.
"""
