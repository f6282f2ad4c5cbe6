"""Container supplements: how small the patched image is, and how fast containers get it.

On a private Podman service (Docker Engine API, as the tests run it: runc,
cgroupfs, its own storage under a temporary directory) it:

1. imports a base image of ``--image-mb`` MB (busybox, a ``--library-mb`` MB
   "libssl" and incompressible filler standing in for the rest of an image
   like ``nginx:1.27``);
2. publishes a signed supplement replacing the library (keys, build, TUF
   sign) to a real bsi server, and runs a real agent in container mode over
   ``--containers`` containers from the base image: the time from the start
   of publishing to every container recreated and healthy is measured;
3. compares the bytes a host adds or fetches: the added layer of the patched
   image (what bsi builds locally from the signed bundle), the signed bundle
   itself (what crosses the network), the full base image, and a rebuilt
   image (the publisher's fix: a new image whose layers all differ, all to
   be pulled).

It prints a summary and exits 0; 1 only if the benchmark itself failed.

    .venv/bin/python benchmarks/containers.py
    .venv/bin/python benchmarks/containers.py --image-mb 150 --containers 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from agent_support import OS_RELEASE, running_app
from bsi.agent.config import parse_config
from bsi.agent.runner import Agent
from bsi.cryptex import build_bundle, diff_trees, parse_spec
from bsi.cryptex.manifest import human_size
from bsi.server.app import ServerSettings, utc_now
from bsi.trust import init_keys, publish_target
from bsi.trust.repository import available_signers
from container_engine import podman_service

HOLDS_LIB = ["/bin/sh", "-c", "exec 3</usr/lib/libssl.so.3; exec sleep 100000"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-mb", type=int, default=80, help="base image size")
    parser.add_argument("--library-mb", type=int, default=5, help="the patched library's size")
    parser.add_argument("--containers", type=int, default=3, help="containers on the base")
    args = parser.parse_args()
    old_lib = os.urandom(args.library_mb << 20)
    new_lib = old_lib[: len(old_lib) // 2] + os.urandom(len(old_lib) - len(old_lib) // 2)
    filler = os.urandom(max(args.image_mb - args.library_mb - 2, 1) << 20)
    with tempfile.TemporaryDirectory(prefix="bsi-bench-containers-") as scratch:
        work = Path(scratch)
        with podman_service(work / "engine") as engine:
            client = engine.client(timeout=600)
            base = engine.import_image(
                "localhost/bench/web:1",
                {"usr/lib/libssl.so.3": old_lib, "usr/share/filler": filler},
                changes=(f"CMD {json.dumps(HOLDS_LIB)}",),
            )
            rebuilt = engine.import_image(
                "localhost/bench/web:2",
                {"usr/lib/libssl.so.3": new_lib, "usr/share/filler": filler},
                changes=(f"CMD {json.dumps(HOLDS_LIB)}",),
            )
            for i in range(args.containers):
                client.containers.run(base, name=f"web{i}", detach=True, labels={"n": str(i)})

            keys, repo = work / "keys", work / "repo"
            init_keys(keys, repo)
            root = work / "host"
            (root / "etc/bsi").mkdir(parents=True)
            (root / "etc/os-release").write_text(OS_RELEASE)
            config = f"activator: container\ncontainer_engine: {engine.url}\n"
            settings = ServerSettings(data_dir=work / "data", tuf_repo_dir=repo, tuf_keys_dir=keys)
            with running_app(settings) as (url, service):
                token = service.create_enrollment_token("default", timedelta(hours=1), None)[0]
                agent = Agent(root, parse_config(config))
                agent.enroll(url, token, repo / "metadata" / "1.root.json")
                started = time.perf_counter()
                bundle = publish(work, base, old_lib, new_lib)
                report = agent.once()
                elapsed = time.perf_counter() - started
            if report.failure is not None or report.active != "12C1000a":
                print(f"FAILED: the agent did not activate the supplement: {report.failure}")
                return 1
            patched = {c.image.id for c in client.containers.list() if c.image is not None} - {base}
            if len(patched) != 1:
                print(f"FAILED: expected one patched image, found {patched}")
                return 1
            for container in client.containers.list():
                inside = container.exec_run(["cat", "/usr/lib/libssl.so.3"]).output
                if inside != new_lib:
                    print(f"FAILED: {container.name} has {len(inside)} bytes, not the new library")
                    return 1
            patched_image = client.images.get(patched.pop())
            base_layers = client.images.get(base).attrs["RootFS"]["Layers"]
            if patched_image.attrs["RootFS"]["Layers"][:-1] != base_layers:
                print("FAILED: the patched image is not the base plus one layer")
                return 1
            sizes = {
                "base": client.images.get(base).attrs["Size"],
                "rebuilt": client.images.get(rebuilt).attrs["Size"],
            }
            # The added layer: the newest history entry that made one (the build's label
            # step comes after it and adds none).
            layer = next(int(h["Size"]) for h in patched_image.history() if int(h["Size"]) > 0)
    print(f"containers recreated: {args.containers} on the patched image")
    print(
        f"publish -> all recreated and healthy: {elapsed:.1f} s "
        "(sign, check in, TUF verify, stage, build image, recreate one by one)"
    )
    print(f"signed bundle (crosses the network): {human_size(bundle)}")
    print(f"added layer (built on the host):     {human_size(layer)}")
    print(f"full base image:                     {human_size(sizes['base'])}")
    print(f"rebuilt image (all layers new):      {human_size(sizes['rebuilt'])}")
    print(
        f"added layer / full image: {layer / sizes['base']:.1%}; "
        f"bundle / rebuilt image: {bundle / sizes['rebuilt']:.1%}"
    )
    return 0


def publish(work: Path, digest: str, old_lib: bytes, new_lib: bytes) -> int:
    """Build, sign and publish 12C1000a for image ``digest``; the bundle's size in bytes."""
    base, patched = work / "base/usr/lib", work / "patched/usr/lib"
    base.mkdir(parents=True)
    patched.mkdir(parents=True)
    (base / "libssl.so.3").write_bytes(old_lib)
    (patched / "libssl.so.3").write_bytes(new_lib)
    document = {
        "platform": "debian",
        "product_version": "12.5",
        "prerequisite": {"image": {"digest": digest}},
        "extra_version": "(a)",
        "supplemental_build": "12C1000a",
        "components": {"openssl": {"paths": ["/usr/lib"]}},
    }
    spec = parse_spec(json.dumps(document), source="benchmark spec")
    bundle = work / "12C1000a.cryptex"
    result = build_bundle(spec, diff_trees(work / "base", work / "patched"), bundle)
    fields = result.manifest.supplement_fields(posted=utc_now().date()).document()
    repo, keys = work / "repo", work / "keys"
    signers = available_signers(repo, keys, "targets")
    publish_target(repo, keys, "debian/12C1000a.cryptex", bundle, fields, signers=signers)
    return result.size


if __name__ == "__main__":
    sys.exit(main())
