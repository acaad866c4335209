#!/usr/bin/env python3
"""Every relative link in the repository's Markdown pages resolves to a file or folder.

usage: scripts/check-doc-links.py      (from anywhere; exit 1 and the broken links if any)
Pages: README.md, docs/*.md, */README.md, */*/*.md under bench/. Links inside fenced code blocks,
URLs (scheme:) and in-page anchors (#...) are not checked.
"""
import glob
import os
import re
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pages = sorted({"README.md", *glob.glob("docs/*.md", root_dir=root), *glob.glob("*/README.md", root_dir=root),
                *glob.glob("bench/*/*.md", root_dir=root)})
broken = []
checked = 0
for page in pages:
    with open(os.path.join(root, page), encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        link = m.group(1)
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", link) or link.startswith("#"):
            continue
        checked += 1
        target = os.path.normpath(os.path.join(root, os.path.dirname(page), link.split("#")[0]))
        if not os.path.exists(target):
            broken.append(f"{page}: ({link}) -> {os.path.relpath(target, root)} does not exist")
print(f"{checked} relative links in {len(pages)} pages, {len(broken)} broken")
for b in broken:
    print("  " + b)
sys.exit(1 if broken else 0)
