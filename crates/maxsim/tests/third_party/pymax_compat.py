#!/usr/bin/env python3
"""Drives the MAX simulator with PyMax (PyPI ``maxapi-python``), an unmodified
third-party MAX client, through its public API only.

Run by ``crates/maxsim/tests/third_party.rs`` with the venv made by
``scripts/pymax-venv``; it can also be run by hand against ``maxsim serve``:

    python pymax_compat.py --url ws://127.0.0.1:8765/websocket \
        --token sim-token-alice --me 21473921 --peer 23981206 \
        --chat 2770455 --nonce manual --file /some/file --photo /some/image.png \
        --history "Boris, are you there?" --history "Yes, here."

The scenario, in order (each step prints one PASS or FAIL line):

1. login by token (``WebClient``: PyMax's WebSocket transport, which speaks
   the binary protocol, version 10, in binary WebSocket frames);
2. the chat list of the LOGIN answer holds ``--chat``;
3. history of ``--chat`` ends with the ``--history`` texts, in order;
4. send ``pymax-hello <nonce>`` to ``--chat``;
5. receive ``pymax-reply <nonce>`` from ``--peer`` as a push — the harness
   sends it as the peer once it sees step 4's message on the server;
6. history now holds the hello and the reply, in that order;
7. upload ``--file`` and send it to ``--chat`` as a FILE attachment;
8. ask for the file's download URL and fetch it: bytes must be identical;
9. upload ``--photo`` (a PNG) and send it as a PHOTO attachment; fetch its
   ``baseUrl``: bytes must be identical;
10. react with a thumbs-up to the peer's reply.

Exit status 0 only when every step passed. An overall deadline
(``--timeout``) bounds the whole run, so it can never hang.

PyMax's plain ``Client`` speaks the TCP transport (api2.oneme.ru:443), which
the simulator does not serve; ``WebClient`` is its only WebSocket transport.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import tempfile
import urllib.request
from pathlib import Path

from pymax import ExtraConfig, File, Message, Photo, WebClient
from pymax.types.domain.attachments import FileAttachment, PhotoAttachment

REACTION = "\U0001f44d"


class StepFailed(Exception):
    pass


def passed(step: str, detail: str = "") -> None:
    print(f"PASS {step}" + (f": {detail}" if detail else ""), flush=True)


def check(step: str, ok: bool, detail: str) -> None:
    if not ok:
        raise StepFailed(f"{step}: {detail}")
    passed(step, detail)


async def scenario(args: argparse.Namespace, work_dir: str) -> None:
    # The server address is a documented ExtraConfig option (``url``, the
    # WebSocket URL of WebClient); nothing in PyMax is patched. A saved
    # session is not wanted between runs, so persist_session=False; the
    # token login of ExtraConfig.token replaces WebClient's QR flow.
    client = WebClient(
        work_dir=work_dir,
        extra_config=ExtraConfig(
            url=args.url,
            token=args.token,
            reconnect=False,
            relogin=False,
            telemetry=False,
            persist_session=False,
            request_timeout=args.request_timeout,
            log_level="WARNING",
        ),
    )
    incoming: asyncio.Queue[Message] = asyncio.Queue()

    @client.on_message()
    async def on_message(message: Message, _client: WebClient) -> None:
        await incoming.put(message)

    hello = f"pymax-hello {args.nonce}"
    reply = f"pymax-reply {args.nonce}"

    # connect() logs in and returns with the connection open; start() would
    # block until it closes.
    await client.connect()
    try:
        me = client.me.contact.id if client.me else None
        check("login", me == args.me, f"logged in as {me} (expected {args.me})")

        chat_ids = [c.id for c in client.chats or []]
        check(
            "chats",
            args.chat in chat_ids,
            f"{len(chat_ids)} chats in the LOGIN answer, {args.chat} among them",
        )

        history = await client.fetch_history(args.chat, backward=30)
        texts = [m.text for m in history]
        want = args.history or []
        check(
            "history",
            texts[-len(want):] == want if want else True,
            f"{len(texts)} messages, last {len(want)}: {texts[-len(want):] if want else []}",
        )

        sent = await client.send_message(args.chat, hello)
        check(
            "send",
            sent is not None and sent.text == hello and sent.id > 0,
            f"message {sent.id if sent else None} {hello!r}",
        )

        got = await wait_for(
            incoming,
            lambda m: m.text == reply,
            args.push_timeout,
        )
        check(
            "receive",
            got is not None and got.sender == args.peer and got.chat_id == args.chat,
            f"push {reply!r} from {got.sender if got else None} in chat "
            f"{got.chat_id if got else None}",
        )
        assert got is not None

        history = await client.fetch_history(args.chat, backward=30)
        ids = [m.id for m in history]
        check(
            "history-after",
            sent.id in ids and got.id in ids and ids.index(sent.id) < ids.index(got.id),
            f"hello {sent.id} then reply {got.id} in {len(ids)} messages",
        )

        body = Path(args.file).read_bytes()
        with_file = await client.send_message(
            args.chat, f"pymax-file {args.nonce}", attachments=[File(path=args.file)]
        )
        files = [a for a in with_file.attaches if isinstance(a, FileAttachment)]
        check(
            "file-send",
            len(files) == 1 and files[0].name == Path(args.file).name and files[0].size == len(body),
            f"message {with_file.id} with {[(f.name, f.size) for f in files]}",
        )

        request = await client.get_file_by_id(args.chat, with_file.id, files[0].file_id)
        check("file-url", request is not None and bool(request.url), f"{request}")
        assert request is not None
        downloaded = await asyncio.to_thread(fetch, request.url, args.request_timeout)
        check(
            "file-download",
            downloaded == body,
            f"{len(downloaded)} bytes downloaded, {len(body)} uploaded",
        )

        image = Path(args.photo).read_bytes()
        with_photo = await client.send_message(
            args.chat, f"pymax-photo {args.nonce}", attachments=[Photo(path=args.photo)]
        )
        photos = [a for a in with_photo.attaches if isinstance(a, PhotoAttachment)]
        check(
            "photo-send",
            len(photos) == 1 and photos[0].width > 0 and photos[0].height > 0,
            f"message {with_photo.id} with "
            f"{[(p.photo_id, p.width, p.height) for p in photos]}",
        )
        downloaded = await asyncio.to_thread(fetch, photos[0].base_url, args.request_timeout)
        check(
            "photo-download",
            downloaded == image,
            f"{len(downloaded)} bytes downloaded, {len(image)} uploaded",
        )

        reactions = await client.add_reaction(args.chat, got.id, REACTION)
        check(
            "react",
            reactions is not None and reactions.your_reaction == REACTION,
            f"{reactions}",
        )
    finally:
        await client.close()


async def wait_for(queue: asyncio.Queue[Message], pred, timeout: float) -> Message | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            return None
        if pred(message):
            return message
    return None


def fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="WebSocket URL of the simulator")
    p.add_argument("--token", required=True, help="login token of the account to use")
    p.add_argument("--me", type=int, required=True, help="that account's id")
    p.add_argument("--peer", type=int, required=True, help="who sends the reply")
    p.add_argument("--chat", type=int, required=True, help="chat shared with the peer")
    p.add_argument("--nonce", required=True, help="makes this run's texts unique")
    p.add_argument("--file", required=True, help="file to upload and send")
    p.add_argument("--photo", required=True, help="PNG image to upload and send")
    p.add_argument(
        "--history", action="append", help="expected last history texts, oldest first"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="whole-run deadline (s)")
    p.add_argument("--push-timeout", type=float, default=20.0)
    p.add_argument("--request-timeout", type=float, default=10.0)
    return p.parse_args()


def start_watchdog(seconds: float) -> None:
    # Backstop for the asyncio deadline: a cancelled scenario still awaits
    # its cleanup, which could itself block.
    def expire() -> None:
        print(f"FAIL watchdog: still running after {seconds}s", flush=True)
        os._exit(2)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


async def main() -> int:
    args = parse_args()
    start_watchdog(args.timeout + 10)
    with tempfile.TemporaryDirectory(prefix="pymax-compat-") as work_dir:
        try:
            await asyncio.wait_for(scenario(args, work_dir), args.timeout)
        except StepFailed as e:
            print(f"FAIL {e}", flush=True)
            return 1
        except asyncio.TimeoutError:
            print(f"FAIL timeout: scenario did not finish within {args.timeout}s", flush=True)
            return 1
        except Exception as e:  # any PyMax error is a compatibility failure
            print(f"FAIL error: {type(e).__name__}: {e}", flush=True)
            return 1
    print("PASS all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
