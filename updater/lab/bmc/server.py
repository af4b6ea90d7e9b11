"""The IPMI 2.0 (RMCP+/lanplus) server: pyghmi's BMC, wrapped in a small typed layer.

pyghmi does the protocol (RMCP+ session setup, RAKP, integrity and AES confidentiality); this module adds
what a lab BMC needs on top:
- a login with an unknown user name is refused at once with RAKP status "unauthorized name" (pyghmi stays
  silent and the client waits ~14 s), and a RAKP 3 with a wrong key with "invalid integrity check value";
- a request retransmitted while a slow power action was running (power cycle takes over a second, ipmitool
  retransmits after one) is answered from the first reply instead of acting twice;
- sessions idle for a minute (a client that vanished, or gave up after a wrong password) are dropped, so
  memory stays flat however many logins fail;
- only the commands below are served; everything else is answered "invalid command" (C1h), and an internal
  error becomes "unspecified error" (FFh) in the reply and a traceback in the log, never a crash.

Served: Get Device ID, Get System GUID, Get Chassis Status, Chassis Control (plus what pyghmi handles itself:
channel authentication capabilities, cipher suites, session privilege level and Close Session).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.constants as pyghmi_constants
import pyghmi.ipmi.private.serversession as pyghmi_serversession
import pyghmi.ipmi.private.session as pyghmi_session

from updater.lab.bmc.ipmi import (
    CMD_CHASSIS_CONTROL,
    CMD_GET_CHASSIS_STATUS,
    CMD_GET_DEVICE_ID,
    CMD_GET_SYSTEM_GUID,
    NETFN_APP,
    NETFN_CHASSIS,
    RAKP_INVALID_INTEGRITY_CHECK,
    RAKP_UNAUTHORIZED_NAME,
    CompletionCode,
    DeviceIdentity,
    IpmiError,
    PowerAction,
    chassis_status_data,
    device_id_data,
    plan_chassis_control,
)
from updater.lab.bmc.power import PowerControl

LOG = logging.getLogger("updater.lab.bmc")

Reply = tuple[CompletionCode, list[int]]

# IPMI's usual session inactivity timeout; ipmitool and fence_ipmilan close their sessions well before.
SESSION_IDLE_SECONDS = 60.0


class BmcCommands:
    """The BMC's answers to IPMI requests, in plain typed Python (no pyghmi inside)."""

    def __init__(self, power: PowerControl, *, guid: uuid.UUID, identity: DeviceIdentity) -> None:
        self.power = power
        self.guid = guid
        self.identity = identity

    def handle(self, netfn: int, command: int, data: Sequence[int], client: str) -> Reply:
        try:
            if netfn == NETFN_CHASSIS and command == CMD_GET_CHASSIS_STATUS:
                return CompletionCode.OK, chassis_status_data(self.power.is_on())
            if netfn == NETFN_CHASSIS and command == CMD_CHASSIS_CONTROL:
                return self.chassis_control(data, client)
            if netfn == NETFN_APP and command == CMD_GET_DEVICE_ID:
                return CompletionCode.OK, device_id_data(self.identity)
            if netfn == NETFN_APP and command == CMD_GET_SYSTEM_GUID:
                # IPMI sends GUIDs least significant byte first: the RFC 4122 bytes reversed.
                return CompletionCode.OK, list(reversed(self.guid.bytes))
        except IpmiError as exc:
            LOG.error("netfn %#04x command %#04x from %s failed: %s", netfn, command, client, exc)
            return exc.completion_code, []
        # Clients probe for extensions (ipmitool asks for DCMI and PICMG at every login): DEBUG, not INFO.
        LOG.debug("netfn %#04x command %#04x from %s: not supported (C1h)", netfn, command, client)
        return CompletionCode.INVALID_COMMAND, []

    def chassis_control(self, data: Sequence[int], client: str) -> Reply:
        started = time.monotonic()
        try:
            was_on = self.power.is_on()
            action = plan_chassis_control(data, was_on)
            _run(self.power, action)
        except IpmiError as exc:
            LOG.warning(
                "chassis control %s from %s refused (%#04x): %s", list(data), client, exc.completion_code, exc
            )
            return exc.completion_code, []
        LOG.info(
            "chassis control from %s: %s (node was %s) done in %.2fs",
            client,
            action.value,
            "on" if was_on else "off",
            time.monotonic() - started,
        )
        return CompletionCode.OK, []


