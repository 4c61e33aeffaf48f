"""The web page of `ddb-audit serve`, driven in Debian's headless Chromium by
Playwright, by its labels and roles (what a screen reader uses too).

Run by tests/serve_e2e.rs against a real `serve` + `run` + emulator that
hold: item pk=S:u1 sk=N:1 with an INSERT (balance 1000, by bob) and a MODIFY
balance 1000 -> 900 by alice; item pk=S:long sk=N:1 with 1,000 entries.
Exits non-zero, saying what failed, on any broken expectation. Screenshots
and timings go to --artifacts.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode, urlparse

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def read_side_views(page, first, a):
    """The as-of view and the revert plan, from the item's first entry."""
    out = Path(a.artifacts)
    # --- the item as it was at the INSERT.
    first.get_by_role("button", name="Show the item as it was here").click()
    asof = page.get_by_role("region", name="The item as it was")
    expect(asof).to_be_visible()
    bal = asof.get_by_role("row").filter(has=page.get_by_role("rowheader", name="balance"))
    expect(bal).to_contain_text("1000")
    expect(asof.get_by_role("row").filter(has=page.get_by_role("rowheader", name="updated_by"))).to_contain_text("bob")
    page.screenshot(path=str(out / "as-of.png"), full_page=True)
    asof.get_by_role("button", name="Close").click()

    # --- copy revert plan (back to the INSERT's state), conditioned on now.
    first.get_by_role("button", name="Copy revert plan").click()
    plan = page.get_by_role("region", name="Revert plan")
    expect(plan).to_be_visible()
    plan_json = json.loads(plan.locator("pre").inner_text())
    assert plan_json["operation"] in ("UpdateItem", "PutItem"), plan_json
    assert plan_json["input"]["TableName"] == a.table, plan_json
    assert "ConditionExpression" in plan_json["input"], plan_json


