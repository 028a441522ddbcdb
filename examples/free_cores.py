"""Print how many CPU cores are free right now (at least 1): the cores less those busy with
other work over the last second (Linux /proc/stat; elsewhere every core). The quickstart trains
on that many threads: a torch thread that shares a core with another job waits on it at every
step (on a 2-core machine with one core busy, 2 threads gave a quarter of the free machine's
steps)."""

import os
import time


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values), idle


def free_cores(interval: float = 1.0) -> int:
    n = os.cpu_count() or 1
    try:
        total0, idle0 = _cpu_times()
        time.sleep(interval)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return n
    busy = n * (1 - (idle1 - idle0) / max(total1 - total0, 1))
    return max(1, n - int(busy + 0.5))


if __name__ == "__main__":
    print(free_cores())
