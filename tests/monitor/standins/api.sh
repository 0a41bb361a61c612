#!/bin/sh
# Stand-in for the OpenSearch and OpenSearch Dashboards REST APIs (one HTTP request per run,
# spawned by `nc -ll -e`). It answers exactly the calls bootstrap.sh makes, keeps just enough
# state to make re-runs take the "already exists" branches, logs every request, and answers
# 404 to anything else so an unexpected call fails the bootstrap loudly.
#
# Fault switch: if $STATE/fail exists, template PUTs answer 500 (a failing bootstrap).
STATE=${STANDIN_STATE:-/tmp/standin}
mkdir -p "$STATE/alias" "$STATE/ds"

read -r method target _proto
len=0
while IFS= read -r line; do
    line=$(printf '%s' "$line" | tr -d '\r')
    [ -z "$line" ] && break
    case "$line" in [Cc]ontent-[Ll]ength:*) len=${line#*: } ;; esac
done
[ "$len" -gt 0 ] 2>/dev/null && head -c "$len" >/dev/null
path=${target%%\?*}
echo "$method $path" >>"$STATE/requests.log"

reply() { # status body
    printf 'HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
        "$1" "${#2}" "$2"
    exit 0
}
ok='{"acknowledged":true}'
missing='{"error":"not found","status":404}'

case "$method $path" in
    "GET /_cluster/health") reply "200 OK" '{"cluster_name":"standin","status":"green"}' ;;
    "GET /api/status") reply "200 OK" '{"status":{"overall":{"state":"green"}}}' ;;
    "PUT /_component_template/"* | "PUT /_index_template/"*)
        [ -e "$STATE/fail" ] && reply "500 Internal Server Error" '{"error":"stand-in fault injected"}'
        reply "200 OK" "$ok" ;;
    "GET /_plugins/_ism/policies/"*)
        [ -e "$STATE/policy" ] || reply "404 Not Found" "$missing"
        reply "200 OK" '{"_id":"clawker-retention","_version":1,"_seq_no":7,"_primary_term":1,"policy":{}}' ;;
    "PUT /_plugins/_ism/policies/"*) touch "$STATE/policy"; reply "201 Created" '{"_id":"clawker-retention"}' ;;
    "POST /_plugins/_ism/add/"* | "POST /_plugins/_ism/change_policy/"*)
        reply "200 OK" '{"updated_indices":1,"failures":false,"failed_indices":[]}' ;;
    "GET /_alias/"*)
        [ -e "$STATE/alias/${path#/_alias/}" ] || reply "404 Not Found" "$missing"
        reply "200 OK" '{}' ;;
    "HEAD /"*) reply "404 Not Found" "" ;;
    "GET /_plugins/_query/_datasources/"*)
        [ -e "$STATE/ds/${path##*/}" ] || reply "404 Not Found" "$missing"
        reply "200 OK" '{"name":"clawker_prometheus","connector":"PROMETHEUS"}' ;;
    "POST /_plugins/_query/_datasources") touch "$STATE/ds/clawker_prometheus"; reply "201 Created" '"Created DataSource with name clawker_prometheus"' ;;
    "PUT /_plugins/_query/_datasources") reply "200 OK" '"Updated DataSource with name clawker_prometheus"' ;;
    "POST /api/workspaces/_list")
        [ -e "$STATE/workspace" ] || reply "200 OK" '{"success":true,"result":{"page":1,"per_page":100,"total":0,"workspaces":[]}}'
        reply "200 OK" '{"success":true,"result":{"page":1,"per_page":100,"total":1,"workspaces":[{"name":"Clawker","features":["use-case-all"],"id":"standinws1"}]}}' ;;
    "POST /api/workspaces") touch "$STATE/workspace"; reply "200 OK" '{"success":true,"result":{"id":"standinws1"}}' ;;
    "POST /w/standinws1/api/saved_objects/_import") reply "200 OK" '{"success":true,"successCount":31}' ;;
    "PUT /"*-000001) name=${path#/}; touch "$STATE/alias/${name%-000001}"; reply "200 OK" '{"acknowledged":true,"shards_acknowledged":true}' ;;
esac
reply "404 Not Found" '{"error":"stand-in: unhandled request","status":404}'