def verify_and_accessibility(page, a):
    """The trail verified from the page; every control named; headings in order."""
    out = Path(a.artifacts)
    page.get_by_role("button", name="Verify the trail").click()
    result = page.locator("#verify-result")
    expect(result).to_have_class("verify verify-intact", timeout=60_000)
    expect(result).to_contain_text("Intact")
    expect(result).to_contain_text("signatures checked with sha256:")
    expect(page.locator("#verify-findings")).to_be_hidden()
    page.screenshot(path=str(out / "verify.png"), full_page=False)
    # What a screen reader announces for each control: none is nameless.
    nameless = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, a[href], summary')]
            .filter(e => e.offsetParent !== null)
            .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.textContent.trim()))
            .map(e => e.outerHTML.slice(0, 80))"""
    )
    assert not nameless, f"controls without an accessible name: {nameless}"
    levels = page.evaluate("() => [...document.querySelectorAll('h1,h2,h3')].map(h => +h.tagName[1])")
    assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:])), f"heading levels skip: {levels}"


def ttl_and_snapshot_marks(page, a):
    """A SNAPSHOT baseline and a TTL expiry are marked as such. The emulator
    neither expires items nor is snapshotted here (that would add entries to
    the items the other checks count), so this one item's history answer is
    substituted, in the shape `history --json` prints."""
    key = {"pk": {"S": "marked"}}
    entries = [
        {"table": a.table, "key": key, "event": "SNAPSHOT", "sequence_number": None,
         "snapshot_time": "2026-11-20T08:00:00Z", "event_time": None, "shard_id": None,
         "actor": None, "correlation": None,
         "changes": [{"path": "plan", "new": {"S": "pro"}}]},
        {"table": a.table, "key": key, "event": "REMOVE", "sequence_number": "4100000000000000000001",
         "event_time": "2026-11-21T08:00:00Z", "shard_id": "shardId-1", "ttl_expiry": True,
         "actor": "dynamodb.amazonaws.com", "correlation": None,
         "changes": [{"path": "plan", "old": {"S": "pro"}}]},
    ]
    body = json.dumps({"entries": entries, "next": None})
    marked = lambda url: "/api/history?" in url and "marked" in url
    page.route(marked, lambda route: route.fulfill(status=200, content_type="application/json", body=body))
    page.goto(a.base + "/?" + urlencode({"table": a.table, "key": "pk=S:marked"}))
    shown = page.locator("#timeline > li.entry")
    expect(shown).to_have_count(2)
    expect(shown.nth(0)).to_have_class("entry is-snapshot")
    expect(shown.nth(0).locator(".badge")).to_have_text("SNAPSHOT baseline")
    expect(shown.nth(1)).to_have_class("entry is-ttl")
    expect(shown.nth(1).locator(".badge")).to_have_text("TTL expiry")
    expect(shown.nth(1).locator(".meta")).to_contain_text("dynamodb.amazonaws.com")
    page.unroute(marked)


def search_across_items(page, a):
    """alice's changes in the table, each linking to its item."""
    # --- search across items: alice's changes in this table.
    page.goto(a.base + "/?" + urlencode({"table": a.table, "actor": "alice"}))
    across = page.locator("#timeline > li.entry")
    expect(across).to_have_count(1)
    link = across.first.get_by_role("link")
    expect(link).to_contain_text("pk=S:u1")
    link.click()
    expect(page.locator("#timeline > li.entry")).to_have_count(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--artifacts", required=True)
    a = ap.parse_args()
    out = Path(a.artifacts)
    out.mkdir(parents=True, exist_ok=True)
    requests, problems = [], []
    timings = {}

    with tempfile.TemporaryDirectory(prefix="ddb-audit-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 800},
        )
        ctx.set_default_timeout(20_000)
        ctx.on("request", lambda r: requests.append(r.url))

        def watch(page):
            # The refused wrong token is the one expected failed request.
            page.on(
                "console",
                lambda m: m.type == "error"
                and "status of 401" not in m.text
                and problems.append("console: " + m.text),
            )
            page.on("pageerror", lambda e: problems.append("page error: " + str(e)))
            return page

        page = watch(ctx.pages[0] if ctx.pages else ctx.new_page())

        # --- sign in: a wrong token is refused, the right one accepted.
        page.goto(a.base + "/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("Token").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert").filter(has_text="not accepted")).to_be_visible()
        # By keyboard: Tab from the Token field reaches Sign in; Enter presses it.
        page.get_by_label("Token").fill(a.token)
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement.textContent")
        assert focused == "Sign in", f"Tab from Token went to {focused!r}"
        page.keyboard.press("Enter")
        expect(page.get_by_text("Signed in as DDB_AUDIT_API_TOKENS[0]")).to_be_visible()
        stored = page.evaluate("() => [sessionStorage.length, localStorage.length, document.cookie]")
        assert stored == [1, 0, ""], f"token must be in sessionStorage only: {stored}"

        # --- search one item; its INSERT, then alice's MODIFY balance 1000 -> 900.
        page.get_by_label("Table").fill(a.table)
        page.get_by_label("Key", exact=True).fill("pk=S:u1")
        page.get_by_label("Sort key").fill("sk=N:1")
        page.get_by_role("button", name="Search").click()
        entries = page.locator("#timeline > li.entry")
        expect(entries).to_have_count(2)
        first, second = entries.nth(0), entries.nth(1)
        expect(first.locator(".badge")).to_have_text("INSERT")
        expect(second.locator(".badge")).to_have_text("MODIFY")
        row = second.get_by_role("row").filter(has=page.get_by_role("rowheader", name="balance"))
        expect(row).to_have_count(1)
        cells = row.get_by_role("cell")
        expect(cells.nth(0)).to_contain_text("1000")
        expect(cells.nth(2)).to_contain_text("900")
        expect(row).to_contain_text("→")
        expect(second.locator(".meta")).to_contain_text("alice")
        expect(first.locator(".meta")).to_contain_text("bob")
        # A long value is collapsed until asked for.
        long_row = first.get_by_role("row").filter(has=page.get_by_role("rowheader", name="notes"))
        summary = long_row.locator("details > summary")
        expect(summary).to_contain_text("characters: show all")
        expect(long_row.locator("details > pre")).to_be_hidden()
        summary.click()
        expect(long_row.locator("details > pre")).to_be_visible()
        # Unchanged values (notes) are never listed: only balance and updated_by changed.
        paths = second.locator("tbody th").all_inner_texts()
        assert sorted(paths) == ["balance", "updated_by"], paths
        # The URL reflects the search (a deep link).
        deep = page.url
        q = urlparse(deep).query
        assert "table=" in q and "key=pk%3DS%3Au1" in q, deep
        page.screenshot(path=str(out / "timeline-1280.png"), full_page=True)

        read_side_views(page, first, a)
        verify_and_accessibility(page, a)

        # --- a gap between the two entries: the emulator never trims a
        # stream, so this one gap answer is substituted (the rest is real).
        seqs = [e.get_attribute("data-seq") for e in entries.all()]
        gap = {
            "table": a.table,
            "stream_arn": "arn:aws:dynamodb:us-east-1:000000000000:table/x/stream/L",
            "shard_id": "shardId-trimmed",
            "after_sequence_number": seqs[0],
            "resumed_at_sequence_number": seqs[1],
            "detected_at": "2026-11-23T19:05:00Z",
        }
        page.route(
            "**/api/gaps?*",
            lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps({"gaps": [gap]})),
        )
        page.get_by_role("button", name="Search").click()
        items = page.locator("#timeline > li")
        expect(items).to_have_count(3)
        expect(items.nth(1)).to_have_class("gap")
        expect(page.get_by_role("note")).to_contain_text("History missing here")
        page.screenshot(path=str(out / "timeline-gap.png"), full_page=True)
        page.unroute("**/api/gaps?*")

        # --- keyboard only: from the Key field, Tab order reaches Search and Enter submits.
        page.get_by_label("Key", exact=True).focus()
        page.keyboard.press("Enter")
        expect(entries).to_have_count(2)

        # --- newest first.
        page.get_by_label("Order").select_option("desc")
        page.get_by_role("button", name="Search").click()
        expect(entries.nth(0).locator(".badge")).to_have_text("MODIFY")
        expect(entries.nth(1).locator(".badge")).to_have_text("INSERT")
        assert "order=desc" in page.url, page.url
        page.get_by_label("Order").select_option("asc")
        page.get_by_role("button", name="Search").click()
        expect(entries.nth(0).locator(".badge")).to_have_text("INSERT")

        # --- phone width.
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(out / "timeline-phone.png"), full_page=True)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page scrolls sideways at phone width by {overflow}px"
        page.set_viewport_size({"width": 1280, "height": 800})

        # --- a deep link in a new tab (no token there yet): sign in, same view.
        tab = watch(ctx.new_page())
        tab.goto(deep)
        expect(tab.get_by_role("heading", name="Sign in")).to_be_visible()
        tab.get_by_label("Token").fill(a.token)
        tab.get_by_label("Token").press("Enter")
        expect(tab.locator("#timeline > li.entry")).to_have_count(2)
        expect(tab.get_by_role("heading", name="Timeline of")).to_contain_text("pk=S:u1")
        assert tab.get_by_label("Table").input_value() == a.table
        tab.close()

        search_across_items(page, a)
        ttl_and_snapshot_marks(page, a)

        # --- 1,000 entries: the first page on screen at once, the rest as
        # the reader scrolls (paged, so the page never holds more than it shows).
        t0 = time.perf_counter()
        page.goto(a.base + "/?" + urlencode([("table", a.table), ("key", "pk=S:long"), ("key", "sk=N:1")]))
        expect(page.locator("body[data-rendered='50']")).to_have_count(1)
        first_wall_ms = (time.perf_counter() - t0) * 1000
        first_ms = int(page.evaluate("() => document.body.dataset.firstPageMs"))
        page.screenshot(path=str(out / "timeline-1000.png"))
        shown = 50
        while shown < 1000:
            page.locator("#more").scroll_into_view_if_needed()
            page.wait_for_function("n => +document.body.dataset.rendered > n", arg=shown)
            shown = int(page.evaluate("() => document.body.dataset.rendered"))
        expect(page.locator("#timeline > li.entry")).to_have_count(1000)
        seqs = page.locator("#timeline > li.entry").evaluate_all("els => els.map(e => e.dataset.seq)")
        assert len(set(seqs)) == 1000, "an entry shown twice"
        ordered = sorted(seqs, key=lambda s: (len(s), s))
        assert seqs == ordered, "entries out of order"
        d = page.evaluate("() => ({...document.body.dataset})")
        assert d["hasMore"] == "no", d
        api_ms = page.evaluate(
            "() => performance.getEntriesByType('resource')"
            ".filter(r => r.name.includes('/api/history')).map(r => Math.round(r.duration))"
        )
        timings["history_1000_entries"] = {
            "first_page_of_50_on_screen_ms": first_ms,
            "navigation_to_first_page_ms": round(first_wall_ms),
            "all_1000_on_screen_after_scrolling_ms": int(d["totalMs"]),
            "dom_rendering_ms_all_1000": int(d["domMs"]),
            "api_history_ms_per_page_50_then_500": api_ms,
        }

        # --- nothing left 127.0.0.1; no CSP violation or script error.
        foreign = [u for u in requests if urlparse(u).hostname not in ("127.0.0.1",)]
        assert not foreign, f"requests left 127.0.0.1: {foreign}"
        assert not problems, "\n".join(problems)
        ctx.close()

    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"browser test passed: {len(requests)} requests, all to 127.0.0.1; timings {json.dumps(timings)}")
    print(f"screenshots in {out}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        raise
