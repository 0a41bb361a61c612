#!/bin/bash
# Builds the stand-in images the docker tests run, tagged exactly as compose.yaml's real image
# references (in `image_refs: tag` mode), because no image registry is reachable here.
#
#   opensearchproject/opensearch:2.19.3             fake REST API (api.sh) on :9200
#   opensearchproject/opensearch-dashboards:2.19.3  fake REST API (api.sh) on :5601
#   prom/prometheus:v3.5.0                          REAL Prometheus: Debian's 2.42 binary
#   otel/opentelemetry-collector-contrib:0.144.0    checks config + certs readable, idles
#   curlimages/curl:8.11.1                          busybox sh + Debian's real curl: runs the
#                                                   REAL bootstrap.sh against the fakes
#
# Each is `docker import`ed from a busybox-static rootfs. Idempotent: an image whose
# dev.clawker.standin label matches the hash of this directory is not rebuilt.
# Needs: docker (DOCKER_HOST), busybox-static, curl, prometheus (Debian packages).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=$(cat "$HERE"/*.sh /usr/bin/prometheus /bin/busybox | sha256sum | cut -c1-16)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

APPLETS="sh ash cat cp echo env grep head id kill ls mkdir mktemp mv nc printf rm sed sleep \
    sort tail tee touch tr true false wc wget date basename dirname cut test [ expr seq uname"

base_rootfs() { # dir
    local root=$1 lib
    mkdir -p "$root"/{bin,usr/bin,lib,lib64,tmp,etc,standin}
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $APPLETS; do ln -sf busybox "$root/bin/$applet"; done
    # Real curl with its shared libraries: healthchecks and bootstrap.sh call curl.
    cp /usr/bin/curl "$root/usr/bin/curl"
    for lib in $(ldd /usr/bin/curl | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    cp "$HERE"/*.sh "$root/standin/"
}

up_to_date() { # ref
    [ "$(docker image inspect -f '{{ index .Config.Labels "dev.clawker.standin" }}' "$1" \
        2>/dev/null || true)" = "$VERSION" ]
}

import() { # dir ref change...
    local root=$1 ref=$2
    shift 2
    local changes=(--change "LABEL dev.clawker.standin=$VERSION")
    for c in "$@"; do changes+=(--change "$c"); done
    tar -C "$root" -c . | docker import "${changes[@]}" - "$ref" >/dev/null
    echo "built stand-in $ref"
}

build() { # ref builder
    local ref=$1 builder=$2
    if up_to_date "$ref"; then echo "stand-in $ref up to date"; return; fi
    local root="$WORK/${ref//[\/:]/_}"
    base_rootfs "$root"
    "$builder" "$root" "$ref"
}

opensearch() {
    mkdir -p "$1/usr/share/opensearch/data"
    import "$1" "$2" 'ENTRYPOINT ["/standin/serve.sh"]' \
        'ENV STANDIN_NAME=opensearch STANDIN_PORT=9200 STANDIN_STATE=/usr/share/opensearch/data/standin'
}

dashboards() {
    mkdir -p "$1/usr/share/opensearch-dashboards/config"
    import "$1" "$2" 'ENTRYPOINT ["/standin/serve.sh"]' \
        'ENV STANDIN_NAME=opensearch-dashboards STANDIN_PORT=5601 STANDIN_STATE=/tmp/standin'
}

prometheus() {
    cp /usr/bin/prometheus "$1/bin/prometheus"
    mkdir -p "$1/prometheus" "$1/etc/prometheus"
    import "$1" "$2" 'ENTRYPOINT ["/bin/prometheus"]' \
        'CMD ["--config.file=/etc/prometheus/prometheus.yml","--storage.tsdb.path=/prometheus"]'
}

collector() {
    cp "$HERE/otelcol.sh" "$1/otelcol-contrib"
    import "$1" "$2" 'ENTRYPOINT ["/otelcol-contrib"]' \
        'CMD ["--config=/etc/otelcol-contrib/config.yaml"]'
}

curl_image() {
    import "$1" "$2" 'ENTRYPOINT ["/usr/bin/curl"]'
}

build opensearchproject/opensearch:2.19.3 opensearch
build opensearchproject/opensearch-dashboards:2.19.3 dashboards
build prom/prometheus:v3.5.0 prometheus
build otel/opentelemetry-collector-contrib:0.144.0 collector
build curlimages/curl:8.11.1 curl_image
