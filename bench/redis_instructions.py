"""Redis's instructions per event for the profile sink's calls, counted by callgrind (deterministic).

CPU time per event moves by ±20 % on a shared machine; instructions do not. This runs the sink
of ``bench.rules_cost`` once in one mode ("on": 50 rules and the intent model; "off": neither;
"shipped": the shipped rules and the intent model, what `pulse up` runs; "shipped-rules", "model":
each alone, see bench/rules_cost.py) on a plain Valkey and
records every command it sends, then replays the commands of the first ``--calls`` update calls
(with the identity links, decide calls and decision records between them) on a fresh Valkey
under ``valgrind --tool=callgrind`` and prints the instructions the server executed per event
those calls applied; also the replayed calls by kind and the commands the server ran (the
functions' own included), per event. The same events give the same commands, so two builds
compare to the instruction: run it from each checkout (``PYTHONPATH=<checkout>``).
Needs valgrind.

Usage: .venv/bin/python -m bench.redis_instructions [--mode on|off|shipped|shipped-rules|model]
       [--events 60000] [--calls 126]
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import redis
import redis.connection

from bench.rules_cost import main as rules_cost_main
from orchestration.local_services import _valkey_argv
from streaming.profiles import functions

#: Commands of the benchmark's own bookkeeping, not the sink's: never replayed.
_NOT_REPLAYED = {"FUNCTION", "INFO", "CONFIG", "FLUSHDB", "PING", "CLIENT", "HELLO", "SELECT", "SCRIPT"}


@contextmanager
def recording() -> Iterator[list[tuple[Any, ...]]]:
    """Every command redis-py sends meanwhile, single or pipelined, in order."""
    connection = redis.connection.AbstractConnection
    send, pack = connection.send_command, connection.pack_commands
    sent: list[tuple[Any, ...]] = []

    def send_command(self: Any, *args: Any, **kwargs: Any) -> None:
        sent.append(args)
        send(self, *args, **kwargs)

    def pack_commands(self: Any, commands: Any) -> Any:
        commands = list(commands)
        sent.extend(tuple(c) for c in commands)
        return pack(self, commands)

    connection.send_command, connection.pack_commands = send_command, pack_commands  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        connection.send_command, connection.pack_commands = send, pack  # type: ignore[method-assign]


def _name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _deltas_in(deltas: list[Any]) -> int:
    """The deltas of an update call's ARGV[4]: an array of rows (before 2026-12), or one flat
    array of 10 values per delta, the 10th the number of op values after them (codec.py)."""
    if not deltas or isinstance(deltas[0], list):
        return len(deltas)
    count = at = 0
    while at < len(deltas):
        count, at = count + 1, at + 10 + deltas[at + 9]
    return count


def prefix(commands: list[tuple[Any, ...]], calls: int) -> tuple[list[tuple[Any, ...]], int]:
    """The sink's commands up to its ``calls``-th update call, and the events those calls apply."""
    kept: list[tuple[Any, ...]] = []
    updates = events = 0
    for command in commands:
        if _name(command[0]).upper() in _NOT_REPLAYED:
            continue
        kept.append(command)
        if _name(command[0]).upper() == "FCALL" and _name(command[1]) == functions.UPDATE_FUNCTION:
            argv = command[3 + int(command[2]) :]
            if not (len(argv) > 9 and _name(argv[9]) == "1"):  # a decide call applies nothing
                events += _deltas_in(msgspec.msgpack.decode(argv[3]))
            updates += 1
            if updates == calls:
                break
    return kept, events


def call_kinds(commands: list[tuple[Any, ...]]) -> Counter[str]:
    """The commands by kind: FCALL by function (an update call that decides counted apart),
    EVALSHA by the script file it runs, any other command by name."""
    scripts = {
        hashlib.sha1(path.read_bytes()).hexdigest(): path.name
        for path in Path(functions.__file__).parent.glob("*.lua")
    }
    kinds: Counter[str] = Counter()
    for command in commands:
        name = _name(command[0]).upper()
        if name == "FCALL":
            function = _name(command[1])
            argv = command[3 + int(command[2]) :]
            decide = function == functions.UPDATE_FUNCTION and len(argv) > 9 and _name(argv[9]) == "1"
            kinds[f"FCALL {function}{' (decide)' if decide else ''}"] += 1
        elif name == "EVALSHA":
            kinds[f"EVALSHA {scripts.get(_name(command[1]), _name(command[1]))}"] += 1
        else:
            kinds[name] += 1
    return kinds


