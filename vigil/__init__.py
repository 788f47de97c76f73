"""Vigil: a panic alarm for human-rights defenders (wearable, hub, and the wire between them).

- `vigil.wire`: the wire format both sides share (pure: bytes, keys, messages).
- `vigil.runtime`: the shell both daemons share (paho wrapper, systemd notify, config reader).
- `vigil.device`: the wearable. `vigil.hub`: the partner organisation's hub.
- `vigil.provision`: the technician's tools.
"""
