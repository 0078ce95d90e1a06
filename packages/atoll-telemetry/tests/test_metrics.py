"""PrometheusMetrics: creation, exposition, idempotency, conflicts, names, isolation."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from atoll.core import MetricsRegistry
from atoll.telemetry import (
    COUNT_BUCKETS,
    LATENCY_SECONDS_BUCKETS,
    RATIO_BUCKETS,
    SIZE_BYTES_BUCKETS,
    MetricConflict,
    PrometheusMetrics,
    default_buckets,
    validate_metric_name,
)


def samples(metrics: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed back, keyed by (name, sorted labels)."""
    text = metrics.exposition().decode("utf-8")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert isinstance(s, Sample)
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def family_types(metrics: PrometheusMetrics) -> dict[str, str]:
    text = metrics.exposition().decode("utf-8")
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_counter_gauge_histogram_round_trip_through_the_text_format() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    committed = metrics.counter(
        "atoll_raft_proposals_committed_total", "Proposals committed.", ("group",)
    )
    members = metrics.gauge("atoll_membership_members", "Members known alive.")
    fsync = metrics.histogram("atoll_disk_wal_fsync_duration_seconds", "WAL fsync latency.")

    committed.labels(group="7").inc()
    committed.labels(group="7").inc(2)
    committed.labels(group="8").inc()
    members.set(5)
    members.inc(-2)
    fsync.observe(0.0003)
    fsync.observe(0.2)

    got = samples(metrics)
    assert got[("atoll_raft_proposals_committed_total", (("group", "7"),))] == 3
    assert got[("atoll_raft_proposals_committed_total", (("group", "8"),))] == 1
    assert got[("atoll_membership_members", ())] == 3
    assert got[("atoll_disk_wal_fsync_duration_seconds_count", ())] == 2
    assert got[("atoll_disk_wal_fsync_duration_seconds_sum", ())] == pytest.approx(0.2003)
    assert got[("atoll_disk_wal_fsync_duration_seconds_bucket", (("le", "0.0005"),))] == 1
    assert got[("atoll_disk_wal_fsync_duration_seconds_bucket", (("le", "0.25"),))] == 2
    assert got[("atoll_disk_wal_fsync_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    types = family_types(metrics)
    assert types["atoll_raft_proposals_committed"] == "counter"
    assert types["atoll_membership_members"] == "gauge"
    assert types["atoll_disk_wal_fsync_duration_seconds"] == "histogram"


def test_exposition_has_help_type_and_no_created_series() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    metrics.counter("atoll_gossip_messages_sent_total", "Gossip messages sent.").inc()
    metrics.histogram("atoll_gossip_message_size_bytes", "Gossip message sizes.").observe(90)
    text = metrics.exposition().decode()
    assert "# HELP atoll_gossip_messages_sent_total Gossip messages sent." in text
    assert "# TYPE atoll_gossip_messages_sent_total counter" in text
    assert "_created" not in text


def test_gauge_set_function_is_read_at_scrape_time() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    state = {"groups": 3.0}
    metrics.gauge("atoll_replication_groups", "Raft groups hosted.").set_function(
        lambda: state["groups"]
    )
    assert samples(metrics)[("atoll_replication_groups", ())] == 3
    state["groups"] = 4.0
    assert samples(metrics)[("atoll_replication_groups", ())] == 4


def test_asking_twice_returns_the_same_metric() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    first = metrics.counter("atoll_raft_elections_started_total", "Elections.", ("group",))
    again = metrics.counter("atoll_raft_elections_started_total", "Elections.", ["group"])
    assert again is first
    gauge = metrics.gauge("atoll_raft_term", "Current term.")
    assert metrics.gauge("atoll_raft_term", "another wording") is gauge
    hist = metrics.histogram("atoll_raft_apply_duration_seconds", "Apply latency.")
    assert metrics.histogram("atoll_raft_apply_duration_seconds", "Apply latency.") is hist
    assert (
        metrics.histogram(
            "atoll_raft_apply_duration_seconds", "Apply latency.", (), LATENCY_SECONDS_BUCKETS
        )
        is hist
    )
    first.labels(group="1").inc()
    again.labels(group="1").inc()
    assert samples(metrics)[("atoll_raft_elections_started_total", (("group", "1"),))] == 2
    assert metrics.names() == [
        "atoll_raft_apply_duration_seconds",
        "atoll_raft_elections_started_total",
        "atoll_raft_term",
    ]


def test_asking_with_another_type_is_a_conflict() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    metrics.gauge("atoll_raft_term", "Current term.")
    with pytest.raises(MetricConflict, match=r"already exists as a gauge; it cannot also be"):
        metrics.histogram("atoll_raft_term", "Current term.")


def test_asking_with_other_labels_is_a_conflict() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    metrics.counter("atoll_rpc_requests_total", "RPCs.", ("method",))
    with pytest.raises(MetricConflict, match=r"labels \['method'\]; asked again with \['peer'\]"):
        metrics.counter("atoll_rpc_requests_total", "RPCs.", ("peer",))
    with pytest.raises(MetricConflict, match="labels"):
        metrics.counter("atoll_rpc_requests_total", "RPCs.")


def test_asking_with_other_buckets_is_a_conflict() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    metrics.histogram("atoll_raft_batch_entries", "Entries per batch.", buckets=(1, 10, 100))
    with pytest.raises(MetricConflict, match="buckets"):
        metrics.histogram("atoll_raft_batch_entries", "Entries per batch.")


def test_a_name_whose_series_collide_with_another_family_is_a_conflict() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    metrics.counter("atoll_rpc_calls_total", "Calls.")
    # prometheus-client names the counter family 'atoll_rpc_calls'; a gauge of that name
    # would emit a second family with the same name.
    with pytest.raises(MetricConflict, match="collides with a series already in this registry"):
        metrics.gauge("atoll_rpc_calls", "Calls in flight.")
    with pytest.raises(MetricConflict, match="collides"):
        PrometheusMetrics().gauge("atoll_process_open_fds", "Clashes with the process collector.")


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("counter", "raft_proposals_total", "expected lowercase 'atoll_<subsystem>"),
        ("counter", "atoll_Raft_proposals_total", "expected lowercase"),
        ("counter", "atoll_raft__proposals_total", "expected lowercase"),
        ("counter", "atoll_raft_proposals_", "expected lowercase"),
        ("counter", "atoll_raft-proposals_total", "expected lowercase"),
        ("counter", "atoll_raft", "expected lowercase"),
        ("counter", "atoll_raft_proposals", "must end in '_total'"),
        ("counter", "atoll_raft_total", "needs a subsystem and a name"),
        ("counter", "atoll_raft_fsync_ms_total", "non-base unit 'ms'"),
        ("gauge", "atoll_raft_proposals_total", "reserved for counters"),
        ("histogram", "atoll_raft_latency_milliseconds", "non-base unit 'milliseconds'"),
        ("gauge", "atoll_disk_usage_percent", "_ratio"),
        ("gauge", "atoll_disk_used_mb", "_bytes"),
        ("gauge", "atoll_raft_entries_count", "reserved suffix '_count'"),
        ("histogram", "atoll_raft_entries_bucket", "reserved suffix '_bucket'"),
        ("gauge", "atoll_build_info", "reserved suffix '_info'"),
    ],
)
def test_bad_names_are_rejected_with_a_reason(kind: str, name: str, message: str) -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    make = getattr(metrics, kind)
    with pytest.raises(ValueError, match=message):
        make(name, "documented")
    assert metrics.names() == []


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("counter", "atoll_raft_proposals_committed_total"),
        ("counter", "atoll_process_cpu_seconds_total"),
        ("gauge", "atoll_process_event_loop_lag_seconds"),
        ("gauge", "atoll_membership_members"),
        ("histogram", "atoll_disk_wal_fsync_duration_seconds"),
        ("histogram", "atoll_transport_frame_size_bytes"),
    ],
)
def test_good_names_pass(kind: str, name: str) -> None:
    validate_metric_name(name, kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (("Group",), "expected lowercase snake case"),
        (("peer id",), "expected lowercase snake case"),
        (("__name",), "starts with '__'"),
        (("group", "group"), "appears twice"),
        ("group", "must be a sequence of names"),
    ],
)
def test_bad_label_names_are_rejected(labels: object, message: str) -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    with pytest.raises(ValueError, match=message):
        metrics.counter("atoll_rpc_requests_total", "RPCs.", labels)  # type: ignore[arg-type]


