#!/usr/bin/env bash
# The performance bar, measured in one run: each item against a fresh gateway (embedded broker,
# QoS 1), on loopback, with the harness, in sequence. Prints a summary table and leaves every
# harness JSON in $OUT.
#
#   cargo build --release --workspace
#   loadtest/bar.sh                 # all items except the 1M-device memory run
#   MEMORY=1 loadtest/bar.sh        # also 1,000,000 idle devices (several minutes, about 2 GiB)
#
# DTLS (PSK) items, in the same run: `dtls_notify` (the `notify` item over DTLS: same -n, --rate
# and --duration, so the two compare), `dtls_register` (DTLS_N devices handshake and register:
# handshakes/s) and `dtls_memory` (DTLS_N idle DTLS devices: gateway RSS per device). Their
# gateways load the credentials `lwm2m-loadtest --write-credentials` writes (devices dtls-0..)
# and listen for DTLS on 127.0.0.1:5684; plain CoAP stays open to any endpoint without a
# credential (plain_requires_credential = false), as the plain items need.
#
# Environment: OUT (results directory, default /tmp/lwm2m-bar), WORKERS (default 2), STATE
# ("off": --state-dir "", nothing kept; default on, in $OUT/state), SNAPSHOT_INTERVAL (seconds,
# default the gateway's 60; 1 measures the worst case), JOURNAL_INTERVAL (seconds, default the
# gateway's 1; 0 turns the journal off), ITEMS
# (space-separated item names to run, e.g. "notify dtls_notify dtls_memory"; default all; the
# baseline always runs, the notify rates derive from it),
# SCRAPE (1: GET http://127.0.0.1:8080/metrics every second while each item runs, as a
# Prometheus server would; the gateway's HTTP listener must be on, its default),
# MEMORY_SETTLE (seconds idle before the memory readings, default 250: longer than the 247 s
# EXCHANGE_LIFETIME for which the storm's duplicate-detection entries are kept), DTLS_N (DTLS
# devices of dtls_register and dtls_memory, 10000..100000, default 100000), DTLS_SETTLE
# (dtls_memory's idle seconds, default MEMORY_SETTLE; 0 reads right after the storm only).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
OUT=${OUT:-/tmp/lwm2m-bar}
WORKERS=${WORKERS:-2}
mkdir -p "$OUT"
[ -x "$BIN/lwm2m-gateway" ] && [ -x "$BIN/lwm2m-loadtest" ] || {
    echo "build first: cargo build --release --workspace" >&2
    exit 1
}

GW_PID=
stop_gateway() {
    if [ -n "$GW_PID" ]; then
        kill "$GW_PID" 2>/dev/null || true
        wait "$GW_PID" 2>/dev/null || true
        GW_PID=
    fi
}
trap stop_gateway EXIT

# start_gateway <extra flags...>: a fresh gateway on 127.0.0.1:5683 with its broker on 1883,
# keeping its state (the default configuration does) in a directory emptied first: no item
# inherits the devices of the one before.
start_gateway() {
    stop_gateway
    rm -rf "$OUT/state"
    local state=(--state-dir "$OUT/state")
    [ "${STATE:-on}" = off ] && state=(--state-dir "")
    [ -n "${SNAPSHOT_INTERVAL:-}" ] && state+=(--state-snapshot-interval "$SNAPSHOT_INTERVAL")
    [ -n "${JOURNAL_INTERVAL:-}" ] && state+=(--state-journal-interval "$JOURNAL_INTERVAL")
    "$BIN/lwm2m-gateway" --listen 127.0.0.1:5683 --stats-interval 0 --log-level warn \
        --workers "$WORKERS" "${state[@]}" "$@" >"$OUT/gateway.log" 2>&1 &
    GW_PID=$!
    # Wait for the embedded broker to listen; the UDP sockets and threads follow within
    # milliseconds, which the half second after covers.
    for _ in $(seq 100); do
        ss -ltn 2>/dev/null | grep -q '127.0.0.1:1883 ' && break
        sleep 0.1
    done
    sleep 0.5
    # Another gateway holding the ports would take the load and the figures: stop here.
    if ! kill -0 "$GW_PID" 2>/dev/null; then
        echo "the gateway did not start:" >&2
        cat "$OUT/gateway.log" >&2
        exit 1
    fi
}

