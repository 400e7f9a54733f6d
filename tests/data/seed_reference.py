#!/usr/bin/env python3
"""Prints the reference values of `tests/seed_conformance.rs` by running the seed's own code.

The seed's Python sketches live in the design document, not in a module; this script executes
its code blocks (those before "## Entity Relationships") as they are, with stand-ins for the
names the document uses but never defines, and prints each table the Rust test embeds:

    pip install numpy
    python3 tests/data/seed_reference.py ../shared/seed/entities-and-value-objects.md

Two calls cannot run as written, and the script says how it works around each: the entities'
state checks compare with class variables left at `None` (not exercised here), and
`CacheEntry.is_expired` adds the `TTL` object itself to a datetime (a `TypeError`), so the
entry is given the TTL's `timedelta`.
"""

import dataclasses
import enum
import hashlib
import re
import sys
from datetime import datetime, timedelta
from typing import Any, ClassVar, Dict, List, Optional
from uuid import UUID, uuid4

import numpy as np

# Names the sketches use in annotations or calls without defining them.
UNDEFINED = """JobId JobType JobPayload JobPriority JobStatus JobResult CacheKey CacheValue TTL
TaskId ProcessingId AudioChunk TaskStatus ChunkResult SeriesId MetricName TimestampedValue
MetricValue Percentile Threshold AlertRuleId""".split()


class TaskStatus(enum.Enum):
    PENDING = 1
    PROCESSING = 2
    COMPLETED = 3
    FAILED = 4


@dataclasses.dataclass
class TimestampedValue:
    value: Any
    timestamp: datetime
    tags: Dict[str, str]


class FrozenClock:
    """What the sketches' `datetime.utcnow()` returns."""

    now = datetime(2026, 2, 3)


class FrozenDatetime(datetime):
    @classmethod
    def utcnow(cls):
        return FrozenClock.now


def load(path):
    text = open(path, encoding="utf-8").read().split("## Entity Relationships")[0]
    source = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    ns = {name: Any for name in UNDEFINED}
    ns.update(dataclass=dataclasses.dataclass, datetime=datetime, timedelta=timedelta,
              ClassVar=ClassVar, Dict=Dict, List=List, Optional=Optional, UUID=UUID,
              uuid4=uuid4, np=np, InvalidStateTransition=Exception)
    exec(compile(source, path, "exec"), ns)
    # After the class definitions, which need the real datetime for their annotations.
    ns.update(datetime=FrozenDatetime, TaskStatus=TaskStatus, TimestampedValue=TimestampedValue)
    return ns


