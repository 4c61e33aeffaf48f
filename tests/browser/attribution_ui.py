"""The web page shows who made a change per CloudTrail, and searches by IAM
principal: driven in Debian's headless Chromium by Playwright, by labels and
roles.

Run by tests/attribution_e2e.rs against a real `serve` + `run` + emulator
whose trail (moto's S3) attributed: item pk=S:u1 sk=N:1, INSERT by --alice,
REMOVE by --cleanup (its item attribute's last writer: "alice"); items u2 and
u3 each MODIFYed by --billing in one transaction. Exits non-zero, saying what
failed, on any broken expectation.
"""

import argparse
import re
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

from playwright.sync_api import expect, sync_playwright

from serve_ui import ARGS, CHROMIUM


def meta_value(entry, label):
    """The value of one labelled line of an entry's metadata."""
    dt = entry.page.locator("dt", has_text=re.compile("^" + re.escape(label) + "$"))
    return entry.locator(".meta > div").filter(has=dt).locator("dd")


def main():
    ap = argparse.ArgumentParser()
    for name in ("base", "token", "table", "alice", "cleanup", "billing", "artifacts"):
        ap.add_argument("--" + name, required=True)
    a = ap.parse_args()
    out = Path(a.artifacts)
    out.mkdir(parents=True, exist_ok=True)
    problems = []

    with tempfile.TemporaryDirectory(prefix="ddb-audit-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1280, "height": 800}
        )
        ctx.set_default_timeout(20_000)
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.on("console", lambda m: m.type == "error" and problems.append("console: " + m.text))
        page.on("pageerror", lambda e: problems.append("page error: " + str(e)))

        # --- one item's timeline: the delete names the cleanup job's role,
        # not alice, who wrote the item last.
        page.goto(a.base + "/?" + urlencode([("table", a.table), ("key", "pk=S:u1"), ("key", "sk=N:1")]))
        page.get_by_label("Token").fill(a.token)
        page.get_by_label("Token").press("Enter")
        entries = page.locator("#timeline > li.entry")
        expect(entries).to_have_count(2)
        insert, remove = entries.nth(0), entries.nth(1)
        expect(remove.locator(".badge")).to_have_text("REMOVE")
        expect(meta_value(remove, "Actor")).to_have_text(a.cleanup)
        expect(meta_value(remove, "Actor from")).to_have_text("cloudtrail")
        expect(meta_value(remove, "Last writer")).to_have_text("alice")
        expect(meta_value(remove, "IAM principal")).to_have_text(a.cleanup + " (high, from 192.0.2.10)")
        expect(meta_value(insert, "IAM principal")).to_contain_text(a.alice)
        page.screenshot(path=str(out / "attribution-timeline.png"), full_page=True)

        # --- across items: what the billing service changed in the table.
        page.get_by_label("Key", exact=True).fill("")
        page.get_by_label("Sort key").fill("")
        page.locator("#filters > summary").click()
        page.get_by_label("IAM principal").fill(a.billing)
        page.get_by_role("button", name="Search").click()
        expect(entries).to_have_count(2)
        keys = []
        for i in range(2):
            e = entries.nth(i)
            expect(e.locator(".badge")).to_have_text("MODIFY")
            expect(meta_value(e, "IAM principal")).to_contain_text(a.billing)
            keys.append(e.get_by_role("link").inner_text())
        items = sorted(re.search(r"pk=S:(\w+)", k).group(1) for k in keys)
        assert items == ["u2", "u3"], keys
        assert parse_qs(urlparse(page.url).query).get("principal") == [a.billing], page.url
        page.screenshot(path=str(out / "attribution-by-principal.png"), full_page=True)

        # --- a principal that changed nothing there: nothing listed.
        page.get_by_label("IAM principal").fill(a.billing + "-other")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#results-summary")).to_have_text("0 matching entries.")
        expect(entries).to_have_count(0)

        assert not problems, "\n".join(problems)
        ctx.close()
    print("attribution browser test passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        raise
