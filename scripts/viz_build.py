"""`kedro viz build` for a machine without internet, then fix what the static site lacks.

    python scripts/viz_build.py [PROJECT_DIR]     # -> PROJECT_DIR/build/ (index.html)

kedro-viz 12.5's static build
* links Google Fonts from index.html (blocked offline: a console error and a stalled font),
  so the link is removed and the UI falls back to the system sans-serif font;
* has no `api/metadata`, which the page fetches on load (404 + "metadata fetch error" in
  the console), so it is written from kedro-viz's own response model.
Serve the result with `python -m http.server -d build` and open it in a browser.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

_EXTERNAL_LINK = re.compile(
    r"<link[^>]+href=\"https?://fonts\.(?:googleapis|gstatic)\.com[^>]*>\s*", re.IGNORECASE)


def offline_env() -> dict[str, str]:
    return {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1",
            "GX_ANALYTICS_ENABLED": "False"}


def build(project: Path | str = ".", *, previews: bool = True) -> Path:
    """Run `kedro viz build` in `project` and make the result work offline; returns build/."""
    project = Path(project).resolve()
    cmd = [sys.executable, "-m", "kedro", "viz", "build"] + (["--include-previews"] if previews else [])
    done = subprocess.run(cmd, cwd=project, env=offline_env(), capture_output=True, text=True)
    out = project / "build"
    if done.returncode != 0 or not (out / "index.html").exists():
        raise RuntimeError(f"`{' '.join(cmd[1:])}` failed in {project} "
                           f"(exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    make_offline(out)
    return out


def make_offline(out: Path) -> None:
    for html in out.glob("*.html"):
        text = html.read_text(encoding="utf-8")
        cleaned = _EXTERNAL_LINK.sub("", text)
        if cleaned != text:
            html.write_text(cleaned, encoding="utf-8")
    metadata = out / "api" / "metadata"
    if not metadata.exists():
        from kedro_viz.api.rest.responses.metadata import MetadataAPIResponse
        from kedro_viz.api.rest.utils import get_package_compatibilities

        response = MetadataAPIResponse(package_compatibilities=get_package_compatibilities())
        metadata.write_text(response.model_dump_json(), encoding="utf-8")


if __name__ == "__main__":
    site = build(sys.argv[1] if len(sys.argv) > 1 else ".")
    sys.stdout.write(f"static kedro-viz site: {site}/index.html "
                     f"(serve: python -m http.server -d {site} 4141)\n")
