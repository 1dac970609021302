"""A /health-only server that ignores SIGINT, as a process started under nohup does."""

import argparse
import signal
from http.server import BaseHTTPRequestHandler, HTTPServer


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--parent-pid")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    HTTPServer((args.host, args.port), Health).serve_forever()
