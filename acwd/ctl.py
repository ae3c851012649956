"""``acwctl``: drive and inspect a running acwd from the shell (one connection per command)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

import anyio

from acwd import __version__
from acwd.client import DEFAULT_PORT, Client, ConnectionLost, RpcError

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
CONNECT_TIMEOUT_S = 10.0
TOPICS = ("agent", "work", "acw", "queue")
# A list option takes one or more values and may be repeated: --skill a=1 b=2 --skill c=3.
MANY: dict[str, Any] = {"action": "extend", "nargs": "+"}

EPILOG = f"""\
connection: --host, --port, --token, or ACWD_HOST, ACWD_PORT, ACWD_TOKEN
            (default 127.0.0.1:{DEFAULT_PORT}, no token, no TLS)
output:     tables for people; --json prints one JSON document
            (watch and agent login --hold: one JSON line per event)

exit codes:
  {OK}  ok
  {REFUSED}  the server refused the request; stderr has one line "error: <code>: <message>"
  {USAGE}  usage error (bad command line)
  {UNREACHABLE}  cannot connect to the daemon, or the connection was lost
"""

Command = Callable[[Client, argparse.Namespace], Coroutine[Any, Any, Any]]


# -- formatting --------------------------------------------------------------------------------


def _clock(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(at))


def _secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _until(at: float | None) -> str:
    """A deadline as a clock time and how far off it is."""
    if at is None:
        return "no deadline"
    left = at - time.time()
    return f"{_clock(at)} ({'in ' + _secs(left) if left >= 0 else _secs(-left) + ' ago'})"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _pairs(items: Iterable[tuple[str, object]]) -> str:
    rows = [(k, "-" if v is None or v == "" else v) for k, v in items]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _leg_summary(leg: Mapping[str, Any]) -> str:
    text = f"{leg['work_id']} {leg['state']}"
    acw = leg.get("acw")
    if leg["state"] == "wrapping" and acw:
        text += f", ACW {acw['mode']} ends {_until(acw.get('deadline'))}"
    elif leg["state"] == "offered" and leg.get("offer_expires_at"):
        text += f", offer expires {_until(leg['offer_expires_at'])}"
    return text


def _status(agent: Mapping[str, Any]) -> str:
    status = str(agent["status"])
    if agent.get("reason"):
        status += f" ({agent['reason']})"
    if agent.get("pending_status"):
        status += f" -> {agent['pending_status']} after ACW"
    if agent.get("connected") is False and agent.get("state") != "offline":
        status += ", disconnected"
    return status


def _agents_table(agents: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            a["agent_id"],
            a["state"],
            _status(a),
            f"{a['used']}/{a['capacity']}",
            ", ".join(a["queues"]) if a.get("queues") is not None else "*",
            "; ".join(_leg_summary(leg) for leg in a["legs"]) or "-",
        )
        for a in sorted(agents, key=lambda a: str(a["agent_id"]))
    ]
    return _table(("AGENT", "STATE", "STATUS", "LOAD", "QUEUES", "WORK"), rows)


def _work_text(work: Mapping[str, Any]) -> str:
    pairs: list[tuple[str, object]] = [
        ("work", work["work_id"]),
        ("state", work["state"]),
        ("queue", f"{work['queue']} ({work['channel']})"),
        ("priority", work["priority"]),
        ("agent", work.get("agent_id")),
        (
            "enqueued",
            f"{_clock(work['enqueued_at'])} ({_secs(time.time() - work['enqueued_at'])} ago)",
        ),
    ]
    if work.get("offer_expires_at"):
        pairs.append(("offer expires", _until(work["offer_expires_at"])))
    if work.get("cancel_reason"):
        pairs.append(("cancelled", work["cancel_reason"]))
    for key in ("skills", "attributes"):
        if work.get(key):
            pairs.append((key, ", ".join(f"{k}={v}" for k, v in work[key].items())))
    for leg in work.get("legs") or ():
        pairs.append(("leg", f"{leg['agent_id']}: {_leg_summary(leg)}"))
    return _pairs(pairs)


def _leg_text(leg: Mapping[str, Any]) -> str:
    acw = leg.get("acw")
    pairs: list[tuple[str, object]] = [
        ("work", leg["work_id"]),
        ("agent", leg["agent_id"]),
        ("leg", leg["state"]),
        ("queue", f"{leg['queue']} ({leg['channel']})"),
    ]
    if acw:
        pairs += [
            ("acw", acw["mode"]),
            ("acw ends", _until(acw.get("deadline"))),
            ("extensions", acw.get("extensions", 0)),
        ]
    else:
        pairs.append(("acw", "none"))
    wrapup = leg.get("wrapup")
    if wrapup:
        pairs.append(("wrap-up", f"stored ({wrapup.get('disposition') or 'no disposition'})"))
    return _pairs(pairs)


def _wrapup_text(record: Mapping[str, Any]) -> str:
    return _pairs(
        [
            ("work", record["work_id"]),
            ("agent", record["agent_id"]),
            ("queue", f"{record['queue']} ({record['channel']})"),
            ("disposition", record["disposition"]),
            ("notes", record.get("notes")),
            ("ended", f"{record['reason']} at {_clock(record['acw_ended_at'])}"),
            ("talk", _secs(record["talk_s"])),
            ("acw", _secs(record["acw_seconds"])),
            ("extensions", record["extensions"]),
        ]
    )


def _wrapups_table(records: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            r["work_id"],
            r["agent_id"],
            r["queue"],
            r["disposition"],
            r["reason"],
            _secs(r["talk_s"]),
            _secs(r["acw_seconds"]),
            r["extensions"],
            _clock(r["acw_ended_at"]),
        )
        for r in records
    ]
    headers = ("WORK", "AGENT", "QUEUE", "DISPOSITION", "ENDED", "TALK", "ACW", "EXT", "AT")
    return _table(headers, rows)


def _queues_table(queues: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for q in queues:
        ws = q.get("resolved") or {}
        acw = str(ws.get("acw_mode", "?"))
        if acw not in ("off", "manual"):
            acw += f" {ws.get('acw_seconds', 0):g}s"
        offer = ws.get("offer_timeout_s")
        rows.append(
            (
                q["queue"],
                q.get("channel", "-"),
                q.get("policy", "-"),
                q.get("priority", 0),
                acw,
                "auto-accept" if offer == 0 else f"{offer:g}s",
            )
        )
    return _table(("QUEUE", "CHANNEL", "POLICY", "PRIORITY", "ACW", "OFFER TIMEOUT"), rows)


def _stats_text(stats: Mapping[str, Any]) -> str:
    agents = stats.get("agents") or {}
    level = stats.get("service_level")
    return _pairs(
        [
            ("queue", stats["queue"]),
            ("waiting", stats["waiting"]),
            ("oldest wait", _secs(stats["oldest_wait_s"])),
            ("agents", ", ".join(f"{n} {s}" for s, n in agents.items())),
            ("offered", stats.get("offered")),
            ("handled", stats.get("handled")),
            ("abandoned", stats.get("abandoned")),
            ("service level", None if level is None else f"{100 * level:.1f}%"),
            ("ASA", _secs(stats.get("asa_s"))),
            ("AHT", _secs(stats.get("aht_s"))),
            ("ACW average", _secs(stats.get("acw_avg_s"))),
        ]
    )


def event_text(event: Mapping[str, Any]) -> str:
    """One event as one line for a person: time, type, what happened."""
    e = dict(event)
    kind = str(e.pop("type", "?"))
    at = e.pop("at", None)
    who, work = e.get("agent_id", "?"), e.get("work_id", "?")
    ends = f"ends {_until(e.get('deadline'))}"
    match kind:
        case "agent.state_changed":
            text = f"{who}: {e.get('from')} -> {e.get('to')} (status {_status(e)})"
        case "work.queued":
            text = f"{work} waiting in {e.get('queue')} (priority {e.get('priority')})"
        case "work.offered":
            text = f"{work} offered to {who}, expires {_until(e.get('expires_at'))}"
        case "work.accepted":
            text = f"{work} accepted by {who} after {_secs(e.get('wait_s'))} waiting"
        case "work.ended":
            follows = "ACW follows" if e.get("acw") else "no ACW"
            text = f"{work} ended by {who} after {_secs(e.get('talk_s'))}; {follows}"
        case "acw.started":
            text = f"{who}: ACW for {work} ({e.get('mode')}), {ends}"
        case "acw.extended":
            text = f"{who}: ACW for {work} extended ({e.get('extensions')}x), {ends}"
        case "acw.ended":
            took = _secs(e.get("acw_seconds"))
            text = f"{who}: ACW for {work} ended, {e.get('reason')} after {took}"
        case "work.completed":
            text = f"{work} completed ({who}, {e.get('queue')})"
        case "work.cancelled":
            text = f"{work} cancelled in {e.get('queue')}: {e.get('reason')}"
        case "wrapup.recorded":
            r = e.get("record") or {}
            text = f"wrap-up of {r.get('work_id')} by {r.get('agent_id')}: {r.get('disposition')}"
        case _:
            text = " ".join(f"{k}={v}" for k, v in e.items() if v is not None)
    stamp = time.strftime("%H:%M:%S", time.localtime(at)) if at else "--:--:--"
    return f"{stamp}  {kind:<20}  {text}"


# -- commands ----------------------------------------------------------------------------------


def _show(args: argparse.Namespace, result: Any, render: Callable[[Any], str]) -> None:
    print(json.dumps(result, indent=2) if args.json else render(result))


def _one_agent(agent: Mapping[str, Any]) -> str:
    return _agents_table([agent])


async def _agents(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.agent_list(state=a.state, queue=a.queue), _agents_table)


async def _agent_get(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.agent_get(a.agent), _one_agent)


async def _agent_login(c: Client, a: argparse.Namespace) -> None:
    view = await c.agent_login(
        a.agent,
        status=a.status,
        reason=a.reason,
        capacity=a.capacity,
        skills=dict(a.skill) if a.skill else None,
        queues=a.queue or None,
    )
    if not a.hold:
        _show(a, view, _one_agent)
        if sys.stderr.isatty() and not a.json:
            print(
                f"note: {a.agent} is offered work only while the connection that logged it in is "
                "open; this one closes now (use --hold to keep it)",
                file=sys.stderr,
            )
        return
    print(json.dumps(view) if a.json else _one_agent(view), flush=True)
    print(
        f"holding {a.agent}'s connection: its events follow; Ctrl-C lets go, and {a.agent} "
        "goes offline after the daemon's disconnect grace (30 s by default)",
        file=sys.stderr,
        flush=True,
    )
    await _stream(c, a.json)


async def _agent_status(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.agent_set_status(a.agent, a.status, reason=a.reason), _one_agent)


async def _agent_logout(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.agent_logout(a.agent, force=a.force or None), _one_agent)


async def _queues(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.queue_list(), _queues_table)


async def _stats(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.queue_stats(a.queue), _stats_text)


async def _work_submit(c: Client, a: argparse.Namespace) -> None:
    view = await c.work_submit(
        a.queue,
        work_id=a.id,
        channel=a.channel,
        priority=a.priority,
        skills=dict(a.skill) if a.skill else None,
        size=a.size,
        attributes=dict(a.attr) if a.attr else None,
    )
    _show(a, view, _work_text)


async def _work_get(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.work_get(a.id), _work_text)


async def _work_accept(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.work_accept(a.id), _work_text)


async def _work_decline(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.work_decline(a.id, reason=a.reason), _work_text)


async def _work_end(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.work_end(a.id), _leg_text)


async def _work_transfer(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.work_transfer(a.id, a.queue), _work_text)


async def _work_cancel(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.work_cancel(a.id, reason=a.reason), _work_text)


async def _acw_request(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.acw_request(a.id), _leg_text)


async def _acw_extend(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.acw_extend(a.id), _leg_text)


async def _acw_complete(c: Client, a: argparse.Namespace) -> None:
    result = await c.acw_complete(a.id, disposition=a.disposition, notes=a.notes)
    # In forced mode the answer is the leg (still in ACW, wrap-up stored), else the record.
    _show(a, result, _leg_text if "state" in result else _wrapup_text)


async def _acw_force_end(c: Client, a: argparse.Namespace) -> None:
    _show(a, await c.acw_force_end(a.id), _wrapup_text)


async def _wrapups(c: Client, a: argparse.Namespace) -> None:
    if a.work is not None:
        records = [
            r
            for r in await c.wrapup_get(a.work)
            if a.agent in (None, r["agent_id"]) and a.queue in (None, r["queue"])
        ][: a.limit]
    else:
        records = await c.wrapup_list(agent_id=a.agent, queue=a.queue, limit=a.limit)
    _show(a, records, _wrapups_table)


async def _watch(c: Client, a: argparse.Namespace) -> None:
    topics = (await c.subscribe(a.topic or TOPICS, queue=a.queue, agent_id=a.agent))["subscribed"]
    print(f"watching {', '.join(topics)} events; Ctrl-C stops", file=sys.stderr, flush=True)
    await _stream(c, a.json)


async def _ping(c: Client, a: argparse.Namespace) -> None:
    started = time.perf_counter()
    await c.ping()
    rtt_ms = 1000 * (time.perf_counter() - started)
    info = {**c.server_info, "rtt_ms": round(rtt_ms, 3)}
    _show(
        a,
        info,
        lambda i: (
            f"{i['server']} {i['version']} (protocol {i['protocol']}), "
            f"you are {i['principal']} ({i['role']}), round trip {i['rtt_ms']:.2f} ms"
        ),
    )


async def _reload(c: Client, a: argparse.Namespace) -> None:
    result = await c.config_reload()
    _show(a, result, lambda r: "\n".join(["reloaded", *(f"  {x}" for x in r["changes"])]))


async def _stream(c: Client, as_json: bool) -> None:
    """Print events as they come until Ctrl-C or SIGTERM, one per line."""
    lost: ConnectionLost | None = None

    async def print_events() -> None:
        nonlocal lost
        try:
            async for event in c.events():
                print(json.dumps(event) if as_json else event_text(event), flush=True)
        except ConnectionLost as exc:
            lost = exc  # raised outside the task group, which would wrap it in a group
        except BrokenPipeError:
            _silence_stdout()  # `acwctl watch | head`: the reader has seen enough
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(print_events)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                tg.cancel_scope.cancel()
    if lost is not None:
        raise lost


# -- command line ------------------------------------------------------------------------------


def _level(text: str) -> tuple[str, int]:
    name, sep, level = text.partition("=")
    if not sep or not name or not level.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected name=level with a whole number, got {text!r}")
    return name, int(level)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    """The acwctl command line."""
    # The global options are accepted before and after the subcommand ("acwctl agents --json").
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default=argparse.SUPPRESS, help="daemon address [ACWD_HOST]")
    common.add_argument(
        "--port", type=_port, default=argparse.SUPPRESS, help="daemon port [ACWD_PORT]"
    )
    common.add_argument("--token", default=argparse.SUPPRESS, help="auth token [ACWD_TOKEN]")
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    common.add_argument(
        "--tls",
        action="store_true",
        default=argparse.SUPPRESS,
        help="connect with TLS [ACWD_TLS=1]",
    )
    common.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="trust this CA (PEM) for the daemon's certificate; implies --tls [ACWD_TLS_CA]",
    )
    common.add_argument(
        "--tls-cert",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="client certificate (PEM, with its key unless --tls-key) for [server] tls_client_ca",
    )
    common.add_argument("--tls-key", metavar="FILE", default=argparse.SUPPRESS)
    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="acwctl",
        description="Drive and inspect a running acwd.",
        epilog=EPILOG,
        formatter_class=formatter,
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"acwctl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent: Any, name: str, func: Command, help: str, **kw: Any) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help,
            description=help,
            parents=[common],
            epilog=EPILOG,
            formatter_class=formatter,
            **kw,
        )
        cmd.set_defaults(func=func)
        return cmd

    def group(name: str, help: str) -> Any:
        g = sub.add_parser(
            name, help=help, description=help, epilog=EPILOG, formatter_class=formatter
        )
        return g.add_subparsers(dest="action", required=True, metavar="ACTION")

    cmd = add(sub, "agents", _agents, "list agents")
    cmd.add_argument("--state", choices=("offline", "away", "available", "busy", "acw"))
    cmd.add_argument("--queue", help="only agents serving this queue")

    agent = group("agent", "log an agent in or out, change its status, show it")
    cmd = add(agent, "login", _agent_login, "log an agent in (or update its profile)")
    cmd.add_argument("agent")
    cmd.add_argument("--status", choices=("available", "away", "offline"))
    cmd.add_argument("--reason", help="reason shown with the status")
    cmd.add_argument("--capacity", type=int)
    cmd.add_argument("--skill", type=_level, **MANY, metavar="NAME=LEVEL")
    cmd.add_argument("--queue", **MANY, help="the queues served (default: all)")
    cmd.add_argument(
        "--hold",
        action="store_true",
        help="keep the agent's connection open and print its events until Ctrl-C "
        "(without it, the agent is not offered work and goes offline after the disconnect "
        "grace, because the connection that logged it in closes when acwctl exits)",
    )
    cmd = add(agent, "status", _agent_status, "set an agent's status (pending during ACW)")
    cmd.add_argument("agent")
    cmd.add_argument("status", choices=("available", "away", "offline"))
    cmd.add_argument("--reason")
    cmd = add(agent, "logout", _agent_logout, "log an agent out")
    cmd.add_argument("agent")
    cmd.add_argument("--force", action="store_true", help="even with active work")
    cmd = add(agent, "get", _agent_get, "show one agent")
    cmd.add_argument("agent")

    add(sub, "queues", _queues, "list queues and their effective ACW and offer settings")
    cmd = add(sub, "stats", _stats, "a queue's live figures")
    cmd.add_argument("queue")

    work = group("work", "submit, get, accept, end, transfer or cancel a work item")
    cmd = add(work, "submit", _work_submit, "submit a work item to a queue")
    cmd.add_argument("queue")
    cmd.add_argument("--id", help="work_id (default: one is made up)")
    cmd.add_argument("--priority", type=int)
    cmd.add_argument("--channel")
    cmd.add_argument("--size", type=int, help="capacity units (default: the channel's)")
    cmd.add_argument("--skill", type=_level, **MANY, metavar="NAME=LEVEL", help="minimum levels")
    cmd.add_argument("--attr", type=_key_value, **MANY, metavar="KEY=VALUE", help="string values")
    for name, func, help in (
        ("get", _work_get, "show a work item"),
        ("accept", _work_accept, "accept an offered item (as the offered agent)"),
        ("end", _work_end, "end an active item: its ACW starts"),
    ):
        add(work, name, func, help).add_argument("id")
    cmd = add(work, "decline", _work_decline, "decline an offered item")
    cmd.add_argument("id")
    cmd.add_argument("--reason")
    cmd = add(work, "transfer", _work_transfer, "re-queue an active item in another queue")
    cmd.add_argument("id")
    cmd.add_argument("queue")
    cmd = add(work, "cancel", _work_cancel, "cancel a queued or offered item")
    cmd.add_argument("id")
    cmd.add_argument("--reason")

    acw = group("acw", "After Conversation Work: request, extend, complete, force an end")
    cmd = add(acw, "complete", _acw_complete, "finish the wrap-up of a work item")
    cmd.add_argument("id")
    cmd.add_argument("--disposition")
    cmd.add_argument("--notes")
    for name, func, help in (
        ("extend", _acw_extend, "extend the ACW deadline"),
        ("request", _acw_request, "opt in to ACW while the item is active (on_request mode)"),
        ("force-end", _acw_force_end, "end an agent's ACW now (supervisor)"),
    ):
        add(acw, name, func, help).add_argument("id")

    cmd = add(sub, "wrapups", _wrapups, "list wrap-up records")
    cmd.add_argument("--work", help="the records of one work item")
    cmd.add_argument("--agent")
    cmd.add_argument("--queue")
    cmd.add_argument("--limit", type=int)

    cmd = add(sub, "watch", _watch, "print events as they happen, until Ctrl-C")
    cmd.add_argument("--topic", choices=TOPICS, **MANY, help="default: all")
    cmd.add_argument("--queue")
    cmd.add_argument("--agent")

    add(sub, "ping", _ping, "check the daemon answers; show its version and your role")
    add(sub, "reload", _reload, "make the daemon re-read its configuration file (admin)")
    return p


def _error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def _settings(args: argparse.Namespace) -> tuple[str, int, str | None]:
    host = getattr(args, "host", None) or os.environ.get("ACWD_HOST") or "127.0.0.1"
    port = getattr(args, "port", None)
    if port is None:
        port = _port(os.environ.get("ACWD_PORT") or str(DEFAULT_PORT))
    token = getattr(args, "token", None) or os.environ.get("ACWD_TOKEN") or None
    return host, port, token


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context the options and environment ask for; None for plain TCP."""
    ca = getattr(args, "tls_ca", None) or os.environ.get("ACWD_TLS_CA") or None
    cert = getattr(args, "tls_cert", None)
    wanted = getattr(args, "tls", False) or os.environ.get("ACWD_TLS") == "1"
    if not (wanted or ca or cert):
        return None
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, getattr(args, "tls_key", None))
    return context


