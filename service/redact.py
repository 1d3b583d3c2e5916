"""Keep secrets out of logs, including the logs of the libraries Outrider embeds.

kafka-python logs a client's whole configuration at DEBUG, SASL password included. Every
Kafka client Outrider builds takes its connection settings from `Settings.kafka_client_config`,
which installs this filter first, on every `kafka.*` logger that exists and on the ones known
to log configuration; a record that contains a secret has it replaced by `***`.
"""

from __future__ import annotations

import logging

#: Loggers known to print client configuration (created here if not yet).
KAFKA_LOGGERS = (
    "kafka", "kafka.admin.client", "kafka.client", "kafka.client_async", "kafka.conn",
    "kafka.consumer.group", "kafka.producer.kafka", "kafka.net", "kafka.sasl", "kafka.librdkafka",
)  # fmt: skip


class RedactSecrets(logging.Filter):
    """Replaces each known secret in a record's message by '***'."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for s in self.secrets:
                message = message.replace(s, "***")
            record.msg, record.args = message, ()
        return True


_FILTER = RedactSecrets()


def redact(secret: str | None) -> None:
    """Never log `secret` (through any kafka logger)."""
    if not secret:
        return
    _FILTER.secrets.add(secret)
    names = set(KAFKA_LOGGERS) | {
        n for n in logging.root.manager.loggerDict if n == "kafka" or n.startswith("kafka.")
    }
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
