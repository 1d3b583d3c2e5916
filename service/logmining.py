"""Raw log lines -> Outrider events: header by configured formats, message by Drain templates.

A line's header (time, host, program, level) is parsed by the first matching log format from
configuration (`[logformats.*]` in service/config/*.toml); its message goes to Drain (He et al.,
"Drain: An Online Log Parsing Approach with Fixed Depth Tree", ICWS 2017) through drain3's
`TemplateMiner` (its masker and its Drain; never its persistence), after masking that keeps
every token in place (a mask never spans whitespace), so the mined parameters line up with the
raw tokens and can be typed (ip / number / path / id / word) and bucketed into a few bounded
entity slots. Masks and thresholds were tuned on loghub's
reference parses (Zhu et al., "Loghub", ISSRE 2023; `python -m bench.logs`).

Template ids are a hash of the template's text when its cluster was created, kept in the
state, so they survive restarts and later generalisation of the template, and do not depend on
the order clusters were created in. The state is plain JSON (clusters, prefix tree, parameters)
and the miner is rebuilt from it: drain3's own persistence goes through jsonpickle, which runs
code on load, so it is never used here.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from drain3 import TemplateMiner
from drain3.drain import LogCluster, LogClusterCache, Node
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

STATE_FORMAT = "outrider.logminer"
STATE_VERSION = 1
KIND = "log_line"
_WILD = "<*>"
_SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
_KNOWN_GROUPS = {"message", "time", "host", "program", "level", "pri"}

#: Masks applied before Drain, in order. None matches whitespace, so tokens stay aligned with
#: the raw line. The mask name types the parameter slot (see `_slot_type`).
DEFAULT_MASKS: tuple[tuple[str, str], ...] = (
    ("BLK", r"blk_-?\d+"),
    ("UUID", r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    ("MAC", r"\b[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\b"),
    ("IP", r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.])"),
    ("HEX", r"(?<![\w])0x[0-9a-fA-F]+\b"),
    ("HEX", r"(?<![\w.-])(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}(?![\w.-])"),
    ("NUM", r"(?<![A-Za-z0-9])[-+]?\d+(?:\.\d+)?(?![A-Za-z0-9])"),
)

_SLOT_TYPE = {"IP": "ip", "BLK": "id", "UUID": "id", "MAC": "id", "HEX": "id", "NUM": "number"}
_MASK_IN_TOKEN = re.compile(r"<([A-Z]+)>")
_IP = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_DIGIT = re.compile(r"\d")
_WORD = re.compile(r"^[\w.@+-]{1,32}$")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\ufffd]")


class LogParseError(ValueError):
    """A line no configured format can parse; the decoder turns it into a dead letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LogFormat:
    """A header layout: a regex with named groups and how to read its `time` group."""

    name: str
    pattern: re.Pattern[str]
    time_format: str | None = None

    @classmethod
    def from_config(cls, name: str, body: dict[str, Any]) -> LogFormat:
        unknown = set(body) - {"pattern", "time_format"}
        if unknown:
            raise ValueError(f"logformat {name!r}: unknown keys {sorted(unknown)}")
        pattern = re.compile(body["pattern"])
        if "message" not in pattern.groupindex:
            raise ValueError(f"logformat {name!r}: the pattern needs a (?P<message>...) group")
        return cls(name, pattern, body.get("time_format"))


def load_log_formats(path: str | Path | None = None) -> tuple[LogFormat, ...]:
    """The `[logformats.*]` tables of `path` (a TOML file or a folder of them, in name order),
    or of the packaged configuration when None; tried in that order."""
    if path is None:
        folder = resources.files("service").joinpath("config")
        texts = [
            f.read_text()
            for f in sorted(folder.iterdir(), key=lambda f: f.name)
            if f.name.endswith(".toml")
        ]
    else:
        p = Path(path)
        files = sorted(p.glob("*.toml")) if p.is_dir() else [p]
        texts = [f.read_text() for f in files]
    formats: dict[str, LogFormat] = {}
    for text in texts:
        for name, body in tomllib.loads(text).get("logformats", {}).items():
            if name in formats:
                raise ValueError(f"logformat {name!r} is declared twice")
            formats[name] = LogFormat.from_config(name, body)
    return tuple(formats.values())


