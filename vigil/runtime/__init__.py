"""The imperative shell both daemons share: the paho-mqtt wrapper, systemd notify, config."""