def test_histogram_may_not_use_le_and_needs_increasing_buckets() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    with pytest.raises(ValueError, match="'le'"):
        metrics.histogram("atoll_rpc_duration_seconds", "RPC latency.", ("le",))
    with pytest.raises(ValueError, match="strictly increasing"):
        metrics.histogram("atoll_rpc_duration_seconds", "RPC latency.", buckets=(0.1, 0.1, 1))
    with pytest.raises(ValueError, match="at least one finite bucket"):
        metrics.histogram("atoll_rpc_duration_seconds", "RPC latency.", buckets=())
    with pytest.raises(ValueError, match="non-empty documentation"):
        metrics.gauge("atoll_rpc_inflight", "  ")


def test_default_buckets_follow_the_unit() -> None:
    assert default_buckets("atoll_x_duration_seconds") == LATENCY_SECONDS_BUCKETS
    assert default_buckets("atoll_x_size_bytes") == SIZE_BYTES_BUCKETS
    assert default_buckets("atoll_x_fill_ratio") == RATIO_BUCKETS
    assert default_buckets("atoll_x_batch_entries") == COUNT_BUCKETS
    assert LATENCY_SECONDS_BUCKETS[0] < 0.001 and LATENCY_SECONDS_BUCKETS[-1] == 10.0
    assert SIZE_BYTES_BUCKETS[0] == 64 and SIZE_BYTES_BUCKETS[-1] == 64 * 1024 * 1024
    for buckets in (LATENCY_SECONDS_BUCKETS, SIZE_BYTES_BUCKETS, RATIO_BUCKETS, COUNT_BUCKETS):
        assert list(buckets) == sorted(set(buckets))

    metrics = PrometheusMetrics(process_metrics=False)
    metrics.histogram("atoll_transport_frame_size_bytes", "Frame sizes.").observe(100)
    bounds = {
        float(labels[0][1])
        for (name, labels) in samples(metrics)
        if name == "atoll_transport_frame_size_bytes_bucket"
    }
    assert bounds == {*SIZE_BYTES_BUCKETS, float("inf")}