def _run(power: PowerControl, action: PowerAction) -> None:
    if action is PowerAction.POWER_ON:
        power.power_on()
    elif action is PowerAction.POWER_OFF:
        power.power_off()
    elif action is PowerAction.POWER_CYCLE:
        power.power_cycle()
    elif action is PowerAction.RESET:
        power.reset()
    elif action is PowerAction.SHUTDOWN:
        power.shutdown()


def _forget(session: Any) -> None:
    """Drop a server session from pyghmi's routing table (it never does so itself)."""
    handlers = pyghmi_session.Session.bmc_handlers.get(session.sockaddr)
    if handlers is not None and handlers.get(session.bmc.port) is session:
        del handlers[session.bmc.port]
        if not handlers:
            del pyghmi_session.Session.bmc_handlers[session.sockaddr]


class _ServerSession(pyghmi_serversession.ServerSession):  # type: ignore[misc]
    """One client's RMCP+ session, refusing bad logins explicitly and replaying retransmitted requests."""

    established = False
    last_request: tuple[int, int, int, bytes] | None = None
    last_reply: Reply | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.last_active = time.monotonic()
        super().__init__(*args, **kwargs)

    def process_pktqueue(self) -> None:
        self.last_active = time.monotonic()
        super().process_pktqueue()

    def _refuse(self, payload_type: str, tag: int, status: int) -> None:
        message = bytearray([tag, status, 0, 0]) + bytearray(self.clientsessionid)
        self.send_payload(message, pyghmi_constants.payload_types[payload_type], retry=False)
        _forget(self)

    def _got_rakp1(self, data: bytearray) -> None:
        # RAKP 1: tag, 3 reserved, BMC session id (4), Rm (16), role, 2 reserved, name length, name.
        if len(data) < 28:
            _forget(self)
            return
        raw_name = bytes(data[28 : 28 + data[27]])
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        if not name or self.authdata.get(name) is None:
            LOG.warning("login refused from %s: unknown user %r", _client(self), raw_name)
            self._refuse("rakp2", data[0], RAKP_UNAUTHORIZED_NAME)
            return
        super()._got_rakp1(data)

    def _send_rakp4(self, tagvalue: int, statuscode: int) -> None:
        self.established = True
        super()._send_rakp4(tagvalue, statuscode)

    def _got_rakp3(self, data: bytearray) -> None:
        if len(data) < 8 or not hasattr(self, "Rc"):
            _forget(self)  # RAKP 3 without a RAKP 1 we accepted, or truncated
            return
        super()._got_rakp3(data)
        if self.established:
            LOG.debug("session from %s: user %s logged in", _client(self), self.username.decode())
            return
        if data[1] == 0:
            # The client's key does not match the user's password.
            LOG.warning("login refused from %s: wrong password for %s", _client(self), self.username.decode())
            self._refuse("rakp4", data[0], RAKP_INVALID_INTEGRITY_CHECK)
        else:
            # The client rejected our RAKP 2 (its password differs from ours) and says so: nothing to answer.
            LOG.warning("login abandoned by %s (RAKP status %#04x)", _client(self), data[1])
            _forget(self)

    def close_server_session(self) -> None:
        _forget(self)


def _client(session: Any) -> str:
    host, port = session.sockaddr[0], session.sockaddr[1]
    return f"{host}:{port}"


def drop_idle_sessions(idle_seconds: float) -> int:
    """Forget the sessions that have not sent anything for ``idle_seconds``; how many were dropped."""
    deadline = time.monotonic() - idle_seconds
    idle = [
        session
        for sessions in list(pyghmi_session.Session.bmc_handlers.values())
        for session in list(sessions.values())
        if isinstance(session, _ServerSession) and session.last_active < deadline
    ]
    for session in idle:
        _forget(session)
    if idle:
        LOG.info("dropped %d session(s) idle for over %.0fs", len(idle), idle_seconds)
    return len(idle)