def main(path):
    seed = load(path)
    retry = seed["RetryConfig"]
    attempts = list(range(21)) + [31, 32, 33, 63, 64, 65, 100, 1000]
    print("retry attempts", attempts)
    for name, config in [
        ("exponential()", retry.exponential()),
        ("exponential(base_delay_ms=250)", retry.exponential(base_delay_ms=250)),
        ("exponential(base_delay_ms=0)", retry.exponential(base_delay_ms=0)),
        ("exponential(base_delay_ms=60000)", retry.exponential(base_delay_ms=60000)),
        ("RetryConfig(3, 'EXPONENTIAL', 1, 60000)", retry(3, "EXPONENTIAL", 1, 60000)),
        ("fixed()", retry.fixed()),
        ("fixed(delay_ms=0)", retry.fixed(delay_ms=0)),
        ("RetryConfig(3, 'LINEAR', 1000, 60000)", retry(3, "LINEAR", 1000, 60000)),
        ("RetryConfig(3, 'LINEAR', 7, 100)", retry(3, "LINEAR", 7, 100)),
    ]:
        print("retry", name, [config.calculate_delay(a) for a in attempts])

    chunk = seed["ChunkSize"]
    for mb in [0, 1, 10, 25, 49, 50, 51, 75, 99, 100, 101, 500, 1000, 10**6]:
        size = chunk.from_file_size(mb)
        print("chunk from_file_size", mb, size.value_mb, size.to_bytes())
    print("chunk to_bytes", [chunk(value_mb=mb).to_bytes() for mb in range(10, 26)])

    priority = seed["JobPriority"]
    accepted = []
    for v in range(256):
        try:
            priority(value=v)
            accepted.append(v)
        except ValueError:
            pass
    print("priority accepted", accepted,
          [p.value for p in (priority.low(), priority.medium(), priority.high())])
    print("priority (a, b, a > b, a < b)",
          [(a, b, priority(value=a) > priority(value=b), priority(value=a) < priority(value=b))
           for a in (1, 2, 3) for b in (1, 2, 3)])

    key = seed["CacheKey"]
    audio = hashlib.sha256(b"audio").hexdigest()
    for file_hash, language, prefix in [
        ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "en", None),
        (audio, "en", None), (audio, "pt-BR", "transcript"), ("0" * 64, "zh_Hant", "embeddings"),
        (audio.upper(), "en", None),
    ]:
        args = (file_hash, language) if prefix is None else (file_hash, language, prefix)
        print("key from_parts", args, str(key.from_parts(*args)))
    print("key from_content abc", str(key.from_content(b"abc", "embeddings")))

    ttl = seed["TTL"]
    for unit, counts in [("minutes", [1, 5, 59, 90, 1440]), ("hours", [1, 24, 48, 8760]),
                         ("days", [7, 30, 365, 213503])]:
        for n in counts:
            print("ttl", unit, n, getattr(ttl, unit)(n).to_seconds())
    for seconds in [1, 59, 86400]:
        print("ttl seconds", seconds, ttl(value=timedelta(seconds=seconds)).to_seconds())
    for us in [1, 999_999, 1_000_000, 1_500_000, 59_999_999]:
        print("ttl microseconds", us, ttl(value=timedelta(microseconds=us)).to_seconds())
    for s in [2**33, 2**34, 18446744072]:
        print("ttl seconds + 999999 us", s,
              ttl(value=timedelta(seconds=s, microseconds=999_999)).to_seconds())

    percentile = seed["Percentile"]
    print("percentile str", [(p, str(percentile(value=p)))
                             for p in [0.0, -0.0, 1.0, 12.0, 50.0, 95.0, 99.0, 100.0, 50.5, 0.1]])

    threshold = seed["Threshold"]
    actuals = [float("-inf"), -1.0, -0.0, 0.0, 0.1 + 0.2, 0.3, 1.0, 1e12, 1e12 + 100,
               float("inf"), float("nan")]
    for factory in ("greater_than", "less_than", "equal"):
        for value in [-1.0, 0.0, 0.3, 1e12]:
            check = getattr(threshold, factory)(value).check
            print("threshold", factory, value, "".join("T" if check(a) else "F" for a in actuals))

    task = seed["ProcessingTask"]

    def progress(index, total, status):
        return task(id=None, processing_id=None, chunk=None, index=index, total_chunks=total,
                    status=status, retry_count=0, started_at=None, completed_at=None,
                    result=None, error=None).get_progress()

    for total in range(1, 8):
        for index in range(total):
            before = {progress(index, total, s) for s in TaskStatus if s != TaskStatus.COMPLETED}
            assert len(before) == 1
            print("progress", index, total, repr(before.pop()),
                  repr(progress(index, total, TaskStatus.COMPLETED)))
    print("progress 5 of 4, completed", progress(5, 4, TaskStatus.COMPLETED))

    start = FrozenClock.now
    entry = seed["CacheEntry"](key=None, value=b"old", created_at=start, accessed_at=start,
                               ttl=timedelta(seconds=10), access_count=0, size_bytes=3)
    micros = timedelta(microseconds=1)
    for at, op in [(3_000_000, "touch"), (5_000_000, "touch"), (10_000_000, "check"),
                   (10_000_001, "check"), (12_000_000, "update"), (19_000_000, "touch"),
                   (22_000_000, "check"), (22_000_001, "check")]:
        FrozenClock.now = start + at * micros
        if op == "touch":
            entry.touch()
        elif op == "update":
            entry.update_value(b"new", timedelta(seconds=10))
        print("entry", at, op, entry.is_expired(), entry.access_count,
              (entry.accessed_at - start) // micros, (entry.created_at - start) // micros)

    series, value = seed["MetricSeries"], seed["MetricValue"]
    for values in [[1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3], [0.1] * 7, [0.1] * 8, [0.1] * 10,
                   [0.1] * 100, [i / 1000 for i in range(1, 101)],
                   [1e16, 1.0, -1e16, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]:
        FrozenClock.now = start
        s = series(id=None, name="m", values=[], retention_period=timedelta(hours=1))
        for v in values:
            s.add_value(value.histogram(v), {})
        print("average", len(values), repr(s.get_average(timedelta(minutes=5))),
              "numpy.mean", repr(float(np.mean(values))))


if __name__ == "__main__":
    main(sys.argv[1])
