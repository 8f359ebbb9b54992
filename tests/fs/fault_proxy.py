"""A fault-injecting TCP proxy for tests: 127.0.0.1:<free port> -> target host:port.

    with FaultProxy(sshd.port) as proxy:      # or proxy = FaultProxy(port).start(); ...; proxy.stop()
        mount through proxy.port
        proxy.cut()             # every current connection closed abruptly, both sides get a TCP RST
        proxy.blackhole(True)   # nothing delivered either way, no reset; new connections are accepted
                                # and black-holed too; bytes wait in the proxy (and the kernels' buffers)
        proxy.blackhole(False)  # traffic flows again, nothing lost (as TCP after an outage)
        proxy.refuse(True)      # new connections are reset as soon as they are accepted
        proxy.latency(0.05)     # every byte delivered 50 ms after it arrived (each way): a real network's
                                # round trip, so a reply never arrives in the same instant as its request
        proxy.connections, proxy.accepted, proxy.refused, proxy.bytes_up, proxy.bytes_down

One thread runs a selector loop and owns every socket; the control methods hand it a function and wait
until it has run, so when cut() returns the connections are closed. stop() closes every socket and joins
the thread: nothing is left behind. Stdlib only.
"""
import collections
import errno
import os
import queue
import selectors
import socket
import struct
import threading
import time

_CHUNK = 65536
_BUFFER_LIMIT = 1 << 20  # per direction; a side is not read while its peer's buffer is this full


