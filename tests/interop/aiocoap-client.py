#!/usr/bin/env python3
# Real LwM2M 1.1 client (aiocoap) for the gateway's interop tests; the 1.1 / SenML counterpart of
# node-client.js, driven the same way.
#
# Install: python3 -m pip install -r tests/interop/requirements.txt   (aiocoap, cbor2)
#
# Usage:
#   python3 aiocoap-client.py --host 127.0.0.1 --port <serverPort> --ep <endpoint> --lifetime <s>
#                             [--timeout <s>] [--queue] [--verbose]
#                             [--psk-identity <utf8> --psk-key-hex <hex>]
#
# With --psk-identity/--psk-key-hex the client talks coaps:// (DTLS 1.2, PSK) to the server through
# aiocoap's tinydtls transport (PyPI DTLSSocket): Register, Update, Send and Deregister open or use
# one DTLS session, and the server's requests over that session (Read, Observe...) are answered
# like plain ones (tinydtls hands every decrypted message to the context's message manager).
#
# stdout protocol (one event per line, nothing else is ever written to stdout):
#   REGISTERED <location>     once, after a 2.xx answer to Register (Location-Path joined by '/', e.g. "rd/1")
#   READ <path>               a Read was answered (GET, any format): the request path, e.g. "READ /3/0/0",
#                             "READ /3/0"; a FETCH (read-composite) prints one line per requested path
#   WRITE <path> <value>      a resource was written (PUT/POST write, iPATCH write-composite), one line per
#                             resource; value as in formatValue below (Float as Python prints it: 22.0)
#   EXECUTE <path> [<args>]   an Execute was answered (args omitted when the payload is empty)
#   OBSERVE <path>            an observation was set up (GET Observe=0; FETCH Observe=0: one line per path)
#   CANCEL <path>             an observation ended: GET Observe=1 (same or other token), or RST to a notification
#   UPDATED                   after a 2.xx answer to an Update (stdin "update" or "wake")
#   SET <path> <value>        after the stdin line "set <path> <value>" (value changed, observers notified)
#   SENT                      after a 2.xx answer to a Send (stdin "send <path>")
#   DEREGISTERED              after the answer to Deregister (stdin "deregister", SIGTERM or SIGINT); then exit 0
#   ERROR <message>           on any failure, then exit 1 (also when --timeout expires: default 120 s, at most 180)
# Discover (GET Accept: 40) and Write-Attributes (PUT with Uri-Query, no payload) are answered without a line.
# aiocoap logs go to stderr (warnings only unless --verbose).
# stdin commands, one per line (held until registered; run one at a time, in order):
#   update | deregister | set <path> <value> | send <path> | sleep | wake
#   sleep: every incoming request is dropped unanswered (no ACK); "set" notifications are held back.
#   wake:  answer requests again, send an Update (prints UPDATED), then send the held-back notifications.
# EOF on stdin is ignored.
#
# Wire behaviour:
# - One UDP socket: an aiocoap server context bound to 127.0.0.1:<ephemeral> (transport udp6 only, so the
#   socket is AF_INET6 dual-stack bound to ::ffff:127.0.0.1); Register, Update, Send and Deregister go out
#   of that same socket, so the server's requests to the Register's source address reach this client.
# - Register: CON POST /rd?ep=..&lt=..&lwm2m=1.1&b=U[&Q], Content-Format 40,
#   payload </>;rt="oma.lwm2m";ct="110 112",</1/0>,</3/0>,</3303/0>
#   Update: CON POST /<location>, no options besides Uri-Path, no payload. Deregister: CON DELETE /<location>.
#   Send: CON POST /dp, Content-Format 110, [{"bn":"/3303/0/","n":"5700","v":21.5}].
# - Objects: /1/0 (0 short id 1, 1 lifetime = --lifetime; Integer), /3/0 (0 "aiocoap-maker", 1 "SenML Client",
#   4 Reboot (executable), 9 battery 95 Integer, 13 current time Time = now unless written), /3303/0
#   (5700 21.5 Float, 5701 "Cel" String). Every non-executable resource is writable.
# - GET: Accept absent or 110 -> SenML JSON, 112 -> SenML CBOR, 0 -> text (single resource only; else 4.06),
#   40 -> Discover (link format); any other Accept -> 4.06. Unknown path 4.04; reading /3/0/4 4.05.
#   SenML packs carry "bn" on the first record (requested instance/object path, or the resource's instance
#   path, with a trailing '/') and a relative "n"; FETCH answers carry full paths in "n" and no "bn".
# - Write: PUT /o/i/r or /o/i, POST /o/i; Content-Format 0 (text), 110, 112 (else 4.15); all records are
#   checked before anything is stored (4.00 bad value / record outside the target, 4.04 unknown, 4.05 exec).
#   Execute: POST /o/i/r on an executable resource -> 2.04 (on another resource 4.05).
# - Observe: GET or FETCH with Observe=0 -> 2.05 with an Observe option; each change of an observed value
#   (stdin set, or any write) sends a NON 2.05 with the same token, a larger Observe number and the content
#   format of the observe request. GET/FETCH with Observe=1, or an RST to a notification, ends it.
# - FETCH (read-composite): body SenML JSON/CBOR (Content-Format 110/112) listing paths in "n" (with "bn");
#   answer in the Accept format (default: the request's Content-Format). iPATCH (write-composite): SenML
#   JSON/CBOR records, 2.04.
# - DELETE, POST on objects (Create) -> 4.05.
import asyncio
import base64
import json
import logging
import os
import signal
import sys
import threading
import time

