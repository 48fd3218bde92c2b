"""Browser check of the Snakemake report: open results/report.html in headless Chromium and click
through it as a reader would.

The report is a single-page React app (snakemake 9): the menu lists the categories; a category
with one subcategory opens its list of results at once, one with several lists its subcategories
first; each result row has an eye button (an image is shown in the page, an HTML item in an
iframe, any other file, .md and .csv included, is a download link to its embedded data URI) and an
information button (the caption). For every category and every result this script checks that:

- every category the workflow declares (category="..." in workflows/*.smk) is in the menu, and each
  category and subcategory lists exactly the results the report holds for it;
- every image shown loads (complete, naturalWidth > 0), is the result's own data, and can be
  scrolled to whole (its top and left edge are not cut off by the panel that centres it);
- every table item (markdown, CSV, HTML) holds at least one table with rows;
- every caption renders (text, no docutils error);
- the browser console has no errors.

One screenshot per category (its list and first figure or table page, else its first caption) goes to the output
folder. It prints a summary and exits 1 naming each broken item.

    .venv/bin/python tools/check_report.py                      # results/report.html
    .venv/bin/python tools/check_report.py REPORT --out DIR     # another copy, screenshots to DIR

`make check-report` installs what it needs first: Debian's chromium and chromium-driver (apt) and
selenium (env/requirements-report.txt). No browser or driver is downloaded at run time.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import re
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: without the background-networking flags Chromium waits on the closed network and hangs
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1600,1000"]

#: the report's own navigation (snakemake/report/html_reporter/template/components)
NAV = "#app nav"                                   # the side bar (menu, lists, captions)
CRUMBS = "#app nav nav ol > li > a"                # breadcrumbs: menu, Results, category, ...
ITEMS = "#app nav > div > div.p-3 > ul > li > a"   # menu entries, category's subcategories
ROWS = "#app nav > div > div.p-3 table tbody tr"   # a subcategory's results
CONTENT = "#app > div > div.grow"                  # the main panel (image, iframe)


@dataclass
class Findings:
    categories: list[str] = field(default_factory=list)
    items: int = 0
    images_ok: int = 0
    images: int = 0
    tables_ok: int = 0
    tables: int = 0
    captions_ok: int = 0
    screenshots: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, where: str, why: str) -> None:
        self.failures.append(f"{where}: {why}")


def workflow_categories(workflows: Path) -> dict[str, str]:
    """category name -> the rule file that declares it, from the report(...) items."""
    declared = {}
    for path in sorted(workflows.glob("*.smk")):
        for name in re.findall(r"""\bcategory\s*=\s*["']([^"']+)["']""", path.read_text()):
            declared.setdefault(name, path.name)
    return declared


def start_browser(chromium: str, chromedriver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='check_report_')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver's path is given, so selenium never runs selenium-manager (no download)
    return webdriver.Chrome(options=options, service=Service(chromedriver))


def wait(driver, condition, what: str, timeout: float = 20.0):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))
    except TimeoutException:
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}") from None


def links(driver, selector: str) -> dict[str, object]:
    return {element.text.strip(): element for element in driver.find_elements("css selector", selector)}


def crumbs(driver) -> list:
    return driver.find_elements("css selector", CRUMBS)


def go_home(driver) -> None:
    crumbs(driver)[0].click()   # the house icon: back to the menu
    wait(driver, lambda d: "Workflow" in links(d, ITEMS), "the menu")


def console_errors(driver, findings: Findings, where: str) -> None:
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            findings.fail(where, f"console error: {entry['message'][:300]}")


def decode_data_uri(uri: str) -> bytes:
    header, _, data = uri.partition(",")
    return base64.b64decode(data) if header.endswith(";base64") else urllib.parse.unquote_to_bytes(data)


def markdown_tables(text: str) -> list[int]:
    """Rows of each pipe table (a header line, a |---| line, then rows) in a markdown text."""
    tables, lines = [], text.splitlines()
    separator = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
    index = 0
    while index < len(lines) - 1:
        if lines[index].lstrip().startswith("|") and separator.match(lines[index + 1]):
            rows = 0
            index += 2
            while index < len(lines) and lines[index].lstrip().startswith("|"):
                rows, index = rows + 1, index + 1
            tables.append(rows)
        else:
            index += 1
    return tables


def check_table_file(path: str, mime: str, data: bytes, findings: Findings) -> None:
    text = data.decode("utf-8", errors="replace")
    if mime == "text/csv" or path.endswith((".csv", ".tsv")):
        rows = list(csv.reader(io.StringIO(text), delimiter="\t" if path.endswith(".tsv") else ","))
        widths = {len(row) for row in rows if row}
        if len(rows) < 2:
            return findings.fail(path, f"the CSV has {max(len(rows) - 1, 0)} data rows")
        if len(widths) != 1:
            return findings.fail(path, f"the CSV's rows have different numbers of fields: {sorted(widths)}")
    else:
        tables = markdown_tables(text)
        if not any(tables):
            return findings.fail(path, f"no table with rows in the markdown ({len(tables)} tables, {len(text)} bytes)")
        if 0 in tables:
            findings.notes.append(f"{path}: {tables.count(0)} of {len(tables)} tables have no rows")
    findings.tables_ok += 1


def check_shown_image(driver, path: str, findings: Findings) -> None:
    findings.images += 1
    image = wait(driver, lambda d: d.execute_script(
        "const i = document.querySelector(arguments[0] + ' img');"
        "return i && i.src === results[arguments[1]].data_uri && i.complete ? i : false;",
        CONTENT, path), f"{path} to be shown")
    width, height = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
    if not (width > 0 and height > 0):
        return findings.fail(path, "the image does not load (naturalWidth 0): its embedded data is broken")
    # the reader scrolls the panel to its start: the figure's top and left edge must be there
    # (snakemake's panel centres it, so a figure taller than the window overflows above the top)
    above, left_of = driver.execute_script(
        "const panel = document.querySelector(arguments[0]); panel.scrollTop = 0; panel.scrollLeft = 0;"
        "const p = panel.getBoundingClientRect(), i = arguments[1].getBoundingClientRect();"
        "return [p.top - i.top, p.left - i.left];", CONTENT, image)
    cut = [f"{side} {pixels:.0f} px" for side, pixels in (("top", above), ("left", left_of)) if pixels > 1]
    if cut:
        return findings.fail(path, f"the figure's {' and '.join(cut)} cannot be scrolled to (the report's panel "
                                   "centres it; build the report with --report-stylesheet "
                                   "workflows/report/report.css, as the Makefile does)")
    findings.images_ok += 1


def check_shown_html(driver, path: str, findings: Findings) -> None:
    findings.tables += 1
    frame = wait(driver, lambda d: d.find_elements("css selector", CONTENT + " iframe") or False,
                 f"{path} in its iframe")[0]
    driver.switch_to.frame(frame)
    try:
        (rows,) = wait(driver, lambda d: d.execute_script(
            "return document.readyState === 'complete' ? [document.querySelectorAll('table tr').length] : false"),
            f"{path} to load", timeout=10)
    finally:
        driver.switch_to.default_content()
    if rows > 1:
        findings.tables_ok += 1
    else:
        findings.fail(path, f"the HTML item shows no table with rows ({rows} rows)")


def info_shown(driver):
    """The information view is up: its caption item, or "none" where the result has no caption."""
    if "Snakemake rule" not in driver.execute_script("return document.querySelector(arguments[0]).textContent", NAV):
        return False
    return driver.find_elements("css selector", NAV + " li.prose") or "none"


def open_info(driver, row_index: int, path: str):
    driver.find_elements("css selector", ROWS)[row_index].find_elements("css selector", "td a")[-1].click()
    return wait(driver, info_shown, f"the information on {path}")


def back_to_list(driver, back: str) -> None:
    """The breadcrumb named after the subcategory (or the category) leads back to the list."""
    wait(driver, lambda d: any(c.text.strip() == back for c in crumbs(d)), f"the breadcrumb {back!r}")
    next(c for c in crumbs(driver) if c.text.strip() == back).click()
    wait(driver, lambda d: d.find_elements("css selector", ROWS), f"the list of {back}")


def check_caption(driver, row_index: int, path: str, back: str, findings: Findings) -> None:
    """The information button: the caption must render as text, without a docutils error."""
    caption = open_info(driver, row_index, path)
    if caption == "none":
        findings.fail(path, "no caption (Description) shown")
    else:
        html = caption[0].get_attribute("innerHTML")
        text = caption[0].text.strip()
        if "system-message" in html or "System Message" in html:
            findings.fail(path, "the caption shows a docutils error")
        elif len(text) < 40:
            findings.fail(path, f"the caption is nearly empty: {text!r}")
        else:
            findings.captions_ok += 1
    back_to_list(driver, back)


def check_results_list(driver, where: str, back: str, expected: list[str], meta: dict, findings: Findings,
                       screenshot: Path | None) -> None:
    """One list of results: it lists what the report holds; each item's view and caption."""
    rows = wait(driver, lambda d: d.find_elements("css selector", ROWS), f"the results of {where}")
    listed = [row.find_elements("css selector", "td")[0].text.strip() for row in rows]
    if sorted(listed) != sorted(expected):
        findings.fail(where, f"lists {sorted(listed)}, the report holds {sorted(expected)}")
    for index, path in enumerate(listed):
        findings.items += 1
        mime = meta.get(path, {}).get("mime_type", "")
        eye = driver.find_elements("css selector", ROWS)[index].find_elements("css selector", "td a")[0]
        try:
            if mime.startswith("image/") or mime == "text/html":
                eye.click()
                if mime == "text/html":
                    check_shown_html(driver, path, findings)
                else:
                    check_shown_image(driver, path, findings)
                if screenshot is not None and screenshot not in findings.screenshots:
                    driver.save_screenshot(str(screenshot))   # the list and its first figure or table page
                    findings.screenshots.append(screenshot)
            else:
                # not shown in the page: the eye is a download link to the embedded file
                findings.tables += 1
                href, download = eye.get_attribute("href") or "", eye.get_attribute("download") or ""
                if not href.startswith("data:"):
                    findings.fail(path, f"its link is not the embedded file: {href[:80]!r}")
                elif download != Path(path).name:
                    findings.fail(path, f"downloads as {download!r}")
                else:
                    check_table_file(path, mime, decode_data_uri(href), findings)
            check_caption(driver, index, path, back, findings)
        except RuntimeError as error:
            findings.fail(path, str(error))
        console_errors(driver, findings, path)
    if screenshot is not None and screenshot not in findings.screenshots and listed:
        try:   # no figure in this list: the first item's caption instead
            open_info(driver, 0, listed[0])
            driver.save_screenshot(str(screenshot))
            findings.screenshots.append(screenshot)
            back_to_list(driver, back)
        except RuntimeError as error:
            findings.fail(where, f"screenshot: {error}")


