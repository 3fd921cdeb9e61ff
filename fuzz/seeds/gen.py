#!/usr/bin/env python3
"""Regenerates fuzz/seeds/<target>/ from the test fixtures, the xml/ dir and the real-client
captures in shared/testdata/real-clients (pass their directory as argv[1]). Deterministic: the
file name of a seed is the first 16 hex digits of its SHA-1."""
import glob, hashlib, json, os, re, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CAPTURES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "..", "shared", "testdata", "real-clients")

def h(s):
    return bytes.fromhex("".join(c for c in s if c in "0123456789abcdefABCDEF"))

def put(target, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)

# ---- CoAP parsing of captured datagrams -----------------------------------------------------
def coap(b):
    """(type, code, mid, token, [(num, val)], payload) or None."""
    if len(b) < 4 or b[0] >> 6 != 1:
        return None
    tkl = b[0] & 15
    pos, num, opts = 4 + tkl, 0, []
    token = b[4:pos]
    while pos < len(b) and b[pos] != 0xFF:
        d, l = b[pos] >> 4, b[pos] & 15
        pos += 1
        def ext(n):
            nonlocal pos
            if n == 13:
                pos += 1; return 13 + b[pos - 1]
            if n == 14:
                pos += 2; return 269 + (b[pos - 2] << 8 | b[pos - 1])
            return n
        d = ext(d); l = ext(l)
        num += d
        opts.append((num, b[pos:pos + l]))
        pos += l
    payload = b[pos + 1:] if pos < len(b) else b""
    return (b[0] >> 4) & 3, b[1], b[2] << 8 | b[3], token, opts, payload

def uint(v):
    return int.from_bytes(v, "big") if v else 0

captures = []
for f in sorted(glob.glob(os.path.join(CAPTURES, "*.jsonl"))):
    captures.append((os.path.basename(f), [json.loads(l) for l in open(f)]))

# ---- coap_message: every captured datagram ---------------------------------------------------
for _, lines in captures:
    for d in lines:
        put("coap_message", bytes.fromhex(d["hex"]))

# ---- codec_decode: [format][path] payload ----------------------------------------------------
PATHS = ["/", "/3", "/3/0", "/3/0/0", "/3/0/7", "/3/0/7/1", "/1/0", "/1/0/1", "/5/0/1", "/4/0",
         "/6/0", "/19/0/0", "/31024/10", "/13/26/1", "/3303/0/5700", "/65534/65533/65532/65531"]
FMT = {0: 0, 42: 1, 60: 2, 110: 3, 112: 4, 11542: 5, 1542: 5, 11543: 6, 1543: 6, 11544: 7}
LINK_FORMAT_SEEDS = []

def codec(fmt, path, payload):
    idx = PATHS.index(path) if path in PATHS else 2
    put("codec_decode", bytes([fmt, idx]) + payload)

for _, lines in captures:
    paths_by_token = {}
    for d in lines:
        m = coap(bytes.fromhex(d["hex"]))
        if not m:
            continue
        t, c, mid, token, opts, payload = m
        uri = "/" + "/".join(v.decode() for n, v in opts if n == 11)
        if d["dir"] == "server->client" and c in (1, 2, 3, 4, 5):
            paths_by_token[token] = uri
        if d["dir"] != "client->server":
            continue
        cf = [uint(v) for n, v in opts if n == 12]
        if c == 2 and uri in ("/rd", "/bs") or (c == 2 and uri.startswith("/rd/")):
            if payload:
                LINK_FORMAT_SEEDS.append(payload)
        if payload and cf and cf[0] == 40:
            LINK_FORMAT_SEEDS.append(payload)
        if payload and cf and cf[0] in FMT:
            codec(FMT[cf[0]], paths_by_token.get(token, "/3/0"), payload)
        elif payload and not cf and c >> 5 == 2:
            codec(0, paths_by_token.get(token, "/3/0/0"), payload)

TS_DEVICE_TLV = h("""C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65
    C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74
    C8 02 09 33 34 35 30 30 30 31 32 33  C3 03 31 2E 30
    86 06 41 00 01 41 01 05  88 07 08 42 00 0E D8 42 01 13 88  87 08 41 00 7D 42 01 03 84
    C1 09 64  C1 0A 0F  83 0B 41 00 00  C4 0D 51 82 42 8F  C6 0E 2B 30 32 3A 30 30  C1 10 55""")
