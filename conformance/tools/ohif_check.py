#!/usr/bin/env python3
"""The SEG in a real viewer: segnode -> Orthanc (DICOMweb) -> OHIF v3 in headless Chromium.

Runs inside a private network namespace (the caller starts it with `unshare -n` and brings `lo` up):
Orthanc 1.10 always listens on 0.0.0.0, and in the namespace nothing else can reach it, so fixed
ports are safe.

1. Orthanc with its DICOMweb plugin holds the MR study and sends it to `segnode serve` (C-STORE),
   which delivers the SEG and the volume report back by STOW-RS; wait for both in Orthanc.
2. A deliberately shifted copy of the SEG (masks moved SHIFT columns, new UIDs) is stored too.
3. One origin (this script's HTTP server) serves the OHIF dist with our app-config.js and proxies
   /dicom-web/ to Orthanc. Chromium (Debian chromium-headless-shell) driven by Playwright opens the
   study, double-clicks the SEG's thumbnail, hydrates it, and the labelmap is read from the page
   (cornerstone's segmentation state: one label image per source image).
4. For each SEG (delivered, shifted): the labelmap compared voxel for voxel with the SEG file as
   highdicom reads it on the FLAIR grid, its Dice against the study's ground truth (does it sit on
   the FLAIR lesion?), segment names and colours; a screenshot.

usage: ohif_check.py --segnode BIN --study DIR --ohif DIST --out DIR
Prints one JSON object on stdout; progress on stderr.
"""
import argparse
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tls_proxy  # noqa: E402  (the same forwarding code as the TLS proxy)

ORTHANC_HTTP, ORTHANC_DICOM, SEGNODE_PORT, WEB_PORT = 8042, 4242, 11112, 8000
SHIFT = 12  # columns (2.4 cm at 2 mm): far enough to leave the lesion
APP_CONFIG = """window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'dicomweb',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'dicomweb',
    configuration: {
      friendlyName: 'Orthanc (test)',
      name: 'orthanc',
      wadoUriRoot: '%(root)s',
      qidoRoot: '%(root)s',
      wadoRoot: '%(root)s',
      qidoSupportsIncludeField: false,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      staticWado: false,
      singlepart: 'bulkdata,video',
      bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      omitQuotationForMultipartRequest: true,
    },
  }],
};
"""

# Reads cornerstone's segmentation state: for each segmentation, its segments (label, colour) and
# for each label image the SOP Instance UID of the image it labels and its run-length encoded pixels.
READ_LABELMAP = r"""
() => {
  const cs = window.cornerstone, ct = window.cornerstoneTools;
  if (!cs || !ct) return {error: 'window.cornerstone / window.cornerstoneTools not exposed'};
  const segs = ct.segmentation.state.getSegmentations();
  const engines = cs.getRenderingEngines();
  const viewport = engines.length ? engines[0].getViewports()[0] : null;
  const out = [];
  for (const s of segs) {
    const segments = [];
    for (const [idx, seg] of Object.entries(s.segments || {})) {
      if (!seg) continue;
      let color = null;
      try {
        color = ct.segmentation.config.color.getSegmentIndexColor(
          viewport.id, s.segmentationId, Number(idx));
      } catch (e) { color = String(e); }
      segments.push({index: Number(idx), label: seg.label, color: color ? Array.from(color) : null});
    }
    const lm = (s.representationData || {}).Labelmap || {};
    const images = [];
    let imageIds = lm.imageIds || [];
    for (const id of imageIds) {
      const img = cs.cache.getImage(id);
      if (!img) { images.push({id, missing: true}); continue; }
      const ref = img.referencedImageId || '';
      const inst = cs.metaData.get('instance', ref) || {};
      const data = img.voxelManager ? img.voxelManager.getScalarData() : img.getPixelData();
      // run-length encode: [value, count, value, count, ...]
      const rle = [];
      let prev = data[0], n = 0;
      for (let i = 0; i < data.length; i++) {
        if (data[i] === prev) { n++; } else { rle.push(prev, n); prev = data[i]; n = 1; }
      }
      rle.push(prev, n);
      images.push({sop: inst.SOPInstanceUID || null, ref, rows: img.rows, columns: img.columns, rle});
    }
    out.push({id: s.segmentationId, label: s.label, volumeId: lm.volumeId || null, segments, images});
  }
  return {segmentations: out};
}
"""


