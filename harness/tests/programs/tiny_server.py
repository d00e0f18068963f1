"""A small server for teardown's program tests.

tiny_server.py ADDRESS PORT [MARK] [ignore-term] [flood] [daemon]

Listens on ADDRESS PORT; for each connection reads up to 1 KiB, answers
with a minimal HTTP/1.0 response and closes. MARK is any word, kept in the command line so a test
can find every process this server made. The options make it misbehave:
ignore SIGTERM, flood stdout from a child in its process group, or leave a
daemon behind in a session of its own that also ignores SIGTERM.
"""
import os
import signal
import socket
import sys

address, port = sys.argv[1], int(sys.argv[2])
options = sys.argv[3:]

if "ignore-term" in options:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "daemon" in options and os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            signal.pause()
    os._exit(0)
if "flood" in options and os.fork() == 0:
    chunk = b"x" * 65536
    while True:
        os.write(1, chunk)

family = socket.AF_INET6 if ":" in address else socket.AF_INET
server = socket.socket(family)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((address, port))
server.listen()
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.recv(1024)
    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello\n")
    conn.close()
