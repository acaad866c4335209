"""Asks an Orthanc (REST on 127.0.0.1:PORT) whether it holds SOP Instance UID and prints its Modality and
SOPClassUID. usage: orthanc_query.py PORT SOP_INSTANCE_UID. Exit 1 if absent."""
import json
import sys
import time
import urllib.error
import urllib.request


def main():
    port, sop = sys.argv[1], sys.argv[2]
    base = f"http://127.0.0.1:{port}"
    req = urllib.request.Request(
        f"{base}/tools/find",
        data=json.dumps({"Level": "Instance", "Query": {"SOPInstanceUID": sop}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    deadline = time.time() + 15
    while True:  # the REST server may come up a moment after the DICOM port
        try:
            ids = json.load(urllib.request.urlopen(req, timeout=10))
            break
        except (urllib.error.URLError, ConnectionError):
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    if len(ids) != 1:
        print(f"found {len(ids)} instances with SOPInstanceUID {sop}")
        sys.exit(1)
    tags = json.load(urllib.request.urlopen(f"{base}/instances/{ids[0]}/simplified-tags", timeout=10))
    print(json.dumps({k: tags.get(k) for k in ("SOPClassUID", "Modality", "NumberOfFrames", "SegmentationType")}))


if __name__ == "__main__":
    main()
