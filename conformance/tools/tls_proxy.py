#!/usr/bin/env python3
"""A TLS-terminating reverse proxy for the tests (Python's ssl, i.e. OpenSSL): HTTPS on PORT ->
plain HTTP on BACKEND_PORT, request and response bodies passed with their Content-Length, every
header (Authorization included) passed through.

Why: Orthanc 1.10's own HTTPS (SslEnabled) exits on the first TLS connection on this Debian
(civetweb against OpenSSL 3), so the DICOMweb tests put this in front of Orthanc instead, which is
also how a PACS is usually published.

usage: tls_proxy.py PORT BACKEND_PORT CERT_AND_KEY.pem
"""
import http.client
import http.server
import ssl
import sys


def forward(handler, backend_port):
    """Sends the request `handler` (a BaseHTTPRequestHandler) is serving to 127.0.0.1:backend_port
    and copies the answer back, with a Content-Length. Also used by ohif_check.py's origin."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        # Like Orthanc's plugin, do not take chunked uploads; say so instead of storing nothing.
        handler.send_error(411, "Length Required")
        return
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else None
    c = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=120)
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
    c.request(handler.command, handler.path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    handler.send_response(r.status)
    for k, v in r.getheaders():
        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
            handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
    c.close()


def main():
    port, backend, pem = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _forward(self):
            forward(self, backend)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