def _reset(sock):
    """Closes a socket with a TCP RST (SO_LINGER 0) rather than a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Stream:
    """Bytes on their way one direction: chunks, each deliverable from its ready time on."""

    def __init__(self):
        self.chunks = collections.deque()  # [ready_at, bytearray]
        self.size = 0

    def __len__(self):
        return self.size

    def push(self, data, ready_at):
        if self.chunks and self.chunks[-1][0] >= ready_at:
            self.chunks[-1][1].extend(data)  # no later than what is already waiting
        else:
            self.chunks.append([ready_at, bytearray(data)])
        self.size += len(data)

    def ready(self, now) -> bool:
        return bool(self.chunks) and self.chunks[0][0] <= now

    def next_ready_at(self):
        return self.chunks[0][0] if self.chunks else None

    def head(self):
        return self.chunks[0][1]

    def consume(self, n):
        head = self.chunks[0][1]
        del head[:n]
        self.size -= n
        if not head:
            self.chunks.popleft()


class _Pair:
    """One proxied connection: the accepted client socket and our socket to the target."""

    def __init__(self, client, upstream, number):
        self.client = client
        self.upstream = upstream
        self.number = number
        self.connected = False      # the connect to the target has completed
        self.to_upstream = _Stream()
        self.to_client = _Stream()
        self.client_eof = False     # the client sent FIN
        self.upstream_eof = False
        self.upstream_shut = False  # we passed the client's FIN on
        self.client_shut = False


class FaultProxy:
    def __init__(self, target_port, target_host="127.0.0.1", listen_host="127.0.0.1"):
        self.target = (target_host, int(target_port))
        self.listen_host = listen_host
        self.port = None
        self.accepted = 0        # connections accepted and forwarded (refused ones not counted)
        self.refused = 0
        self.cuts = 0            # connections closed by cut()
        self.upstream_failures = 0  # connects to the target that failed
        self.bytes_up = 0        # client -> target, bytes delivered
        self.bytes_down = 0      # target -> client
        self.events = []         # (monotonic time, text): what the proxy did, for test output
        self._blackhole = False
        self._refuse = False
        self._latency = 0.0
        self._pairs = {}
        self._numbers = 0
        self._thread = None
        self._commands = queue.Queue()
        self._stopping = False
        self._selector = None
        self._listener = None
        self._wake_r = self._wake_w = None
        self._masks = {}

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self):
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.listen_host, 0))
            listener.listen(128)
            listener.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
        except BaseException:
            listener.close()
            for s in (self._wake_r, self._wake_w):
                if s is not None:
                    s.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        self._log(f"listening on {self.listen_host}:{self.port} -> {self.target[0]}:{self.target[1]}")
        return self

    def stop(self):
        """Closes every socket (connections with a reset) and joins the loop thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("fault proxy thread did not stop")
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- faults ----------------------------------------------------------------------------------
    def cut(self) -> int:
        """Closes every current connection abruptly (RST to both sides). Returns how many were cut."""
        def do():
            pairs = list(self._pairs.values())
            for pair in pairs:
                self._close_pair(pair, abrupt=True)
            self.cuts += len(pairs)
            self._log(f"cut {len(pairs)} connection(s)")
            return len(pairs)
        return self._call(do)

    def blackhole(self, on: bool):
        """On: no byte is delivered either way and nothing is closed; new connections are accepted and
        black-holed as well. Off: what waited is delivered, as after a network outage."""
        def do():
            self._blackhole = bool(on)
            self._log(f"black hole {'on' if on else 'off'} ({len(self._pairs)} connection(s) open)")
        self._call(do)

    def refuse(self, on: bool):
        """On: each new connection is reset as soon as it is accepted (existing ones are untouched)."""
        def do():
            self._refuse = bool(on)
            self._log(f"refusing new connections: {'on' if on else 'off'}")
        self._call(do)

    def latency(self, seconds: float):
        """Each byte is delivered this long after it arrived, each way (0: at once)."""
        def do():
            self._latency = max(0.0, float(seconds))
            self._log(f"latency {self._latency * 1000:.0f} ms each way")
        self._call(do)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return self._call(lambda: len(self._pairs))

    @property
    def bytes_forwarded(self) -> int:
        return self.bytes_up + self.bytes_down

    def wait_for_connections(self, count=1, timeout=20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connections >= count:
                return True
            time.sleep(0.05)
        return self.connections >= count

    def describe(self) -> str:
        return (f"proxy :{self.port}: {self.accepted} accepted, {self.refused} refused, {self.cuts} cut, "
                f"{self.bytes_up} bytes up, {self.bytes_down} bytes down")

    # ---- internals -------------------------------------------------------------------------------
    def _log(self, text):
        self.events.append((time.monotonic(), text))

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already full of wake-ups, or closed at stop

    def _call(self, function, timeout=10.0):
        """Runs function on the loop thread and returns its result (the loop owns every socket)."""
        if self._thread is None:
            raise RuntimeError("FaultProxy is not running")
        if threading.current_thread() is self._thread:
            return function()
        done = threading.Event()
        box = {}

        def wrapped():
            try:
                box["result"] = function()
            except BaseException as e:  # handed back to the caller
                box["error"] = e
            finally:
                done.set()
        self._commands.put(wrapped)
        self._wake()
        if not done.wait(timeout):
            raise RuntimeError("fault proxy loop did not answer")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def _run(self):
        try:
            while not self._stopping:
                timeout = self._update_interest()
                for key, mask in self._selector.select(timeout=timeout):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        pair, side = key.data
                        if pair.number in self._pairs:
                            self._service(pair, side, mask)
                    if self._stopping:
                        break
                self._run_commands()
        finally:
            self._shutdown()

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._run_commands()

    def _run_commands(self):
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _shutdown(self):
        for pair in list(self._pairs.values()):
            self._close_pair(pair, abrupt=True)
        self._run_commands()  # nobody waits forever on a command sent during stop
        for sock in (self._listener, self._wake_r):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._wake_w.close()
        self._selector.close()
        self._masks.clear()
        self._log("stopped")

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                raise
            if self._refuse:
                self.refused += 1
                _reset(client)
                self._log("refused a connection")
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._numbers += 1
            pair = _Pair(client, upstream, self._numbers)
            self._pairs[pair.number] = pair
            self.accepted += 1
            code = upstream.connect_ex(self.target)
            if code == 0:
                pair.connected = True
            elif code not in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                self.upstream_failures += 1
                self._log(f"connection {pair.number}: connect to target failed: {os.strerror(code)}")
                self._close_pair(pair, abrupt=True)
                continue
            self._log(f"connection {pair.number} accepted{' (black-holed)' if self._blackhole else ''}")

    def _desired(self, pair, side, now):
        events = 0
        if side == "upstream" and not pair.connected:
            return selectors.EVENT_WRITE  # connect completion; done even in a black hole
        if self._blackhole:
            return 0
        if side == "client":
            if not pair.client_eof and len(pair.to_upstream) < _BUFFER_LIMIT:
                events |= selectors.EVENT_READ
            if pair.to_client.ready(now):
                events |= selectors.EVENT_WRITE
        else:
            if not pair.upstream_eof and len(pair.to_client) < _BUFFER_LIMIT:
                events |= selectors.EVENT_READ
            if pair.to_upstream.ready(now):
                events |= selectors.EVENT_WRITE
        return events

    def _update_interest(self):
        """Sets what each socket waits for; returns how long the loop may sleep (delayed bytes due)."""
        now = time.monotonic()
        timeout = 0.5
        for pair in list(self._pairs.values()):
            if not self._blackhole:
                # Delayed bytes that fell due are written now (or as soon as the socket takes them).
                for side, stream in (("upstream", pair.to_upstream), ("client", pair.to_client)):
                    due = stream.next_ready_at()
                    if due is not None and due > now:
                        timeout = min(timeout, due - now)
        for pair in list(self._pairs.values()):
            for side, sock in (("client", pair.client), ("upstream", pair.upstream)):
                want = self._desired(pair, side, now)
                have = self._masks.get(sock, 0)
                if want == have:
                    continue
                if have and want:
                    self._selector.modify(sock, want, (pair, side))
                elif want:
                    self._selector.register(sock, want, (pair, side))
                else:
                    self._selector.unregister(sock)
                if want:
                    self._masks[sock] = want
                else:
                    self._masks.pop(sock, None)
        return max(timeout, 0.0)

    def _service(self, pair, side, mask):
        if side == "upstream" and not pair.connected:
            code = pair.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.upstream_failures += 1
                self._log(f"connection {pair.number}: connect to target failed: {os.strerror(code)}")
                self._close_pair(pair, abrupt=True)
            else:
                pair.connected = True
            return
        if self._blackhole:
            return
        try:
            if mask & selectors.EVENT_READ:
                self._read(pair, side)
            if pair.number in self._pairs and mask & selectors.EVENT_WRITE:
                self._write(pair, side)
        except (ConnectionError, OSError) as e:
            if pair.number in self._pairs:
                self._log(f"connection {pair.number}: {side} failed: {e}; resetting the other side")
                self._close_pair(pair, abrupt=True)
            return
        if pair.number in self._pairs:
            self._pass_on_eof(pair)

    def _read(self, pair, side):
        sock = pair.client if side == "client" else pair.upstream
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            if side == "client":
                pair.client_eof = True
            else:
                pair.upstream_eof = True
            return
        (pair.to_upstream if side == "client" else pair.to_client).push(data, time.monotonic() + self._latency)
        # Try to pass it on now rather than on the next round.
        self._write(pair, "upstream" if side == "client" else "client")

    def _write(self, pair, side):
        if side == "upstream" and not pair.connected:
            return
        sock, stream = (pair.client, pair.to_client) if side == "client" else (pair.upstream, pair.to_upstream)
        while stream.ready(time.monotonic()):
            try:
                sent = sock.send(stream.head())
            except (BlockingIOError, InterruptedError):
                return
            stream.consume(sent)
            if side == "client":
                self.bytes_down += sent
            else:
                self.bytes_up += sent

    def _pass_on_eof(self, pair):
        if pair.client_eof and not len(pair.to_upstream) and not pair.upstream_shut and pair.connected:
            pair.upstream_shut = True
            try:
                pair.upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if pair.upstream_eof and not len(pair.to_client) and not pair.client_shut:
            pair.client_shut = True
            try:
                pair.client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if pair.upstream_shut and pair.client_shut:
            self._close_pair(pair, abrupt=False)

    def _close_pair(self, pair, abrupt):
        if self._pairs.pop(pair.number, None) is None:
            return
        for sock in (pair.client, pair.upstream):
            if self._masks.pop(sock, None) is not None:
                try:
                    self._selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
            if abrupt:
                _reset(sock)
            else:
                sock.close()
        self._log(f"connection {pair.number} {'reset' if abrupt else 'closed'}")
