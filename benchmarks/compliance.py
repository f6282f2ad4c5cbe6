"""How fast the eligibility engine and the compliance summary run on a large fleet.

Builds N device facts spread over the sample catalogue's cases (eligible,
installed, older minor, too old, unsupported, on battery), then times
``assess_fleet`` end to end and ``decide`` alone. Prints devices per second.

    .venv/bin/python benchmarks/compliance.py --devices 200000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from bsi.apple import sample
from bsi.domain.compliance import assess_fleet
from bsi.domain.eligibility import decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.versions import Build, ProductVersion

BASE = DeviceFacts(
    platform="macOS",
    product_version=ProductVersion(26, 3, 1),
    build=Build.parse("25D2128"),
    software_update_device_id="J413AP",
    model_identifier="Mac14,2",
    architecture="arm64",
)
VARIANTS = [
    BASE,
    replace(BASE, supplemental_build=Build.parse("25D771280a")),
    replace(BASE, product_version=ProductVersion(26, 2), build=Build.parse("25C56")),
    replace(BASE, product_version=ProductVersion(15, 7, 4), build=Build.parse("24G517")),
    replace(BASE, software_update_device_id="J999AP", model_identifier="Mac99,1"),
    replace(BASE, on_battery=True, battery_percent=5.0),
    replace(
        BASE,
        platform="iOS",
        build=Build.parse("23D8133"),
        software_update_device_id="iPhone14,2",
        model_identifier="iPhone14,2",
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000, help="fleet size (100000)")
    args = parser.parse_args()

    catalog = sample.catalog()
    policy = SoftwareUpdatePolicy()
    fleet = [(f"device-{i:07d}", VARIANTS[i % len(VARIANTS)]) for i in range(args.devices)]

    started = time.perf_counter()
    for _, facts in fleet:
        decide(facts, catalog, policy, sample.AS_OF)
    decide_seconds = time.perf_counter() - started

    started = time.perf_counter()
    report = assess_fleet(fleet, catalog, lambda _: policy, sample.AS_OF)
    assess_seconds = time.perf_counter() - started

    print(f"devices:              {args.devices:,}")
    print(f"decide alone:         {args.devices / decide_seconds:,.0f} devices/s")
    print(f"assess_fleet (+sums): {args.devices / assess_seconds:,.0f} devices/s")
    print(f"supplements summed:   {len(report.supplements)}, CVEs: {len(report.cves)}")


if __name__ == "__main__":
    main()