JUMP_TO_SOP = r"""
(sop) => {
  const cs = window.cornerstone;
  const vp = cs.getRenderingEngines()[0].getViewports()[0];
  const ids = vp.getImageIds();
  const k = ids.findIndex(id => (cs.metaData.get('instance', id) || {}).SOPInstanceUID === sop);
  if (k >= 0) { vp.setImageIdIndex(k); vp.render(); }
  return k;
}
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} not open after {timeout}s")


def rest(path, data=None, method=None):
    req = urllib.request.Request(f"http://127.0.0.1:{ORTHANC_HTTP}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return body


def rest_json(path):
    return json.loads(rest(path))


class Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True


def make_handler(dist: Path, app_config: bytes):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _proxy(self):
            tls_proxy.forward(self, ORTHANC_HTTP)

        def _static(self):
            path = self.path.split("?", 1)[0]
            if path == "/app-config.js":
                data, ctype = app_config, "application/javascript"
            else:
                f = (dist / path.lstrip("/")).resolve()
                if not str(f).startswith(str(dist.resolve())) or not f.is_file():
                    f = dist / "index.html"
                data = f.read_bytes()
                ctype = {
                    ".js": "application/javascript", ".css": "text/css", ".html": "text/html",
                    ".json": "application/json", ".wasm": "application/wasm", ".svg": "image/svg+xml",
                    ".png": "image/png", ".woff2": "font/woff2",
                }.get(f.suffix, "application/octet-stream")
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            try:
                if self.path.startswith("/dicom-web/"):
                    self._proxy()
                else:
                    self._static()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_POST(self):
            self._proxy()

    return H


def start_stack(args, work: Path):
    db = work / "orthanc"
    cfg = work / "orthanc.json"
    cfg.write_text(json.dumps({
        "Name": "VIEWERTEST", "StorageDirectory": str(db), "IndexDirectory": str(db),
        "DicomAet": "ORTHANC", "DicomPort": ORTHANC_DICOM, "HttpPort": ORTHANC_HTTP,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomModalities": {"segnode": ["SEGNODE", "127.0.0.1", SEGNODE_PORT]},
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full",
                     "SeriesMetadata": "Full"},
    }))
    procs = []
    procs.append(subprocess.Popen(["Orthanc", str(cfg)], stdout=subprocess.DEVNULL,
                                  stderr=open(work / "orthanc.log", "w")))
    wait_port(ORTHANC_HTTP)
    node_log = open(work / "segnode.log", "w")
    procs.append(subprocess.Popen(
        [args.segnode, "serve", "--data-dir", str(work / "node"), "--port", str(SEGNODE_PORT),
         "--http", "off", "--aet", "SEGNODE", "--quiet-period", "2", "--retry-delay", "1",
         "--destination", f"http://127.0.0.1:{ORTHANC_HTTP}/dicom-web"],
        stdout=node_log, stderr=node_log, env={**os.environ, "RUST_LOG": "info"}))
    wait_port(SEGNODE_PORT)
    return procs


def deliver_study(args, work: Path):
    """The PACS's part: the MR study is stored in Orthanc, which sends it to segnode (C-STORE)."""
    ids = set()
    for f in sorted((Path(args.study) / "dicom").rglob("*.dcm")):
        ids.add(json.loads(rest("/instances", data=f.read_bytes(), method="POST"))["ParentStudy"])
    if len(ids) != 1:
        raise SystemExit(f"expected one study in Orthanc, got {ids}")
    rest("/modalities/segnode/store", method="POST",
         data=json.dumps({"Resources": list(ids), "Synchronous": True}).encode())
    end = time.time() + 300
    while time.time() < end:
        series = rest_json("/series?expand")
        mods = {s["MainDicomTags"].get("Modality"): s for s in series}
        if "SEG" in mods and "SR" in mods:
            return mods["SEG"], mods["SR"]
        if "dead-lettering" in (work / "segnode.log").read_text():
            raise SystemExit("segnode dead-lettered the job:\n" + (work / "segnode.log").read_text())
        time.sleep(0.5)
    raise SystemExit("no SEG and SR in Orthanc after 300 s:\n" + (work / "segnode.log").read_text())


