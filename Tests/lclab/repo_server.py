"""The fleet tests' web server: serves a directory (an OSTree repository) on
127.0.0.1 only, in whatever network namespace it is started in, and appends
one JSON line per request to LOG: the path, the status and the bytes of the
body sent. With --fail-first N it answers the first N requests with 503;
with --die-after N it exits in the middle of the body of its Nth answer (a
server killed mid-pull).

    repo_server.py DIRECTORY PORT LOG [--fail-first N] [--die-after N]
"""
import argparse
import functools
import http.server
import json
import os


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--die-after", type=int, default=0)
    args = parser.parse_args()
    answered = [0]

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            answered[0] += 1
            if answered[0] <= args.fail_first:
                self.send_error(503, "failing on purpose")
                return self.note(503, 0)
            path = self.translate_path(self.path)
            if not os.path.isfile(path):
                self.send_error(404)
                return self.note(404, 0)
            with open(path, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if answered[0] == args.die_after:
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.note(200, len(body) // 2)
                os._exit(0)
            self.wfile.write(body)
            self.note(200, len(body))

        def note(self, status, sent):
            with open(args.log, "a") as f:
                f.write(json.dumps({"path": self.path, "status": status, "bytes": sent}) + "\n")

        def log_message(self, *_):
            pass

    handler = functools.partial(Handler, directory=args.directory)
    with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
