"""The Vigil hub: ingest, durable store, ACK downlinks, escalation to responders."""
