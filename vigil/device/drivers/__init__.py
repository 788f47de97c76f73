"""Thin hardware drivers: GPIO parts (gpiozero), GPS (pyserial + pynmea2), battery (sysfs)."""
