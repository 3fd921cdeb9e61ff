#!/usr/bin/env bash
# The hostile-traffic soak (issue 12): a fleet living its normal life (`mixed`: notifications,
# commands, churn) while 1,000,000 garbage datagrams and an MQTT garbage flood hit the gateway.
# Passes when the good fleet lost no notification and no command went unanswered; reports the
# gateway's RSS (start of the garbage, peak, end) and its drop counters.
#
# Runs twice: with the default [limits] (sources over their error rate get blocked) and with
# every limit off (each garbage datagram handled in full), so both paths are shown bounded.
# The broker is Mosquitto on a port of its own, so the RSS is the gateway's alone (the embedded
# broker would keep the flood in its own buffers).
#
#   cargo build --release --workspace
#   loadtest/soak.sh                       # about 3 minutes
#
# Environment: OUT (default /tmp/lwm2m-soak), DEVICES (10000), RATE (notifications/s, 5000),
# DURATION (s, 60), GARBAGE (datagrams, 1000000), GARBAGE_RATE (/s, 20000), MQTT_GARBAGE
# (commands, 100000), MQTT_GARBAGE_RATE (/s, 2000), VARIANTS ("limits nolimits").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
OUT=${OUT:-/tmp/lwm2m-soak}
MQTT_PORT=${MQTT_PORT:-1884}
mkdir -p "$OUT"
[ -x "$BIN/lwm2m-gateway" ] && [ -x "$BIN/lwm2m-loadtest" ] || {
    echo "build first: cargo build --release --workspace" >&2
    exit 1
}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { echo "needs mosquitto (apt-get install mosquitto)" >&2; exit 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cat >"$OUT/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
EOF
"$MOSQUITTO" -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
PIDS+=($!)
sleep 0.5

status=0
for variant in ${VARIANTS:-limits nolimits}; do
    extra=()
    if [ "$variant" = nolimits ]; then
        extra=(--limits-error-rate 0 --limits-register-rate 0)
    fi
    rm -rf "$OUT/state"
    "$BIN/lwm2m-gateway" --listen 127.0.0.1:5683 --dtls-listen 127.0.0.1:5684 \
        --mqtt-url "mqtt://127.0.0.1:$MQTT_PORT" --workers 2 --state-dir "$OUT/state" --http-listen off \
        --stats-interval 5 --log-level info "${extra[@]}" >"$OUT/gateway-$variant.log" 2>&1 &
    GW=$!
    PIDS+=($GW)
    sleep 1
    if ! kill -0 "$GW" 2>/dev/null; then
        echo "the gateway did not start:" >&2
        cat "$OUT/gateway-$variant.log" >&2
        exit 1
    fi
    echo "== soak ($variant): mixed, ${DEVICES:-10000} devices, ${GARBAGE:-1000000} garbage datagrams, ${MQTT_GARBAGE:-100000} garbage commands" >&2
    "$BIN/lwm2m-loadtest" mixed --mqtt "127.0.0.1:$MQTT_PORT" -n "${DEVICES:-10000}" \
        --rate "${RATE:-5000}" --command-rate 200 --churn 10 --duration "${DURATION:-60}" \
        --garbage "${GARBAGE:-1000000}" --garbage-rate "${GARBAGE_RATE:-20000}" \
        --mqtt-garbage "${MQTT_GARBAGE:-100000}" --mqtt-garbage-rate "${MQTT_GARBAGE_RATE:-2000}" \
        --gateway-pid "$GW" --json "$OUT/soak-$variant.json" --timeout 600 \
        >"$OUT/soak-$variant.txt" 2>&1 || echo "   (harness exited non-zero)" >&2
    sleep 6 # one more stats line after the run
    rss_end=$(awk '/VmRSS/ {print $2}' "/proc/$GW/status")
    kill -TERM "$GW"
    wait "$GW" || true
    grep -v '^\s*\[' "$OUT/soak-$variant.txt" | sed 's/^/   /' >&2
    python3 - "$OUT/soak-$variant.json" "$OUT/gateway-$variant.log" "$rss_end" "$variant" <<'EOF' || status=1
import json, re, sys
r = json.load(open(sys.argv[1]))
stats = [l for l in open(sys.argv[2]) if "stats:" in l][-1]
counters = dict(re.findall(r"(\w+)=(\d+)", stats))
h = r["hostile"]
lost = r["notifications_sent"] - r["notifications_received"]
unanswered = r["commands_unanswered"]
print(f"   {sys.argv[4]}: notifications lost {lost}, commands unanswered {unanswered}, "
      f"command errors {r['commands_error']}; garbage {h['datagrams_sent']} datagrams, "
      f"{h['mqtt_sent']} MQTT ({h['mqtt_answers']} answered); gateway RSS "
      f"{h['gateway_rss_kb_start']//1024} -> peak {h['gateway_rss_kb_peak']//1024} -> "
      f"{int(sys.argv[3])//1024} MiB; dropped: malformed {counters.get('malformed')}, blocked "
      f"{counters.get('blocked')}, oversized {counters.get('oversized')}, sources blocked "
      f"{counters.get('sources_blocked')}, registrations {counters.get('registrations')}", file=sys.stderr)
sys.exit(0 if lost == 0 and unanswered == 0 and r["commands_error"] == 0 else 1)
EOF
done
exit $status
