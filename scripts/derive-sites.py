#!/usr/bin/env python3
"""Derive data/sites.csv (the 250 comuni of the seed network) from the ISTAT/Openpolis list.

Usage: scripts/derive-sites.py ../shared/data/comuni_2023.csv > data/sites.csv

Selection, deterministic:
- 170 city sites: the most populous comune of each of the 20 regions, then the most
  populous remaining comuni of Italy, all of them with 15,000 residents or more;
- 80 small-town sites: 4 per region among comuni of 1,500 to 14,999 residents,
  picked by a hash of the ISTAT code so the choice is stable and spread out.
"""
import csv
import hashlib
import re
import sys
import unicodedata

CITY_SITES = 170
SMALL_PER_REGION = 4


def slug(name):
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")


def main(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["tot"] and r["lat"] and r["lon"]]
    for r in rows:
        r["pop"] = int(float(r["tot"]))
        r["istat"] = f"{int(r['municipality_code']):06d}"
    by_pop = sorted(rows, key=lambda r: (-r["pop"], r["istat"]))
    regions = sorted({r["region"] for r in rows})

    chosen, seen = [], set()
    for region in regions:
        top = next(r for r in by_pop if r["region"] == region)
        chosen.append(top)
        seen.add(top["istat"])
    for r in by_pop:
        if len(chosen) >= CITY_SITES:
            break
        if r["istat"] not in seen and r["pop"] >= 15000:
            chosen.append(r)
            seen.add(r["istat"])
    assert all(r["pop"] >= 15000 for r in chosen), "a region's largest comune is under 15,000"

    def spread(r):
        return hashlib.sha256(r["istat"].encode()).hexdigest()

    for region in regions:
        pool = sorted(
            (r for r in rows if r["region"] == region and 1500 <= r["pop"] < 15000),
            key=spread,
        )
        chosen.extend(pool[:SMALL_PER_REGION])

    assert len(chosen) == CITY_SITES + SMALL_PER_REGION * len(regions) == 250
    ids = {}
    out = csv.writer(sys.stdout, lineterminator="\n")
    print("# The 250 comuni of the Spazi seed network, derived by scripts/derive-sites.py")
    print("# from comuni_2023.csv: ISTAT population 2023 and Openpolis boundaries (centroids).")
    print("# License: CC BY 4.0, (c) Openpolis / ISTAT. https://creativecommons.org/licenses/by/4.0/")
    out.writerow(["site_id", "comune", "istat_code", "province", "province_short", "region", "population", "lat", "lon"])
    for r in sorted(chosen, key=lambda r: (r["region"], -r["pop"], r["istat"])):
        base = slug(r["municipality"])
        sid = base if base not in ids else f"{base}-{slug(r['province_short'])}"
        ids[sid] = True
        out.writerow([sid, r["municipality"], r["istat"], r["province"], r["province_short"], r["region"],
                      r["pop"], f"{float(r['lat']):.5f}", f"{float(r['lon']):.5f}"])


if __name__ == "__main__":
    main(sys.argv[1])
