#!/bin/sh
# clawker monitor bootstrap: preconfigures OpenSearch and OpenSearch Dashboards, then exits.
#
# Runs once per `monitor up`, after OpenSearch, Dashboards and Prometheus are healthy and before
# the collector starts. Every request body is a file next to this script (rendered by
# `monitor init`/`up`); this script only decides order, waits and error handling.
#
# Rules: every wait is bounded by BOOTSTRAP_TIMEOUT_S; any unexpected answer stops the run with
# a non-zero exit and the response body in the log (so the collector never starts against a
# half-configured cluster); every step is safe to run again.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
OS=${OPENSEARCH_URL:-http://opensearch-node:9200}
OSD=${DASHBOARDS_URL:-http://opensearch-dashboards:5601}
PROM=${PROMETHEUS_URL:-http://prometheus:9090}
TIMEOUT=${BOOTSTRAP_TIMEOUT_S:-300}
DEADLINE=$(( $(date +%s) + TIMEOUT ))
POLICY=clawker-retention
WORKSPACE=Clawker
TMP=$(mktemp -d)
RESP="$TMP/response"
trap 'rm -rf "$TMP"' EXIT

log() { printf '%s bootstrap: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() {
    log "FAILED: $*"
    log "the collector stays stopped; fix the cause, then run: monitor down --volumes && monitor up"
    exit 1
}

# call METHOD URL [curl args...]: prints the HTTP status, leaves the body in $RESP.
call() {
    method=$1 url=$2
    shift 2
    remaining=$(( DEADLINE - $(date +%s) ))
    [ "$remaining" -gt 0 ] || fail "deadline of ${TIMEOUT}s passed before $method $url"
    [ "$remaining" -lt 60 ] || remaining=60
    # 'Expect:' stops curl from waiting for a 100-continue on large bodies.
    curl -sS -o "$RESP" -w '%{http_code}' --max-time "$remaining" -H 'Expect:' \
        -X "$method" "$@" "$url" 2>"$TMP/curl.err" || true
}

# exists URL: 0 when a HEAD request answers 200 (curl -X HEAD would wait for a body).
exists() {
    code=$(curl -sS -o /dev/null -I -w '%{http_code}' --max-time 30 "$1" 2>/dev/null) || true
    [ "$code" = 200 ]
}

expect_ok() { # what status
    case "$2" in
        2??) log "ok: $1" ;;
        *) log "response: $(head -c 2000 "$RESP" 2>/dev/null) $(cat "$TMP/curl.err" 2>/dev/null)"
           fail "$1 (HTTP $2)" ;;
    esac
}

json_put() { # what url file
    expect_ok "$1" "$(call PUT "$2" -H 'Content-Type: application/json' --data-binary "@$3")"
}

wait_for() { # name url
    while :; do
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$2" 2>/dev/null) || code=000
        if [ "$code" = 200 ]; then log "$1 is reachable"; return 0; fi
        [ "$(date +%s)" -lt "$DEADLINE" ] || fail "$1 not reachable at $2 within ${TIMEOUT}s (last HTTP $code)"
        sleep 2
    done
}

stem() { basename "$1" .json; }

wait_for OpenSearch "$OS/_cluster/health?wait_for_status=yellow&timeout=5s"
wait_for Prometheus "$PROM/-/ready"
wait_for "OpenSearch Dashboards" "$OSD/api/status"

# 1. Templates: component first (index templates are composed of it).
for f in "$HERE"/component-templates/*.json; do
    json_put "component template $(stem "$f")" "$OS/_component_template/$(stem "$f")" "$f"
done
for f in "$HERE"/index-templates/*.json; do
    json_put "index template $(stem "$f")" "$OS/_index_template/$(stem "$f")" "$f"
done

# 2. ISM retention. An existing policy can only be replaced with its sequence numbers.
code=$(call GET "$OS/_plugins/_ism/policies/$POLICY")
if [ "$code" = 200 ]; then
    seq=$(sed -n 's/.*"_seq_no":\([0-9]*\).*/\1/p' "$RESP")
    term=$(sed -n 's/.*"_primary_term":\([0-9]*\).*/\1/p' "$RESP")
    [ -n "$seq" ] && [ -n "$term" ] || fail "cannot read _seq_no/_primary_term of ISM policy $POLICY"
    json_put "ISM policy $POLICY (update)" \
        "$OS/_plugins/_ism/policies/$POLICY?if_seq_no=$seq&if_primary_term=$term" \
        "$HERE/ism/$POLICY.json"
else
    json_put "ISM policy $POLICY" "$OS/_plugins/_ism/policies/$POLICY" "$HERE/ism/$POLICY.json"
fi

# 3. Indices: the first backing index behind each write alias, created empty.
for f in "$HERE"/indices/*.json; do
    alias=$(stem "$f")
    code=$(call GET "$OS/_alias/$alias")
    if [ "$code" = 200 ]; then
        log "ok: index alias $alias exists"
        continue
    fi
    # A concrete index with the alias's name was made by dynamic mapping, before its template.
    if exists "$OS/$alias"; then fail "index $alias exists without its template mapping"; fi
    json_put "index $alias-000001 (write alias $alias)" "$OS/$alias-000001" "$f"
done
# Indices created by an earlier run keep the policy version they started with; move them on.
body='{"policy_id":"'"$POLICY"'"}'
for f in "$HERE"/indices/*.json; do
    alias=$(stem "$f")
    expect_ok "ISM attach $alias-*" "$(call POST "$OS/_plugins/_ism/add/$alias-*" \
        -H 'Content-Type: application/json' --data "$body")"
    expect_ok "ISM refresh $alias-*" "$(call POST "$OS/_plugins/_ism/change_policy/$alias-*" \
        -H 'Content-Type: application/json' --data "$body")"
done

# 4. The Prometheus direct-query datasource (SQL plugin). PUT updates, POST creates.
for f in "$HERE"/datasource/*.json; do
    name=$(stem "$f")
    code=$(call GET "$OS/_plugins/_query/_datasources/$name")
    if [ "$code" = 200 ]; then
        expect_ok "datasource $name (update)" "$(call PUT "$OS/_plugins/_query/_datasources" \
            -H 'Content-Type: application/json' --data-binary "@$f")"
    else
        expect_ok "datasource $name" "$(call POST "$OS/_plugins/_query/_datasources" \
            -H 'Content-Type: application/json' --data-binary "@$f")"
    fi
done

# 5. The Clawker workspace: find it by name, else create it.
osd() { call "$@" -H 'osd-xsrf: true'; }
code=$(osd POST "$OSD/api/workspaces/_list" -H 'Content-Type: application/json' \
    --data '{"search":"'"$WORKSPACE"'","searchFields":["name"],"perPage":100}')
expect_ok "list workspaces" "$code"
# No jq in the image: split objects apart and read the id next to the exact name.
ws_id=$(tr '{}' '\n\n' <"$RESP" | grep "\"name\":\"$WORKSPACE\"" \
    | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
if [ -z "$ws_id" ]; then
    code=$(osd POST "$OSD/api/workspaces" -H 'Content-Type: application/json' \
        --data-binary "@$HERE/workspace/clawker.json")
    expect_ok "create workspace $WORKSPACE" "$code"
    ws_id=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' "$RESP" | head -n 1)
    [ -n "$ws_id" ] || fail "workspace $WORKSPACE created but no id in: $(head -c 500 "$RESP")"
else
    log "ok: workspace $WORKSPACE exists ($ws_id)"
fi

# 6. Saved objects (index patterns, dashboards) into the workspace; overwrite keeps re-runs clean.
for f in "$HERE"/saved-objects/*.ndjson; do
    code=$(osd POST "$OSD/w/$ws_id/api/saved_objects/_import?overwrite=true" -F "file=@$f")
    expect_ok "import $(basename "$f") into workspace $WORKSPACE" "$code"
    grep -q '"success":true' "$RESP" || fail "import reported errors: $(head -c 2000 "$RESP")"
done

log "complete"