async def _run(
    args: argparse.Namespace, host: str, port: int, token: str | None, tls: ssl.SSLContext | None
) -> int:
    where = f"acwd at {host}:{port}"
    try:
        with anyio.fail_after(CONNECT_TIMEOUT_S):
            client = await Client.connect(
                host, port, token=token, tls=tls, client=f"acwctl/{__version__}"
            )
    except ConnectionLost as exc:
        hint = "" if tls else " (if it uses TLS: --tls or --tls-ca FILE)"
        return _error(f"cannot talk to {where}: {exc}{hint}", UNREACHABLE)
    except (OSError, TimeoutError) as exc:
        # anyio says "All connection attempts failed" and keeps the reason as the cause.
        reason = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        return _error(f"cannot connect to {where}: {reason or 'timed out'}", UNREACHABLE)
    except RpcError as exc:  # hello refused: a bad token
        return _error(f"{exc.code}: {exc.message}", REFUSED)
    async with client:
        try:
            await args.func(client, args)
        except RpcError as exc:
            return _error(f"{exc.code}: {exc.message}", REFUSED)
        except ConnectionLost as exc:
            return _error(f"lost the connection to {where}: {exc}", UNREACHABLE)
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``acwctl``; returns the exit code."""
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    try:
        host, port, token = _settings(args)
    except argparse.ArgumentTypeError as exc:
        return _error(f"ACWD_PORT: {exc}", USAGE)
    try:
        tls = _tls(args)
    except (OSError, ssl.SSLError) as exc:
        return _error(f"TLS files: {exc}", USAGE)
    try:
        return anyio.run(_run, args, host, port, token, tls)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()  # piped into a command that stopped reading: not an error
        return OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
