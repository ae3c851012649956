"""Clients this project did not write drive the daemon: pynvim's msgpack-RPC session layers
(Python) and a Node.js script on ``@msgpack/msgpack``. Nothing of acwd is imported on their side.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Daemon

PACKAGE = "@msgpack/msgpack@3"
# A msgpack-RPC client in 30 lines of JavaScript: pipelined requests matched by msgid, events.
NODE_SCRIPT = r"""
const net = require("net");
const { encode, decodeMultiStream } = require("@msgpack/msgpack");

const [port, agent, queue, work] = process.argv.slice(2);
const socket = net.connect(Number(port), "127.0.0.1");
const pending = new Map();
const events = [];
let nextId = 1;
function call(method, args) {
  const msgid = nextId++;
  socket.write(encode([0, msgid, method, args === undefined ? [] : [args]]));
  return new Promise((resolve) => pending.set(msgid, resolve));
}
async function read() {
  for await (const message of decodeMultiStream(socket)) {
    if (message[0] === 1) { pending.get(message[1])({ error: message[2], result: message[3] }); }
    else if (message[0] === 2) { events.push(...message[2]); }
  }
}
read().catch(() => {});
(async () => {
  const out = {};
  out.hello = await call("hello", { client: "node-interop" });
  out.ping = await call("ping");
  out.login = await call("agent.login", { agent_id: agent, queues: [queue] });
  out.submit = await call("work.submit", { queue: queue, work_id: work, priority: 3 });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  while (!events.some((e) => e.type === "work.offered")) { await sleep(10); }
  out.accept = await call("work.accept", { work_id: work });
  out.end = await call("work.end", { work_id: work });
  out.again = await call("work.end", { work_id: work });
  out.unknown = await call("no.such.method", {});
  out.complete = await call(
    "acw.complete", { work_id: work, disposition: "resolved", fields: { score: 4.5 } });
  out.events = events.map((e) => e.type);
  console.log(JSON.stringify(out));
  socket.end();
})();
"""


def pynvim_session(host: str, port: int) -> Any:
    """The three layers pynvim.msgpack_rpc.session() stacks, without its first act: a Neovim
    notification (nvim_set_client_info), which acwd rightly answers with a protocol error."""
    msgpack_rpc = pytest.importorskip(
        "pynvim.msgpack_rpc",
        reason="pynvim is not installed (.venv/bin/pip install pynvim): no third-party client",
    )
    from pynvim.msgpack_rpc.event_loop import EventLoop

    loop = EventLoop("tcp", host, port)
    session = msgpack_rpc.Session(msgpack_rpc.AsyncSession(msgpack_rpc.MsgpackStream(loop)))
    # pynvim expects Neovim's [type, message] errors; acwd sends a map {code, message, data}.
    session.error_wrapper = lambda error: RuntimeError(error)
    return session


def test_pynvim_session(daemon: Daemon, new_queue: Any, uid: Any) -> None:
    session = pynvim_session(*daemon.address)
    queue, agent, work = new_queue("long"), uid("nvim"), uid("w")
    try:
        hello = session.request("hello", {"client": "pynvim"})
        assert hello["server"] == "acwd" and hello["protocol"] == 1
        assert "time" in session.request("ping")
        view = session.request("agent.login", {"agent_id": agent, "queues": [queue]})
        assert view["state"] == "available"
        submitted = session.request("work.submit", {"queue": queue, "work_id": work})
        assert submitted["work_id"] == work

        # Our agent's own events arrive as notifications [2, "event", [event]].
        types = []
        while "work.offered" not in types:
            message = session.next_message()
            assert message is not None and message.type == "notification"
            assert message.name == "event"
            types += [event["type"] for event in message.args]
        assert session.request("work.accept", {"work_id": work})["state"] == "active"
        leg = session.request("work.end", {"work_id": work})
        assert leg["acw"]["mode"] == "timed"

        with pytest.raises(RuntimeError) as refused:
            session.request("work.end", {"work_id": work})
        error = refused.value.args[0]
        assert error["code"] == "invalid_state" and error["message"]
        with pytest.raises(RuntimeError) as unknown:
            session.request("no.such.method", {})
        assert unknown.value.args[0]["code"] == "method_not_found"
        record = session.request("acw.complete", {"work_id": work, "disposition": "ok"})
        assert record["reason"] == "completed" and record["disposition"] == "ok"
    finally:
        session.close()


@pytest.fixture(scope="session")
def node_msgpack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with @msgpack/msgpack installed from the npm registry."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the Node.js interoperability test needs them")
    where = tmp_path_factory.mktemp("node-interop")
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(where), PACKAGE],
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm could not reach the registry within 180 s")
    if done.returncode != 0:
        offline = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH")
        if any(code in done.stderr for code in offline):
            pytest.skip(f"npm cannot reach the registry: {done.stderr.strip()[-300:]}")
        raise AssertionError(f"npm install failed:\n{done.stderr}")
    return where


def test_nodejs_msgpack_client(
    daemon: Daemon, node_msgpack: Path, new_queue: Any, uid: Any
) -> None:
    script = node_msgpack / "interop.js"
    script.write_text(NODE_SCRIPT)
    queue, agent, work = new_queue("long"), uid("node"), uid("w")
    done = subprocess.run(
        ["node", str(script), str(daemon.port), agent, queue, work],
        cwd=node_msgpack,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["hello"]["result"]["server"] == "acwd"
    assert "time" in out["ping"]["result"]
    assert out["login"]["result"]["agent_id"] == agent
    assert out["submit"]["result"]["priority"] == 3
    assert out["accept"]["result"]["state"] == "active"
    assert out["end"]["result"]["state"] == "wrapping"
    assert out["again"]["error"]["code"] == "invalid_state"
    assert out["unknown"]["error"]["code"] == "method_not_found"
    record = out["complete"]["result"]
    assert record["disposition"] == "resolved" and record["fields"] == {"score": 4.5}
    assert {"work.offered", "work.accepted", "acw.started", "acw.ended"} <= set(out["events"])