def check_category(driver, category: str, entry: str, subcategories: dict[str, list[str]], meta: dict,
                   findings: Findings, screenshot: Path) -> None:
    """Open the category from the menu; a single subcategory's list opens at once, several are
    listed first and each is opened in turn."""
    go_home(driver)
    links(driver, ITEMS)[entry].click()
    if len(subcategories) == 1:
        (expected,) = subcategories.values()
        return check_results_list(driver, category, entry, expected, meta, findings, screenshot)
    names = sorted(subcategories, key=str.casefold)
    shown = wait(driver, lambda d: [n for n in links(d, ITEMS) if n in subcategories] or False,
                 f"the subcategories of {category}")
    if sorted(shown) != sorted(names):
        findings.fail(category, f"lists subcategories {sorted(shown)}, the report holds {sorted(names)}")
    for index, subcategory in enumerate(names):
        if index:
            back_to_category = next(c for c in crumbs(driver) if c.text.strip() == entry)
            back_to_category.click()
            wait(driver, lambda d, name=subcategory: name in links(d, ITEMS), f"{category}'s subcategory {subcategory}")
        links(driver, ITEMS)[subcategory].click()
        check_results_list(driver, f"{category} / {subcategory}", subcategory, subcategories[subcategory], meta,
                           findings, screenshot if index == 0 else None)


