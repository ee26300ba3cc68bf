// A fenced lock with server-side waiting, from Node.js (node-redis, the
// `redis` package).
//
//   npm ci && REDIS_URL=redis://127.0.0.1:6379/ node lock_example.js
//
// It takes a lock, waits in the server's queue for a lock someone else holds
// (LOCK.ACQUIRE ... WAIT), renews it (LOCK.EXTEND), releases it, and shows what a command
// timeout shorter than the WAIT does. It checks every step and exits
// non-zero on a surprise; the last line is "node example: ok".
//
// The one thing to get right, for node-redis: a client is one connection,
// and replies come back in order. A WAIT blocks that connection until the
// server answers, so send it on a client of its own (`client.duplicate()`),
// or every other command (renewals!) queues behind it. On that client,
// `socket.socketTimeout` (how long the socket may stay silent) must be
// longer than the WAIT, or left unset (the default): when it fires first,
// node-redis destroys the socket, rejects the command (the server drops the
// waiter) and, by default, does not reconnect. The per-command `timeout` option counts only until the command
// is written, so it never cuts a WAIT short; do not rely on it for that.

"use strict";

const crypto = require("node:crypto");
const { createClient, SocketTimeoutError } = require("redis");

const URL = process.env.REDIS_URL || "redis://127.0.0.1:6379/";
const KEY = `examples:node:${crypto.randomBytes(4).toString("hex")}`;
const TTL_MS = 10000;
const WAIT_MS = 5000;

const newToken = () => crypto.randomBytes(16).toString("hex");

// The fence (a number: fences stay below 2^53), or null when the lock is
// someone else's.
function acquire(client, token, waitMs, options) {
  const args = ["LOCK.ACQUIRE", KEY, token, String(TTL_MS)];
  if (waitMs !== undefined) args.push("WAIT", String(waitMs));
  return client.sendCommand(args, options);
}

const release = (client, token) => client.sendCommand(["LOCK.RELEASE", KEY, token]);

async function info(client) {
  const flat = await client.sendCommand(["LOCK.INFO", KEY]);
  const out = {};
  for (let i = 0; i < flat.length; i += 2) out[flat[i]] = flat[i + 1];
  return out;
}

function check(cond, what) {
  if (!cond) {
    console.log(`node example: FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const client = createClient({ url: URL });
  client.on("error", (e) => console.error("redis:", e.message));
  await client.connect();
  // The waiting client: a connection of its own, no timeouts shorter than
  // the WAIT.
  const waiter = client.duplicate();
  waiter.on("error", (e) => console.error("redis (waiter):", e.message));
  await waiter.connect();

  // Someone else holds the lock and releases it after 0.5 s.
  const other = newToken();
  const otherFence = await acquire(client, other);
  check(typeof otherFence === "number", `another worker holds the lock, fence ${otherFence}`);
  setTimeout(() => release(client, other), 500);

  // We wait for it in the server's queue: no polling, first come first served.
  const token = newToken();
  const t = Date.now();
  const fence = await acquire(waiter, token, WAIT_MS);
  const waited = (Date.now() - t) / 1000;
  check(fence !== null && fence > otherFence,
    `got the lock after ${waited.toFixed(1)} s of WAIT, with a larger fence`);

  // Work, sending the fence with every write to the protected resource;
  // renew before the TTL ends with LOCK.EXTEND: the fence back means still
  // ours, null means lost (stop working); it never takes a lapsed lock.
  const renewed = await client.sendCommand(["LOCK.EXTEND", KEY, token, String(TTL_MS)]);
  check(renewed === fence, "renewed with LOCK.EXTEND: the same fence");
  const remaining = await client.sendCommand(["LOCK.CHECK", KEY, token]);
  check(remaining > TTL_MS - 2000, "LOCK.CHECK: the TTL was reset");
  check((await release(client, token)) === 1, "released");
  check((await release(client, token)) === 0, "a second release is refused");

  // What a socket timeout shorter than the WAIT does.
  const holder = newToken();
  await acquire(client, holder);
  const impatient = client.duplicate({ socket: { socketTimeout: 1000 } });
  impatient.on("error", () => {});
  await impatient.connect();
  const t2 = Date.now();
  let rejected = null;
  try {
    await acquire(impatient, newToken(), WAIT_MS);
  } catch (e) {
    rejected = e;
  }
  const after = (Date.now() - t2) / 1000;
  check(rejected instanceof SocketTimeoutError,
    `socketTimeout 1 s < WAIT 5 s: node-redis destroyed the socket after ${after.toFixed(1)} s`);
  // (The server sees the close a moment later: look for up to 2 s.)
  let waiters = -1;
  for (let i = 0; i < 40 && waiters !== 0; i++) {
    if (i > 0) await sleep(50);
    waiters = (await info(client)).waiters;
  }
  check(waiters === 0, "... so the server dropped the waiter");
  check(!impatient.isOpen, "... and the client does not reconnect by default");
  // A command `timeout` would not help either: node-redis counts it only
  // until the command is written; a written WAIT is waited for to the end.
  await release(client, holder);

  await waiter.close();
  await client.close();
  console.log("node example: ok");
}

main().catch((e) => {
  console.log(`node example: FAILED: ${e.stack || e}`);
  process.exit(1);
});
