// Drives toxiproxy-node-client against `triogate toxiproxy` with real traffic through the
// proxies; prints one JSON object (each call's result and each measurement) for
// test_node_client.py to check. Usage: node node_client.js API_URL ECHO_HOST:PORT
"use strict";
const net = require("net");
const { Toxiproxy } = require("toxiproxy-node-client");

const [apiUrl, echo] = process.argv.slice(2);
const report = { calls: {}, measured: {} };

function split(listen) {
  const i = listen.lastIndexOf(":");
  return { host: listen.slice(0, i), port: Number(listen.slice(i + 1)) };
}

// Sends `payload`, reads until as many bytes came back, EOF, an error or 5 s.
function exchange(listen, payload) {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const chunks = [];
    let received = 0;
    let done = false;
    const socket = net.connect(split(listen));
    const finish = (outcome) => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve({
        outcome,
        bytes: received,
        seconds: Number(process.hrtime.bigint() - started) / 1e9,
        echoed: Buffer.concat(chunks).equals(payload),
      });
    };
    socket.setNoDelay(true);
    socket.on("connect", () => socket.write(payload));
    socket.on("data", (data) => {
      chunks.push(data);
      received += data.length;
      if (received >= payload.length) finish("echoed");
    });
    socket.on("end", () => finish("eof"));
    socket.on("error", (err) => finish(err.code || String(err)));
    setTimeout(() => finish("timeout"), 5000);
  });
}

async function call(name, fn) {
  try {
    const value = await fn();
    report.calls[name] = "ok";
    return value;
  } catch (err) {
    report.calls[name] = `failed: ${err && err.message}`;
    return undefined;
  }
}

async function main() {
  const toxiproxy = new Toxiproxy(apiUrl);
  const ping = Buffer.from("ping");
  report.version = await call("getVersion", () => toxiproxy.getVersion());

  const proxy = await call("createProxy", () =>
    toxiproxy.createProxy({ name: "node_db", listen: "127.0.0.1:0", upstream: echo }));
  report.listen = proxy.listen;
  report.measured.plain = await exchange(proxy.listen, ping);

  const got = await call("get", () => toxiproxy.get("node_db"));
  report.got = got && got.toJson();
  const all = await call("getAll", () => toxiproxy.getAll());
  report.all = all && Object.keys(all);

  const populated = await call("populate", () => toxiproxy.populate([
    { name: "node_cache", listen: "127.0.0.1:0", upstream: echo },
    { name: "node_db", listen: proxy.listen, upstream: echo },
  ]));
  report.populated = populated && Object.keys(populated).sort();

  // latency: add, measure, update, measure, remove
  const latency = await call("addToxic", () =>
    proxy.addToxic({ type: "latency", name: "lag", stream: "downstream", toxicity: 1,
                     attributes: { latency: 300 } }));
  report.measured.latency300 = await exchange(proxy.listen, ping);
  const lag = await call("getToxic", () => proxy.getToxic("lag"));
  report.lag = lag && lag.toJson();
  const updated = await call("Toxic.update", () =>
    latency.update({ attributes: { latency: 600 }, toxicity: 1 }));
  report.updated = updated && updated.toJson();
  report.measured.latency600 = await exchange(proxy.listen, ping);
  await call("Toxic.remove", () => latency.remove());
  report.measured.unlagged = await exchange(proxy.listen, ping);

  // bandwidth: 100 KB/s, 50 000 bytes
  const bandwidth = await call("addToxic(bandwidth)", () =>
    proxy.addToxic({ type: "bandwidth", name: "bw", stream: "downstream", toxicity: 1,
                     attributes: { rate: 100 } }));
  report.measured.bandwidth = await exchange(proxy.listen, Buffer.alloc(50000, 7));
  await call("Toxic.remove(bandwidth)", () => bandwidth.remove());

  // reset_peer: a RST
  const reset = await call("addToxic(reset_peer)", () =>
    proxy.addToxic({ type: "reset_peer", name: "rst", stream: "downstream", toxicity: 1,
                     attributes: { timeout: 0 } }));
  report.measured.reset = await exchange(proxy.listen, ping);
  await call("Toxic.remove(reset_peer)", () => reset.remove());

  // limit_data: 10 bytes, then closed
  const limit = await call("addToxic(limit_data)", () =>
    proxy.addToxic({ type: "limit_data", name: "limit", stream: "downstream", toxicity: 1,
                     attributes: { bytes: 10 } }));
  report.measured.limit = await exchange(proxy.listen, Buffer.alloc(100, 9));
  await call("Toxic.remove(limit_data)", () => limit.remove());

  // disable / enable through Proxy.update (the whole proxy, POST)
  const down = await call("Proxy.update(disable)", () =>
    proxy.update({ ...proxy.toJson(), enabled: false }));
  report.disabled = down && down.toJson();
  report.measured.disabled = await exchange(proxy.listen, ping);
  const up = await call("Proxy.update(enable)", () =>
    proxy.update({ ...proxy.toJson(), enabled: true }));
  report.enabled = up && up.toJson();
  report.measured.enabled = await exchange(proxy.listen, ping);

  // reset: toxics gone, disabled proxies enabled
  await call("addToxic(before reset)", () =>
    proxy.addToxic({ type: "latency", name: "lag2", stream: "upstream", toxicity: 1,
                     attributes: { latency: 300 } }));
  await call("Proxy.update(disable before reset)", () =>
    proxy.update({ ...proxy.toJson(), enabled: false }));
  await call("reset", () => toxiproxy.reset());
  const after = await call("get(after reset)", () => toxiproxy.get("node_db"));
  report.afterReset = after && after.toJson();
  report.measured.afterReset = await exchange(proxy.listen, ping);

  // errors the client turns into ToxiproxyError
  report.duplicate = await toxiproxy.createProxy({ name: "node_db", listen: "127.0.0.1:0", upstream: echo })
    .then(() => "created", (err) => err.message);
  report.missing = await toxiproxy.get("nope").then(() => "found", (err) => err.message);

  await call("Proxy.remove", () => proxy.remove());
  const cache = await toxiproxy.get("node_cache").catch(() => undefined);
  if (cache) await cache.remove();
  report.left = Object.keys(await toxiproxy.getAll());
  console.log(JSON.stringify(report));
}

main().catch((err) => {
  console.log(JSON.stringify({ crashed: String(err && err.stack) }));
  process.exit(1);
});
