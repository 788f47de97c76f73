"""`make demo`: the whole Vigil story on one machine, with real parts, in under a minute."""
