#!/usr/bin/env python3
"""Drives the MAX simulator with PyMax 1.x (PyPI ``maxapi-python`` 1.2.3), an
unmodified third-party MAX client whose WebSocket transport speaks the JSON
text format, through its public API only.

Run by ``crates/maxsim/tests/third_party.rs`` with the venv made by
``scripts/pymax1-venv``; it can also be run by hand against ``maxsim serve``:

    python pymax1_compat.py --url ws://127.0.0.1:8765/websocket \
        --token sim-token-alice --phone +79000000001 --me 21473921 \
        --peer 23981206 --chat 2770455 --nonce manual \
        --file /some/report.bin --photo /some/image.png \
        --history "Boris, are you there?" --history "Yes, here."

The scenario, in order (each step prints one PASS or FAIL line):

1. login by token (``MaxClient``: PyMax 1.x's WebSocket transport, which
   sends ``ver`` 11 JSON in text WebSocket frames; SESSION_INIT then LOGIN);
2. the chats of the LOGIN answer hold ``--chat``;
3. the peer's profile by id (CONTACT_INFO) has ``--peer``'s id;
4. history of ``--chat`` ends with the ``--history`` texts, in order, and
   its message ids arrive as decimal strings, as the JSON format has them;
5. send ``pymax1-hello <nonce>`` to ``--chat``;
6. receive ``pymax1-reply <nonce>`` from ``--peer`` as a push — the harness
   sends it as the peer once it sees step 5's message on the server;
7. history now holds the hello and the reply, in that order;
8. edit the hello to ``pymax1-edited <nonce>``;
9. upload ``--file`` and send it to ``--chat`` as a FILE attachment;
10. ask for the file's download URL and fetch it: bytes must be identical;
11. upload ``--photo`` (a PNG) and send it as a PHOTO attachment; fetch its
    ``baseUrl``: bytes must be identical;
12. react with a thumbs-up to the peer's reply, and read the reaction back.

Exit status 0 only when every step passed. An overall deadline
(``--timeout``) bounds the whole run, so it can never hang.

Why 1.2.3 and not the newest 1.x: 1.2.4 and 1.2.5 import ``requests``
without declaring it (a fresh install cannot even import ``pymax``), and
their receive loop awaits an answer to its own NOTIF_MESSAGE acknowledgement
— an answer only that same, now blocked, loop could read — so every pushed
message stalls the connection for 20 s and never reaches ``on_message``,
whatever the server does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from pymax import File, MaxClient, Message, Photo
from pymax.types import FileAttach, PhotoAttach

REACTION = "\U0001f44d"


class StepFailed(Exception):
    pass


def passed(step: str, detail: str = "") -> None:
    print(f"PASS {step}" + (f": {detail}" if detail else ""), flush=True)


def check(step: str, ok: bool, detail: str) -> None:
    if not ok:
        raise StepFailed(f"{step}: {detail}")
    passed(step, detail)


def same_id(a: object, b: object) -> bool:
    # JSON carries message ids as decimal strings, but PyMax passes through
    # whatever it got (a string from history, a number from MSG_SEND's answer).
    try:
        return int(a) == int(b)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


async def scenario(args: argparse.Namespace, client: MaxClient, incoming: asyncio.Queue[Message]) -> None:
    hello = f"pymax1-hello {args.nonce}"
    reply = f"pymax1-reply {args.nonce}"
    edited = f"pymax1-edited {args.nonce}"

    me = client.me.id if client.me else None
    check("login", me == args.me, f"logged in as {me} (expected {args.me})")

    chat_ids = [c.id for c in [*client.dialogs, *client.chats, *client.channels]]
    check(
        "chats",
        args.chat in chat_ids,
        f"{len(chat_ids)} chats in the LOGIN answer, {args.chat} among them",
    )

    users = await client.fetch_users([args.peer])
    check(
        "user",
        [u.id for u in users] == [args.peer] and bool(users[0].names),
        f"peer profile {[str(u) for u in users]}",
    )

    history = await client.fetch_history(args.chat, backward=30) or []
    texts = [m.text for m in history]
    want = args.history or []
    check(
        "history",
        texts[-len(want):] == want if want else True,
        f"{len(texts)} messages, last {len(want)}: {texts[-len(want):] if want else []}",
    )

    # The JSON format carries message ids as decimal strings (the binary one
    # as integers), and PyMax 1.x hands them over as received: string ids
    # show the server answered in the JSON format.
    raw_ids = [m.id for m in history]
    check(
        "json-ids",
        bool(raw_ids) and all(isinstance(i, str) and i.isdigit() for i in raw_ids),
        f"history ids as received: {raw_ids}",
    )

    sent = await client.send_message(hello, args.chat)
    check(
        "send",
        sent is not None and sent.text == hello and int(sent.id) > 0,
        f"message {sent.id if sent else None} {hello!r}",
    )
    assert sent is not None

    # The server also pushes our own message back (echo to the sender), so
    # wait for the peer's text rather than for the first push.
    got = await wait_for(incoming, lambda m: m.text == reply, args.push_timeout)
    check(
        "receive",
        got is not None and got.sender == args.peer and got.chat_id == args.chat,
        f"push {reply!r} from {got.sender if got else None} in chat "
        f"{got.chat_id if got else None}",
    )
    assert got is not None

    history = await client.fetch_history(args.chat, backward=30) or []
    ids = [int(m.id) for m in history]
    check(
        "history-after",
        int(sent.id) in ids
        and int(got.id) in ids
        and ids.index(int(sent.id)) < ids.index(int(got.id)),
        f"hello {sent.id} then reply {got.id} in {len(ids)} messages",
    )

    changed = await client.edit_message(args.chat, int(sent.id), edited)
    check(
        "edit",
        changed is not None and same_id(changed.id, sent.id) and changed.text == edited,
        f"{changed}",
    )

    body = Path(args.file).read_bytes()
    with_file = await client.send_message(
        f"pymax1-file {args.nonce}", args.chat, attachment=File(path=args.file)
    )
    assert with_file is not None
    files = [a for a in with_file.attaches or [] if isinstance(a, FileAttach)]
    check(
        "file-send",
        len(files) == 1 and files[0].name == Path(args.file).name and files[0].size == len(body),
        f"message {with_file.id} with {[(f.name, f.size) for f in files]}",
    )

    request = await client.get_file_by_id(args.chat, int(with_file.id), files[0].file_id)
    check("file-url", request is not None and bool(request.url), f"{request and request.url}")
    assert request is not None
    downloaded = await asyncio.to_thread(fetch, request.url, args.request_timeout)
    check(
        "file-download",
        downloaded == body,
        f"{len(downloaded)} bytes downloaded, {len(body)} uploaded",
    )

    image = Path(args.photo).read_bytes()
    with_photo = await client.send_message(
        f"pymax1-photo {args.nonce}", args.chat, attachment=Photo(path=args.photo)
    )
    assert with_photo is not None
    photos = [a for a in with_photo.attaches or [] if isinstance(a, PhotoAttach)]
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

    reactions = await client.add_reaction(args.chat, str(got.id), REACTION)
    check(
        "react",
        reactions is not None and reactions.your_reaction == REACTION,
        f"{reactions and vars(reactions)}",
    )
    read_back = await client.get_reactions(args.chat, [str(got.id)]) or {}
    mine = next((r for k, r in read_back.items() if same_id(k, got.id)), None)
    check(
        "reactions",
        mine is not None and mine.your_reaction == REACTION and mine.total_count == 1,
        f"{ {k: vars(r) for k, r in read_back.items()} }",
    )


async def run(args: argparse.Namespace, work_dir: str) -> None:
    # The server address is MaxClient's documented ``uri`` constructor
    # argument; nothing in PyMax is patched. ``token`` skips the SMS flow,
    # ``phone`` is mandatory (validated, unused with a token), a throwaway
    # ``work_dir`` keeps its session database out of the way, and the fake
    # telemetry and reconnect loop are switched off.
    client = MaxClient(
        phone=args.phone,
        uri=args.url,
        token=args.token,
        work_dir=work_dir,
        send_fake_telemetry=False,
        reconnect=False,
        logger=quiet_logger(),
    )
    incoming: asyncio.Queue[Message] = asyncio.Queue()
    ready = asyncio.Event()

    @client.on_message()
    async def on_message(message: Message) -> None:
        await incoming.put(message)

    # start() logs in, calls on_start and then blocks until the connection
    # closes; the scenario runs beside it once on_start has fired.
    @client.on_start
    async def on_start() -> None:
        ready.set()

    started = asyncio.create_task(client.start())
    try:
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({started, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            # start() ended (or failed) before logging in.
            await started
            raise StepFailed("login: start() returned before on_start")
        await scenario(args, client, incoming)
    finally:
        await client.close()
        if not started.done():
            await asyncio.wait({started}, timeout=args.request_timeout)
        if not started.done():
            started.cancel()


def quiet_logger() -> logging.Logger:
    # PyMax logs at INFO to stderr unless its logger already has a level;
    # warnings and errors are enough next to the PASS/FAIL lines.
    logger = logging.getLogger("pymax1-compat")
    logger.setLevel(logging.WARNING)
    return logger


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
    p.add_argument("--phone", required=True, help="that account's phone (+7...)")
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
    with tempfile.TemporaryDirectory(prefix="pymax1-compat-") as work_dir:
        try:
            await asyncio.wait_for(run(args, work_dir), args.timeout)
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
