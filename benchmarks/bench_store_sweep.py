"""Many runs read the way the multi-run viewer reads them, through the store.

    for i in $(seq 0 49); do python benchmarks/make_big_log.py sweep/run$i.wtui --size-mb 100 --bins 64; done
    /usr/bin/time -f "%e s, peak RSS %M KB" python benchmarks/bench_store_sweep.py sweep save    # builds indexes
    /usr/bin/time -f "%e s, peak RSS %M KB" python benchmarks/bench_store_sweep.py sweep nosave  # from them

Per run: a RunData with max_rows 1024 (the multi-run viewer's), its index loaded if there is
one, a LogTail from where the index ends, every poll ingested (sealed segments spill to the
index directory), the index saved ("save"), then what the first screen asks: the latest
weights norms, update ratios and the loss. Peak RSS is taken from outside (/usr/bin/time).
"""

from __future__ import annotations

import glob
import json
import sys
import time

from weighttui.data.run import RunData
from weighttui.log.tail import LogTail


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    directory, mode = argv[0], (argv[1] if len(argv) > 1 else "save")
    paths = sorted(glob.glob(directory + "/*.wtui"))
    t0 = time.perf_counter()
    runs = []
    for p in paths:
        d = RunData(p, max_rows=1024)
        start = d.load_index()
        with LogTail(p, max_bytes_per_poll=4 << 20, start=start) as tail:
            while True:
                poll = tail.poll()
                d.ingest(poll)
                if poll.offset + tail.pending >= poll.size:
                    break
        if mode == "save":
            d.save_index()
        d.stat_matrix("weights", "norm")[-1]
        d.stat_matrix("delta", "ratio")[-1]
        d.scalars("loss")
        runs.append(d)
    print(json.dumps({"runs": len(runs), "seconds": time.perf_counter() - t0,
                      "snapshots": sum(r.snapshot_count for r in runs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