MAX_RUN_S = 180
DEFAULT_RUN_S = 120
OP_TIMEOUT_S = 15  # bound for Register / Update / Send / Deregister round-trips

CF_TEXT, CF_LINK, CF_OPAQUE, CF_SENML_JSON, CF_SENML_CBOR = 0, 40, 42, 110, 112


# ---------------------------------------------------------------------------
# output helpers

_exiting = False


def out(line):
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):  # reader went away
        os._exit(1)


def finish(code, line):
    global _exiting
    if _exiting:
        return
    _exiting = True
    out(line)
    os._exit(code)  # no lingering: the stdin thread and aiocoap's sockets go with the process


def fail(message):
    finish(1, "ERROR " + " ".join(str(message).split()))


def format_value(value):
    """Printable ASCII as is; other text as "hex:" + hex of its UTF-8 bytes; bytes as "hex:" + hex."""
    if isinstance(value, (bytes, bytearray)):
        return "hex:" + bytes(value).hex()
    s = text_of_value(value)
    if all(0x20 <= ord(c) <= 0x7E for c in s):
        return s
    return "hex:" + s.encode("utf-8").hex()


def text_of_value(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def path_str(path):
    return "/" + "/".join(str(p) for p in path)


# ---------------------------------------------------------------------------
# arguments


def parse_args(argv):
    args = {"host": None, "port": None, "ep": None, "lifetime": None, "timeout": DEFAULT_RUN_S,
            "queue": False, "verbose": False, "psk_identity": None, "psk_key": None}
    i = 0
    while i < len(argv):
        a = argv[i]

        def nxt():
            nonlocal i
            if i + 1 >= len(argv):
                raise ValueError("missing value for " + a)
            i += 1
            return argv[i]

        if a == "--host":
            args["host"] = nxt()
        elif a in ("--port", "--lifetime"):
            v = nxt()
            try:
                args[a[2:]] = int(v)
            except ValueError:
                raise ValueError(a + " must be an integer") from None
        elif a == "--ep":
            args["ep"] = nxt()
        elif a == "--timeout":
            v = nxt()
            try:
                args["timeout"] = float(v)
            except ValueError:
                raise ValueError("--timeout must be a number (s)") from None
        elif a == "--psk-identity":
            args["psk_identity"] = nxt().encode()
        elif a == "--psk-key-hex":
            try:
                args["psk_key"] = bytes.fromhex(nxt())
            except ValueError:
                raise ValueError("--psk-key-hex must be hex") from None
        elif a == "--queue":
            args["queue"] = True
        elif a == "--verbose":
            args["verbose"] = True
        else:
            raise ValueError("unknown argument " + a)
        i += 1
    if not args["host"]:
        raise ValueError("--host is required")
    if args["port"] is None or not 1 <= args["port"] <= 65535:
        raise ValueError("--port must be 1..65535")
    ep = args["ep"] or ""
    if not ep or not all(c.isascii() and (c.isalnum() or c in "._:-") for c in ep):
        raise ValueError("--ep is required ([A-Za-z0-9._:-]+)")
    if args["lifetime"] is None or args["lifetime"] < 1:
        raise ValueError("--lifetime must be a positive integer (s)")
    if not args["timeout"] > 0:
        raise ValueError("--timeout must be > 0")
    if (args["psk_identity"] is None) != (args["psk_key"] is None):
        raise ValueError("--psk-identity and --psk-key-hex go together")
    args["timeout"] = min(args["timeout"], MAX_RUN_S)
    return args


try:
    ARGS = parse_args(sys.argv[1:])
except ValueError as e:
    fail(e)

logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if ARGS["verbose"] else logging.WARNING,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s")

try:
    import cbor2
    from aiocoap import Context, Message
    from aiocoap.numbers.codes import Code
    from aiocoap.numbers.types import NON, RST
except ImportError as e:
    fail("cannot import aiocoap/cbor2 (python3 -m pip install -r tests/interop/requirements.txt): %s" % e)


# ---------------------------------------------------------------------------
# data model


class CoapError(Exception):
    def __init__(self, code, text=""):
        super().__init__(text)
        self.code = code
        self.text = text


class Res:
    def __init__(self, rtype, value=None):
        self.type = rtype  # int, float, string, bool, time, opaque, exec
        self._value = value
        self._time_offset = 0

    @property
    def executable(self):
        return self.type == "exec"

    def get(self):
        if self.type == "time":
            return int(time.time()) + self._time_offset
        return self._value

    def set(self, value):
        if self.type == "time":
            self._time_offset = int(value) - int(time.time())
        else:
            self._value = value


MODEL = {
    1: {0: {0: Res("int", 1), 1: Res("int", ARGS["lifetime"])}},
    3: {0: {0: Res("string", "aiocoap-maker"), 1: Res("string", "SenML Client"), 4: Res("exec"),
            9: Res("int", 95), 13: Res("time")}},
    3303: {0: {5700: Res("float", 21.5), 5701: Res("string", "Cel")}},
}
REGISTER_PAYLOAD = '</>;rt="oma.lwm2m";ct="110 112",</1/0>,</3/0>,</3303/0>'


def parse_path(text):
    """"/3/0/1" -> (3, 0, 1); "/" or "" -> ()."""
    parts = [p for p in text.strip().split("/") if p != ""]
    if not text.startswith("/") and text != "":
        raise ValueError("path must start with /: %r" % text)
    if len(parts) > 4 or not all(p.isdigit() and int(p) <= 65535 for p in parts):
        raise ValueError("not an LwM2M path: %r" % text)
    return tuple(int(p) for p in parts)


def node(path):
    """The model node at path (dict of instances / resources, or a Res); CoapError 4.04 if absent."""
    n = MODEL
    for p in path:
        if not isinstance(n, dict) or p not in n:
            raise CoapError(Code.NOT_FOUND, "no such path " + path_str(path))
        n = n[p]
    return n


def leaves(path):
    """[(path, Res)] of the readable resources at or under path."""
    n = node(path)
    if isinstance(n, Res):
        if n.executable:
            raise CoapError(Code.METHOD_NOT_ALLOWED, "executable resource")
        return [(path, n)]
    found = []
    for k in sorted(n):
        sub = path + (k,)
        if not (isinstance(n[k], Res) and n[k].executable):
            found.extend(leaves(sub))
    return found


def parse_text_value(res, text):
    t = res.type
    try:
        if t in ("int", "time"):
            return int(text.strip())
        if t == "float":
            return float(text.strip())
        if t == "bool":
            s = text.strip().lower()
            if s in ("1", "true"):
                return True
            if s in ("0", "false"):
                return False
            raise ValueError(text)
        if t == "string":
            return text
        if t == "opaque":
            return text.encode("utf-8")
    except ValueError:
        pass
    raise CoapError(Code.BAD_REQUEST, "bad %s value %r" % (t, text))


# ---------------------------------------------------------------------------
# SenML (RFC 8428, LwM2M TS Core 1.1 §7.4.4/§7.4.5)

CBOR_LABELS = {-2: "bn", -3: "bt", 0: "n", 2: "v", 3: "vs", 4: "vb", 6: "t", 8: "vd"}
CBOR_KEYS = {v: k for k, v in CBOR_LABELS.items()}


def senml_value_field(res):
    v = res.get()
    if res.type in ("int", "time", "float"):
        return "v", v
    if res.type == "bool":
        return "vb", bool(v)
    if res.type == "opaque":
        return "vd", bytes(v)
    return "vs", str(v)


def encode_senml(items, cf, base=None):
    """items: [(path, Res)]. base: a path prefix put in "bn" of the first record (names relative to it)."""
    records = []
    for idx, (path, res) in enumerate(items):
        rec = {}
        if base is not None:
            if idx == 0:
                rec["bn"] = path_str(base) + "/"
            rel = path[len(base):]
            rec["n"] = "/".join(str(p) for p in rel)
        else:
            rec["n"] = path_str(path)
        key, value = senml_value_field(res)
        if key == "vd" and cf == CF_SENML_JSON:
            value = base64.urlsafe_b64encode(value).decode("ascii").rstrip("=")
        rec[key] = value
        records.append(rec)
    if cf == CF_SENML_JSON:
        return json.dumps(records, separators=(",", ":")).encode("utf-8")
    return cbor2.dumps([{CBOR_KEYS[k]: v for k, v in r.items()} for r in records])


def decode_senml(payload, cf):
    """-> [(path, record dict with string labels)], names resolved as bn + n."""
    try:
        if cf == CF_SENML_JSON:
            pack = json.loads(payload.decode("utf-8"))
        else:
            pack = cbor2.loads(payload)
    except Exception as e:  # noqa: BLE001 - any decoding failure is a 4.00
        raise CoapError(Code.BAD_REQUEST, "bad SenML: %s" % e) from None
    if not isinstance(pack, list) or not pack:
        raise CoapError(Code.BAD_REQUEST, "SenML pack is not a non-empty array")
    result = []
    bn = ""
    for raw in pack:
        if not isinstance(raw, dict):
            raise CoapError(Code.BAD_REQUEST, "SenML record is not a map")
        rec = {}
        for k, v in raw.items():
            label = CBOR_LABELS.get(k, k) if isinstance(k, int) else k
            rec[label] = v
        if "bn" in rec:
            if not isinstance(rec["bn"], str):
                raise CoapError(Code.BAD_REQUEST, "bn is not a string")
            bn = rec["bn"]
        n = rec.get("n", "")
        if not isinstance(n, str):
            raise CoapError(Code.BAD_REQUEST, "n is not a string")
        try:
            path = parse_path(bn + n)
        except ValueError as e:
            raise CoapError(Code.BAD_REQUEST, str(e)) from None
        result.append((path, rec))
    return result


def value_from_record(res, rec, path):
    """The typed value of a SenML record for resource res."""
    fields = [k for k in ("v", "vs", "vb", "vd", "vlo") if k in rec]
    if len(fields) != 1:
        raise CoapError(Code.BAD_REQUEST, "record for %s needs exactly one value" % path_str(path))
    k = fields[0]
    v = rec[k]
    t = res.type
    if k == "v" and isinstance(v, (int, float)) and not isinstance(v, bool):
        if t == "float":
            return float(v)
        if t in ("int", "time") and float(v).is_integer():
            return int(v)
    elif k == "vs" and isinstance(v, str):
        if t == "string":
            return v
        return parse_text_value(res, v)  # lenient: numbers sent as strings
    elif k == "vb" and isinstance(v, bool):
        if t == "bool":
            return v
    elif k == "vd":
        if isinstance(v, str):
            try:
                v = base64.urlsafe_b64decode(v.replace("+", "-").replace("/", "_") + "=" * (-len(v) % 4))
            except ValueError:
                raise CoapError(Code.BAD_REQUEST, "bad base64 in vd") from None
        if isinstance(v, (bytes, bytearray)) and t == "opaque":
            return bytes(v)
    raise CoapError(Code.BAD_REQUEST, "%s value does not fit %s resource %s" % (k, t, path_str(path)))


# ---------------------------------------------------------------------------
# the client


class Client:
    def __init__(self, args):
        self.args = args
        self.ctx = None
        self.mm = None  # aiocoap MessageManager of the one UDP socket
        self.tm = None  # its TokenManager
        self.location = None
        self.secure = args["psk_identity"] is not None
        self.server_uri = "%s://%s:%d" % (
            "coaps" if self.secure else "coap",
            "[%s]" % args["host"] if ":" in args["host"] else args["host"], args["port"])
        self.sleeping = False
        self.held_notifications = set()  # observation ids to notify on wake
        self.observations = {}  # id -> Observation
        self.obs_by_mid = {}  # MID of a NON notification -> observation id (for RST)
        self.next_obs_id = 1
        self.observe_seq = 1
        self.commands = asyncio.Queue()
        self.recently_ended = {}  # (token, remote) of observations ended by aiocoap (same-token Observe=1)

    # -- socket and message-layer hooks ------------------------------------

    async def start(self):
        transports = ["tinydtls", "udp6"] if self.secure else ["udp6"]
        self.ctx = await Context.create_server_context(
            self, bind=("127.0.0.1", 0), transports=transports)
        if self.secure:
            self.ctx.client_credentials.load_from_dict({
                self.server_uri + "/*": {"dtls": {
                    "psk": self.args["psk_key"], "client-identity": self.args["psk_identity"]}}})
        self.tm = self.ctx.request_interfaces[0]
        self.mm = self.tm.token_interface
        original = self.mm.dispatch_message

        def dispatch(message):
            if self.sleeping and message.code.is_request():
                logging.getLogger("client").info("sleeping: dropping %r", message)
                return
            if message.mtype is RST and message.mid is not None:
                oid = self.obs_by_mid.pop((message.mid, message.remote), None)
                if oid is not None:
                    self.stop_observation(oid)
            original(message)

        self.mm.dispatch_message = dispatch

    async def client_request(self, name, msg):
        try:
            return await asyncio.wait_for(self.ctx.request(msg).response, OP_TIMEOUT_S)
        except asyncio.TimeoutError:
            fail("%s timed out after %d s" % (name, OP_TIMEOUT_S))
        except Exception as e:  # noqa: BLE001
            fail("%s failed: %s: %s" % (name, type(e).__name__, e))

    # -- client operations --------------------------------------------------

    async def register(self):
        query = ["ep=" + self.args["ep"], "lt=%d" % self.args["lifetime"], "lwm2m=1.1", "b=U"]
        if self.args["queue"]:
            query.append("Q")
        msg = Message(code=Code.POST, uri=self.server_uri + "/rd", payload=REGISTER_PAYLOAD.encode())
        msg.opt.uri_query = query
        msg.opt.content_format = CF_LINK
        resp = await self.client_request("register", msg)
        if not resp.code.is_successful():
            fail("register failed: %s %s" % (resp.code, resp.payload[:100]))
        if not resp.opt.location_path:
            fail("register answer without Location-Path")
        self.location = "/".join(resp.opt.location_path)
        out("REGISTERED " + self.location)

    def location_msg(self, code):
        msg = Message(code=code, uri=self.server_uri + "/")
        msg.opt.uri_path = tuple(self.location.split("/"))
        return msg

    async def update(self):
        resp = await self.client_request("update", self.location_msg(Code.POST))
        if not resp.code.is_successful():
            fail("update failed: %s" % resp.code)
        out("UPDATED")

    async def deregister(self):
        if self.location is None:
            fail("terminated before registration completed")
        await self.client_request("deregister", self.location_msg(Code.DELETE))
        finish(0, "DEREGISTERED")

    async def send(self, text):
        path = self.resource_path(text, "send")
        res = node(path)
        msg = Message(code=Code.POST, uri=self.server_uri + "/dp",
                      payload=encode_senml([(path, res)], CF_SENML_JSON, base=path[:2]))
        msg.opt.content_format = CF_SENML_JSON
        resp = await self.client_request("send", msg)
        if not resp.code.is_successful():
            fail("send failed: %s" % resp.code)
        out("SENT")

    def resource_path(self, text, what):
        try:
            path = parse_path(text or "")
            res = node(path)
        except (ValueError, CoapError) as e:
            fail("bad %s command: %s" % (what, getattr(e, "text", None) or e))
        if len(path) != 3 or not isinstance(res, Res) or res.executable:
            fail("bad %s command: %s is not a readable resource" % (what, text))
        return path

    def set_value(self, text, value_text):
        path = self.resource_path(text, "set")
        res = node(path)
        try:
            value = parse_text_value(res, value_text)
        except CoapError as e:
            fail("bad set command: " + e.text)
        res.set(value)
        self.changed([path])
        out("SET %s %s" % (path_str(path), format_value(value)))

    # -- stdin commands -------------------------------------------------------

    async def command_loop(self):
        while True:
            line = await self.commands.get()
            words = line.split(None, 2)
            cmd = words[0]
            if cmd == "deregister":
                await self.deregister()
            elif cmd == "update":
                await self.update()
            elif cmd == "set":
                if len(words) < 3:
                    fail("bad set command (want: set /<obj>/<inst>/<res> <value>)")
                # the value is the rest of the line after the path (may contain spaces)
                self.set_value(words[1], line.split(None, 2)[2])
            elif cmd == "send":
                await self.send(words[1] if len(words) > 1 else "")
            elif cmd == "sleep":
                self.sleeping = True
            elif cmd == "wake":
                self.sleeping = False  # answer again before the Update goes out
                await self.update()
                held, self.held_notifications = self.held_notifications, set()
                for oid in sorted(held):
                    self.notify(oid)
            else:
                fail("unknown command: " + cmd)

    # -- observations --------------------------------------------------------

    def changed(self, paths):
        for oid, obs in list(self.observations.items()):
            if any(p[:len(o)] == o or o[:len(p)] == p for p in paths for o in obs.paths):
                if self.sleeping:
                    self.held_notifications.add(oid)
                else:
                    self.notify(oid)

    def notify(self, oid):
        obs = self.observations.get(oid)
        if obs is None:
            return
        try:
            resp = self.render(obs.request, obs.path)
        except CoapError as e:
            resp = Message(code=e.code, payload=e.text.encode())
        if not resp.code.is_successful():
            # ends the observation (RFC 7641 §4.2); interest end cleans up
            resp.mtype = NON
            obs.pipe.add_response(resp, is_last=True)
            return
        resp.mtype = NON
        resp.opt.observe = self.next_seq()
        obs.pipe.add_response(resp, is_last=False)
        if resp.mid is not None:
            self.obs_by_mid[(resp.mid, obs.remote)] = oid
            if len(self.obs_by_mid) > 1000:  # only recent notifications can be RST
                for k in list(self.obs_by_mid)[:500]:
                    del self.obs_by_mid[k]

    def next_seq(self):
        seq = self.observe_seq
        self.observe_seq = (self.observe_seq + 1) % (1 << 24)
        return seq

    def stop_observation(self, oid):
        """Ends the observation's exchange in aiocoap without sending anything (RST / Observe=1)."""
        obs = self.observations.get(oid)
        if obs is None:
            return
        entry = self.tm.incoming_requests.pop((obs.request.token, obs.request.remote), None) \
            if self.tm.incoming_requests is not None else None
        if entry is not None:
            entry[1]()  # ends the pipe -> on_interest_end -> observation_ended
        self.observation_ended(oid)

    def observation_ended(self, oid):
        obs = self.observations.pop(oid, None)
        if obs is None:
            return
        self.held_notifications.discard(oid)
        for p in obs.paths:
            out("CANCEL " + path_str(p))

    def cancel_matching(self, request, paths):
        """Observe=1 with another token: end this peer's observations of the same paths."""
        found = False
        for oid, obs in list(self.observations.items()):
            if obs.remote == request.remote and obs.paths == paths and obs.request.code == request.code:
                self.stop_observation(oid)
                found = True
        return found

    # -- server side -----------------------------------------------------------

    async def render_to_pipe(self, pipe):
        request = pipe.request
        try:
            try:
                path = tuple(int(p) for p in request.opt.uri_path if p != "")
                if any(not p.isdigit() for p in request.opt.uri_path if p != "") or len(path) > 4:
                    raise ValueError
            except ValueError:
                raise CoapError(Code.NOT_FOUND, "not an LwM2M path") from None
            observe = request.opt.observe
            if request.code in (Code.GET, Code.FETCH) and observe in (0, 1):
                self.handle_observe(pipe, path, observe)
                return
            resp = self.render(request, path, report=True)
        except CoapError as e:
            resp = Message(code=e.code, payload=e.text.encode())
        pipe.add_response(resp, is_last=True)

    def handle_observe(self, pipe, path, observe):
        request = pipe.request
        paths = self.fetch_paths(request) if request.code == Code.FETCH else [path]
        if observe == 1:
            resp = self.render(request, path)
            # Same token: aiocoap ended that observation when this request came in (CANCEL printed then).
            # Another token: end this peer's observations of the same paths here. Neither: still report.
            ended = self.recently_ended.pop((request.token, request.remote), None) is not None
            ended = self.cancel_matching(request, paths) or ended
            if not ended:
                for p in paths:
                    out("CANCEL " + path_str(p))
            pipe.add_response(resp, is_last=True)
            return
        resp = self.render(request, path)  # CoapError -> plain error answer, no observation
        oid = self.next_obs_id
        self.next_obs_id += 1
        obs = Observation(pipe, request, path, paths)
        self.observations[oid] = obs
        for p in paths:
            out("OBSERVE " + path_str(p))
        resp.opt.observe = self.next_seq()
        pipe.add_response(resp, is_last=False)
        pipe.on_interest_end(lambda: self.interest_ended(oid, obs))

    def interest_ended(self, oid, obs):
        if oid in self.observations:
            self.recently_ended[(obs.request.token, obs.request.remote)] = True
            if len(self.recently_ended) > 1000:
                for k in list(self.recently_ended)[:500]:
                    del self.recently_ended[k]
            self.observation_ended(oid)

    def fetch_paths(self, request):
        cf = request.opt.content_format
        cf = None if cf is None else int(cf)
        if cf not in (CF_SENML_JSON, CF_SENML_CBOR):
            raise CoapError(Code.UNSUPPORTED_CONTENT_FORMAT, "FETCH needs SenML JSON or CBOR")
        paths = [p for p, _ in decode_senml(request.payload, cf)]
        for p in paths:
            leaves(p)  # 4.04 / 4.05 before anything is reported
        return paths

    def render(self, request, path, report=False):
        """Answers a request (observe handling aside). report: print the stdout line(s)."""
        code = request.code
        accept = request.opt.accept
        accept = None if accept is None else int(accept)
        if code == Code.GET:
            if accept == CF_LINK:
                return self.discover(path)
            if not path:
                raise CoapError(Code.METHOD_NOT_ALLOWED, "read of the root path")
            if request.opt.observe == 1 or request.opt.observe == 0:
                report = False  # reported as OBSERVE / CANCEL
            return self.read(path, accept, report)
        if code == Code.FETCH:
            paths = self.fetch_paths(request)
            if accept is None:
                accept = int(request.opt.content_format)
            if accept not in (CF_SENML_JSON, CF_SENML_CBOR):
                raise CoapError(Code.NOT_ACCEPTABLE, "FETCH answers in SenML JSON or CBOR only")
            items, seen = [], set()
            for p in paths:
                for leaf in leaves(p):
                    if leaf[0] not in seen:
                        seen.add(leaf[0])
                        items.append(leaf)
            if report and request.opt.observe is None:
                for p in paths:
                    out("READ " + path_str(p))
            resp = Message(code=Code.CONTENT, payload=encode_senml(items, accept))
            resp.opt.content_format = accept
            return resp
        if code == Code.PUT:
            if not request.payload and request.opt.uri_query:
                node(path)
                return Message(code=Code.CHANGED)  # Write-Attributes: accepted, not stored
            if len(path) not in (2, 3):
                raise CoapError(Code.METHOD_NOT_ALLOWED, "write needs an instance or resource path")
            return self.write(request, path)
        if code == Code.POST:
            if len(path) == 3:
                res = node(path)
                if not res.executable:
                    raise CoapError(Code.METHOD_NOT_ALLOWED, "not an executable resource")
                args = request.payload
                out("EXECUTE " + path_str(path) + (" " + format_value(args.decode("utf-8", "replace"))
                                                   if args else ""))
                return Message(code=Code.CHANGED)
            if len(path) == 2:
                return self.write(request, path)
            raise CoapError(Code.METHOD_NOT_ALLOWED, "create is not supported")
        if code == Code.iPATCH:
            return self.write(request, path, composite=True)
        raise CoapError(Code.METHOD_NOT_ALLOWED, "method not supported")

    def read(self, path, accept, report):
        if accept is None:
            accept = CF_SENML_JSON
        items = leaves(path)
        if accept == CF_TEXT:
            if len(path) != 3:
                raise CoapError(Code.NOT_ACCEPTABLE, "text only for single resources")
            res = items[0][1]
            if res.type == "opaque":
                raise CoapError(Code.NOT_ACCEPTABLE, "opaque resource")
            payload = text_of_value(res.get()).encode("utf-8")
        elif accept in (CF_SENML_JSON, CF_SENML_CBOR):
            base = path if len(path) < 3 else path[:2]
            payload = encode_senml(items, accept, base=base)
        else:
            raise CoapError(Code.NOT_ACCEPTABLE, "accept %d not supported" % accept)
        if report:
            out("READ " + path_str(path))
        resp = Message(code=Code.CONTENT, payload=payload)
        resp.opt.content_format = accept
        return resp

    def discover(self, path):
        n = node(path)
        links = []

        def walk(p, x):
            links.append("<%s>" % path_str(p))
            if isinstance(x, dict):
                for k in sorted(x):
                    walk(p + (k,), x[k])

        if not path:
            raise CoapError(Code.METHOD_NOT_ALLOWED, "discover of the root path")
        walk(path, n)
        resp = Message(code=Code.CONTENT, payload=",".join(links).encode())
        resp.opt.content_format = CF_LINK
        return resp

    def write(self, request, path, composite=False):
        cf = request.opt.content_format
        cf = None if cf is None else int(cf)
        if cf in (CF_SENML_JSON, CF_SENML_CBOR):
            records = decode_senml(request.payload, cf)
        elif cf in (CF_TEXT, None) and len(path) == 3 and not composite:
            records = None
        else:
            raise CoapError(Code.UNSUPPORTED_CONTENT_FORMAT, "content format %s not supported" % cf)
        updates = []
        if records is None:
            res = node(path)
            if res.executable:
                raise CoapError(Code.METHOD_NOT_ALLOWED, "executable resource")
            updates.append((path, res, parse_text_value(res, request.payload.decode("utf-8", "replace"))))
        else:
            node(path)
            for p, rec in records:
                if p[:len(path)] != path:
                    raise CoapError(Code.BAD_REQUEST, "%s is outside %s" % (path_str(p), path_str(path)))
                if len(p) != 3:
                    raise CoapError(Code.BAD_REQUEST, "%s is not a resource path" % path_str(p))
                res = node(p)
                if res.executable:
                    raise CoapError(Code.METHOD_NOT_ALLOWED, "%s is executable" % path_str(p))
                updates.append((p, res, value_from_record(res, rec, p)))
        for p, res, value in updates:
            res.set(value)
            out("WRITE %s %s" % (path_str(p), format_value(value)))
        self.changed([p for p, _, _ in updates])
        return Message(code=Code.CHANGED)


class Observation:
    def __init__(self, pipe, request, path, paths):
        self.pipe = pipe
        self.request = request
        self.remote = request.remote
        self.path = path
        self.paths = paths


# ---------------------------------------------------------------------------
# main


def start_stdin_thread(loop, client):
    def reader():
        try:
            for raw in sys.stdin:
                line = raw.strip()
                if line:
                    loop.call_soon_threadsafe(client.commands.put_nowait, line)
        except (OSError, ValueError):
            pass  # stdin closed or absent: EOF is not a command

    threading.Thread(target=reader, name="stdin", daemon=True).start()


async def main():
    loop = asyncio.get_running_loop()
    loop.call_later(ARGS["timeout"], lambda: fail("timeout: still running after %g s" % ARGS["timeout"]))
    client = Client(ARGS)
    registered = asyncio.Event()

    def on_signal(name):
        if registered.is_set():
            client.commands.put_nowait("deregister")
        else:
            fail(name + " before registration completed")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)

    start_stdin_thread(loop, client)  # commands queue up until registered
    try:
        await client.start()
    except Exception as e:  # noqa: BLE001
        fail("cannot start the CoAP context: %s: %s" % (type(e).__name__, e))
    await client.register()
    registered.set()
    await client.command_loop()


def _exception_handler(loop, context):
    exc = context.get("exception")
    logging.getLogger("client").error("asyncio: %s %r", context.get("message"), exc)


if __name__ == "__main__":
    try:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_exception_handler)
        loop.run_until_complete(main())
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        fail("uncaught: %s: %s" % (type(e).__name__, e))
