"""Field deployment: provision devices, write SD images, lock down the broker."""