def shifted_copy(seg_bytes: bytes, work: Path) -> pydicom.Dataset:
    """The same SEG with every frame's mask moved SHIFT columns right, under new UIDs."""
    ds = pydicom.dcmread(__import__("io").BytesIO(seg_bytes))
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    moved = np.zeros_like(frames)
    moved[:, :, SHIFT:] = frames[:, :, :-SHIFT]
    ds.PixelData = pydicom.pixels.pack_bits(moved.astype(np.uint8), pad=True)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesDescription = "SHIFTED (must fail)"
    ds.SeriesNumber = 9999
    out = work / "shifted.dcm"
    ds.save_as(out, enforce_file_format=True)
    rest("/instances", data=out.read_bytes(), method="POST")
    return ds


def seg_labels_on_flair(seg: pydicom.Dataset, uids):
    """Segment numbers (0 = none) per FLAIR instance, as highdicom reads the SEG."""
    s = hd.seg.Segmentation.from_dataset(seg, copy=False)
    numbers = [int(n) for n in s.segment_numbers]
    px = s.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=numbers,
                                         assert_missing_frames_are_empty=True)
    labels = np.zeros(px.shape[:3], np.uint8)
    for i, n in enumerate(numbers):
        labels[px[..., i] > 0] = n
    return labels


def labelmap_from_page(state, uids, shape):
    """The labelmap OHIF holds for the one loaded SEG, on the FLAIR grid; and its segments."""
    segs = state.get("segmentations") or []
    if len(segs) != 1:
        raise AssertionError(f"expected one segmentation in the viewer, got {len(segs)}: "
                             f"{[s.get('label') for s in segs]}")
    s = segs[0]
    index = {u: i for i, u in enumerate(uids)}
    labels = np.zeros(shape, np.uint8)
    seen, foreign = set(), 0
    for im in s["images"]:
        if im.get("missing") or im.get("sop") not in index:
            foreign += 1
            continue
        flat = np.repeat(np.array(im["rle"][0::2], np.uint8), np.array(im["rle"][1::2], np.int64))
        labels[index[im["sop"]]] = flat.reshape(im["rows"], im["columns"])
        seen.add(im["sop"])
    return labels, s["segments"], len(seen), foreign


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def dismiss_tour(page):
    """OHIF 3.13 starts an onboarding tour (shepherd.js) over the viewer on first use: end it."""
    for _ in range(20):
        if page.locator(".shepherd-modal-is-visible, .shepherd-element").count() == 0:
            return
        for sel in (".shepherd-cancel-icon", "button:has-text('Skip')", "button:has-text('Close')"):
            b = page.locator(sel)
            if b.count() and b.first.is_visible():
                b.first.click(timeout=2_000)
                break
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def view_seg(page, base, study_uid, series_description, shot: Path):
    """Opens the study, loads the SEG whose thumbnail shows `series_description`, returns the state."""
    page.goto(f"{base}/viewer?StudyInstanceUIDs={study_uid}", wait_until="domcontentloaded")
    thumbs = page.locator("[data-cy=study-browser-thumbnail-no-image]")
    thumbs.first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    dismiss_tour(page)
    target = thumbs.filter(has_text=series_description)
    if target.count() == 0:
        texts = [thumbs.nth(i).inner_text() for i in range(thumbs.count())]
        raise AssertionError(f"no thumbnail for {series_description!r}: {texts}")
    target.first.dblclick()
    page.locator("[data-cy=yes-hydrate-btn]").first.click(timeout=60_000)
    # Wait until the labelmap is in cornerstone's state with its label images.
    state = None
    end = time.time() + 90
    while time.time() < end:
        state = page.evaluate(READ_LABELMAP)
        segs = state.get("segmentations") or []
        if segs and segs[0]["images"] and not any(i.get("missing") for i in segs[0]["images"]):
            break
        time.sleep(0.5)
    # Show the slice with the most labelled voxels, for the screenshot.
    best = None
    for s in (state or {}).get("segmentations") or []:
        for im in s["images"]:
            if im.get("rle"):
                n = sum(c for v, c in zip(im["rle"][0::2], im["rle"][1::2]) if v)
                if best is None or n > best[0]:
                    best = (n, im["sop"])
    if best:
        page.evaluate(JUMP_TO_SOP, best[1])
    page.wait_for_timeout(1500)
    page.screenshot(path=str(shot))
    return state