def check(report: Path, out: Path, chromium: str, chromedriver: str, workflows: Path | None) -> Findings:
    findings = Findings()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    driver = start_browser(chromium, chromedriver)
    try:
        driver.get(report.resolve().as_uri())
        wait(driver, lambda d: d.execute_script("return typeof categories === 'object' && typeof results === 'object'")
             and "Workflow" in links(d, ITEMS), "the report's menu", timeout=60)
        # the side bar animates its width between views: a click during the animation can miss
        # its target, so transitions are switched off (the page at rest looks the same)
        driver.execute_script("const style = document.createElement('style');"
                              "style.textContent = '*, *::before, *::after { transition: none !important; }';"
                              "document.head.appendChild(style);")
        console_errors(driver, findings, "loading the report")
        categories = driver.execute_script("return categories")
        meta = driver.execute_script(
            "return Object.fromEntries(Object.entries(results).map(([p, r]) => [p, {mime_type: r.mime_type}]))")
        menu = list(links(driver, ITEMS))
        listed = menu[menu.index("About") + 1:] if "About" in menu else []
        findings.categories = listed
        if len(categories) == 1:   # the report then shows one "Results" entry
            listed = [next(iter(categories))] if "Results" in menu else []
        for missing in sorted(set(categories) - set(listed)):
            findings.fail(missing, "category not in the menu")
        if workflows is not None:
            for name, smk in workflow_categories(workflows).items():
                if name not in categories:
                    findings.fail(name, f"category declared in workflows/{smk} is not in the report "
                                        "(built before the workflow declared it? rebuild the report)")
        for category in sorted(categories, key=str.casefold):
            if category not in listed:
                continue
            entry = "Results" if len(categories) == 1 else category
            shot = out / (re.sub(r"[^A-Za-z0-9]+", "_", category).strip("_").lower() + ".png")
            try:
                check_category(driver, category, entry, categories[category], meta, findings, shot)
            except RuntimeError as error:
                findings.fail(category, str(error))
            console_errors(driver, findings, category)
        broken = driver.execute_script("return Array.from(document.images)"
                                       ".filter(i => i.complete && i.naturalWidth === 0).map(i => i.src.slice(0, 60))")
        for src in broken:
            findings.fail("page", f"an image does not load: {src}")
    finally:
        driver.quit()
    return findings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, default=ROOT / "results" / "report.html")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "report_check",
                        help="folder for the screenshots (one PNG per category)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--workflows", type=Path, default=ROOT / "workflows",
                        help="where the report's categories are declared; '' skips that check")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"error: no report at {args.report} (make check-report builds it)", file=sys.stderr)
        return 2
    for binary in (args.chromium, args.chromedriver):
        if not Path(binary).is_file():
            print(f"error: {binary} is missing (make check-report installs chromium and chromium-driver)",
                  file=sys.stderr)
            return 2
    start = time.perf_counter()
    workflows = args.workflows if str(args.workflows) not in ("", ".") else None
    findings = check(args.report, args.out, args.chromium, args.chromedriver, workflows)
    seconds = time.perf_counter() - start
    print(f"report:      {args.report} ({args.report.stat().st_size / 2**20:.1f} MiB), checked in {seconds:.0f} s")
    print(f"categories:  {len(findings.categories)} ({', '.join(findings.categories)})")
    print(f"items:       {findings.items}")
    print(f"images OK:   {findings.images_ok} of {findings.images}")
    print(f"tables OK:   {findings.tables_ok} of {findings.tables}")
    print(f"captions OK: {findings.captions_ok} of {findings.items}")
    print(f"screenshots: {len(findings.screenshots)} in {args.out}")
    for note in findings.notes:
        print(f"note: {note}")
    if findings.failures:
        print(f"FAILED: {len(findings.failures)} problem(s)")
        for failure in findings.failures:
            print(f"  {failure}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
