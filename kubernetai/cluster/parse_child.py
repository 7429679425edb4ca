"""``python -m kubernetai.cluster.parse_child``: parse manifest files in a child process.

Reads (paths, digests, options) pickled on stdin, writes snapshot.read_files's
result pickled on stdout, and exits: the parser's heap goes with it (see
snapshot.PROCESS_PARSE_BYTES).  Only ever run by kubernetai itself.
"""

from __future__ import annotations

import pickle
import sys


def main() -> None:
    from kubernetai.cluster.snapshot import _read_files

    paths, digests, opts = pickle.load(sys.stdin.buffer)
    result = _read_files(paths, digests, opts)
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    main()