class _PyghmiBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]
    """pyghmi's BMC with our sessions and our command table."""

    def __init__(self, commands: BmcCommands, users: Mapping[str, str], address: str, port: int) -> None:
        super().__init__(dict(users), port=port, bmcuuid=commands.guid, address=address)
        self.commands = commands

    def sessionless_data(self, data: bytes, sockaddr: Any) -> None:
        packet = bytearray(data)
        is_open_session_request = (
            len(packet) >= 22 and packet[0] == 6 and packet[2:4] == b"\xff\x07" and packet[4:6] == b"\x06\x10"
        )
        if not is_open_session_request:
            super().sessionless_data(data, sockaddr)
            return
        _ServerSession(self.authdata, self.kg, sockaddr, self.serversocket, packet[16:], self.uuid, bmc=self)

    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        key = (session.seqlun, request["netfn"], request["command"], bytes(request["data"]))
        try:
            if key == session.last_request and session.last_reply is not None:
                code, data = session.last_reply  # a retransmission: answer again, do not act again
                LOG.info("retransmitted request from %s answered again (not repeated)", _client(session))
            else:
                code, data = self.commands.handle(key[1], key[2], list(key[3]), _client(session))
                session.last_request, session.last_reply = key, (code, data)
        except Exception:
            LOG.exception("request netfn %#04x command %#04x failed", key[1], key[2])
            code, data = CompletionCode.UNSPECIFIED_ERROR, []
        session.send_ipmi_response(data=data, code=int(code))


class VirtualBmc:
    """An IPMI 2.0 BMC on one UDP address, serving one node's power.

    pyghmi keeps its sockets and sessions in module globals, so a process serves one VirtualBmc: the lab runs
    one BMC process per node.
    """

    def __init__(
        self,
        *,
        power: PowerControl,
        address: str,
        port: int,
        users: Mapping[str, str],
        guid: uuid.UUID,
        identity: DeviceIdentity | None = None,
    ) -> None:
        if not users:
            raise ValueError("a BMC needs at least one user")
        self.commands = BmcCommands(power, guid=guid, identity=identity or DeviceIdentity())
        self._server = _PyghmiBmc(self.commands, users, address, port)
        # pyghmi wakes its I/O thread with a datagram to "itself", guessed as ::1 or ::ffff:127.0.0.1, which
        # an IPv4 socket bound to 127.77.x.y cannot reach: its waits then last 300 s instead of their timeout.
        # Our own address is the right "itself" (a loopback datagram to our own socket).
        pyghmi_session.myself = str(ipaddress.ip_address(address))
        self.address = self._server.serversocket.getsockname()[0]
        self.port = int(self._server.serversocket.getsockname()[1])

    def serve(
        self,
        stop: threading.Event,
        poll_seconds: float = 1.0,
        session_idle_seconds: float = SESSION_IDLE_SECONDS,
    ) -> None:
        """Serve until ``stop`` is set (seen within ``poll_seconds``, or at once on :meth:`wake`)."""
        next_sweep = time.monotonic() + session_idle_seconds / 2
        while not stop.is_set():
            try:
                pyghmi_session.Session.wait_for_rsp(timeout=poll_seconds)
            except Exception:
                # A malformed packet must not take the BMC down.
                LOG.exception("error while handling a packet")
            if time.monotonic() >= next_sweep:
                drop_idle_sessions(session_idle_seconds)
                next_sweep = time.monotonic() + session_idle_seconds / 2

    def wake(self) -> None:
        """Make :meth:`serve` look at its stop event now (safe from a signal handler).

        A datagram to our own socket wakes pyghmi's loop, which ignores it (too short for IPMI).
        """
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"wake", (self.address, self.port))

    def close(self) -> None:
        sock = self._server.serversocket
        pyghmi_session.Session.bmc_handlers.pop(sock, None)
        if sock in pyghmi_session.iosockets:
            pyghmi_session.iosockets.remove(sock)
        sock.close()