codec(5, "/3/0", TS_DEVICE_TLV)
codec(5, "/3", h("08 00 79") + TS_DEVICE_TLV)
codec(5, "/3/0/7", h("88 07 08 42 00 0E D8 42 01 13 88"))
codec(5, "/3", h("08 00 0B C8 00 08 3F F8 00 00 00 00 00 00 08 01 0B C8 00 08 40 04 00 00 00 00 00 00"))
codec(3, "/3/0", (r'[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"1","vs":"Lightweight M2M Client"},'
    r'{"n":"2","vs":"345000123"},{"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"9","v":100},{"n":"13","v":1367491215},'
    r'{"n":"14","vs":"+02:00"},{"bn":"/1/0/","n":"1","v":86400,"bt":25.5,"t":-5},{"n":"6","vb":true},'
    r'{"bn":"/9/0/","n":"5","vd":"AQID"},{"n":"/3/0/22","vlo":"3:0"},{"n":"x"}]').encode())
codec(4, "/3/0", h("90a321652f332f302f00613003744f70656e204d6f62696c6520416c6c69616e6365a200613103764c69676874776569676874204d324d20436c69656e74a20061320369333435303030313233a20061330363312e30a20063362f300201a20063362f310205a20063372f3002190ed8a20063372f3102191388a20063382f3002187da20063382f3102190384a2006139021864a200623130020fa2006431312f300200a200623133021a5182428fa20062313403662b30323a3030a200623136036155"))
codec(4, "/", h("81 A2 00 68 2F31332F32362F31 02 18 2A"))
codec(4, "/", h("9F BF 00 68 2F31332F32362F31 02 18 2A FF FF"))
for fx in ["A1 83 0D 18 1A 01 18 2A", "BF 9F 0D 18 1A 01 FF 18 2A FF", "A1 0D A1 18 1A A1 01 18 2A",
           "A1 81 0D A1 81 18 1A A1 81 01 18 2A", "A1 82 0D 18 1A A2 01 18 2A 02 15",
           "A1 83 0D 18 1A 01 A2 02 F6 03 C4 82 20 18 2D"]:
    codec(7, "/13/26/1", h(fx))
codec(7, "/3", h("a1820300ad00744f70656e204d6f62696c6520416c6c69616e636501764c69676874776569676874204d324d20436c69656e7402693334353030303132330363312e3006a20001010507a200190ed80119138808a200187d011903840918640a0f0ba100000d1a5182428f0e662b30323a3030106155"))
codec(6, "/3/0", br'{"bn":"/3/0/","e":[{"n":"0","sv":"Open Mobile Alliance"},{"n":"9","v":95},{"n":"6/0","v":1},{"n":"4"},{"n":"13","v":1367491215},{"n":"15","bv":true},{"n":"22","ov":"3:0"}]}')
codec(0, "/3/0/9", b"100")
codec(0, "/3/0/14", b"+02:00")
codec(0, "/3/0/13", b"-1.5e3")
codec(0, "/1/0/1", b"86400")
codec(1, "/5/0/1", bytes(range(16)))
codec(2, "/3/0/0", h("18 64"))
codec(2, "/3/0/0", h("fb 3ff8000000000000"))
codec(2, "/3/0/0", h("63 616263"))

# ---- link_format -----------------------------------------------------------------------------
for p in LINK_FORMAT_SEEDS:
    put("link_format", p)
put("link_format", b'</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>')
put("link_format", b'</lwm2m>;rt="oma.lwm2m";ct="60 110 112 11542 11543 11544",</lwm2m/1>;ver=1.1,</lwm2m/3/0>,</lwm2m/5>;ver="2.0"')
put("link_format", b'</3/0>;pmin=10;pmax=60,</3/0/1>,</3/0/7>;dim=2;gt=50.5;lt=1;st=0.5,</3/0/11>;dim=1')

# ---- xml_model: the smallest definitions and a minimal document -------------------------------
for name in ["2.xml", "19.xml", "3201.xml"]:
    put("xml_model", open(os.path.join(REPO, "xml", name), "rb").read())
put("xml_model", b"""<?xml version="1.0"?><LWM2M><Object ObjectType="MODefinition"><Name>T</Name><ObjectID>9999</ObjectID>
<ObjectVersion>1.1</ObjectVersion><MultipleInstances>Multiple</MultipleInstances><Mandatory>Optional</Mandatory>
<Resources><Item ID="0"><Name>a</Name><Operations>RW</Operations><MultipleInstances>Single</MultipleInstances>
<Mandatory>Mandatory</Mandatory><Type>Integer</Type><RangeEnumeration>0..9</RangeEnumeration><Units>s</Units>
</Item><Item ID="1"><Name>b</Name><Operations>E</Operations><MultipleInstances>Single</MultipleInstances>
<Mandatory>Optional</Mandatory><Type></Type></Item></Resources></Object></LWM2M>""")

