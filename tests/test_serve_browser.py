"""The web page in a real browser (Debian's Chromium, driven by Playwright) against a real `imgsearch serve`
process over an index of sample_photos: search, see thumbnails, click one, more like it, search by upload;
the search in the address (bookmarks, Back and Forward); the arrow keys in the viewer; and, against a server
that indexes a folder itself, the page following its progress.

Without /usr/bin/chromium the test is skipped, unless IMGSEARCH_REQUIRE_BROWSER=1 (CI) makes that a failure.
Without the playwright package, a declared (dev) dependency, it fails.
Screenshots of the results and of the viewer are saved as tests/artifacts/serve-results.png and
serve-viewer.png.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from imgsearch.library import Library
from tests.conftest import REPO, SAMPLE_COUNT, SAMPLE_PHOTOS, serving
from tests.test_serve_live import FEW as LIVE_PHOTOS
from tests.test_serve_live import serving_folders

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
TOKEN = "browser-t0ken"
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


def _browser_or_skip() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:  # declared in pyproject.toml's dev extra, as pytest is: missing is a failure
        pytest.fail(f"the playwright package, a dev dependency of imgsearch, cannot be imported: {e}")
    if not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("IMGSEARCH_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model) -> Iterator[str]:
    """The URL (with its token) of a real server over an index of sample_photos."""
    _browser_or_skip()
    home = tmp_path_factory.mktemp("browser") / "home"
    Library(home, model=tiny_model).index([SAMPLE_PHOTOS])
    env = {**os.environ, "IMGSEARCH_HOME": str(home), "IMGSEARCH_TOKEN": TOKEN}
    with serving(env) as url:
        yield url


def _thumbnails_loaded(page, at_least: int) -> None:
    page.wait_for_function(
        """n => {
            const imgs = [...document.querySelectorAll('#results img')];
            return imgs.length >= n && imgs.slice(0, n).every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=at_least,
        timeout=20_000,
    )


def test_search_click_more_like_this_and_upload(server: str):
    from playwright.sync_api import expect, sync_playwright

    base = server.split("?")[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)
            expect(page.locator("#status")).to_contain_text(f"{SAMPLE_COUNT} images indexed")

            # type a query, see a grid of real thumbnails
            page.fill("#q", "a cat sitting on a sofa")
            page.keyboard.press("Enter")
            expect(page.locator("#heading")).to_contain_text("a cat sitting on a sofa")
            _thumbnails_loaded(page, 12)
            assert page.locator("#results li").count() == SAMPLE_COUNT  # fewer than a page: all of them
            expect(page.locator("#drop")).to_be_hidden()
            expect(page.locator("#more")).to_be_hidden()  # nothing more to load
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve-results.png"))

            # keyboard only: focus a result, Enter opens it, Escape closes it
            page.locator("#results button").first.focus()
            page.keyboard.press("Enter")
            expect(page.locator("#viewer")).to_be_visible()
            page.keyboard.press("Escape")
            expect(page.locator("#viewer")).to_be_hidden()

            # click one: the viewer shows it; "more like this" leaves it out
            third = page.locator("#results button").nth(2)
            clicked_id, clicked_path = third.get_attribute("data-id"), third.get_attribute("title")
            third.click()
            expect(page.locator("#viewer-title")).to_have_text(clicked_path or "")
            page.wait_for_function("() => document.querySelector('#viewer-img').naturalWidth > 0")
            page.click("#like")
            expect(page.locator("#heading")).to_contain_text("Like " + Path(clicked_path or "").name)
            _thumbnails_loaded(page, 8)
            ids = page.locator("#results button").evaluate_all("bs => bs.map(b => b.dataset.id)")
            assert len(ids) == SAMPLE_COUNT - 1 and clicked_id not in ids

            # search by example: upload a photo, it comes first (the same bytes)
            page.set_input_files("#file", str(SAMPLE_PHOTOS / "dogs-at-window.jpg"))
            expect(page.locator("#heading")).to_contain_text("dogs-at-window.jpg")
            _thumbnails_loaded(page, 4)
            first = page.locator("#results button").first.get_attribute("title") or ""
            assert first.endswith("/dogs-at-window.jpg")

            assert not errors, errors
            assert requests and all(url.startswith(base) for url in requests), "only this server is asked"
        finally:
            browser.close()


