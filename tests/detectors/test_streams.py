"""Stream context (detectors/streams.py): silenced and unmirrored streams, and the ranking they
move in OutriderDetector."""

from __future__ import annotations

import json

import numpy as np

from detectors.base import EventBatch
from detectors.outrider import OutriderDetector
from detectors.streams import StreamContext

HOUR = 3600.0


def _beacon(host: str, start: float, end: float, every: float = 15.0):
    times = np.arange(start, end, every)
    return [("beacon", host)] * len(times), times


def _observe(ctx: StreamContext, *parts: tuple[list, np.ndarray]) -> None:
    keys = [k for p in parts for k in p[0]]
    ctx.observe(keys, np.concatenate([p[1] for p in parts]))


def test_event_just_after_a_steady_stream_stops_is_flagged_once_silence_is_confirmed() -> None:
    ctx = StreamContext()
    stop = 6 * HOUR
    _observe(ctx, _beacon("share", 0.0, stop))  # steady for 6 h, last event just before stop
    probe = [("svc_stop", "share"), ("svc_stop", "other-host"), ("svc_stop", "share")]
    times = np.array([stop + 10.0, stop + 10.0, stop + 2 * HOUR])
    ctx.observe(probe, times)
    after, lonely = ctx.flags(probe, times)
    assert after.tolist() == [True, False, False]  # same host, within after_s of the stop
    assert not lonely.any()
    # the same service stop while the beacon still runs is not flagged
    live = StreamContext()
    _observe(live, _beacon("share", 0.0, stop + 3 * HOUR))
    live.observe(probe[:1], times[:1])
    assert not live.flags(probe[:1], times[:1])[0].any()


def test_silence_needs_the_quiet_to_be_confirmed_and_the_stream_to_have_been_steady() -> None:
    ctx = StreamContext(silence_s=HOUR)
    stop = 6 * HOUR
    _observe(ctx, _beacon("share", 0.0, stop))
    key, t = [("svc_stop", "share")], np.array([stop + 10.0])
    ctx.observe(key, t)
    assert not ctx.flags(key, t)[0].any()  # 10 s of quiet proves nothing yet
    ctx.observe([("heartbeat", "elsewhere")], np.array([stop + 2 * HOUR]))  # the clock moves on
    assert ctx.flags(key, t)[0].all()
    sparse = StreamContext(silence_s=HOUR)  # one event every 40 min is not steady
    _observe(sparse, _beacon("share", 0.0, stop, every=2400.0))
    sparse.observe(key, t)
    sparse.observe([("heartbeat", "elsewhere")], np.array([stop + 2 * HOUR]))
    assert not sparse.flags(key, t)[0].any()


def test_streams_stopping_together_do_not_flag_each_other() -> None:
    ctx = StreamContext()
    stop = 6 * HOUR
    echo_keys = [("echo", "share")] * len(np.arange(0.0, stop + 30.0, 15.0))
    _observe(ctx, _beacon("share", 0.0, stop), (echo_keys, np.arange(0.0, stop + 30.0, 15.0)))
    ctx.observe([("heartbeat", "elsewhere")], np.array([stop + 2 * HOUR]))
    last_echo = [("echo", "share")]
    assert not ctx.flags(last_echo, np.array([stop + 15.0]))[0].any()


def _mirrored(episodes: int, lonely_at: float | None = None):
    """'dns-rule' fires on 'dns' and 'firewall' together, an episode every 2 h; optionally one
    episode on the firewall alone."""
    keys, times = [], []
    for e in range(episodes):
        t = e * 2 * HOUR
        for h in ("dns", "firewall"):
            keys += [("dns-rule", h)] * 3
            times += [t, t + 1.0, t + 2.0]
    if lonely_at is not None:
        keys += [("dns-rule", "firewall")] * 4
        times += [lonely_at + i for i in range(4)]
    keys.append(("heartbeat", "elsewhere"))  # moves the clock past the last episode
    times.append(max(times) + HOUR)
    return keys, np.array(times)


