"""Benchmark the review app at scale: server time per action (AppTest) and keypress to next item (headless Chromium).

Run as: python bench/review.py [--items 50000] [--reviewed 0.06] [--keep DIR] [--repeats 15]
                               [--baseline REF] [--no-browser] [--screenshots] [--team]

The workspace is bench/export.py's: the bundled sample's pairs and passages replicated
to --items, each copy made distinct, random critic and concept scores, and --reviewed
of the pairs decided in the real SQLite store (a few thousand responses at 50,000).
With --keep it is built once and reused.

Each code base runs in its own child process (this checkout, and with --baseline a
git ref of this repository, exported to a temporary directory: default HEAD of main
before issue 13, 4b33d90), on the same workspace and a fresh database of its responses, written by that code:

- AppTest (Streamlit's in-process runner, so the time is the server's, no browser):
  next item (J), accept (A), a filter change (the critic score range), the Progress tab
  and the Bulk tab (each opened after an accept, so nothing is left cached from before);
  median and p90 over --repeats, and the child's peak RSS.
- Chromium (playwright with Debian's /usr/bin/chromium) on `satsang review`'s server:
  the time from a key press (J, then A) until the item card shows another item;
  median and p90, and the server process's RSS at the end.

Prints each figure for both code bases and the ratio baseline / this checkout.
With --screenshots, saves each screen at 1400x900 to bench/out/ (gitignored).
With --team, the reviewer "bench" and the workspace's reviewers are put on a reviewer list in
each copy of reviews.db, so review is blind and the queue is the reviewer's own (assigned items
first, their decisions in place of the team's): the team features' costliest path. Its
baseline must know reviewer lists too (--baseline '' or a ref after issue 13's team branch).
No timed assertions: it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
DEFAULT_BASELINE = "4b33d90"  # main before issue 13
GOAL_P90_MS = {50_000: 300.0, 500_000: 1000.0}  # the goals: p90 under 300 ms at 50,000 items, under 1 s at 500,000
ACTIONS = ("next item", "accept", "filter change", "progress tab", "bulk tab")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(values) * 1000, "p90_ms": percentile(values, 0.9) * 1000, "n": len(values)}


# ---- the workspace ---------------------------------------------------------------------------


def build_workspace(root: Path, n_items: int, reviewed: float) -> tuple[int, int]:
    sys.path.insert(0, str(HERE))
    from export import synthesise  # bench/export.py's synthetic workspace

    _, n_pairs, n_responses = synthesise(root, n_items, reviewed)
    return n_pairs, n_responses


# ---- child: AppTest ------------------------------------------------------------------------------


def button(at, name: str):
    """The button keyed `name`, or `name@...` (this checkout keys an item's buttons by the item drawn)."""
    for element in at.button:
        if element.key == name or (element.key or "").startswith(name + "@"):
            return element
    raise KeyError(name)


def register_team(db_url: str) -> None:
    """A reviewer list of "bench" and everyone who has decided: review becomes blind, per reviewer."""
    from curation.responses import ResponseStore
    from curation.team import add_reviewer

    with ResponseStore.open(Path("."), url=db_url) as store:
        for name in ("bench", *store.reviewers()):
            add_reviewer(store, name)


def child_apptest(workspace: Path, db_url: str, repeats: int, team: bool = False) -> dict:
    from streamlit.testing.v1 import AppTest

    if team:
        register_team(db_url)

    os.environ["SATSANG_WORKSPACE"] = str(workspace)
    os.environ["SATSANG_DB_URL"] = db_url
    at = AppTest.from_file(str(Path("dashboards/review_app.py").resolve()), default_timeout=600)
    started = time.perf_counter()
    at.run()
    first_s = time.perf_counter() - started
    assert not at.exception, at.exception
    at.text_input(key="reviewer").input("bench").run()
    timings: dict[str, list[float]] = {action: [] for action in ACTIONS}

    def timed(action: str, step) -> None:
        started = time.perf_counter()
        step()
        timings[action].append(time.perf_counter() - started)
        assert not at.exception, at.exception

    for n in range(repeats):
        timed("next item", lambda: button(at, "next").click().run())
        timed("accept", lambda: button(at, "accept").click().run())
        low = 0.5 * (n % 12)
        timed("filter change", lambda: at.slider(key="f_critic").set_value((low, 10.0)).run())
        at.slider(key="f_critic").set_value((0.0, 10.0)).run()
    for view in ("Progress", "Bulk actions"):
        action = "progress tab" if view == "Progress" else "bulk tab"
        for _ in range(max(3, repeats // 2)):
            button(at, "accept").click().run()  # a new review state: nothing cached from the last visit
            timed(action, lambda: at.button_group(key="view").set_value(view).run())
            at.button_group(key="view").set_value("Review").run()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first_run_s": first_s, "peak_rss_mb": peak_mb, **{action: summary(values) for action, values in timings.items()}}


# ---- child: Chromium -----------------------------------------------------------------------------


def child_browser(workspace: Path, db_url: str, repeats: int, screenshots: Path | None, team: bool = False) -> dict:
    import urllib.request

    if team:
        register_team(db_url)

    import psutil
    from playwright.sync_api import sync_playwright

    from dashboards.launch import free_port, launch

    port = free_port()
    env = dict(os.environ, SATSANG_DB_URL=db_url)
    log = tempfile.NamedTemporaryFile(prefix="review-bench-", suffix=".log", delete=False)
    server = launch(workspace, port=port, address="127.0.0.1", wait=False, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/?reviewer=bench", wait_until="domcontentloaded")
            card = page.locator(".sat-card").first
            card.wait_for(timeout=300_000)
            page.get_by_role("button", name="Accept").and_(page.locator(":enabled")).wait_for(timeout=120_000)
            page.wait_for_timeout(1500)
            if screenshots:
                page.screenshot(path=str(screenshots / "review.png"))
            timings: dict[str, list[float]] = {"J (next item)": [], "A (accept, next item)": []}
            for n in range(repeats * 2):
                key, label = ("j", "J (next item)") if n % 2 == 0 else ("a", "A (accept, next item)")
                before = card.inner_text()
                page.evaluate("document.activeElement && document.activeElement.blur()")
                started = time.perf_counter()
                page.keyboard.press(key)
                page.wait_for_function("(before) => { const c = document.querySelector('.sat-card'); return c && c.innerText !== before; }",
                                       arg=before, timeout=60_000, polling=10)
                timings[label].append(time.perf_counter() - started)
                page.wait_for_timeout(250)
            if screenshots:  # the edit screen, and the refusal of a key pressed twice
                page.keyboard.press("e")
                page.locator('textarea[aria-label="Answer"], textarea[aria-label="Passage"]').first.wait_for(timeout=60_000)
                page.wait_for_timeout(1000)
                page.screenshot(path=str(screenshots / "edit.png"))
                page.keyboard.press("Escape")
                page.keyboard.press("Escape")
                page.wait_for_timeout(1000)
            tabs = {}
            for view, marker in (("Progress", "Score distributions by decision"), ("Bulk actions", "Bulk actions on the filtered selection")):
                started = time.perf_counter()
                page.get_by_role("radio", name=view).click()
                page.get_by_text(marker).first.wait_for(timeout=120_000)
                page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')", timeout=120_000)
                tabs[view] = time.perf_counter() - started
                page.wait_for_timeout(1500)
                if screenshots:
                    page.screenshot(path=str(screenshots / f"{view.split()[0].lower()}.png"))
            page.get_by_role("radio", name="Review").click()
            browser.close()
        rss_mb = sum(p.memory_info().rss for p in [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]) / 2**20
        return {**{label: summary(values) for label, values in timings.items()},
                **{f"{view} tab": {"seconds": seconds} for view, seconds in tabs.items()}, "server_rss_mb": rss_mb}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


# ---- parent --------------------------------------------------------------------------------------


RESPONSE_FIELDS = ("item_id", "content_hash", "reviewer", "decision", "reason", "note", "edited_question", "edited_answer")


def export_responses(workspace: Path, into: Path) -> Path:
    """The workspace's responses as JSON (record_many's dicts): each child writes them into a database of its own
    code's schema (a baseline may not open a database a newer schema migrated)."""
    from curation.responses import ResponseStore

    with ResponseStore.open(workspace) as store:
        rows = store.responses().select(RESPONSE_FIELDS).to_dicts()
    into.write_text(json.dumps(rows))
    return into


def seed_database(db_url: str, responses_file: Path) -> None:
    from curation.responses import ResponseStore

    with ResponseStore.open(Path("."), url=db_url) as store:
        store.record_many(json.loads(responses_file.read_text()))


def run_child(code: Path, mode: str, workspace: Path, repeats: int, screenshots: Path | None = None, team: bool = False) -> dict:
    """One measurement in a child process on `code`'s modules, with a fresh database of the workspace's responses."""
    with tempfile.TemporaryDirectory(prefix="review-bench-db-") as temp:
        db = Path(temp) / "reviews.db"
        responses = export_responses(workspace, Path(temp) / "responses.json")
        command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--workspace", str(workspace),
                   "--db", f"sqlite:///{db}", "--responses", str(responses), "--repeats", str(repeats)] + (["--team"] if team else [])
        if screenshots:
            command += ["--screenshot-dir", str(screenshots)]
        env = dict(os.environ, PYTHONPATH=str(code))
        done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{mode} child on {code} failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def export_ref(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def goal_ms(n_items: int) -> float:
    return GOAL_P90_MS[50_000] if n_items <= 50_000 else GOAL_P90_MS[500_000]


def report(title: str, mine: dict, baseline: dict | None, labels: list[str], goal: float) -> None:
    print(f"\n{title}")
    header = f"  {'action':<24}{'median ms':>11}{'p90 ms':>10}"
    if baseline:
        header += f"{'baseline med':>14}{'baseline p90':>14}{'p90 ratio':>11}"
    print(header)
    for label in labels:
        ours = mine[label]
        line = f"  {label:<24}{ours['median_ms']:>11.0f}{ours['p90_ms']:>10.0f}"
        if baseline and label in baseline:
            theirs = baseline[label]
            line += f"{theirs['median_ms']:>14.0f}{theirs['p90_ms']:>14.0f}{theirs['p90_ms'] / ours['p90_ms']:>10.1f}x"
        print(line + ("" if ours["p90_ms"] < goal else f"   (over the {goal:.0f} ms goal)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--reviewed", type=float, default=0.06, help="share of the pairs given a decision")
    parser.add_argument("--keep", type=Path, help="build the workspace here once and reuse it (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref to compare with ('' for none)")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--screenshots", action="store_true", help="save each screen at 1400x900 to bench/out/")
    parser.add_argument("--team", action="store_true", help="a reviewer list in the database: blind review, the reviewer's own queue")
    parser.add_argument("--child", choices=("apptest", "browser"), help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--responses", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--screenshot-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child and args.responses:
        seed_database(args.db, args.responses)
    if args.child == "apptest":
        print(json.dumps(child_apptest(args.workspace, args.db, args.repeats, args.team)))
        return
    if args.child == "browser":
        print(json.dumps(child_browser(args.workspace, args.db, args.repeats, args.screenshot_dir, args.team)))
        return

    with tempfile.TemporaryDirectory(prefix="review-bench-") as temp:
        workspace = args.keep or Path(temp) / "workspace"
        if not (workspace / "reviews.db").exists():
            started = time.perf_counter()
            n_pairs, n_responses = build_workspace(workspace, args.items, args.reviewed)
            print(f"workspace: {args.items:,} items ({n_pairs:,} pairs), {n_responses:,} responses, built in {time.perf_counter() - started:.0f} s")
        else:
            print(f"workspace: {workspace} (reused)")
        from curation.workspace import Workspace

        n_items = Workspace.open(workspace).items().height
        goal = goal_ms(n_items)
        print(f"{n_items:,} items: goal p90 < {goal:.0f} ms per action")
        baseline_code = export_ref(args.baseline, Path(temp) / "baseline") if args.baseline else None
        screenshots = None
        if args.screenshots:
            OUT.mkdir(exist_ok=True)
            screenshots = OUT

        mine = run_child(ROOT, "apptest", workspace, args.repeats, team=args.team)
        theirs = run_child(baseline_code, "apptest", workspace, args.repeats, team=args.team) if baseline_code else None
        print(f"\nAppTest (server time per action), {args.repeats} repeats; first run {mine['first_run_s']:.1f} s"
              + (f" (baseline {theirs['first_run_s']:.1f} s)" if theirs else "")
              + f"; peak RSS {mine['peak_rss_mb']:.0f} MB" + (f" (baseline {theirs['peak_rss_mb']:.0f} MB)" if theirs else ""))
        report("server time per action", mine, theirs, list(ACTIONS), goal)

        if not args.no_browser:
            mine_b = run_child(ROOT, "browser", workspace, args.repeats, screenshots, team=args.team)
            theirs_b = run_child(baseline_code, "browser", workspace, args.repeats, team=args.team) if baseline_code else None
            report("Chromium: key press until the next item is on screen", mine_b, theirs_b,
                   ["J (next item)", "A (accept, next item)"], goal)
            for view in ("Progress tab", "Bulk actions tab"):
                line = f"  {view:<24}{mine_b[view]['seconds'] * 1000:>11.0f} ms"
                if theirs_b:
                    line += f"   baseline {theirs_b[view]['seconds'] * 1000:.0f} ms"
                print(line)
            print(f"  server RSS at the end: {mine_b['server_rss_mb']:.0f} MB"
                  + (f" (baseline {theirs_b['server_rss_mb']:.0f} MB)" if theirs_b else ""))
            if screenshots:
                print(f"\nscreenshots: {', '.join(sorted(p.name for p in screenshots.glob('*.png')))} in {screenshots}")


if __name__ == "__main__":
    main()
