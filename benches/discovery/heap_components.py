#!/usr/bin/env python3
"""Heap at its peak, by component: reads `heaptrack_print --print-peaks 1` output on stdin
(docs/performance.md, "Where the memory goes") and sums each allocation path into the first
component its frames name, innermost first."""
import re
import sys
from collections import defaultdict

# (component, frame pattern); the first pattern found from the innermost frame out wins.
COMPONENTS = [
    ("cache: Services", r"CompactService::new|State::on_service_event"),
    ("cache: owned Upstreams", r"CompactUpstream::new|State::put_upstream|State::on_upstream_event"),
    ("cache: names and claimants", r"Claimants::insert|State::service_changed"),
    ("lists in flight: Services", r"SlimService.*Deserialize|v1..service..Service.u20.as.u20.serde"),
    ("lists in flight: Upstreams (service discovery)", r"SlimUpstream.*Deserialize|crd..Upstream.u20.as.u20.serde"),
    ("lists in flight: Upstreams (function discovery)", r"LambdaUpstream.*Deserialize"),
    ("lists in flight: Upstreams (the copies handed to each loop)", r"source::upstreams::upstream_inputs|source..upstreams..for_functions"),
    ("lists in flight: the read-ahead buffers", r"source::read_ahead::read_ahead"),
    ("lists in flight: other objects", r"kube_runtime::watcher"),
    ("HTTP bodies and buffers", r"request_text|hyper::proto|h2::"),
    ("work queue and plans", r"reconcile::queue|services::Engine|plan::|translate::"),
    ("function discovery", r"upstream_discovery::lambda"),
    ("TLS and crypto", r"rustls|aws_lc"),
    ("metrics", r"prometheus|upstream_discovery::metrics"),
    ("logging", r"tracing"),
]
SIZE = re.compile(r"^\s*([0-9.]+)([KMG]?)B? (?:peak memory )?consumed over")
UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}


def entries(lines):
    """(bytes, frames) of every leaf path: a size line followed by its frames."""
    size, frames = None, []
    for line in lines:
        match = SIZE.match(line)
        if match:
            if size is not None and frames:
                yield size, frames
            size = float(match.group(1)) * UNITS[match.group(2)]
            frames = []
        elif size is not None and line.strip() and not line.strip().startswith(("in ", "at ")):
            frames.append(line.strip())
    if size is not None and frames:
        yield size, frames


def main():
    lines = sys.stdin.read().split("\n")
    start = next(i for i, l in enumerate(lines) if l.startswith("PEAK MEMORY CONSUMERS"))
    end = next((i for i, l in enumerate(lines) if i > start and l.startswith("total runtime")), len(lines))
    peak = next((l for l in lines if l.startswith("peak heap memory consumption")), "")
    totals = defaultdict(float)
    # A top-level entry's size repeats the sum of its paths: count only the paths ("from:").
    block = [l for l in lines[start + 1:end]]
    leaves = []
    for i, line in enumerate(block):
        if SIZE.match(line) and not line.rstrip().endswith("from:"):
            block[i] = ""
    for size, frames in entries(block):
        component = next((name for frame in frames for name, pattern in COMPONENTS
                          if re.search(pattern, frame)), "other")
        totals[component] += size
    total = sum(totals.values())
    print(peak)
    print("| component | heap at the peak | share |")
    print("|---|---|---|")
    for name, size in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {size / 2**20:.2f} MiB | {100 * size / total:.0f}% |")


if __name__ == "__main__":
    main()
