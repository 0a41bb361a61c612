"""Rendering: every generated file parses, and carries the contracts the issue names."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from conftest import StackEnv, in_ci, require

from monitor import bootstrap_assets, certs, collector, dashboards, images, indices, render
from monitor import services as svc
from monitor.settings import Monitoring
from netlogger import trusted_lane
from netlogger.config.model import OtlpSink
from netlogger.sinks.otlp import settings as otlp_settings
from netlogger.sinks.otlp.settings import Tls

REPO = Path(__file__).resolve().parents[2]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture
def rendered(stack_env: StackEnv) -> StackEnv:
    result = stack_env.run("init")
    assert result.exit_code == 0, result.output
    return stack_env


def test_every_generated_file_parses(rendered: StackEnv) -> None:
    data = rendered.data_dir
    for name in (
        "compose.yaml",
        "otel-config.yaml",
        "prometheus.yaml",
        "opensearch_dashboards.yml",
    ):
        assert isinstance(_load(data / name), dict), name
    bodies = list((data / "bootstrap").rglob("*.json"))
    assert len(bodies) >= 17
    for body in bodies:
        json.loads(body.read_text())
    for line in (data / "bootstrap/saved-objects/clawker.ndjson").read_text().splitlines():
        json.loads(line)
    check = subprocess.run(["sh", "-n", str(data / "bootstrap/bootstrap.sh")], check=False)
    assert check.returncode == 0


# --- compose.yaml ---------------------------------------------------------------------------


def test_compose_images_pinned_by_tag_and_digest(tmp_path: Path) -> None:
    mon = Monitoring()
    render.materialize(mon, tmp_path, render.Mode.INIT)
    compose = _load(tmp_path / "compose.yaml")
    refs = {s["image"] for s in compose["services"].values()}
    assert refs == {image.ref("digest") for image in images.ALL}
    for ref in refs:
        assert re.fullmatch(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}", ref), ref


def test_compose_tag_mode_for_stand_ins(rendered: StackEnv) -> None:
    compose = _load(rendered.data_dir / "compose.yaml")
    refs = {s["image"] for s in compose["services"].values()}
    assert refs == {image.ref("tag") for image in images.ALL}
    assert not any("@sha256" in r for r in refs)


def test_image_refs_env_overrides_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor import settings

    monkeypatch.setenv(settings.IMAGE_REFS_ENV, "tag")
    loaded = settings.load(tmp_path / "absent.yaml")
    assert loaded.monitoring.image_refs == "tag"


def test_compose_ports_from_settings_on_loopback(rendered: StackEnv) -> None:
    compose = _load(rendered.data_dir / "compose.yaml")
    published = {}
    for name, service in compose["services"].items():
        for spec in service.get("ports", []):
            host_ip, host_port, container_port = spec.split(":")
            assert host_ip == "127.0.0.1", (name, spec)
            published[int(host_port)] = (name, int(container_port))
    s = rendered.settings
    assert published[s["otel_collector_port"]] == (svc.OTEL_COLLECTOR, 4318)
    assert published[s["otel_grpc_port"]] == (svc.OTEL_COLLECTOR, 4317)
    assert published[s["otel_mtls_port"]] == (svc.OTEL_COLLECTOR, trusted_lane.PORT)
    assert published[s["prometheus_metrics_port"]] == (svc.OTEL_COLLECTOR, 8889)
    assert published[s["opensearch_port"]] == (svc.OPENSEARCH, 9200)
    assert published[s["opensearch_dashboards_port"]] == (svc.DASHBOARDS, 5601)
    assert published[s["prometheus_port"]] == (svc.PROMETHEUS, 9090)


def test_compose_labels_volumes_network_healthchecks(rendered: StackEnv) -> None:
    compose = _load(rendered.data_dir / "compose.yaml")
    services = compose["services"]
    assert set(services) == set(svc.ALL_SERVICES)
    for name, service in services.items():
        assert service["labels"]["dev.clawker.purpose"] == "monitoring", name
        assert service["container_name"].startswith(rendered.prefix)
    for name in (svc.OPENSEARCH, svc.DASHBOARDS, svc.PROMETHEUS):
        assert services[name]["healthcheck"]["test"], name
    assert compose["networks"]["default"] == {"name": rendered.network, "external": True}
    volumes = compose["volumes"]
    assert {v["name"] for v in volumes.values()} == {
        f"{rendered.prefix}-opensearch",
        f"{rendered.prefix}-prometheus",
    }
    assert services[svc.BOOTSTRAP]["container_name"] == f"{rendered.prefix}-opensearch-bootstrap"


def test_default_names_follow_the_reference(tmp_path: Path) -> None:
    render.materialize(Monitoring(), tmp_path, render.Mode.INIT)
    compose = _load(tmp_path / "compose.yaml")
    assert compose["services"][svc.BOOTSTRAP]["container_name"] == "clawker-opensearch-bootstrap"
    assert compose["networks"]["default"]["name"] == "clawker-net"
    assert {v["name"] for v in compose["volumes"].values()} == {
        "clawker-opensearch",
        "clawker-prometheus",
    }


def test_compose_start_order_gates_collector_on_bootstrap(rendered: StackEnv) -> None:
    services = _load(rendered.data_dir / "compose.yaml")["services"]
    boot = services[svc.BOOTSTRAP]["depends_on"]
    assert all(
        boot[s]["condition"] == "service_healthy"
        for s in (svc.OPENSEARCH, svc.DASHBOARDS, svc.PROMETHEUS)
    )
    gate = services[svc.OTEL_COLLECTOR]["depends_on"][svc.BOOTSTRAP]
    assert gate["condition"] == "service_completed_successfully"
    assert services[svc.BOOTSTRAP]["restart"] == "no"


def test_heap_and_retention_from_settings(stack_env: StackEnv) -> None:
    stack_env.write_settings(opensearch_heap_mb=1024, retention_days=3)
    assert stack_env.run("init").exit_code == 0
    services = _load(stack_env.data_dir / "compose.yaml")["services"]
    assert services[svc.OPENSEARCH]["environment"]["OPENSEARCH_JAVA_OPTS"] == "-Xms1024m -Xmx1024m"
    assert "--storage.tsdb.retention.time=3d" in services[svc.PROMETHEUS]["command"]
    ism = json.loads((stack_env.data_dir / "bootstrap/ism/clawker-retention.json").read_text())
    hot = ism["policy"]["states"][0]
    assert hot["transitions"][0]["conditions"]["min_index_age"] == "3d"


def test_collector_runs_as_data_owner_so_keys_stay_private(rendered: StackEnv) -> None:
    services = _load(rendered.data_dir / "compose.yaml")["services"]
    info = rendered.data_dir.stat()
    assert services[svc.OTEL_COLLECTOR]["user"] == f"{info.st_uid}:{info.st_gid}"


# --- otel-config.yaml -----------------------------------------------------------------------


@pytest.fixture
def otel(rendered: StackEnv) -> dict[str, Any]:
    config: dict[str, Any] = _load(rendered.data_dir / "otel-config.yaml")
    return config


def test_collector_graph_is_consistent(otel: dict[str, Any]) -> None:
    """Every component a pipeline names is defined, and every defined one is used."""
    pipelines = otel["service"]["pipelines"]
    connectors = set(otel["connectors"])
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline in pipelines.values():
        for kind in used:
            used[kind].update(pipeline.get(kind, []))
    assert used["receivers"] - connectors <= set(otel["receivers"])
    assert used["exporters"] - connectors <= set(otel["exporters"])
    assert used["processors"] <= set(otel["processors"])
    assert set(otel["receivers"]) <= used["receivers"]
    assert set(otel["exporters"]) <= used["exporters"]
    assert set(otel["processors"]) <= used["processors"]
    for connector in connectors:
        assert connector in used["receivers"] and connector in used["exporters"], connector


def test_lanes_agent_untrusted_infra_mtls(otel: dict[str, Any]) -> None:
    agent = otel["receivers"]["otlp/agent"]["protocols"]
    assert agent["http"]["endpoint"].endswith(":4318")
    assert agent["grpc"]["endpoint"].endswith(":4317")
    assert "tls" not in agent["grpc"] and "tls" not in agent["http"]
    infra = otel["receivers"]["otlp/infra"]["protocols"]
    assert set(infra) == {"grpc"}, "the trusted lane speaks gRPC only"
    tls = infra["grpc"]["tls"]
    assert infra["grpc"]["endpoint"].endswith(f":{trusted_lane.PORT}")
    # client_ca_file is what makes the collector require a client certificate.
    assert tls["client_ca_file"].endswith("/ca.pem")
    assert tls["cert_file"].endswith("/collector.pem")
    assert tls["key_file"].endswith("/collector.key")


def test_ebpf_egress_routed_and_stamped_on_trusted_lane_only(otel: dict[str, Any]) -> None:
    pipelines = otel["service"]["pipelines"]
    table = otel["connectors"][collector.ROUTER]["table"]
    route = next(r for r in table if '"ebpf-egress"' in r["condition"])
    assert route["context"] == "resource"
    assert route["condition"] == 'attributes["service.name"] == "ebpf-egress"'
    (target,) = route["pipelines"]
    ebpf = pipelines[target]
    assert ebpf["receivers"] == [collector.ROUTER]
    (exporter,) = ebpf["exporters"]
    assert otel["exporters"][exporter]["logs_index"] == "clawker-ebpf-egress"
    stamps = [
        stmt
        for proc in ebpf["processors"]
        for block in otel["processors"][proc].get("log_statements", [])
        for stmt in block["statements"]
    ]
    assert 'set(attributes["ingest_source"], "netlogger")' in stamps
    # Only the router (fed by the mTLS receiver) reaches the ebpf exporter.
    feeding = [name for name, p in pipelines.items() if exporter in p["exporters"]]
    assert feeding == [target]
    infra_in = [name for name, p in pipelines.items() if collector.ROUTER in p["exporters"]]
    assert [pipelines[n]["receivers"] for n in infra_in] == [["otlp/infra"]]


def test_untrusted_lane_drops_claims_of_trusted_services(otel: dict[str, Any]) -> None:
    logs = otel["service"]["pipelines"]["logs/agent"]
    assert logs["receivers"] == ["otlp/agent"]
    assert "clawker-ebpf-egress" not in json.dumps(
        [otel["exporters"][e] for e in logs["exporters"]]
    )
    drop = otel["processors"]["filter/agent-reserved-services"]["logs"]["log_record"]
    (condition,) = drop
    pattern = re.search(r'"\^\((.*)\)\$"', condition)
    assert pattern is not None
    assert "ebpf-egress" in pattern.group(1).split("|")
    assert logs["processors"].index("filter/agent-reserved-services") < logs["processors"].index(
        "transform/agent-lane"
    )
    stamp = otel["processors"]["transform/agent-lane"]["log_statements"][0]["statements"]
    assert 'set(attributes["ingest_source"], "agent")' in stamp


def test_every_pipeline_starts_with_memory_limiter(otel: dict[str, Any]) -> None:
    for name, pipeline in otel["service"]["pipelines"].items():
        assert pipeline["processors"][0] == "memory_limiter", name


def test_every_exporter_retries_with_a_queue(otel: dict[str, Any]) -> None:
    for name, exporter in otel["exporters"].items():
        assert exporter["retry_on_failure"]["enabled"] is True, name
        queue = exporter.get("sending_queue") or exporter.get("remote_write_queue")
        assert queue and queue["enabled"] is True, name


def test_signals_go_to_the_right_backends(otel: dict[str, Any]) -> None:
    pipelines = otel["service"]["pipelines"]
    assert "opensearch/traces" in pipelines["traces/agent"]["exporters"]
    assert "spanmetrics" in pipelines["traces/agent"]["exporters"]
    metrics = pipelines["metrics/agent"]
    assert "spanmetrics" in metrics["receivers"]
    assert metrics["exporters"] == ["prometheusremotewrite"]
    assert otel["exporters"]["prometheusremotewrite"]["endpoint"].startswith("http://prometheus:")
    for name, pipeline in pipelines.items():
        if name.startswith("logs/") and name != "logs/infra":
            assert all(e.startswith("opensearch/") for e in pipeline["exporters"]), name


def test_metric_label_type_renamed_to_kind(otel: dict[str, Any]) -> None:
    metrics = otel["service"]["pipelines"]["metrics/agent"]
    assert "transform/rename-type-label" in metrics["processors"]
    block = otel["processors"]["transform/rename-type-label"]["metric_statements"][0]
    assert block["context"] == "datapoint"
    assert any('attributes["kind"], attributes["type"]' in s for s in block["statements"])
    assert 'delete_key(attributes, "type")' in block["statements"]


# --- prometheus / dashboards config -------------------------------------------------------------


def test_prometheus_scrapes_collector_self_metrics(rendered: StackEnv) -> None:
    prom = _load(rendered.data_dir / "prometheus.yaml")
    targets = [
        t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert f"otel-collector:{collector.SELF_METRICS_PORT}" in targets


def test_dashboards_config_enables_workspaces(rendered: StackEnv) -> None:
    osd = _load(rendered.data_dir / "opensearch_dashboards.yml")
    assert osd["workspace.enabled"] is True
    assert osd["opensearch.hosts"] == ["http://opensearch-node:9200"]


# --- real validators --------------------------------------------------------------------------


def test_docker_compose_config_accepts_the_file(rendered: StackEnv) -> None:
    if not shutil.which("docker"):
        require("docker CLI missing")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        require("docker compose v2 plugin missing")
    for mode in ("tag", "digest"):
        rendered.write_settings(image_refs=mode)
        assert rendered.run("init", "--force").exit_code == 0
        done = subprocess.run(
            ["docker", "compose", "-f", str(rendered.data_dir / "compose.yaml"), "config", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def test_promtool_accepts_prometheus_yaml(rendered: StackEnv) -> None:
    if not shutil.which("promtool"):
        require("promtool missing (apt-get install prometheus)")
    done = subprocess.run(
        ["promtool", "check", "config", str(rendered.data_dir / "prometheus.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- init / up file handling -----------------------------------------------------------------


def test_init_keeps_existing_files_and_reports_them(rendered: StackEnv) -> None:
    compose = rendered.data_dir / "compose.yaml"
    compose.write_text(compose.read_text() + "# hand edit\n")
    ca_before = (rendered.data_dir / "certs/ca.pem").read_bytes()
    result = rendered.run("init")
    assert result.exit_code == 0
    assert "compose.yaml: kept (exists; --force regenerates)" in result.output
    assert "certs/ca.pem: kept" in result.output
    assert compose.read_text().endswith("# hand edit\n")
    assert (rendered.data_dir / "certs/ca.pem").read_bytes() == ca_before
    forced = rendered.run("init", "--force")
    assert forced.exit_code == 0
    assert "compose.yaml: updated" in forced.output
    assert not compose.read_text().endswith("# hand edit\n")
    assert (rendered.data_dir / "certs/ca.pem").read_bytes() != ca_before


def test_sync_applies_settings_but_keeps_hand_edits(rendered: StackEnv) -> None:
    data = rendered.data_dir
    prom = data / "prometheus.yaml"
    prom.write_text(prom.read_text() + "# tuned by hand\n")
    rendered.write_settings(opensearch_port=rendered.settings["opensearch_port"] + 1)
    mon = Monitoring(**{k: v for k, v in rendered.settings.items()})
    results = {w.path: w.outcome for w in render.materialize(mon, data, render.Mode.SYNC)}
    assert results["compose.yaml"] is render.Outcome.UPDATED
    assert results["prometheus.yaml"] is render.Outcome.KEPT_EDITED
    assert prom.read_text().endswith("# tuned by hand\n")
    ports = _load(data / "compose.yaml")["services"][svc.OPENSEARCH]["ports"]
    assert ports == [f"127.0.0.1:{rendered.settings['opensearch_port']}:9200"]


def test_mounted_file_change_changes_the_service_definition(rendered: StackEnv) -> None:
    """Compose only recreates on definition changes, so file hashes ride in a label."""
    data = rendered.data_dir
    before = _load(data / "compose.yaml")["services"][svc.PROMETHEUS]["labels"]
    prom = data / "prometheus.yaml"
    prom.write_text(prom.read_text() + "# tuned\n")
    mon = Monitoring(**rendered.settings)
    render.materialize(mon, data, render.Mode.SYNC)
    after = _load(data / "compose.yaml")["services"][svc.PROMETHEUS]["labels"]
    assert before[svc.CONFIG_HASH_LABEL] != after[svc.CONFIG_HASH_LABEL]


def test_secret_files_are_private(rendered: StackEnv) -> None:
    data = rendered.data_dir
    for rel in (
        "certs/ca.key",
        "certs/collector.key",
        "certs/netlogger.key",
        "secrets/opensearch.env",
    ):
        mode = stat.S_IMODE((data / rel).stat().st_mode)
        assert mode == 0o600, (rel, oct(mode))


# --- bootstrap bodies ----------------------------------------------------------------------------

REFERENCE_INDICES = {
    "claude-code",
    "clawker-cli",
    "clawker-cp",
    "clawker-envoy",
    "clawker-coredns",
    "clawker-ebpf-egress",
}


def test_templates_ism_and_indices_for_every_listed_index(rendered: StackEnv) -> None:
    boot = rendered.data_dir / "bootstrap"
    templates = {p.stem for p in (boot / "index-templates").glob("*.json")}
    created = {p.stem for p in (boot / "indices").glob("*.json")}
    traces = indices.traces_index().name
    assert traces.startswith("ss4o_traces-")
    assert templates == created == REFERENCE_INDICES | {traces}
    ism = json.loads((boot / "ism/clawker-retention.json").read_text())["policy"]
    assert ism["states"][0]["transitions"][0]["conditions"]["min_index_age"] == "7d"
    attached = set(ism["ism_template"][0]["index_patterns"])
    for name in templates:
        body = json.loads((boot / f"index-templates/{name}.json").read_text())
        assert body["index_patterns"] == [f"{name}-*"]
        assert attached >= set(body["index_patterns"])
        assert body["composed_of"] == [bootstrap_assets.COMPONENT_TEMPLATE]
        settings = body["template"]["settings"]
        assert settings["plugins.index_state_management.rollover_alias"] == name
        alias = json.loads((boot / f"indices/{name}.json").read_text())
        assert alias == {"aliases": {name: {"is_write_index": True}}}


def test_common_template_maps_shared_keys(rendered: StackEnv) -> None:
    body = json.loads(
        (rendered.data_dir / "bootstrap/component-templates/clawker-common.json").read_text()
    )
    props = body["template"]["mappings"]["properties"]
    assert props["@timestamp"]["type"] == "date"
    resource = props["resource"]["properties"]
    assert resource["service"]["properties"]["name"]["type"] == "keyword"
    attrs = props["attributes"]["properties"]
    for key in ("ingest_source", "project", "agent"):
        assert attrs[key]["type"] == "keyword"


def test_datasource_and_workspace_bodies(rendered: StackEnv) -> None:
    boot = rendered.data_dir / "bootstrap"
    ds = json.loads((boot / "datasource/clawker_prometheus.json").read_text())
    assert ds["name"] == "clawker_prometheus"
    assert ds["connector"] == "prometheus"
    assert ds["properties"]["prometheus.uri"] == "http://prometheus:9090"
    ws = json.loads((boot / "workspace/clawker.json").read_text())
    assert ws["attributes"]["name"] == "Clawker"
    assert ws["attributes"]["features"] == ["use-case-all"]
    env = (rendered.data_dir / "secrets/opensearch.env").read_text()
    key = env.strip().split("=", 1)[1]
    assert env.startswith("plugins.query.datasources.encryption.masterkey=")
    assert len(key) in (16, 24, 32)


def test_saved_objects_dashboards_and_references(rendered: StackEnv) -> None:
    lines = (rendered.data_dir / "bootstrap/saved-objects/clawker.ndjson").read_text()
    objects = [json.loads(line) for line in lines.splitlines()]
    by_id = {o["id"]: o for o in objects}
    assert len(by_id) == len(objects), "saved object ids must be unique"
    titles = {o["attributes"]["title"] for o in objects if o["type"] == "dashboard"}
    assert titles == {"Claude Code Cost & Usage", "Claude Code Activity", "Clawker Networking"}
    patterns = {o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    assert patterns >= REFERENCE_INDICES
    for obj in objects:
        for ref in obj["references"]:
            assert ref["id"] in by_id, (obj["id"], ref)
            assert by_id[ref["id"]]["type"] == ref["type"], (obj["id"], ref)
        for key in ("visState", "uiStateJSON", "panelsJSON", "optionsJSON"):
            if key in obj["attributes"]:
                json.loads(obj["attributes"][key])


def test_networking_dashboard_streams_and_verdict_pies(rendered: StackEnv) -> None:
    objects = {o["id"]: o for o in dashboards.networking()}
    dash = objects["clawker-dashboard-networking"]
    panels = [objects[r["id"]] for r in dash["references"]]
    streams = {p["references"][0]["id"] for p in panels if p["type"] == "search"}
    assert streams == {
        dashboards.pattern_id(i)
        for i in ("clawker-envoy", "clawker-coredns", "clawker-ebpf-egress")
    }
    pies = {}
    for panel in panels:
        if panel["type"] == "visualization":
            state = json.loads(panel["attributes"]["visState"])
            if state["type"] != "pie":
                continue  # the domain tables, below
            field = state["aggs"][1]["params"]["field"]
            pies[panel["references"][0]["id"]] = field
            colors = json.loads(panel["attributes"]["uiStateJSON"])["vis"]["colors"]
            assert colors["denied"] == colors["NXDOMAIN"] == dashboards.RED
    assert pies == {
        dashboards.pattern_id("clawker-envoy"): "attributes.action",
        dashboards.pattern_id("clawker-coredns"): "attributes.rcode",
        dashboards.pattern_id("clawker-ebpf-egress"): "attributes.action",
    }
    ebpf_fields = set(indices.by_name("clawker-ebpf-egress").fields)
    ebpf_stream = objects["clawker-net-ebpf-stream"]["attributes"]["columns"]
    assert set(ebpf_stream) <= ebpf_fields, "the eBPF panel must use netlogger's fields"


def test_networking_dashboard_has_the_audit_trail(rendered: StackEnv) -> None:
    objects = {o["id"]: o for o in dashboards.networking()}
    on_dash = {r["id"] for r in objects["clawker-dashboard-networking"]["references"]}
    trail = objects["clawker-net-ebpf-control"]
    assert "clawker-net-ebpf-control" in on_dash
    assert trail["references"][0]["id"] == dashboards.pattern_id("clawker-ebpf-egress")
    source = json.loads(trail["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["query"]["query"] == 'attributes.event.name:"ebpf.egress.control"'
    columns = trail["attributes"]["columns"]
    ebpf_fields = set(indices.by_name("clawker-ebpf-egress").fields)
    assert set(columns) <= ebpf_fields, set(columns) - ebpf_fields
    assert columns[:3] == [
        "attributes.control.command",
        "attributes.control.result",
        "attributes.control.target",
    ]


def test_networking_dashboard_top_domains(rendered: StackEnv) -> None:
    objects = {o["id"]: o for o in dashboards.networking()}
    on_dash = {r["id"] for r in objects["clawker-dashboard-networking"]["references"]}
    ebpf_fields = set(indices.by_name("clawker-ebpf-egress").fields)
    tables = {}
    for oid in ("clawker-net-ebpf-denied-domains", "clawker-net-ebpf-agent-domains"):
        assert oid in on_dash
        vis = objects[oid]
        assert vis["references"][0]["id"] == dashboards.pattern_id("clawker-ebpf-egress")
        state = json.loads(vis["attributes"]["visState"])
        buckets = [a["params"]["field"] for a in state["aggs"] if a["schema"] == "bucket"]
        assert set(buckets) <= ebpf_fields
        assert len({a["id"] for a in state["aggs"]}) == len(state["aggs"])
        source = json.loads(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        tables[state["title"]] = (state["type"], buckets, source["query"]["query"])
    denied = tables["Top denied domains"]
    assert denied[:2] == ("table", ["attributes.dst_host"])
    assert (
        "attributes.action:denied" in denied[2] and "not attributes.udp_connect:true" in denied[2]
    )
    per_agent = tables["Top domains per agent"]
    assert per_agent[:2] == ("table", ["attributes.agent", "attributes.dst_host"])
    assert "ebpf.egress.dns" not in per_agent[2] and "attributes.dst_host:*" in per_agent[2]


def test_cost_dashboard_reads_prometheus_through_the_datasource() -> None:
    objects = dashboards.cost_and_usage()
    queries = [
        o["attributes"]["savedVisualization"]["query"]
        for o in objects
        if o["type"] == "observability-visualization"
    ]
    assert queries and all(q.startswith("source = clawker_prometheus.") for q in queries)
    assert not any("type" in q.split("by")[-1] for q in queries if " by " in q)


def test_standin_images_are_tagged_as_the_real_references() -> None:
    script = (REPO / "tests/monitor/standins/build.sh").read_text()
    built = set(re.findall(r"^build (\S+) \w+$", script, re.MULTILINE))
    assert built == {image.ref("tag") for image in images.ALL}


def test_in_ci_flag_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    monkeypatch.setenv("CI", "")
    assert not in_ci()


def test_init_prints_the_netlogger_sink_line_for_its_certificates(
    stack_env: StackEnv, tmp_path: Path
) -> None:
    result = stack_env.run("init")
    assert result.exit_code == 0, result.output
    header, line = result.output.splitlines()[-2:]
    assert header == (
        "netlogger's otlp sink for this stack (under sinks: in /etc/netlogger/config.yaml):"
    )
    (sink,) = yaml.safe_load(line)
    made = certs.paths(stack_env.data_dir)
    assert sink == {
        "type": "otlp",
        "endpoint": f"https://localhost:{stack_env.settings['otel_mtls_port']}",
        "ca": str(made.ca_cert),
        "cert": str(made.client_cert),
        "key": str(made.client_key),
    }
    # The line is a config netlogger accepts as it is: the files exist, parse and pair up.
    settings = otlp_settings.from_config(msgspec.convert(sink, OtlpSink), tmp_path, environ={})
    assert settings.tls == Tls(ca=made.ca_cert, cert=made.client_cert, key=made.client_key)