def test_episode_missing_its_usual_mirror_is_flagged() -> None:
    lonely_at = 12 * HOUR + 600.0
    keys, times = _mirrored(6, lonely_at)
    ctx = StreamContext()
    ctx.observe(keys, times)
    probe = [("dns-rule", "firewall"), ("dns-rule", "firewall"), ("dns-rule", "dns")]
    at = np.array([lonely_at + 1.0, 2 * HOUR, 2 * HOUR])
    after, lonely = ctx.flags(probe, at)
    assert lonely.tolist() == [True, False, False]
    assert not after.any()


def test_no_mirror_flag_without_enough_history() -> None:
    keys, times = _mirrored(2, 4 * HOUR + 600.0)  # 2 mirrored episodes < mirror_min_episodes
    ctx = StreamContext()
    ctx.observe(keys, times)
    assert not ctx.flags([("dns-rule", "firewall")], np.array([4 * HOUR + 601.0]))[1].any()


def test_state_round_trip_gives_the_same_flags_and_continues_identically() -> None:
    keys, times = _mirrored(6, 12 * HOUR + 600.0)
    beacon_keys, beacon_times = _beacon("share", 0.0, 13 * HOUR)
    ctx = StreamContext()
    _observe(ctx, (keys, times), (beacon_keys, beacon_times))
    back = StreamContext.from_state(*ctx.state())
    later = [("svc_stop", "share"), ("dns-rule", "firewall"), ("heartbeat", "elsewhere")]
    at = np.array([13 * HOUR + 5.0, 14 * HOUR, 16 * HOUR])
    for c in (ctx, back):
        c.observe(later, at)
    probe = [*later, ("dns-rule", "firewall")]
    probe_t = np.append(at, 12 * HOUR + 601.0)
    for a, b in zip(ctx.flags(probe, probe_t), back.flags(probe, probe_t), strict=True):
        assert a.tolist() == b.tolist()
    assert ctx.flags(probe, probe_t)[0][0] and ctx.flags(probe, probe_t)[1][-1]


def test_outrider_ranks_the_group_after_a_stop_first_only_with_the_stream_context() -> None:
    types = ("code", "host")
    stop = 6 * HOUR
    bk, bt = _beacon("share", 0.0, stop)
    routine = [("svc_stop", "share"), ("svc_stop", "web"), ("login", "web"), ("heartbeat", "x")] * 4
    routine_t = np.arange(16) * 1200.0
    warm = EventBatch(types, bk + routine, np.concatenate([bt, routine_t]))
    test = EventBatch(
        types,
        [("svc_stop", "share"), ("svc_stop", "web"), ("login", "web"), ("heartbeat", "x")],
        np.array([stop + 14.0, stop + 3 * HOUR, stop + 3 * HOUR + 1.0, stop + 4 * HOUR]),
    )
    ranks = {}
    for weight in (0.0, 4.0):
        det = OutriderDetector(types, mmr_lambda=0.0, stream_types=types, silence_weight=weight)
        det.learn_many(warm)
        ranked = det.rank(test, det.score_many(test))
        ranks[weight] = ranked.keys[int(ranked.order[0])]
    assert ranks[0.0] == ("heartbeat", "x")  # the rarest values (the share host is busy)
    assert ranks[4.0] == ("svc_stop", "share")
    det2 = OutriderDetector.from_state(*det.state_dict())
    np.testing.assert_allclose(det2.stream_boost(test), det.stream_boost(test))