# want <name>: whether ITEMS selects the item.
want() {
    [ -z "${ITEMS:-}" ] || [[ " $ITEMS " == *" $1 "* ]]
}

# run <name> <harness args...>: one harness run against the current gateway.
run() {
    local name=$1
    shift
    echo "== $name: lwm2m-loadtest $*" >&2
    local scraper=
    if [ "${SCRAPE:-0}" = 1 ]; then
        : >"$OUT/$name.scrape"
        (while sleep 1; do
            if curl -sf -o /dev/null http://127.0.0.1:8080/metrics; then
                echo ok
            else
                echo failed
            fi >>"$OUT/$name.scrape"
        done) &
        scraper=$!
    fi
    "$BIN/lwm2m-loadtest" "$@" --gateway-pid "$GW_PID" --json "$OUT/$name.json" \
        >"$OUT/$name.txt" 2>&1 || echo "   (harness exited non-zero, see $OUT/$name.txt)" >&2
    if [ -n "$scraper" ]; then
        kill "$scraper" 2>/dev/null || true
        wait "$scraper" 2>/dev/null || true
        echo "   /metrics scraped $(grep -c '^ok' "$OUT/$name.scrape" || true) times, $(grep -c '^failed' "$OUT/$name.scrape" || true) failed" >&2
    fi
    grep -v '^\s*\[' "$OUT/$name.txt" | sed 's/^/   /' >&2
}

DTLS_N=${DTLS_N:-100000}
DTLS_PREFIX=dtls-
CREDENTIALS="$OUT/credentials.toml"
# notify runs 10000 devices over DTLS too: the file covers both.
"$BIN/lwm2m-loadtest" --write-credentials "$CREDENTIALS" --prefix "$DTLS_PREFIX" \
    -n $(( DTLS_N > 10000 ? DTLS_N : 10000 )) >&2
DTLS_GATEWAY=(--dtls-listen 127.0.0.1:5684 --credentials "$CREDENTIALS" --plain-requires-credential false)
DTLS_HARNESS=(--dtls --dtls-gateway 127.0.0.1:5684 --prefix "$DTLS_PREFIX")

start_gateway
run baseline baseline --rate 0 --duration 8
CEILING=$(python3 -c "import json;print(int(json.load(open('$OUT/baseline.json'))['published_per_s']))")
NOTIFY_RATE=$(( CEILING * 8 / 10 ))
echo "baseline ceiling ${CEILING}/s -> notify at ${NOTIFY_RATE}/s" >&2

if want notify; then
    start_gateway
    run notify notify -n 10000 --rate "$NOTIFY_RATE" --duration 10
fi
# The same over DTLS: every notification sealed by the device and opened by the gateway.
if want dtls_notify; then
    start_gateway "${DTLS_GATEWAY[@]}"
    run dtls_notify notify "${DTLS_HARNESS[@]}" -n 10000 --rate "$NOTIFY_RATE" --duration 10
fi
# Both again, offered more than the machine delivers (SATURATE_RATE, default 300000/s): the
# capacity ratio, where the rate is the machine's and not the harness's choice.
if want saturated; then
    start_gateway "${DTLS_GATEWAY[@]}"
    run notify_saturated notify -n 10000 --rate "${SATURATE_RATE:-300000}" --duration 8
    start_gateway "${DTLS_GATEWAY[@]}"
    run dtls_notify_saturated notify "${DTLS_HARNESS[@]}" -n 10000 --rate "${SATURATE_RATE:-300000}" --duration 8
fi
# A fleet of known size: the gateway makes room up front (see README, expected_devices).
if want register; then
    start_gateway --expected-devices 100000
    run register register -n 100000 --rate 31000
fi
if want register_auto_observe; then
    start_gateway --expected-devices 100000 --auto-observe /3/0,/3303/0
    run register_auto_observe register -n 100000 --rate 15500
fi
# DTLS_N handshakes, then registrations inside the sessions, as fast as the window allows.
if want dtls_register; then
    start_gateway --expected-devices "$DTLS_N" "${DTLS_GATEWAY[@]}"
    run dtls_register register "${DTLS_HARNESS[@]}" -n "$DTLS_N" --timeout 600
fi
if want command; then
    start_gateway
    run command command -n 10000 --rate 10000 --duration 10