@dataclass(frozen=True, slots=True)
class MinerParams:
    """Drain's parameters and Outrider's bounds; saved in the state (they shape the ids)."""

    depth: int = 4
    sim_th: float = 0.5
    max_children: int = 100
    max_clusters: int = 20_000  # LRU-evicted past this: bounds memory and the state
    max_slots: int = 4
    max_line_chars: int = 16_384
    masks: tuple[tuple[str, str], ...] = DEFAULT_MASKS

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["masks"] = [list(m) for m in self.masks]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MinerParams:
        return cls(**{**d, "masks": tuple(tuple(m) for m in d["masks"])})


@dataclass(slots=True)
class _Meta:
    template_id: str
    last_seen: int


class LogMiner:
    """Online template miner that turns a raw log line into a canonical `log_line` event."""

    def __init__(
        self, formats: Iterable[LogFormat] | None = None, params: MinerParams | None = None
    ) -> None:
        self.formats = tuple(load_log_formats() if formats is None else formats)
        if not self.formats:
            raise ValueError("no log formats configured")
        self.params = params or MinerParams()
        cfg = TemplateMinerConfig()
        cfg.drain_depth = self.params.depth
        cfg.drain_sim_th = self.params.sim_th
        cfg.drain_max_children = self.params.max_children
        cfg.drain_max_clusters = self.params.max_clusters
        cfg.masking_instructions = [MaskingInstruction(p, n) for n, p in self.params.masks]
        self._miner = TemplateMiner(persistence_handler=None, config=cfg)  # no jsonpickle
        self._meta: dict[int, _Meta] = {}
        self._ids: set[str] = set()
        self._tick = 0

    # -- parsing --------------------------------------------------------------------------
    def parse_header(self, line: str) -> tuple[LogFormat, dict[str, str]]:
        """The first format that matches `line` and its groups; LogParseError if none does."""
        if not line.strip():
            raise LogParseError("empty line")
        if len(line) > self.params.max_line_chars:
            raise LogParseError(f"line of {len(line)} chars exceeds {self.params.max_line_chars}")
        bad = len(_CONTROL.findall(line))
        if bad:
            raise LogParseError(f"{bad} control or undecodable characters: not a text log line")
        for fmt in self.formats:
            m = fmt.pattern.match(line)
            if m:
                return fmt, {k: v for k, v in m.groupdict().items() if v is not None}
        raise LogParseError(
            f"no log format matches (tried {', '.join(f.name for f in self.formats)})"
        )

    def event_for_line(self, line: str, received_time: float | None = None) -> dict[str, Any]:
        """The canonical event for one raw line (learning its template on the way)."""
        line = line.rstrip("\r\n")
        fmt, groups = self.parse_header(line)
        message = groups.get("message", "")
        masked = self._miner.masker.mask(message)
        cluster, _ = self._miner.drain.add_log_message(masked)
        template_id = self._template_id(cluster)
        entities: dict[str, str] = {"template": template_id}
        for name in ("host", "program", "level"):
            value = groups.get(name, "").strip()
            if value and value != "-":
                entities[name] = value[:256]
        if "level" in entities:  # one vocabulary across sources: INFO (HDFS) = info (syslog)
            entities["level"] = entities["level"].lower()
        attributes: dict[str, Any] = {
            "message": message,
            "template_text": cluster.get_template(),
            "log_format": fmt.name,
        }
        if "pri" in groups:
            pri = int(groups["pri"])
            entities.setdefault("level", _SEVERITIES[pri % 8])
            attributes["facility"] = pri // 8
        for name, value in groups.items():
            if name not in _KNOWN_GROUPS:
                attributes[name] = value
        params = _parameters(cluster.log_template_tokens, masked.split(), message.split())
        for i, (kind, raw) in enumerate(params[: self.params.max_slots]):
            entities[f"slot_{i}"] = f"{kind}:{_bucket(kind, raw)}"
        if params:
            attributes["parameters"] = [raw for _, raw in params]
        t = parse_time(groups.get("time"), fmt.time_format, received_time)
        if t is None or not 0 <= t < 1e11:  # absent, unreadable or absurd: the receive time
            t = received_time if received_time is not None else time.time()
        return {"kind": KIND, "time": t, "entities": entities, "attributes": attributes}

    def _template_id(self, cluster: LogCluster) -> str:
        self._tick += 1
        meta = self._meta.get(cluster.cluster_id)
        if meta is None:
            text = cluster.get_template()
            tid = "T" + hashlib.sha256(text.encode()).hexdigest()[:12]
            n = 1
            while tid in self._ids:  # the same first text twice: rare, made unique in order
                n += 1
                tid = "T" + hashlib.sha256(f"{text}#{n}".encode()).hexdigest()[:12]
            self._ids.add(tid)
            meta = self._meta[cluster.cluster_id] = _Meta(tid, self._tick)
            if len(self._meta) > self.params.max_clusters + 1024:
                self._forget_evicted()
        meta.last_seen = self._tick
        return meta.template_id

    def _forget_evicted(self) -> None:
        live = self._miner.drain.id_to_cluster
        for cid in [c for c in self._meta if c not in live]:
            self._ids.discard(self._meta.pop(cid).template_id)

    # -- introspection --------------------------------------------------------------------
    @property
    def templates(self) -> dict[str, str]:
        """Template id -> current template text, for every live cluster."""
        drain = self._miner.drain
        return {
            m.template_id: drain.id_to_cluster.get(cid).get_template()
            for cid, m in self._meta.items()
            if cid in drain.id_to_cluster
        }

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the miner, as plain JSON (no code, no pickle)."""
        drain = self._miner.drain
        clusters = drain.id_to_cluster  # .get(): no LRU touch while saving
        live = [clusters.get(cid) for cid in list(clusters) if cid in self._meta]
        live.sort(key=lambda c: self._meta[c.cluster_id].last_seen)  # LRU order for reload
        body = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "params": self.params.to_json(),
            "tick": self._tick,
            "clusters_counter": drain.clusters_counter,
            "clusters": [
                [
                    c.cluster_id,
                    self._meta[c.cluster_id].template_id,
                    c.size,
                    self._meta[c.cluster_id].last_seen,
                    list(c.log_template_tokens),
                ]
                for c in live
            ],
            "tree": _tree_to_json(drain.root_node, {c.cluster_id for c in live}),
        }
        return {**body, "checksum": _checksum(body)}

    @classmethod
    def from_state(cls, d: dict[str, Any], formats: Iterable[LogFormat] | None = None) -> LogMiner:
        """Rebuild a miner from `state()` output; refuses a foreign, newer or altered state."""
        if d.get("format") != STATE_FORMAT or d.get("version") != STATE_VERSION:
            raise ValueError(
                f"state is {d.get('format')!r} v{d.get('version')!r}, "
                f"not {STATE_FORMAT!r} v{STATE_VERSION}"
            )
        body = {k: v for k, v in d.items() if k != "checksum"}
        if d.get("checksum") != _checksum(body):
            raise ValueError("log miner state checksum does not match its content")
        miner = cls(formats, MinerParams.from_json(d["params"]))
        drain = miner._miner.drain
        if isinstance(drain.id_to_cluster, LogClusterCache):
            drain.id_to_cluster.clear()
        for cid, tid, size, last_seen, tokens in d["clusters"]:
            cluster = LogCluster(tokens, int(cid))
            cluster.size = int(size)
            drain.id_to_cluster[cluster.cluster_id] = cluster  # oldest first: LRU kept
            miner._meta[cluster.cluster_id] = _Meta(str(tid), int(last_seen))
            miner._ids.add(str(tid))
        drain.clusters_counter = int(d["clusters_counter"])
        drain.root_node = _tree_from_json(d["tree"])
        miner._tick = int(d["tick"])
        return miner


# -- parameters ---------------------------------------------------------------------------
def _parameters(
    template: tuple[str, ...], masked: list[str], raw: list[str]
) -> list[tuple[str, str]]:
    """(type, raw token) of every token where the template does not match the line literally.

    Masks keep the token count, so template, masked and raw tokens align by position."""
    if not (len(template) == len(masked) == len(raw)):
        return []
    out = []
    for t, m, r in zip(template, masked, raw, strict=True):
        if t != r:
            out.append((_slot_type(m, r), r))
    return out


def _slot_type(masked: str, raw: str) -> str:
    names = _MASK_IN_TOKEN.findall(masked)
    for name in ("IP", "BLK", "UUID", "MAC", "HEX"):
        if name in names:
            return _SLOT_TYPE[name]
    if "/" in raw and len(raw) > 1:
        return "path"
    if "NUM" in names:
        return "number"
    return "word"


def _bucket(kind: str, raw: str) -> str:
    """A bounded value per slot type: ids say only that there was one, numbers keep their
    order of magnitude, paths their first two components, IPs stay (the vocabulary caps them)."""
    if kind == "id":
        return "<id>"
    if kind == "ip":
        m = _IP.search(raw)
        return m.group(0) if m else "<ip>"
    if kind == "number":
        m = re.search(r"[-+]?\d+(?:\.\d+)?", raw)
        if not m:
            return "<num>"
        x = abs(float(m.group(0)))
        sign = "-" if m.group(0).startswith("-") else ""
        if x < 16 and x == int(x):
            return f"{sign}{int(x)}"
        return f"{sign}~1e{math.floor(math.log10(x))}"
    if kind == "path":
        parts = [p for p in raw.strip("'\"[](),;").split("/") if p]
        head = "/".join(_DIGIT.sub("#", p)[:32] for p in parts[:2])
        return (
            ("/" if raw.lstrip("'\"[(").startswith("/") else "")
            + head
            + ("/…" if len(parts) > 2 else "")
        )
    word = raw.strip("'\"[](),;:.")
    if not word:
        return "<empty>"
    return word if _WORD.match(word) else f"<{len(word)}chars>"


# -- time ---------------------------------------------------------------------------------
def parse_time(text: str | None, time_format: str | None, received: float | None) -> float | None:
    """Epoch seconds from a header's time text, or None when absent or unreadable."""
    if not text or not time_format or text == "-":
        return None
    try:
        if time_format == "epoch":
            return float(text)
        if time_format == "iso8601":
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        if time_format == "bsd":
            ref = datetime.fromtimestamp(received if received is not None else time.time(), UTC)
            dt = datetime.strptime(f"{ref.year} {' '.join(text.split())}", "%Y %b %d %H:%M:%S")
            t = dt.replace(tzinfo=UTC).timestamp()
            # A December line received in January belongs to the year before.
            return (
                t
                if t <= ref.timestamp() + 86_400
                else dt.replace(year=ref.year - 1, tzinfo=UTC).timestamp()
            )
        return datetime.strptime(text, time_format).replace(tzinfo=UTC).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


# -- plain-JSON state helpers -------------------------------------------------------------
def _tree_to_json(node: Node, live: set[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ids = [c for c in node.cluster_ids if c in live]
    if ids:
        out["c"] = ids
    if node.key_to_child_node:
        out["k"] = {
            tok: _tree_to_json(child, live) for tok, child in node.key_to_child_node.items()
        }
    return out


def _tree_from_json(d: dict[str, Any]) -> Node:
    node = Node()
    node.cluster_ids = [int(c) for c in d.get("c", [])]
    node.key_to_child_node = {str(k): _tree_from_json(v) for k, v in d.get("k", {}).items()}
    return node


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
