#!/usr/bin/env python3
"""Times commands alternately, run by run, so that all see the same load.

    bench/ab.py RUNS CMD_A... -- CMD_B... [-- CMD_C...]

Prints, per command, the median, p10, p90 and minimum wall time in ms and
the load average at the start and the end. Used for before/after figures
of one change (e.g. two builds of moor on the same no-op apply).
"""
import os
import statistics
import subprocess
import sys
import time


def main():
    runs = int(sys.argv[1])
    cmds, cur = [], []
    for a in sys.argv[2:]:
        if a == "--":
            cmds.append(cur)
            cur = []
        else:
            cur.append(a)
    cmds.append(cur)
    times = [[] for _ in cmds]
    load = open("/proc/loadavg").read().split()[:3]
    with open(os.devnull, "w") as null:
        for _ in range(runs):
            for i, c in enumerate(cmds):
                t0 = time.perf_counter()
                if subprocess.run(c, stdout=null, stderr=null).returncode:
                    sys.exit(f"failed: {' '.join(c)}")
                times[i].append((time.perf_counter() - t0) * 1000)
    end = open("/proc/loadavg").read().split()[:3]
    print(f"{runs} runs each, alternated; load average {' '.join(load)} at the start, {' '.join(end)} at the end")
    for c, t in zip(cmds, times):
        t.sort()
        print(f"{' '.join(c)}: median {statistics.median(t):.1f} ms, "
              f"p10 {t[len(t) // 10]:.1f}, p90 {t[len(t) * 9 // 10]:.1f}, min {t[0]:.1f}")


if __name__ == "__main__":
    main()
