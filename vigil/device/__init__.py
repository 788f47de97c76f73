"""The Vigil wearable daemon: pure alarm logic, thin drivers, durable outbox, MQTT."""
