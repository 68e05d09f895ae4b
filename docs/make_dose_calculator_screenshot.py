"""Screenshot of the dose calculator's page for the README: docs/dose_calculator.png.

    python docs/make_dose_calculator_screenshot.py [OUT.png]

Starts `pkmix serve`'s app on a free local port, loads the vancomycin example patient
(examples/vancomycin_tdm/patient.json) into the page in headless Chromium (Debian's
``chromium``, driven by Playwright), asks for a recommendation and for the averaging of
the vancomycin models, and saves the page.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATIENT = ROOT / "examples" / "vancomycin_tdm" / "patient.json"


def browser_args() -> dict:
    import os

    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return {"executable_path": shutil.which("chromium"), "args": args}


def fill_example(page, base: str, patient: dict, **options) -> None:
    """Open the page, paste ``patient`` as JSON, set the options, ask for a recommendation."""
    page.goto(base + "/")
    page.wait_for_selector("#covariates tbody tr", state="attached")
    page.click("#json-box summary")
    page.fill("#patient-json", json.dumps(patient, indent=2))
    page.click("#json-to-form")
    page.click("#json-box summary")
    for key, value in options.items():
        page.fill(f"#{key}", str(value))
    page.click("#recommend")
    page.wait_for_selector("#answer:not([hidden]), #error:not([hidden])", timeout=60_000)


def main(out: str = str(ROOT / "docs" / "dose_calculator.png")) -> None:
    from playwright.sync_api import sync_playwright

    from pkmix.server._thread import running_server

    patient = json.loads(PATIENT.read_text())
    with running_server() as base, sync_playwright() as p:
        browser = p.chromium.launch(**browser_args())
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        fill_example(page, base, patient, target="auc24=400:600")
        # The averaging panel (vancomycin has two library models), answered too.
        page.click("#ask-average")
        page.wait_for_selector("#answer-average h3, #error:not([hidden])", timeout=120_000)
        page.screenshot(path=out, full_page=True)
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
