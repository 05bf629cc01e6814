"""Damaged partition files: a read never skips, recovery never drops data silently, and damage
a crash cannot explain is refused (the partition offline, named at ERROR), never "repaired" by
deleting."""

import os
import signal
import time

import pytest

from logfiles import (batch_holding, batches, consume_all, first_consumed, overwrite, produce_numbered,
                      segments)

SETTINGS = {"log.segment.bytes": "16384", "log.index.interval.bytes": "512"}
N = 1000


def setup_topic(broker_factory, topic="damaged"):
    broker = broker_factory(SETTINGS)
    acked = produce_numbered(broker.bootstrap, topic, N)
    assert sorted(acked.values()) == list(range(N))
    part = broker.data_dir / f"{topic}-0"
    assert len(segments(part)) >= 5
    return broker, part


def broker_log(broker):
    return broker.log_tail(max_bytes=200_000)


def test_a_damaged_batch_length_is_an_error_not_a_skip(broker_factory):
    broker, part = setup_topic(broker_factory)
    seg, b = batch_holding(part, 420)
    assert seg != segments(part)[-1], "the damage must be in a sealed segment"
    # The length field now reaches into the batches after it.
    overwrite(seg, b.position + 8, (b.size - 12 + 700).to_bytes(4, "big"))
    got = first_consumed(broker.bootstrap, "damaged", 0, 420)
    assert got[0] == "error", f"a fetch at 420 must fail, not deliver {got}"
    # Before the damaged batch everything reads as it was.
    assert first_consumed(broker.bootstrap, "damaged", 0, b.base_offset - 1) == ("record", b.base_offset - 1)
    text = broker_log(broker)
    assert "ERROR" in text and str(seg) in text, text[-3000:]


def test_a_damaged_base_offset_is_an_error_not_a_skip(broker_factory):
    broker, part = setup_topic(broker_factory)
    seg, b = batch_holding(part, 420)
    # The batch claims offsets beyond the ones it holds (base offset is outside the CRC).
    overwrite(seg, b.position, (b.base_offset + 140).to_bytes(8, "big"))
    for offset in (420, b.base_offset):
        got = first_consumed(broker.bootstrap, "damaged", 0, offset)
        assert got[0] == "error", f"a fetch at {offset} must fail, not deliver {got}"


def test_a_shifted_index_entry_is_not_followed(broker_factory):
    broker, part = setup_topic(broker_factory)
    broker.stop()
    seg = segments(part)[2]
    index = seg.with_suffix(".index")
    data = bytearray(index.read_bytes())
    assert len(data) >= 16, "the test needs index entries in a sealed segment"
    rel, pos = int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")
    # Still increasing and within the file, so it passes a sanity check, but points into a batch.
    data[4:8] = (pos + 20).to_bytes(4, "big")
    index.write_bytes(bytes(data))
    broker.start()
    records = consume_all(broker.bootstrap, "damaged", batch_per_fetch=True, timeout=60)
    assert [o for o, _ in records] == list(range(N)), "every record, none skipped"


def test_a_sealed_segment_cut_short_is_refused_not_deleted(broker_factory):
    broker, part = setup_topic(broker_factory)
    produce_numbered(broker.bootstrap, "healthy", 50)
    broker.stop()
    segs = segments(part)
    victim = segs[2]
    size = victim.stat().st_size
    os.truncate(victim, size // 2 + 3)
    names_before = sorted(p.name for p in part.iterdir())
    broker.start()
    # The damaged partition is offline; the broker serves the rest.
    assert len(consume_all(broker.bootstrap, "healthy")) == 50
    got = first_consumed(broker.bootstrap, "damaged", 0, 0, timeout=8)
    assert got[0] != "record", f"an offline partition must not serve records: {got}"
    text = broker_log(broker)
    assert "ERROR" in text and victim.name in text, text[-3000:]
    # Nothing was deleted: every later segment is still there.
    assert all(s.exists() for s in segs)
    assert sorted(p.name for p in part.iterdir() if not p.name.endswith(".tmp")) == names_before


def test_a_log_start_checkpoint_beyond_the_end_is_refused_not_obeyed(broker_factory):
    broker, part = setup_topic(broker_factory)
    broker.stop()
    ckpt = part / "log-start-offset"
    ckpt.write_text("99999\n")
    segs = segments(part)
    broker.start()
    got = first_consumed(broker.bootstrap, "damaged", 0, 0, timeout=8)
    assert got[0] != "record", got
    assert "log-start-offset" in broker_log(broker)
    assert all(s.exists() for s in segs), "no segment deleted on the checkpoint's word"
    broker.stop()
    ckpt.write_text("0\n")
    broker.start()
    assert [o for o, _ in consume_all(broker.bootstrap, "damaged")] == list(range(N))


def test_a_torn_tail_cut_after_a_crash_is_logged_with_what_was_dropped(broker_factory):
    broker, part = setup_topic(broker_factory)
    broker.kill9()
    active = segments(part)[-1]
    last = batches(active)[-1]
    # A write the crash tore: the start of a copy of the last batch, with its offsets advanced.
    tail = bytearray(active.read_bytes()[last.position:last.position + last.size])
    tail[0:8] = (last.last_offset + 1).to_bytes(8, "big")
    with open(active, "ab") as f:
        f.write(bytes(tail[: len(tail) // 2]))
    broker.start()
    assert [o for o, _ in consume_all(broker.bootstrap, "damaged")] == list(range(N))
    lines = [l for l in broker_log(broker).splitlines() if "cutting a damaged segment" in l]
    assert lines and "ERROR" in lines[0] and active.name in lines[0], lines


@pytest.mark.parametrize("content", [None, "0\n", "99999\n"], ids=["missing", "zero", "beyond-the-end"])
def test_a_missing_or_stale_high_watermark_checkpoint_loses_nothing(broker_factory, content):
    """The HW checkpoint only says what was committed when it was written: lost (or from a data
    directory older than the file), behind, or ahead of a log a crash cut, the single-replica
    leader commits its whole log again at start-up and every acknowledged record is served."""
    broker, part = setup_topic(broker_factory)
    broker.stop()
    ckpt = part / "high-watermark"
    assert ckpt.exists(), "written at close"
    if content is None:
        ckpt.unlink()
    else:
        ckpt.write_text(content)
    broker.start()
    assert [o for o, _ in consume_all(broker.bootstrap, "damaged")] == list(range(N))


def test_a_garbage_high_watermark_checkpoint_is_refused_naming_it(broker_factory):
    broker, part = setup_topic(broker_factory)
    broker.stop()
    ckpt = part / "high-watermark"
    ckpt.write_bytes(b"\xff\xfegarbage")
    names_before = sorted(p.name for p in part.iterdir())
    broker.start()
    got = first_consumed(broker.bootstrap, "damaged", 0, 0, timeout=8)
    assert got[0] != "record", got
    text = broker_log(broker)
    assert "ERROR" in text and "high-watermark" in text, text[-3000:]
    assert sorted(p.name for p in part.iterdir() if not p.name.endswith(".tmp")) == names_before
    broker.stop()
    ckpt.write_text("0\n")
    broker.start()
    assert [o for o, _ in consume_all(broker.bootstrap, "damaged")] == list(range(N))
