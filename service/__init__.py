"""The running Outrider service: Kafka I/O, the scoring chain, metrics, CLI."""
