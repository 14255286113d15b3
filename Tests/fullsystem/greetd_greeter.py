#!/usr/bin/python3
"""A greeter for greetd 0.9, for the desktop tests: it logs in once per
ticket, the way a graphical greeter does, over greetd's IPC
(create_session, post_auth_message_response, start_session).

greetd runs it as _greetd (Debian's greeter account) whenever no session
is running. A ticket is /run/lc-greeter/login.json, written by the test:
{"user": ..., "password": ..., "cmd": [...], "env": [...]}. The greeter
renames it to login.used before it logs in, so a session that ends does
not start again; without a ticket it waits. Every step goes to
/run/lc-greeter/log, for the test to read.
"""
import json
import os
import signal
import socket
import struct
import sys

DIRECTORY = "/run/lc-greeter"


def log(line):
    with open(os.path.join(DIRECTORY, "log"), "a") as f:
        f.write(f"{os.getpid()} {line}\n")


def ask(connection, request):
    """One request, one reply: a native-endian u32 length, then JSON."""
    payload = json.dumps(request).encode()
    connection.sendall(struct.pack("=I", len(payload)) + payload)
    length = struct.unpack("=I", receive(connection, 4))[0]
    reply = json.loads(receive(connection, length))
    log(f"{request['type']} -> {reply}")
    return reply


def receive(connection, count):
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise EOFError("greetd closed the socket")
        data += chunk
    return data


def main():
    ticket = os.path.join(DIRECTORY, "login.json")
    try:
        os.rename(ticket, os.path.join(DIRECTORY, "login.used"))
    except FileNotFoundError:
        log("no ticket: waiting")
        signal.pause()
        return 0
    with open(os.path.join(DIRECTORY, "login.used")) as f:
        login = json.load(f)
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(os.environ["GREETD_SOCK"])
    reply = ask(connection, {"type": "create_session", "username": login["user"]})
    while reply["type"] == "auth_message":
        answer = login["password"] if reply["auth_message_type"] in ("secret", "visible") else None
        reply = ask(connection, {"type": "post_auth_message_response", "response": answer})
    if reply["type"] != "success":
        ask(connection, {"type": "cancel_session"})
        return 1
    reply = ask(connection, {"type": "start_session", "cmd": login["cmd"], "env": login.get("env", [])})
    return 0 if reply["type"] == "success" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # noqa: BLE001 - the test reads the log
        log(f"failed: {error!r}")
        sys.exit(1)
