"""The demo's report page in a real browser: a screenshot to look at.

    apt-get install chromium
    python bench/report_page.py [--work_dir /tmp/report-page] [--height 3000]

Runs the demo as the README gives it (FlowIO.py on data/images, train.py),
then `Evaluation.py --audit` and `Evaluation.py`, which writes report.html
with the audit's suspects in it, and has headless Chromium load the page
from the disk and save a screenshot (WORK_DIR/report.png). Prints the page's
size and where the screenshot is; what it shows is for a person to judge.
"""
import argparse
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*command):
    subprocess.run([sys.executable, *command], cwd=REPO, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="/tmp/report-page")
    parser.add_argument("--height", type=int, default=3000, help="screenshot height, pixels")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("error: no chromium on PATH: apt-get install chromium")
    records, models = (os.path.join(args.work_dir, name) for name in ("tfrecords", "models"))
    shutil.rmtree(args.work_dir, ignore_errors=True)
    run("FlowIO.py", "--image_dir", os.path.join(REPO, "data", "images"), "--output_dir", records)
    run("train.py", "--data_dir", records, "--model_dir", models)
    run("Evaluation.py", "--model_dir", models, "--data_dir", records, "--audit")
    run("Evaluation.py", "--model_dir", models, "--data_dir", records)
    page = os.path.join(models, "eval", "report.html")
    shot = os.path.join(args.work_dir, "report.png")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size=1280,{args.height}", f"--screenshot={shot}",
                    "file://" + os.path.abspath(page)], check=True, capture_output=True,
                   timeout=120)
    print(f"{page}: {os.path.getsize(page) / 1e3:.0f} kB, opened by {chromium}; "
          f"screenshot: {shot}")


if __name__ == "__main__":
    main()
