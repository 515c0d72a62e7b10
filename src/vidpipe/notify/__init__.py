"""Messages to the outside: alerts to Slack, Discord or a webhook, via the outbox."""