def test_checkpoint_with_the_stream_context_round_trips_through_safetensors(tmp_path) -> None:
    from detectors.checkpoint import load_checkpoint, save_checkpoint

    types = ("code", "host")
    keys, times = _mirrored(6, 12 * HOUR + 600.0)
    bk, bt = _beacon("share", 0.0, 13 * HOUR)
    det = OutriderDetector(types, stream_types=types, silence_weight=4.0, mirror_weight=3.0)
    det.learn_many(EventBatch(types, keys + bk, np.concatenate([times, bt])))
    probe = EventBatch(
        types,
        [("svc_stop", "share"), ("dns-rule", "firewall"), ("heartbeat", "elsewhere")],
        np.array([13 * HOUR + 5.0, 12 * HOUR + 601.0, 16 * HOUR]),
    )
    _, dets, _ = load_checkpoint(save_checkpoint(tmp_path, "v1", {"kind": det}))
    back = dets["kind"]
    assert isinstance(back, OutriderDetector)
    np.testing.assert_array_equal(back.score_many(probe), det.score_many(probe))
    boost = det.stream_boost(probe)
    np.testing.assert_array_equal(back.stream_boost(probe), boost)
    assert boost.tolist() == [4.0, 3.0, 0.0]


def _stop_and_lonely_episode() -> tuple[list, np.ndarray, np.ndarray]:
    """A mirrored pair with one lonely episode, a beacon on 'share' that stops at 13 h, two
    service stops just after it and a later login there: (keys, times, time order)."""
    keys, times = _mirrored(6, 12 * HOUR + 600.0)
    bk, bt = _beacon("share", 0.0, 13 * HOUR)
    probe = [("svc_stop", "share"), ("svc_stop", "share"), ("login", "share")]
    probe_t = [13 * HOUR + 5.0, 13 * HOUR + 6.0, 13 * HOUR + 3 * HOUR]
    all_keys = keys + bk + probe
    all_t = np.concatenate([times, bt, probe_t])
    order = np.argsort(all_t, kind="stable")
    return all_keys, all_t, order


def test_live_references_confirm_the_same_events_the_flags_mark() -> None:
    """What a live service gets back from `observe(..., refs)` (the events whose flag became
    known) is what `flags` marks afterwards, batch by batch, for both reasons."""
    all_keys, all_t, order = _stop_and_lonely_episode()
    ctx = StreamContext()
    confirmed = []
    for chunk in np.array_split(order, 7):
        confirmed += ctx.observe([all_keys[i] for i in chunk], all_t[chunk], chunk.tolist())
    confirmed += ctx.settle()
    after, lonely = ctx.flags(all_keys, all_t)
    by_reason = {r: {c.ref for c in confirmed if c.reason == r} for r in ("silence", "mirror")}
    assert by_reason["silence"] == set(np.flatnonzero(after).tolist())
    assert by_reason["mirror"] == set(np.flatnonzero(lonely).tolist())
    assert {all_keys[i] for i in by_reason["silence"]} == {("svc_stop", "share")}
    assert {all_keys[i] for i in by_reason["mirror"]} == {("dns-rule", "firewall")}
    stop = next(c for c in confirmed if c.reason == "silence")
    assert stop.stream == ("beacon", "share") and 13 * HOUR - 15.0 <= stop.at < 13 * HOUR


def test_waiting_references_survive_a_state_round_trip() -> None:
    """A restart between any two batches (state through JSON and back) confirms exactly the
    references an uninterrupted context does: the events waiting for a flag are not lost."""
    all_keys, all_t, order = _stop_and_lonely_episode()
    # a restart inside the lonely episode, and one after each of the last three events
    cut = int(np.searchsorted(all_t[order], 12 * HOUR + 601.5))
    chunks = [*np.array_split(order[:cut], 4), *np.array_split(order[cut:-3], 4)]
    chunks += [order[-3:-2], order[-2:-1], order[-1:]]
    straight, restarted = StreamContext(), StreamContext()
    a, b, waited = [], [], 0
    for chunk in chunks:
        batch = ([all_keys[i] for i in chunk], all_t[chunk], chunk.tolist())
        a += straight.observe(*batch)
        b += restarted.observe(*batch)
        arrays, meta = restarted.state()
        restarted = StreamContext.from_state(arrays, json.loads(json.dumps(meta)))
        assert restarted.held_refs() == straight.held_refs()
        waited += bool(straight.held_refs())
    a += straight.settle()
    b += restarted.settle()
    assert sorted((c.ref, c.reason) for c in a) == sorted((c.ref, c.reason) for c in b)
    assert {c.reason for c in b} == {"silence", "mirror"}
    assert waited >= 2  # references did wait across restarts, for both reasons


