#!/usr/bin/env python3
"""A small DICOMweb client for the tests (standard library only), independent of segnode's.

usage: dicomweb.py qido URL            -> prints the QIDO-RS JSON answer
       dicomweb.py wado URL OUT_PREFIX -> WADO-RS retrieve: writes OUT_PREFIX.<n>.dcm per part, prints
                                          the list of files as JSON
Credentials and trust from the environment: DW_USER / DW_PASSWORD (basic), DW_CA (PEM CA file).
"""
import base64
import json
import os
import re
import ssl
import sys
import urllib.request


def get(url, accept):
    req = urllib.request.Request(url, headers={"Accept": accept})
    if os.environ.get("DW_USER"):
        token = base64.b64encode(f"{os.environ['DW_USER']}:{os.environ.get('DW_PASSWORD', '')}".encode())
        req.add_header("Authorization", "Basic " + token.decode())
    ctx = ssl.create_default_context(cafile=os.environ["DW_CA"]) if os.environ.get("DW_CA") else None
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        return r.headers.get("Content-Type", ""), r.read()


def main():
    verb, url = sys.argv[1], sys.argv[2]
    if verb == "qido":
        _, body = get(url, "application/dicom+json")
        print(body.decode() if body else "[]")
        return
    ctype, body = get(url, 'multipart/related; type="application/dicom"')
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        sys.exit(f"no boundary in {ctype!r}")
    marker = b"--" + m.group(1).encode()
    files = []
    for part in body.split(marker)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        out = f"{sys.argv[3]}.{len(files)}.dcm"
        with open(out, "wb") as f:
            f.write(data)
        files.append(out)
    print(json.dumps(files))


if __name__ == "__main__":
    main()