def test_children_enforce_labels_and_counters_only_go_up() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    counter = metrics.counter("atoll_rpc_requests_total", "RPCs.", ("method",))
    with pytest.raises(ValueError):
        counter.inc()  # a labelled counter has no unlabelled series
    with pytest.raises(ValueError):
        counter.labels(peer="n2")
    with pytest.raises(ValueError):
        counter.labels(method="get").inc(-1)


def test_each_node_object_has_its_own_registry() -> None:
    before = {m.name for m in prometheus_client.REGISTRY.collect()}
    node_a = PrometheusMetrics(process_metrics=False)
    node_b = PrometheusMetrics(process_metrics=False)
    node_a.counter("atoll_raft_proposals_committed_total", "Committed.").inc(5)
    node_b.counter("atoll_raft_proposals_committed_total", "Committed.").inc(1)
    assert samples(node_a)[("atoll_raft_proposals_committed_total", ())] == 5
    assert samples(node_b)[("atoll_raft_proposals_committed_total", ())] == 1
    after = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert after == before, "the global default registry must stay untouched"


def test_process_metrics_are_exported_from_proc() -> None:
    import os

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("process metrics are read from /proc (Linux)")
    got = samples(PrometheusMetrics())
    assert got[("atoll_process_resident_memory_bytes", ())] > 0
    assert got[("atoll_process_cpu_seconds_total", ())] > 0
    assert got[("atoll_process_open_fds", ())] >= 3
    assert got[("atoll_process_max_fds", ())] >= got[("atoll_process_open_fds", ())]
    assert ("atoll_process_open_fds", ()) not in samples(PrometheusMetrics(process_metrics=False))


def test_satisfies_the_core_protocol_the_hook_is_typed_with() -> None:
    from atoll.core import hookimpl, make_plugin_manager

    class RaftMetricsPlugin:
        @hookimpl
        def atoll_register_metrics(self, registry: MetricsRegistry) -> None:
            registry.counter("atoll_raft_proposals_committed_total", "Committed.").inc()

    pm = make_plugin_manager([RaftMetricsPlugin()], load_entry_points=False)
    metrics = PrometheusMetrics(process_metrics=False)
    pm.hook.atoll_register_metrics(registry=metrics)
    assert samples(metrics)[("atoll_raft_proposals_committed_total", ())] == 1
