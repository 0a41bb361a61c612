#!/bin/sh
# Entrypoint of the OpenSearch / Dashboards stand-ins: serve api.sh on $STANDIN_PORT.
# State lives where the real service keeps its data, so `down --volumes` wipes it too.
mkdir -p "$STANDIN_STATE"
echo "stand-in $STANDIN_NAME listening on :$STANDIN_PORT (state in $STANDIN_STATE)"
nc -ll -p "$STANDIN_PORT" -e /standin/api.sh &
server=$!
# PID 1 ignores SIGTERM unless it handles it: stop promptly on `docker stop`.
trap 'kill "$server" 2>/dev/null; exit 0' TERM INT
wait "$server"
