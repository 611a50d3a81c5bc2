#!/bin/sh
# A Troupe process agent in POSIX shell and sed: an echo agent. Protocol: docs/agent-protocol.md.
#
# It parses lines by their shape instead of as JSON, so it relies on how Troupe writes them:
# - a task line is exactly {"type":"task","id":"<id>","attempt":<n>,"payload":<json>}
#   (keys in that order, no spaces), so the payload is everything after "payload": up to
#   the line's final "}"; message lines are taken to be laid out the same way, with
#   "from" (null or a string) in place of "attempt";
# - on every other line "type" is the first or the last key;
# - ids contain no quotes.
#
# Heartbeats come from a background loop with whole seconds (sleep takes no less), so
# spawn this agent with heartbeatMs of at least 1000.

interval=$((${TROUPE_HEARTBEAT_MS:-5000} / 1000))
[ "$interval" -ge 1 ] || interval=1

printf '{"type":"ready","name":"process_agent.sh"}\n'

# The loop's sleep does not hold stdout, so once the loop is killed the agent's output ends
# with the script. A line longer than PIPE_BUF (4 KiB) is not written atomically and could
# in principle be split by a heartbeat; an agent with large results should write all its
# lines from one place, as process_agent.py does.
while sleep "$interval" >/dev/null; do printf '{"type":"heartbeat"}\n'; done &
beat=$!
trap 'kill "$beat" 2>/dev/null' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

kind_of() { # kind_of LINE: the line's top-level "type"
    printf '%s\n' "$1" |
        sed -n -e 's/^{"type":"\([a-z_]*\)".*/\1/p' -e t -e 's/.*,"type":"\([a-z_]*\)"}$/\1/p'
}

id_of() { # id_of LINE: the value of the line's first "id" key
    # The first s cuts the line after the leftmost "id":"<id>, so the greedy .* of the
    # second can only stop at that one.
    printf '%s\n' "$1" | sed -n -e 's/"id":"\([^"]*\)".*/"id":"\1/' -e 's/.*"id":"//p'
}

payload_of() { # payload_of LINE: a task's or message's payload (empty if the line differs)
    # "type", "id", then "attempt" (a number) or "from" (null or a string), then "payload".
    printf '%s\n' "$1" |
        sed -n 's/^{"type":"[a-z]*","id":"[^"]*","[a-z]*":[^,"]*\("[^"]*"\)\{0,1\},"payload":\(.*\)}$/\2/p'
}

while IFS= read -r line; do
    case $(kind_of "$line") in
    task)
        id=$(id_of "$line")
        payload=$(payload_of "$line")
        if [ -n "$payload" ]; then
            printf '{"type":"result","id":"%s","ok":true,"value":%s}\n' "$id" "$payload"
        else
            printf '{"type":"result","id":"%s","ok":false,"error":"cannot read this task line"}\n' "$id"
        fi
        ;;
    checkpoint | restore)
        printf '{"type":"state","id":"%s","state":{"shell":true}}\n' "$(id_of "$line")"
        ;;
    message)
        payload=$(payload_of "$line")
        printf '{"type":"reply","id":"%s","payload":%s}\n' "$(id_of "$line")" "${payload:-null}"
        ;;
    shutdown)
        exit 0
        ;;
    esac
done
