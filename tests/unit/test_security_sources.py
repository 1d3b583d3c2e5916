"""Native security sources (service/config/30-security.toml) on the real public samples.

Every record of every sample file under security-samples/{suricata,wazuh,zeek,sysmon} maps to
the intended source and kind with the documented entities, or, for shapes with no mapping,
to nothing (the service dead-letters it as unknown_kind).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from detectors.base import EventBatch
from detectors.frequency import FrequencyDetector
from schemas import Event
from service.replay import read_records
from service.sources import SourceConfig, SourceMapping, lookup, parse_time

CONFIG = SourceConfig.load()
CORE = SourceConfig.load(
    Path(__file__).resolve().parents[2] / "service" / "config" / "10-core.toml"
)

#: file -> {source name (None = unmapped): record count}; counts from the samples' README.
EXPECTED: dict[str, dict[str | None, int]] = {
    "suricata/stamus_training02_eve.json.gz": {
        "suricata_dns": 80,
        "suricata_flow": 80,
        "suricata_http": 39,
        "suricata_tls": 38,
        "suricata_alert": 36,
        None: 17,  # fileinfo
    },
    "suricata/stamus_training03_eve.json.gz": {
        "suricata_http": 273,
        "suricata_flow": 179,
        "suricata_dns": 145,
        "suricata_tls": 50,
        None: 211,  # dcerpc 113, smb 70, fileinfo 28
    },
    "suricata/surevego_eve.json.gz": {
        "suricata_alert": 68,
        "suricata_http": 68,
        "suricata_dns": 48,
        "suricata_flow": 13,
        None: 69,  # fileinfo 68, stats 1
    },
    "wazuh/aitldsv11_insect_wazuh_alerts.json.gz": {
        "wazuh_alert": 410,
        "wazuh_suricata_alert": 87,
    },
    "wazuh/aitldsv11_spiral_wazuh_alerts.json.gz": {
        "wazuh_alert": 727,
        "wazuh_suricata_alert": 138,
    },
    "zeek/metron_BroExampleOutput_kafka.json.gz": {
        "zeek_kafka_http": 7,
        "zeek_kafka_dns": 3,
        "zeek_kafka_conn": 3,
        "zeek_kafka_ssl": 1,
        None: 17,  # dpd, ftp, files, known_certs, smtp, weird, notice, dhcp, ssh, ...
    },
    "zeek/rita_conn.json.gz": {"zeek_conn": 29},
    "zeek/rita_dns.json.gz": {"zeek_dns": 34},
    "zeek/rita_http.json.gz": {"zeek_http": 10},
    "zeek/rita_ssl.json.gz": {"zeek_ssl": 10},
    "zeek/rita_valid_json_http.json.gz": {"zeek_http": 3116},
    "zeek/wrccdc2018_dns.json.gz": {"zeek_dns": 3975},
    "sysmon/otrf_empire_mimikatz_opth_sysmon_winlogbeat6.json.gz": {
        "sysmon_wlb6_image_load": 265,
        "sysmon_wlb6_process_access": 221,
        "sysmon_wlb6_network": 137,
        "sysmon_wlb6_registry": 96,
        "sysmon_wlb6_pipe": 28,
        "sysmon_wlb6_file_create": 16,
        "sysmon_wlb6_process_create": 7,
        None: 14,  # EID 9 raw access read
    },
    "sysmon/otrf_psh_lsass_memory_dump_comsvcs.json.gz": {
        "sysmon_flat_process_access": 68,
        "sysmon_flat_registry": 44,
        "sysmon_flat_image_load": 30,
        "sysmon_flat_file_create": 2,
        "sysmon_flat_process_create": 1,
        None: 39,  # Security channel 36, Sysmon 5 (process terminated) 3
    },
    "sysmon/otrf_covenant_copy_smb_CreateRequest.json.gz": {
        "sysmon_flat_registry": 321,
        "sysmon_flat_process_access": 79,
        "sysmon_flat_file_create": 5,
        "sysmon_flat_network": 3,
        "sysmon_flat_image_load": 1,
        None: 97,  # Security channel 94, Sysmon 5 3
    },
}

#: Records that map but miss a required entity (dead-lettered as missing_entity).
MISSING_REQUIRED = {"suricata/surevego_eve.json.gz": 4}  # DNS error answers without rrname


def _samples(datasets: Path) -> Path:
    root = datasets / "security-samples"
    if not root.is_dir():
        pytest.skip("security-samples not present")
    return root


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_sample_record_maps_to_its_intended_source(datasets: Path, name: str) -> None:
    records = read_records(_samples(datasets) / name)
    got: Counter[str | None] = Counter()
    missing = 0
    for rec in records:
        src = CONFIG.match(rec)
        got[src.name if src else None] += 1
        if src is None:
            continue
        ev = Event.model_validate(src.to_event(rec))
        spec = CONFIG.kinds[src.kind]
        assert ev.kind == src.kind
        assert set(ev.entities) <= set(spec.entities)
        assert isinstance(ev.time, float) and 9e8 < ev.time < 2e9, (src.name, ev.time)
        missing += any(t not in ev.entities for t in spec.entities if t not in spec.optional)
    assert dict(got) == EXPECTED[name]
    assert missing == MISSING_REQUIRED.get(name, 0)


def _first(root: Path, name: str, source: str) -> tuple[SourceMapping, Event, dict]:
    for rec in read_records(root / name):
        src = CONFIG.match(rec)
        if src is not None and src.name == source:
            return src, Event.model_validate(src.to_event(rec)), rec
    raise AssertionError(f"no {source} record in {name}")


def test_documented_entities(datasets: Path) -> None:
    root = _samples(datasets)
    _, ev, rec = _first(root, "suricata/stamus_training02_eve.json.gz", "suricata_alert")
    assert ev.kind == "nids_alert"
    assert ev.entities["signature"] == rec["alert"]["signature"]
    assert ev.entities["dst_ip"] == rec["dest_ip"] and ev.entities["dst_port"] == "53"
    _, ev, rec = _first(root, "suricata/stamus_training02_eve.json.gz", "suricata_tls")
    assert (ev.kind, ev.entities["ja3"]) == ("tls_session", rec["tls"]["ja3"]["hash"])
    _, ev, rec = _first(root, "wazuh/aitldsv11_insect_wazuh_alerts.json.gz", "wazuh_alert")
    assert ev.kind == "hids_alert" and ev.entities["rule"] == rec["rule"]["description"]
    assert ev.entities["location"] == "/var/log/forensic/suricata/fast.log"
    _, ev, rec = _first(root, "zeek/metron_BroExampleOutput_kafka.json.gz", "zeek_kafka_conn")
    assert ev.kind == "network_conn" and ev.entities["orig_h"] == rec["conn"]["id.orig_h"]
    assert ev.time == rec["conn"]["ts"]
    _, ev, rec = _first(root, "zeek/rita_dns.json.gz", "zeek_dns")
    assert (ev.kind, ev.entities["query"]) == ("dns_query", rec["query"])
    _, ev, _ = _first(
        root, "sysmon/otrf_covenant_copy_smb_CreateRequest.json.gz", "sysmon_flat_registry"
    )
    # NXLog overwrote Sysmon's EventType here (its own, renamed EventTypeOrignal = "INFO")
    assert ev.entities["action"].startswith("Registry value set")


def test_core_sources_keep_their_records_and_core_steals_none_of_ours(datasets: Path) -> None:
    """10-core.toml alone maps no security sample except Zeek conn and (wrongly) Zeek DNS,
    which `zeek_dns`'s `before` takes back; with every file, zeek_conn keeps conn."""
    root = _samples(datasets)
    for name in EXPECTED:
        for rec in read_records(root / name)[:200]:
            core = CORE.match(rec)
            full = CONFIG.match(rec)
            if core is not None and core.name != "zeek_conn":
                raise AssertionError(f"{name}: core source {core.name} matches")
            if core is not None and "dns" not in name:
                assert full is not None and full.name == core.name