# ---- envelope ----------------------------------------------------------------------------------
COMMANDS = [
    {"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}},
    {"reqID": "abc", "extra": [1], "msgType": "read", "data": {"path": "/3/0"}},
    {"reqID": 2, "msgType": "discover", "data": {"path": "/3/0"}},
    {"reqID": 3, "msgType": "write", "data": {"path": "/3/0/13", "type": "Integer", "value": 12345, "format": "tlv"}},
    {"reqID": 4, "msgType": "write", "data": {"path": "/3/0/14", "value": "+02:00", "format": "text"}},
    {"reqID": 5, "msgType": "write", "data": {"basePath": "/1/0", "content": [{"path": "1", "type": "Integer", "value": 600}, {"path": "/1/0/7", "type": "String", "value": "U"}]}},
    {"reqID": 6, "msgType": "write-attr", "data": {"path": "/3/0/9", "pmin": "1", "pmax": "60"}},
    {"reqID": 7, "msgType": "execute", "data": {"path": "/3/0/4", "args": "5"}},
    {"reqID": 8, "msgType": "create", "data": {"path": "/5", "basePath": "/5", "content": [{"path": "/5/0/1", "type": "String", "value": "coap://x"}]}},
    {"reqID": 9, "msgType": "delete", "data": {"path": "/5/0"}},
    {"reqID": 10, "encoding": "hex", "msgType": "write", "data": {"path": "/5/0/0", "type": "Opaque", "value": "0102ff"}},
]
for c in COMMANDS:
    put("envelope", json.dumps(c).encode())

# ---- shard: ops (see fuzz_targets/shard.rs) ----------------------------------------------------
EPS = ["wakaama-ep1", "anjay-ep1", "node-ep1"]
def op_advance_ms(ms):
    if ms < 65536:
        return bytes([2]) + struct.pack(">H", ms)
    return bytes([2 | 0x80]) + struct.pack(">H", min(ms // 1000, 65535))
def op_deadline(): return bytes([3])
def op_answer(peer, style, rc, cf_idx, obs, payload):
    op = next(c for c in range(256) if c % 5 == 4 and (c >> 5) % 3 == peer and (c >> 3) & 3 == style)
    return bytes([op, rc, cf_idx, obs]) + struct.pack(">H", len(payload)) + payload
def op_byte(kind, sel):
    for cand in range(256):
        if cand % 5 == kind and (cand >> 3) % 3 == sel:
            return cand
def op_datagram(peer, b): return bytes([op_byte(0, peer)]) + struct.pack(">H", len(b)) + b
def op_command(ep, b): return bytes([op_byte(1, ep)]) + struct.pack(">H", len(b)) + b

for name, lines in captures:
    peers, seq, last_t = {}, b"", 0.0
    for d in lines:
        if d["dir"] != "client->server":
            continue
        if d["t"] > last_t:
            seq += op_advance_ms(int((d["t"] - last_t) * 1000))
            last_t = d["t"]
        p = peers.setdefault(d["src"], len(peers) % 3)
        seq += op_datagram(p, bytes.fromhex(d["hex"]))
    put("shard", seq)
    # The same registration, then commands for its endpoint answered by the fuzz input.
    first = next(d for d in lines if d["dir"] == "client->server")
    m = re.search(rb"ep=([\w\-]+)", bytes.fromhex(first["hex"]))
    ep = EPS.index(m.group(1).decode()) if m and m.group(1).decode() in EPS else 0
    reg = op_datagram(ep, bytes.fromhex(first["hex"]))
    put("shard", reg + op_command(ep, json.dumps(COMMANDS[0]).encode()) + op_answer(ep, 0, 0x45, 1, 0, b"Open Mobile Alliance")
        + op_command(ep, json.dumps(COMMANDS[1]).encode()) + op_answer(ep, 1, 0x45, 7, 0, TS_DEVICE_TLV)
        + op_command(ep, json.dumps(COMMANDS[2]).encode()) + op_deadline() + op_deadline() + op_deadline() + op_deadline() + op_deadline()
        + op_command(ep, json.dumps(COMMANDS[3]).encode()) + op_answer(ep, 0, 0x44, 0, 0, b"")
        + op_advance_ms(700_000) + op_deadline())

# ---- codec_roundtrip: [format][shape] records ---------------------------------------------------
for fmt in range(5):
    for shape in (0, 1, 2 | 4):
        rec = b""
        if shape % 3 == 2:
            rec = bytes([9]) + bytes(8)          # resource 9 (Integer), then its value
            put("codec_roundtrip", bytes([fmt, shape]) + rec)
            continue
        for r, val in [(0, b"\x05hello"), (1, struct.pack(">q", -42)), (2, struct.pack(">Q", 2**63 + 5)),
                       (3, struct.pack(">d", 1.5)), (4, b"\x01"), (5, b"\x03\x00\x01\x02"),
                       (6, struct.pack(">q", 1367491215)), (7, b"\x00\x03\x00\x00"), (17, b"\x02" + struct.pack(">q", 7))]:
            rec += (b"\x01" if shape % 3 == 0 else b"") + bytes([r]) + val
        put("codec_roundtrip", bytes([fmt, shape]) + rec)