def test_lateness_keeps_a_mirror_read_late_from_looking_lonely() -> None:
    """Two partitions read 300 s apart after 9 h: the firewall's episodes (and a heartbeat
    that moves the clock) arrive first, their DNS-server mirror 300 s later. Without lateness
    those episodes close before their mirror arrives and look lonely."""
    keys, times = _mirrored(8)
    beat = np.arange(0.0, times.max(), 10.0)  # read with the firewall: moves the clock on
    keys = keys + [("beat", "firewall")] * len(beat)
    times = np.concatenate([times, beat])
    late_dns = np.array([k == ("dns-rule", "dns") for k in keys]) & (times > 9 * HOUR)
    order = np.argsort(np.where(late_dns, times + 300.0, times), kind="stable")  # arrival
    flagged = {}
    for late in (0.0, 600.0):
        ctx = StreamContext(lateness_s=late)
        for chunk in np.array_split(order, len(order) // 5):  # small batches, arrival order
            ctx.observe([keys[i] for i in chunk], times[chunk])
        ctx.observe([("heartbeat", "elsewhere")], np.array([times.max() + 2 * HOUR]))
        flagged[late] = ctx.flags(keys, times)[1].sum()
    assert flagged[0.0] > 0 and flagged[600.0] == 0


def test_memory_is_bounded_the_longest_quiet_streams_go_first() -> None:
    ctx = StreamContext(max_streams=10)
    keys = [(f"code-{i}", f"host-{i % 3}") for i in range(30)]
    ctx.observe(keys, np.arange(30.0) * 100.0)
    assert len(ctx.streams) <= 10
    assert ("code-29", "host-2") in ctx.streams and ("code-0", "host-0") not in ctx.streams
    assert sum(len(h) for h in ctx.by_host.values()) == len(ctx.streams)
    assert sum(len(h) for h in ctx.by_source.values()) == len(ctx.streams)
    # a mirrored pair keeps working after its neighbours were forgotten, and the state saves
    keys, times = _mirrored(6, 12 * HOUR + 600.0)
    ctx.observe(keys, times + 3000.0)
    ctx.observe([("x", "y")], np.array([20 * HOUR]))
    back = StreamContext.from_state(*ctx.state())
    probe = [("dns-rule", "firewall")]
    at = np.array([12 * HOUR + 3601.0])
    assert ctx.flags(probe, at)[1].all() and back.flags(probe, at)[1].all()


def test_a_fleet_wide_source_is_not_watched_for_mirrors() -> None:
    """A rule firing on 20 agents at once, every 2 h, then on one agent alone: fleet-wide
    activity has no mirror pair, so no flag, and no per-pair counts are kept."""
    keys, times = [], []
    for e in range(6):
        for h in range(20):
            keys.append(("cron-rule", f"agent-{h}"))
            times.append(e * 2 * HOUR + h * 0.1)
    keys += [("cron-rule", "agent-0"), ("heartbeat", "elsewhere")]
    times += [12 * HOUR + 600.0, 14 * HOUR]
    ctx = StreamContext()
    ctx.observe(keys, np.array(times))
    assert not ctx.flags(keys, np.array(times))[1].any()
    assert all(not s.mirrored for k, s in ctx.streams.items() if k[0] == "cron-rule")
    narrow = StreamContext(mirror_max_hosts=32)  # the same traffic, watched: it is flagged
    narrow.observe(keys, np.array(times))
    assert narrow.flags(keys, np.array(times))[1][-2]


def test_a_state_with_an_option_this_version_does_not_know_still_loads() -> None:
    ctx = StreamContext()
    _observe(ctx, _beacon("share", 0.0, 3 * HOUR))
    arrays, meta = ctx.state()
    meta = {**meta, "options": {**meta["options"], "from_the_future": 1.0}}
    back = StreamContext.from_state(arrays, meta)
    assert back.streams[("beacon", "share")].steady