@contextlib.contextmanager
def _page(errors: list[str]) -> Iterator[Any]:
    """A fresh browser page; page errors (uncaught exceptions) go to `errors`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page
        finally:
            browser.close()


def _search(page: Any, text: str) -> None:
    page.fill("#q", text)
    page.keyboard.press("Enter")
    from playwright.sync_api import expect

    expect(page.locator("#heading")).to_contain_text(text)
    page.wait_for_function("() => document.querySelectorAll('#results li').length > 0")


def _ids(page: Any) -> list[str]:
    return page.locator("#results button").evaluate_all("bs => bs.map(b => b.dataset.id)")


def _address(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_the_address_carries_the_search_and_back_and_forward_step_through_searches(server: str):
    from playwright.sync_api import expect

    errors: list[str] = []
    with _page(errors) as page:
        page.goto(server)
        page.click("#filters summary")
        page.fill("#glob", "*-*.jpg")
        page.select_option("#sort", "date")
        _search(page, "a red apple")
        assert _address(page) == {
            "token": [TOKEN],
            "q": ["a red apple"],
            "glob": ["*-*.jpg"],
            "sort": ["date"],
        }
        apple_url, apple_ids = page.url, _ids(page)

        page.fill("#glob", "")
        _search(page, "a dog")
        assert _address(page) == {"token": [TOKEN], "q": ["a dog"], "sort": ["date"]}
        dog_ids = _ids(page)

        first = page.locator("#results button").first
        liked_id, liked_name = first.get_attribute("data-id"), Path(first.get_attribute("title") or "").name
        first.click()
        page.click("#like")
        expect(page.locator("#heading")).to_have_text(f"Like {liked_name}")
        assert _address(page) == {"token": [TOKEN], "like": [liked_id]}
        like_url = page.url

        page.go_back()
        expect(page.locator("#heading")).to_contain_text("a dog")
        expect(page.locator("#q")).to_have_value("a dog")
        page.wait_for_function("n => document.querySelectorAll('#results li').length === n", arg=len(dog_ids))
        assert _ids(page) == dog_ids
        page.go_back()
        expect(page.locator("#heading")).to_contain_text("a red apple")
        expect(page.locator("#glob")).to_have_value("*-*.jpg")
        expect(page.locator("#sort")).to_have_value("date")
        page.wait_for_function(
            "n => document.querySelectorAll('#results li').length === n", arg=len(apple_ids)
        )
        assert _ids(page) == apple_ids and page.url == apple_url
        page.go_forward()
        page.go_forward()
        expect(page.locator("#heading")).to_have_text(f"Like {liked_name}")

    with _page(errors) as page:  # a bookmarked or shared address runs its search
        page.goto(like_url)
        expect(page.locator("#heading")).to_have_text(f"Like {liked_name}")
        page.wait_for_function("() => document.querySelectorAll('#results li').length > 0")
        assert liked_id not in _ids(page)
        page.goto(apple_url)
        expect(page.locator("#heading")).to_contain_text("a red apple")
        expect(page.locator("#filters")).to_have_attribute("open", "")
        page.wait_for_function(
            "n => document.querySelectorAll('#results li').length === n", arg=len(apple_ids)
        )
        assert _ids(page) == apple_ids
        page.goto(server.split("?")[0] + f"?token={TOKEN}&like=999999")
        expect(page.locator("#error")).to_contain_text("no indexed image with id 999999")
    assert not errors, errors


def test_arrow_keys_step_through_the_results_in_the_viewer(server: str):
    from playwright.sync_api import expect

    errors: list[str] = []
    with _page(errors) as page:
        page.goto(server)
        _search(page, "a boat on a lake")
        paths = page.locator("#results button").evaluate_all("bs => bs.map(b => b.title.split('\\n')[0])")
        title = page.locator("#viewer-title")
        page.locator("#results button").nth(0).click()
        expect(title).to_have_text(paths[0])
        expect(page.locator("#prev")).to_be_disabled()
        page.keyboard.press("ArrowRight")
        expect(title).to_have_text(paths[1])
        page.keyboard.press("ArrowRight")
        expect(title).to_have_text(paths[2])
        page.keyboard.press("ArrowLeft")
        expect(title).to_have_text(paths[1])
        page.wait_for_function("() => document.querySelector('#viewer-img').naturalWidth > 0")
        page.click("#prev")
        expect(title).to_have_text(paths[0])
        page.keyboard.press("ArrowLeft")  # the first stays
        expect(title).to_have_text(paths[0])
        page.click("#next")
        expect(title).to_have_text(paths[1])
        page.wait_for_function("() => document.querySelector('#viewer-img').naturalWidth > 0")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-viewer.png"))
        page.keyboard.press("Escape")
        expect(page.locator("#viewer")).to_be_hidden()
        assert page.evaluate("document.activeElement.dataset.index") == "1"  # back on the one last viewed

        page.locator("#results button").last.click()
        expect(title).to_have_text(paths[-1])
        expect(page.locator("#next")).to_be_disabled()  # every result is on the page: nothing after it
        page.keyboard.press("ArrowRight")
        expect(title).to_have_text(paths[-1])
        page.keyboard.press("Escape")
        expect(page.locator("#viewer")).to_be_hidden()
    assert not errors, errors


def test_the_page_shows_how_far_indexing_got_and_new_photos(tmp_path, tiny_model):
    """`imgsearch serve FOLDER` over an empty index: the page follows it until it watches, and a photo
    added to the folder shows up in the count."""
    _browser_or_skip()
    from playwright.sync_api import expect

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in LIVE_PHOTOS:
        shutil.copy(SAMPLE_PHOTOS / name, photos / name)
    env = {**os.environ, "IMGSEARCH_HOME": str(tmp_path / "home"), "IMGSEARCH_MODEL": tiny_model}
    errors: list[str] = []
    with serving_folders({**env, "IMGSEARCH_TOKEN": TOKEN}, str(photos)) as (url, _), _page(errors) as page:
        page.goto(url)
        expect(page.locator("#progress")).to_contain_text(f"up to date, watching {photos}", timeout=90_000)
        expect(page.locator("#status")).to_contain_text(f"{len(LIVE_PHOTOS)} images indexed")
        shutil.copy(SAMPLE_PHOTOS / "raccoon.jpg", photos / "raccoon.jpg")
        expect(page.locator("#status")).to_contain_text(
            f"{len(LIVE_PHOTOS) + 1} images indexed", timeout=60_000
        )
        _search(page, "a raccoon")
        assert page.locator("#results li").count() == len(LIVE_PHOTOS) + 1
    assert not errors, errors