fi
for w in 1 2; do
    want scaling || continue
    WORKERS=$w start_gateway
    run "scaling_notify_w$w" notify -n 10000 --rate "$NOTIFY_RATE" --duration 8
    WORKERS=$w start_gateway
    run "scaling_register_w$w" register -n 100000
done
# DTLS_N idle DTLS devices; nothing reserved up front, like the memory item: the growth is what
# a device with its session costs.
if want dtls_memory; then
    start_gateway "${DTLS_GATEWAY[@]}"
    run dtls_memory register "${DTLS_HARNESS[@]}" -n "$DTLS_N" --timeout 900 \
        --settle "${DTLS_SETTLE:-${MEMORY_SETTLE:-250}}"
fi
if [ "${MEMORY:-0}" = 1 ]; then
    # Default configuration (nothing reserved up front): the growth is what devices cost.
    start_gateway
    run memory register -n 1000000 --rate 30000 --timeout 900 --settle "${MEMORY_SETTLE:-250}"
fi
stop_gateway

python3 - "$OUT" "$CEILING" <<'EOF'
import json, os, sys
out, ceiling = sys.argv[1], float(sys.argv[2])
def load(n):
    p = os.path.join(out, n + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
def fmt(v, f="{:.1f}"):
    return "-" if v is None else f.format(v)
rows = []
def row(item, measured, target, ok):
    rows.append((item, measured, target, "met" if ok else "NOT met"))
n = load("notify")
if n:
    rate = n.get("received_per_s")
    cpu = n.get("gateway_cpu_us_per_notification")
    own = None
    th = n.get("gateway_threads") or {}
    if th:
        own = sum((th[r].get("us_per_message") or 0) for r in th if r != "embedded broker")
    row("notify rate vs baseline", f"{fmt(rate,'{:.0f}')}/s = {rate/ceiling:.2f} x {ceiling:.0f}/s, {n.get('delivered_percent',0):.2f}% delivered",
        ">= 0.80 x, >= 99.9%", rate >= 0.8 * ceiling * 0.99 and n.get("delivered_percent", 0) >= 99.9)
    row("CPU per notification, gateway threads", f"{fmt(own)} us (event loop, workers, MQTT client)", "<= 10 us", (own or 1e9) <= 10)
    row("CPU per notification, whole process", f"{fmt(cpu)} us (the above + the embedded broker's threads)", "<= 10 us", (cpu or 1e9) <= 10)
for name, target_rate, label in (("register", 30000, "register 100k"), ("register_auto_observe", 15000, "register 100k, auto-observe 2 objects")):
    r = load(name)
    if r:
        rate = r.get("registrations_per_s") or 0
        e2e = r.get("end_to_end_per_s") or 0
        p99 = (r.get("coap_latency") or {}).get("p99_us", 0) / 1000
        ok = r.get("registered") == 100000 and r.get("mqtt_events") == 100000
        row(label, f"{rate:.0f}/s (events {e2e:.0f}/s), 2.01 p99 {p99:.2f} ms",
            f">= {target_rate}/s, p99 <= 5 ms", ok and rate >= target_rate * 0.99 and e2e >= target_rate * 0.99 and p99 <= 5)
c = load("command")
if c:
    p99 = (c.get("command_rtt") or {}).get("p99_us", 0) / 1000
    row("command read 10k/s, 10k devices", f"{c.get('commands_answered_per_s',0):.0f}/s, RTT p99 {p99:.2f} ms, {c.get('commands_unanswered')} unanswered",
        "p99 <= 2 ms", p99 <= 2 and c.get("commands_unanswered") == 0)
d = load("dtls_notify")
if n and d:
    pr, dr = n.get("received_per_s") or 0, d.get("received_per_s") or 0
    pc, dc = n.get("gateway_cpu_us_per_notification"), d.get("gateway_cpu_us_per_notification")
    cpu = f", gateway CPU {fmt(dc)} vs {fmt(pc)} us per notification" + (f" = {dc/pc:.2f} x" if pc and dc else "")
    row("dtls notify vs plain notify", f"{dr:.0f}/s vs {pr:.0f}/s = {dr/pr if pr else 0:.2f} x, {d.get('delivered_percent',0):.2f}% delivered{cpu}",
        ">= 0.60 x plain (same -n/--rate/--duration), >= 99.9% delivered", pr > 0 and dr >= 0.6 * pr and d.get("delivered_percent", 0) >= 99.9)
p, d = load("notify_saturated"), load("dtls_notify_saturated")
if p and d:
    pr, dr = p.get("received_per_s") or 0, d.get("received_per_s") or 0
    pc, dc = p.get("gateway_cpu_us_per_notification"), d.get("gateway_cpu_us_per_notification")
    row("saturated notify, dtls vs plain", f"{dr:.0f}/s vs {pr:.0f}/s = {dr/pr if pr else 0:.2f} x, gateway CPU {fmt(dc)} vs {fmt(pc)} us per notification",
        "reported (offered above capacity)", True)
d = load("dtls_register")
if d:
    t = d.get("dtls") or {}
    n_dev = d.get("devices")
    hp99 = (t.get("handshake_latency") or {}).get("p99_us", 0) / 1000
    p99 = (d.get("coap_latency") or {}).get("p99_us", 0) / 1000
    ok = d.get("registered") == n_dev and d.get("mqtt_events") == n_dev and t.get("handshake_failures") == 0
    row(f"dtls register {n_dev}", f"{fmt(t.get('handshakes_per_s'),'{:.0f}')} handshakes/s over {fmt(t.get('handshake_seconds'),'{:.2f}')} s, handshake p99 {hp99:.2f} ms; "
        f"{d.get('registrations_per_s',0):.0f} registrations/s (events {d.get('end_to_end_per_s',0):.0f}/s), 2.01 p99 {p99:.2f} ms, "
        f"{t.get('handshake_failures')} handshake failures, {t.get('handshake_retransmits')} flights resent",
        ">= 5000 handshakes/s; all registered, no failures", ok and (t.get("handshakes_per_s") or 0) >= 5000)
d = load("dtls_memory")
if d:
    idle = d.get("gateway_rss_bytes_per_device_idle")
    grow = d.get("gateway_rss_bytes_per_device")
    m = load("memory")
    plain = f"; plain, 1M devices: {fmt(m.get('gateway_rss_bytes_per_device_idle'),'{:.0f}')} B idle" if m else ""
    # Growth from the RSS before the storm, when the credentials are already loaded: heap the
    # gateway freed after parsing the file (and kept) can hold part of the storm, so the absolute
    # figures are shown too.
    rss = f"; RSS {fmt(d.get('gateway_rss_kb_start'),'{:.0f}')} kB before the storm (credentials loaded), {fmt(d.get('gateway_rss_kb_end'),'{:.0f}')} kB after"
    row(f"memory, {d.get('devices')} idle DTLS devices", f"{fmt(idle,'{:.0f}')} B/device idle ({fmt(grow,'{:.0f}')} right after the storm){rss}{plain}",
        "<= 4096 B/device idle", d.get("registered") == d.get("devices") and (idle or 1e9) <= 4096)
m = load("memory")
if m:
    idle = m.get("gateway_rss_bytes_per_device_idle")
    grow = m.get("gateway_rss_bytes_per_device")
    row("memory, 1M idle devices", f"{fmt(idle,'{:.0f}')} B/device idle ({fmt(grow,'{:.0f}')} right after the storm)", "<= 1024 B", (idle or 1e9) <= 1024)
for w in (1, 2):
    s = load(f"scaling_notify_w{w}")
    g = load(f"scaling_register_w{w}")
    parts = []
    if s:
        th = s.get("gateway_threads") or {}
        el = (th.get("event loop") or {}).get("share_percent")
        parts.append(f"notify {s.get('received_per_s',0):.0f}/s {s.get('gateway_cpu_us_per_notification') or 0:.1f} us, event loop {fmt(el,'{:.0f}')}% of gateway CPU")
    if g:
        th = g.get("gateway_threads") or {}
        el = (th.get("event loop") or {}).get("share_percent")
        parts.append(f"register {g.get('registrations_per_s',0):.0f}/s, event loop {fmt(el,'{:.0f}')}%")
    if parts:
        rows.append((f"scaling, --workers {w}", "; ".join(parts), "reported", ""))
w = max(len(r[0]) for r in rows)
print()
for item, measured, target, ok in rows:
    print(f"{item:<{w}}  {measured}  [{target}] {ok}")
EOF
