#!/bin/sh
# A Troupe process agent in POSIX shell: an echo agent. Protocol: docs/agent-protocol.md.
#
# It relies on Troupe writing task lines with "payload" last, exactly as
#   {"type":"task","id":"<id>","attempt":1,"payload":<json>}
# so the payload is everything after "payload": up to the line's final "}".

interval_ms=${TROUPE_HEARTBEAT_MS:-5000}
interval=$((interval_ms / 1000))
[ "$interval" -ge 1 ] || interval=1

# Heartbeats from a background loop; lines this short are written atomically to the pipe.
( while sleep "$interval"; do printf '{"type":"heartbeat"}\n'; done ) &
beat=$!
trap 'kill "$beat" 2>/dev/null' EXIT INT TERM

printf '{"type":"ready","name":"process_agent.sh"}\n'

field() { # field NAME LINE: the string value of "NAME":"..."
    printf '%s\n' "$2" | sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"
}

while IFS= read -r line; do
    case "$line" in
    *'"type":"task"'*)
        id=$(field id "$line")
        payload=$(printf '%s\n' "$line" | sed 's/.*"payload"://; s/}$//')
        printf '{"type":"result","id":"%s","ok":true,"value":%s}\n' "$id" "$payload"
        ;;
    *'"type":"checkpoint"'* | *'"type":"restore"'*)
        printf '{"type":"state","id":"%s","state":{"shell":true}}\n' "$(field id "$line")"
        ;;
    *'"type":"message"'*)
        payload=$(printf '%s\n' "$line" | sed 's/.*"payload"://; s/}$//')
        printf '{"type":"reply","id":"%s","payload":%s}\n' "$(field id "$line")" "$payload"
        ;;
    *'"type":"shutdown"'*)
        exit 0
        ;;
    esac
done
