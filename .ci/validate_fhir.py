#!/usr/bin/env python3
"""Validate every FHIR bundle shape vitals-hub produces with the independent fhir.resources models.

The hub emits FHIR R4 (4.0.1); fhir.resources >= 7 has no R4 package, so its R4B models are used
(R4B overlaps R4 for every element the hub uses; see fhir-phd.md "Offline validation tooling").
Inputs: fixtures/fhir/*.json (golden files that `cargo test --test fhir_golden` proves equal to
what the code produces) and, when present, target/fhir-bundles/*.json written by that test.
This is a schema check (cardinality, element names, primitive syntax), not a PHD profile check;
the profile rules are asserted in tests/fhir_golden.rs.
"""
import json
import pathlib
import sys

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

root = pathlib.Path(__file__).resolve().parent.parent
files = sorted((root / "fixtures" / "fhir").glob("*.json"))
files += sorted((root / "target" / "fhir-bundles").glob("*.json"))
if not files:
    sys.exit("no FHIR JSON found under fixtures/fhir or target/fhir-bundles")

failed = 0
for f in files:
    text = f.read_text()
    kind = json.loads(text).get("resourceType")
    try:
        if kind == "Bundle":
            b = Bundle.model_validate_json(text)
            detail = f"{b.type}, {len(b.entry or [])} entries"
        elif kind == "OperationOutcome":
            o = OperationOutcome.model_validate_json(text)
            detail = f"{len(o.issue)} issues"
        else:
            raise ValueError(f"unexpected resourceType {kind!r}")
        print(f"OK   {f.relative_to(root)}: {kind} {detail}")
    except Exception as e:  # noqa: BLE001 - report every file, then fail
        failed += 1
        print(f"FAIL {f.relative_to(root)}: {e}")

print(f"{len(files) - failed}/{len(files)} FHIR documents valid (fhir.resources R4B)")
sys.exit(1 if failed else 0)