def check(state, seg_ds, uids, truth, segments_expected, shot):
    shape = truth.shape
    expected = seg_labels_on_flair(seg_ds, uids)
    got, segments, n_images, foreign = labelmap_from_page(state, uids, shape)
    mismatches = int((got != expected).sum())
    wt = dice(np.isin(got, [1, 2, 3]), np.isin(truth, [1, 2, 3]))
    names = {s["index"]: s["label"] for s in segments}
    colours = {s["index"]: s["color"] for s in segments}
    colours_ok = all(
        colours.get(i) is not None and not isinstance(colours[i], str)
        and all(abs(a - b) <= 3 for a, b in zip(colours[i][:3], rgb))
        for i, (_, rgb) in enumerate(segments_expected, start=1))
    names_ok = [names.get(i) for i in range(1, len(segments_expected) + 1)] == \
        [n for n, _ in segments_expected]
    voxel_equal = mismatches == 0 and n_images == len(uids)
    on_lesion = wt >= 0.8
    return {
        "label_images": n_images, "flair_slices": len(uids), "label_images_not_on_flair": foreign,
        "voxels_set_viewer": int((got > 0).sum()), "voxels_set_seg": int((expected > 0).sum()),
        "mismatched_voxels": mismatches, "voxel_equal": voxel_equal,
        "dice_wt_vs_truth": wt, "on_flair_lesion": on_lesion,
        "segment_names": names, "segment_colours": colours, "names_ok": names_ok,
        "colours_ok": colours_ok, "screenshot": str(shot),
        "passed": bool(voxel_equal and on_lesion and names_ok and colours_ok),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segnode", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--ohif", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--browser", default=shutil.which("chromium-headless-shell") or
                    "/usr/lib/chromium/headless_shell")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    study = Path(args.study)
    truth_meta = json.loads((study / "truth" / "truth.json").read_text())
    truth = np.fromfile(study / "truth" / truth_meta["raw_file"], np.uint8).reshape(
        truth_meta["raw_shape"])
    uids = truth_meta["reference_sop_instance_uids"]
    study_uid = json.loads((study / "study.json").read_text())["study_instance_uid"]
    segments_expected = [("Necrotic core", (255, 0, 0)), ("Oedema", (0, 200, 0)),
                         ("Enhancing tumour", (255, 255, 0))]
    t0 = time.time()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procs = start_stack(args, work)
        server = None
        try:
            seg_series, sr_series = deliver_study(args, work)
            result["delivered_s"] = round(time.time() - t0, 1)
            seg_id = seg_series["Instances"][0]
            seg_bytes = rest(f"/instances/{seg_id}/file")
            seg_ds = pydicom.dcmread(__import__("io").BytesIO(seg_bytes))
            shifted = shifted_copy(seg_bytes, work)
            server = Origin(("127.0.0.1", WEB_PORT), make_handler(
                Path(args.ohif), (APP_CONFIG % {"root": f"http://127.0.0.1:{WEB_PORT}/dicom-web"}).encode()))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            from playwright.sync_api import sync_playwright
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.browser, args=[
                    "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                    "--ignore-gpu-blocklist"])
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                console = []
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"[:300]))
                base = f"http://127.0.0.1:{WEB_PORT}"
                for name, ds, desc in [("delivered", seg_ds, seg_ds.SeriesDescription),
                                       ("shifted", shifted, shifted.SeriesDescription)]:
                    t = time.time()
                    shot = out / f"ohif-{name}.png"
                    try:
                        state = view_seg(page, base, study_uid, desc, shot)
                        if state.get("error"):
                            raise AssertionError(state["error"])
                        result[name] = check(state, ds, uids, truth, segments_expected, shot)
                    except Exception as e:  # a viewer failure is a failed check, with its evidence
                        try:
                            page.screenshot(path=str(shot))
                        except Exception:
                            pass
                        result[name] = {"passed": False, "error": f"{type(e).__name__}: {e}",
                                        "screenshot": str(shot)}
                    result[name]["seconds"] = round(time.time() - t, 1)
                    log(name, json.dumps(result[name])[:400])
                (out / "browser-console.log").write_text("\n".join(console))
                browser.close()
        finally:
            if server:
                server.shutdown()
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            for f in ("segnode.log", "orthanc.log"):
                if (work / f).exists():
                    shutil.copy(work / f, out / f)
    result["total_s"] = round(time.time() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