def instructions(
    commands: list[tuple[Any, ...]], out: Path, data: Path | None = None
) -> tuple[int, dict[str, int]]:
    """Replay ``commands`` on a Valkey under callgrind; the instructions it executed, and the calls
    of each command it ran (INFO commandstats: those the functions ran included).

    Without ``data``: a fresh Valkey, counted from its start (the function library is loaded
    first). With ``data``: a Valkey loaded from ``data``/dump.rdb (its functions come with it),
    counting the replay only (``bench.age_instructions``)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="pulse-redis-instructions-") as tmp:
        argv = [
            "valgrind",
            "--tool=callgrind",
            *(["--instr-atstart=no"] if data else []),
            f"--callgrind-out-file={out}",
            *_valkey_argv(port, data or Path(tmp), False),
        ]
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=600)
        deadline = time.monotonic() + 300
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    server.kill()
                    raise
                time.sleep(0.2)
        if data is None:
            functions.load_library(client)
        for script in Path(functions.__file__).parent.glob("*.lua"):
            if script.name != "update.lua":
                client.script_load(script.read_text())  # decision records are EVALSHA calls
        if data is not None:
            client.config_resetstat()
            _instrument(server, "on")
        for start in range(0, len(commands), 200):
            pipe = client.pipeline(transaction=False)
            for command in commands[start : start + 200]:
                pipe.execute_command(*command)
            errors = [r for r in pipe.execute(raise_on_error=False) if isinstance(r, Exception)]
            if errors:
                server.kill()
                raise RuntimeError(f"replayed commands failed: {errors[0]}")
        if data is not None:
            _instrument(server, "off")
        calls = {  # since the last CONFIG RESETSTAT (rules_cost resets before each mode)
            name.removeprefix("cmdstat_"): int(entry["calls"])
            for name, entry in client.info("commandstats").items()
            if name not in ("cmdstat_info", "cmdstat_config|resetstat")
        }
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        server.wait(120)
    totals = [line for line in out.read_text().splitlines() if line.startswith(("totals:", "summary:"))]
    return int(totals[-1].split()[1]), calls


def _instrument(server: subprocess.Popen[bytes], state: str) -> None:
    """Turn callgrind's instrumentation of ``server`` on or off."""
    subprocess.run(["callgrind_control", "-i", state, str(server.pid)], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("on", "off", "shipped", "shipped-rules", "model"), default="on")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument(
        "--calls", type=int, default=126, help="update calls replayed (about 100 events each)"
    )
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pulse-callgrind.out")
    args = parser.parse_args()
    sys.argv = [sys.argv[0], "--events", str(args.events), "--repeat", "1", "--modes", args.mode]
    with recording() as sent:
        rules_cost_main()
    commands, events = prefix(sent, args.calls)
    print(f"replaying {len(commands)} commands ({events} events applied) under callgrind...", flush=True)
    _, all_events = prefix(sent, len(sent))
    whole = call_kinds(sent)
    for kind, count in sorted(call_kinds(commands).items(), key=lambda item: -item[1]):
        print(
            f"  {kind}: {count} ({count / events:.3f} per event; "
            f"whole run {whole[kind] / all_events:.3f} per event)"
        )
    total, calls = instructions(commands, args.out)
    print(
        "  commands run (functions' included), per event: "
        + ", ".join(
            f"{name} {count / events:.2f}" for name, count in sorted(calls.items(), key=lambda item: -item[1])
        )
    )
    print(f"{args.mode}: {total:,} instructions, {total / events:,.0f} per event ({args.out})")


if __name__ == "__main__":
    main()