def test_winlogbeat7_shape_and_ecs_network_events() -> None:
    """No public Winlogbeat 7 Sysmon sample is small enough to ship; these are the shapes."""
    base = {
        "@timestamp": "2024-05-01T10:00:00.000Z",
        "winlog": {
            "channel": "Microsoft-Windows-Sysmon/Operational",
            "event_id": "10",  # Winlogbeat 8 writes a string, 7 a number: both match
            "computer_name": "IT001.shire.com",
            "event_data": {
                "SourceImage": r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
                "TargetImage": r"C:\Windows\system32\lsass.exe",
                "GrantedAccess": "0x1010",
            },
        },
    }
    src = CONFIG.match(base)
    assert src is not None and src.name == "sysmon_wlb7_process_access"
    ev = Event.model_validate(src.to_event(base))
    assert ev.entities["granted_access"] == "0x1010" and ev.time == 1714557600.0
    other_channel = {**base, "winlog": {**base["winlog"], "channel": "System"}}
    assert CONFIG.match(other_channel) is None
    network = {
        "@timestamp": "2024-05-01T10:00:00.000Z",
        "winlog": {**base["winlog"], "event_id": 3},
        "process": {"name": "powershell.exe"},
        "destination": {"ip": "85.239.53.219", "port": 443},
    }
    src = CONFIG.match(network)
    assert src is not None and (src.name, src.kind) == ("ecs_process_network", "process_network")


