"""The one exception tree of Vigil: every error we raise on purpose is a `VigilError`.

Families tell the caller what went wrong (config, crypto, protocol, transport,
GPS, storage); leaves also inherit the builtin they resemble so that generic
handlers keep working. Each docstring says what the user should do.
"""

from __future__ import annotations


class VigilError(Exception):
    """Base of every error Vigil raises on purpose."""


# -- configuration and key files -------------------------------------------------


class ConfigError(VigilError):
    """A configuration or key file is wrong; fix the file named in the message."""


class BadConfigValue(ConfigError, ValueError):
    """A config key has a wrong value; the message names the key and the file."""


class MissingConfigValue(ConfigError, KeyError):
    """A required config key is missing; add it to the file named in the message."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class KeyFileError(ConfigError):
    """A key file is missing, unreadable or malformed; re-provision the keys."""


class InsecureKeyFile(KeyFileError, PermissionError):
    """A key file is readable by group or others; run `chmod 600` on it."""


# -- cryptography -----------------------------------------------------------------


class CryptoError(VigilError):
    """A message failed a cryptographic check; drop it, it is forged or corrupted."""


class DecryptionFailed(CryptoError):
    """HPKE decryption failed: wrong recipient key, or the envelope was altered."""


class BadSignature(CryptoError):
    """The signature does not match the claimed sender's key: a forgery or a wrong key."""


# -- protocol ---------------------------------------------------------------------


class ProtocolError(VigilError, ValueError):
    """Bytes on the wire do not follow the Vigil protocol; drop the message."""


class MalformedEnvelope(ProtocolError):
    """The envelope cannot be parsed: garbage or a broken sender."""


class TruncatedEnvelope(MalformedEnvelope):
    """The envelope is shorter than its header and ciphertext require."""


class OversizedEnvelope(MalformedEnvelope):
    """The envelope is larger than any valid Vigil envelope; refuse to process it."""


class UnsupportedVersion(ProtocolError):
    """The envelope was made by a protocol version this build does not speak."""


class UnknownSuite(ProtocolError):
    """The envelope names a cipher suite this build does not know or was not given keys for."""


class WrongDirection(ProtocolError):
    """An uplink arrived where a downlink was expected, or the other way round."""


class TopicMismatch(ProtocolError):
    """The envelope names another device than the topic it arrived on: it was moved."""


class UnknownDevice(ProtocolError, LookupError):
    """The device id is not enrolled at this hub; enrol it with `vigil-provision device`."""


class RevokedDevice(UnknownDevice):
    """The device was revoked; its messages are refused until it is re-enrolled."""


class MalformedMessage(ProtocolError):
    """The decrypted payload is not a valid Vigil message (bad field, type or range)."""


class UnknownKind(MalformedMessage):
    """The message kind is not one this build knows."""


class ReplayedMessage(ProtocolError):
    """The (device, seq) was already accepted or is older than the replay window."""


class MessageTooLarge(ProtocolError):
    """A message does not fit the largest padding bucket; shorten its fields."""


# -- runtime families used by the device and the hub -------------------------------


class TransportError(VigilError, ConnectionError):
    """The MQTT broker could not be reached or refused us; check address, TLS and credentials."""


class GpsError(VigilError):
    """The GPS receiver could not be opened or read; check the UART and wiring."""


class NmeaFileError(GpsError, FileNotFoundError):
    """An NMEA capture to replay is missing or holds no sentences; give another file."""


class HardwareError(VigilError):
    """A hardware backend could not start; install what it names, or choose another backend."""


class MissingHardwareLibrary(HardwareError, ImportError):
    """The backend needs a library that is not installed; install it or use `simulate`."""


class StateDirError(ConfigError, PermissionError):
    """The device's state folder cannot be created or written; fix its path or permissions."""


class StorageError(VigilError, OSError):
    """The durable store failed (disk full, corrupt database); free space or restore."""


class StoreMissing(StorageError, FileNotFoundError):
    """The store does not exist yet; create it with `vigil-hub init` (or check store.url)."""


class StoreNotWritable(StorageError, PermissionError):
    """The store or its folder cannot be written by this user; fix ownership or store.url."""


class StateUnreadable(StorageError, ValueError):
    """The device's state does not decrypt with its state key; it is lost: a new life starts."""


# -- hub registry and alerts ------------------------------------------------------


class AlreadyEnrolled(VigilError, ValueError):
    """The device id is enrolled with other keys; revoke it first or provision a new id."""


class RevokeIncomplete(VigilError):
    """A step of a revocation failed; fix what it names and run the same command again."""


class NoSuchAlert(VigilError, LookupError):
    """No alert has that number; list them with `vigil-hub alerts`."""


class BadTransition(VigilError, ValueError):
    """The alert is not in a state that allows this action; check `vigil-hub alerts`."""


class MalformedAnchor(VigilError, ValueError):
    """An audit anchor line is malformed; compare it with the copy the operators keep."""


class AuditTampered(VigilError):
    """The audit log fails verification; run `vigil-hub audit verify` and investigate."""


class BadImage(ConfigError, ValueError):
    """The file is not a Raspberry Pi OS image with a FAT boot partition; check the path."""
