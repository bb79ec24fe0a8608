"""The configuration as typed, frozen objects: what every other module reads.

``config.py`` turns a YAML file into these (with file:line errors); nothing here does I/O.
Durations are seconds (float), sizes bytes (int), already parsed from their units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .model import DataClass, Point
from .rules import RateOfRise, Report, Stale, Threshold

__all__ = [
    "GatewaySettings", "TlsSettings", "MqttSettings", "BufferSettings", "PrivacySettings",
    "BusSettings", "DeviceSettings", "Settings", "TrustedKey", "CommandSettings", "WriteRule", "OPS", "OPT_IN_OPS",
    "PRIVACY_ACTIONS", "WebSettings",
]

# CONTRACT section 6: the ops a platform command may name (commands/optable.py: what each does)
OPS = ("agent.ping", "device.poll", "device.write", "config.apply", "buffer.replay")
OPT_IN_OPS = ("config.apply",)  # enabled only when commands.ops lists them
# CONTRACT section 5: what a config may map a data class (or one point) to; the privacy stage
# applies these and free_text's default, scan, which is not written in a config
PRIVACY_ACTIONS = ("keep", "pseudonymize", "mask", "generalize", "drop", "seal")


@dataclass(frozen=True)
class GatewaySettings:
    id: str
    site: str
    state_dir: Path


@dataclass(frozen=True)
class TlsSettings:
    enabled: bool = False
    ca_file: Path | None = None  # None: the system trust store
    cert_file: Path | None = None  # client certificate, for mTLS
    key_file: Path | None = None
    verify_hostname: bool = True


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int = 1883
    tls: TlsSettings = field(default_factory=TlsSettings)
    username: str | None = None
    password_file: Path | None = None
    username_file: Path | None = None  # the user name from a file: a ThingsBoard access token is a secret
    topic_prefix: str = "edge/v1"
    client_id: str | None = None  # default: "edge-agent-{gateway id}"
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive_s: float = 30.0
    batch_max: int = 500  # readings or events per message
    inflight: int = 20  # unacknowledged messages at once
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    compress: bool = False  # telemetry and events payloads as xz streams (uplink/payload.py)
    linger_s: float = 0.025  # a newly polled row waits this long for company before it is published
    # (host, port) of every broker node, in the order tried: a lost connection moves to the next one
    # (mqtt.hosts; issue 16). Empty: just (host, port).
    hosts: tuple[tuple[str, int], ...] = ()

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        return self.hosts or ((self.host, self.port),)
    dialect: str = "edge"  # edge | thingsboard | sparkplug (uplink/dialect.py, docs/dialects.md)
    sparkplug: "SparkplugSettings" = field(default_factory=lambda: SparkplugSettings())


@dataclass(frozen=True)
class SparkplugSettings:
    """``mqtt.sparkplug:`` (only with ``dialect: sparkplug``)."""

    group_id: str | None = None  # None: the gateway's site
    primary_host: str | None = None  # a host application id: births wait for its STATE online


@dataclass(frozen=True)
class BufferSettings:
    path: Path
    max_bytes: int = 512 * 1024**2
    retain_sent_s: float = 0.0
    commit_interval_s: float = 0.2  # group commit: the longest a row waits for its id and the database
    commit_max: int = 2000  # rows per transaction at most
    intake_log: bool = True  # each poll's rows appended to <path>.intake-N first: kill -9 loses none


@dataclass(frozen=True)
class PrivacySettings:
    key_file: Path | None = None  # config.py defaults it to {state_dir}/keys/pseudonym.key
    platform_key_file: Path | None = None
    actions: dict[DataClass, str] = field(default_factory=dict)
    geohash_length: int = 6


@dataclass(frozen=True)
class TrustedKey:
    """A platform key the gateway accepts command signatures from (Ed25519 public key, PEM)."""

    id: str  # the command's optional "kid" names it; also who signed, in the audit log
    public_key_file: Path


@dataclass(frozen=True)
class CommandSettings:
    """``commands:``: whether the gateway listens on ``R/cmd`` and what it lets commands do.

    Off unless keys are configured: with no trusted key every command would be refused anyway.
    ``ops``: the ops enabled at all; ``config.apply`` is off unless listed. Device writes are
    further limited per device (``DeviceSettings.writable``): nothing is writable by default.
    """

    keys: tuple[TrustedKey, ...] = ()
    ops: tuple[str, ...] = tuple(op for op in OPS if op not in OPT_IN_OPS)
    max_bytes: int = 16 * 1024  # a larger payload is refused before it is parsed
    max_skew_s: float = 300.0  # how far in our future "iat" may be
    max_lifetime_s: float = 3600.0  # "exp" - "iat" at most: bounds the replay cache
    rollback_after_s: float = 120.0  # config.apply: the uplink must be back within this
    config_backups: int = 5  # previous config files kept beside the config
    replay_rate: int = 2000  # buffer.replay: rows per second at most, so live data keeps flowing
    # dialect -> ops a command without our Ed25519 signature may run (ThingsBoard RPC, Sparkplug
    # DCMD carry none); empty: every unsigned command is refused
    unsigned: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)


@dataclass(frozen=True)
class WriteRule:
    """What a command may write to one point: one of ``values``, or a number in ``[min, max]``."""

    values: tuple[object, ...] | None = None
    min: float | None = None
    max: float | None = None

    def allows(self, value: object) -> bool:
        if self.values is not None:
            return any(value == v and type(value) is type(v) for v in self.values)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True)
class BusSettings:
    """One physical link. ``serial`` set: RS-485 through a local port. ``host`` set: TCP;
    for protocol ``modbus-rtu`` that means RTU frames through a serial-to-Ethernet converter."""

    name: str
    protocol: Literal["modbus-tcp", "modbus-rtu", "dlt645", "cjt188", "json-lines"]
    host: str | None = None
    port: int | None = None
    serial: str | None = None
    baud: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    data_bits: int = 8
    stop_bits: int = 1
    timeout_s: float = 1.0
    gap_s: float = 0.0  # silence between requests on this bus

    @property
    def link(self) -> Literal["tcp", "serial", "rtu-over-tcp", "bytes-over-tcp"]:
        if self.serial:
            return "serial"
        if self.protocol == "modbus-tcp":
            return "tcp"
        return "rtu-over-tcp" if self.protocol == "modbus-rtu" else "bytes-over-tcp"

    @property
    def is_modbus(self) -> bool:
        return self.protocol in ("modbus-tcp", "modbus-rtu")


@dataclass(frozen=True)
class DeviceSettings:
    name: str
    bus: str
    driver: str
    address: int | str | None  # Modbus unit id; DL/T 645 / CJ/T 188 meter address (digits); None for json-lines
    interval_s: float
    timeout_s: float | None = None  # None: the bus timeout
    retries: int = 1
    max_block: int | None = None  # None: the driver's
    merge_gap: int = 8  # registers of filler a merged request may carry
    points: tuple[Point, ...] = ()  # modbus_generic only
    enabled: bool = True
    privacy: dict[str, str] = field(default_factory=dict)  # point name -> action, over its class's
    alarms: tuple[Threshold | RateOfRise | Stale, ...] = ()  # rules for field.alarms.DeviceAlarms
    report: Report = field(default_factory=Report)  # every_poll, or on_change with deadband/heartbeat
    offline_after: int | None = None  # unanswered polls in a row before an offline event; None: not set (3)
    options: dict[str, object] = field(default_factory=dict)  # the driver's Option values, defaults filled in
    writable: dict[str, WriteRule] = field(default_factory=dict)  # point -> what commands may write there

    @property
    def watched(self) -> bool:
        """Whether the device has alarms, a report filter or offline_after configured: only such a
        device gets a ``DeviceAlarms`` (and with it online/offline events)."""
        return bool(self.alarms) or self.report != Report() or self.offline_after is not None


@dataclass(frozen=True)
class WebSettings:
    """``web:``: the technician's page (issue 15); absent, nothing of it is started or imported."""

    listen_host: str = "127.0.0.1"  # a name, an IPv4 or an IPv6 address (without brackets)
    listen_port: int = 8080
    tls_cert_file: Path | None = None  # both or neither: HTTPS with them
    tls_key_file: Path | None = None
    password_file: Path = Path("/var/lib/edge-agent/web.passwd")  # config: {state_dir}/web.passwd

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None


@dataclass(frozen=True)
class Settings:
    gateway: GatewaySettings
    mqtt: MqttSettings
    buffer: BufferSettings
    privacy: PrivacySettings
    buses: tuple[BusSettings, ...]
    devices: tuple[DeviceSettings, ...]
    source: Path | None = None
    commands: CommandSettings = field(default_factory=CommandSettings)
    web: WebSettings | None = None

    @property
    def root_topic(self) -> str:
        return f"{self.mqtt.topic_prefix}/{self.gateway.site}/{self.gateway.id}"

    @property
    def privacy_overrides(self) -> dict[tuple[str, str], str]:
        """``(device, point) -> action`` from every device's ``privacy`` mapping, for ``Privacy``."""
        return {(d.name, point): action for d in self.devices for point, action in d.privacy.items()}

    def bus(self, name: str) -> BusSettings:
        return next(b for b in self.buses if b.name == name)

    def device(self, name: str) -> DeviceSettings:
        return next(d for d in self.devices if d.name == name)