def test_lookup_where_before_and_fallbacks() -> None:
    assert lookup({"conn": {"id.orig_h": "1.2.3.4"}}, "conn.id.orig_h") == "1.2.3.4"
    assert lookup({"a": {"b": {"c.d": 1}}}, "a.b.c.d") == 1
    doc = """
[kinds.k]
entities = ["x"]
[sources.late]
kind = "k"
match = ["a"]
where = { "t" = ["1", 2], "n.flag" = true }
before = ["early"]
entities = { x = ["b", "a"] }
[sources.early]
kind = "k"
match = ["a"]
entities = { x = "a" }
"""
    cfg = SourceConfig.from_toml(doc)
    hit = {"a": "A", "t": 2, "n": {"flag": True}}
    assert cfg.match(hit).name == "late"  # type: ignore[union-attr]
    assert cfg.match({**hit, "t": "1"}).name == "late"  # type: ignore[union-attr]
    assert cfg.match({**hit, "t": 3}).name == "early"  # type: ignore[union-attr]
    assert cfg.match({"a": "A", "t": 2}).name == "early"  # type: ignore[union-attr]
    assert cfg.sources["late"].to_event(hit)["entities"] == {"x": "A"}
    with pytest.raises(ValueError, match="before unknown sources"):
        SourceConfig.from_toml(doc.replace('before = ["early"]', 'before = ["nope"]'))


def test_naive_times_are_utc() -> None:
    assert parse_time("2020-10-18 23:50:09.088") == pytest.approx(1603065009.088)


def test_where_the_sysmon_credential_access_lands(datasets: Path) -> None:
    """powershell.exe opening lsass.exe (opth, file lines 336-340) and rundll32 comsvcs
    MiniDump (comsvcs) become `process_access` events. A frequency baseline fitted on the
    file's own process_access events ranks them among the rarest: printed as a note."""
    root = _samples(datasets)
    for name, attacker in (
        ("sysmon/otrf_empire_mimikatz_opth_sysmon_winlogbeat6.json.gz", "powershell.exe"),
        ("sysmon/otrf_psh_lsass_memory_dump_comsvcs.json.gz", "rundll32.exe"),
    ):
        rows, lines = [], []
        for i, rec in enumerate(read_records(root / name), start=1):
            src = CONFIG.match(rec)
            if src is not None and src.kind == "process_access":
                ev = Event.model_validate(src.to_event(rec))
                rows.append([ev.entities[t] for t in CONFIG.kinds["process_access"].entities])
                lines.append(i)
        types = CONFIG.kinds["process_access"].entities
        hits = [
            k
            for k, r in enumerate(rows)
            if r[1].lower().endswith(attacker) and r[2].lower().endswith("lsass.exe")
        ]
        assert hits, f"no {attacker} -> lsass access in {name}"
        det = FrequencyDetector(types)
        batch = EventBatch(types, rows)
        det.learn_many(batch)
        scores = det.score_many(batch)
        order = sorted(range(len(rows)), key=lambda k: -scores[k])
        ranks = sorted(order.index(k) + 1 for k in hits)
        print(
            f"\n{name}: {len(hits)} {attacker}->lsass events (file lines "
            f"{[lines[k] for k in hits]}) are process_access events ranked {ranks} of "
            f"{len(rows)} by a frequency baseline"
        )
        assert ranks[0] <= max(10, len(rows) // 10)
