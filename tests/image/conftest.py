"""The image built and run for real: `make image-test` (CI runs it after `make test`), never part of `make test`.

It needs root, buildah, podman and debootstrap (`deploy/install-image-tools.sh`), and takes minutes.
"""

import os

if os.environ.get("CONDUIT_IMAGE_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]
