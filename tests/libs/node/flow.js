// The session flow of tests/tests/libs.rs for the Node libraries, used unchanged:
// express-session with connect-redis over node-redis or over ioredis, and express-rate-limit
// with rate-limit-redis.
//
//   node flow.js node-redis|ioredis|rate-limit    (env TANDEM_A, TANDEM_B = host:port)
//
// Two copies of one web app run in this process, app A storing its sessions through node A's
// RESP port and app B through node B's: the user logs in through A, reads and updates the
// session through B, a short session expires, and the user logs out through B. Any step that
// does not see what it must exits 1. A refused command surfaces as a 500 from the store, or,
// when express-session touches the session after the answer has gone (EXPIRE), only in the
// error handler: every error that reaches it fails the flow too.
"use strict"

const http = require("node:http")
const express = require("express")
const session = require("express-session")

const variant = process.argv[2]
const [A, B] = ["TANDEM_A", "TANDEM_B"].map((v) => {
  const [host, port] = (process.env[v] || "").split(":")
  if (!host || !port) fail(`${v} must be host:port`)
  return {host, port: Number(port)}
})

// Every error the apps' error handler saw, whether or not the answer could still carry it.
const appErrors = []

function fail(msg) {
  console.error(`FAIL ${variant}: ${msg}`)
  process.exit(1)
}

// One client per app, of the kind the variant names; both report errors instead of retrying
// forever, so a refused command fails the step that sent it.
async function client(addr) {
  if (variant === "ioredis") {
    const Redis = require("ioredis")
    const c = new Redis({host: addr.host, port: addr.port, maxRetriesPerRequest: 1})
    c.on("error", (e) => console.error(`ioredis: ${e.message}`))
    return c
  }
  const {createClient} = require("redis")
  // node-redis 6 speaks RESP3 by default (HELLO 3 on every connection).
  const c = createClient({socket: {host: addr.host, port: addr.port, reconnectStrategy: false}})
  c.on("error", (e) => console.error(`node-redis: ${e.message}`))
  await c.connect()
  return c
}

function store(c) {
  if (variant === "ioredis") {
    // connect-redis 8 and later speak node-redis only; 7.x is the line that takes ioredis.
    const {default: RedisStore} = require("connect-redis-7")
    return new RedisStore({client: c, prefix: "sess:"})
  }
  const {RedisStore} = require("connect-redis")
  return new RedisStore({client: c, prefix: "sess:"})
}

function app(c) {
  const a = express()
  if (variant === "rate-limit") {
    const {rateLimit} = require("express-rate-limit")
    const {RedisStore} = require("rate-limit-redis")
    a.use(
      rateLimit({
        windowMs: 60_000,
        limit: 3,
        standardHeaders: "draft-7",
        legacyHeaders: false,
        keyGenerator: () => "tester",
        store: new RedisStore({sendCommand: (...args) => c.sendCommand(args), prefix: "rl:"}),
      }),
    )
    a.get("/ping", (_req, res) => res.send("ok"))
    return a
  }
  a.use(
    session({
      store: store(c),
      secret: "tandem-test-secret",
      resave: false,
      saveUninitialized: false,
      cookie: {maxAge: 600_000},
    }),
  )
  a.post("/login", (req, res) => {
    req.session.user = req.query.user
    req.session.roles = ["reader"]
    // A short-lived session, to watch it expire in the store.
    if (req.query.ttl_ms) req.session.cookie.maxAge = Number(req.query.ttl_ms)
    res.json({ok: true})
  })
  a.get("/me", (req, res) => res.json({user: req.session.user || null, theme: req.session.theme || null}))
  a.post("/update", (req, res) => {
    req.session.theme = req.query.theme
    res.json({ok: true})
  })
  a.post("/logout", (req, res, next) => req.session.destroy((e) => (e ? next(e) : res.json({ok: true}))))
  a.use((err, req, res, _next) => {
    appErrors.push(`${req.method} ${req.path}: ${err && err.message}`)
    if (!res.headersSent) res.status(500).json({error: String(err && err.message)})
  })
  return a
}

function listen(a) {
  return new Promise((resolve) => {
    const s = http.createServer(a).listen(0, "127.0.0.1", () => resolve(s))
  })
}

async function call(server, method, path, cookie) {
  const url = `http://127.0.0.1:${server.address().port}${path}`
  const r = await fetch(url, {method, headers: cookie ? {cookie} : {}})
  const body = await r.text()
  const set = r.headers.get("set-cookie")
  return {status: r.status, body, cookie: set ? set.split(";")[0] : cookie, headers: r.headers}
}

function expect(step, r, status, want) {
  if (appErrors.length) fail(`before ${step}: ${appErrors.join("; ")}`)
  if (r.status !== status) fail(`${step}: HTTP ${r.status} ${r.body}`)
  if (want !== undefined && r.body !== JSON.stringify(want)) fail(`${step}: got ${r.body}, want ${JSON.stringify(want)}`)
  console.log(`ok ${step}`)
}

async function sessions(sa, sb) {
  const login = await call(sa, "POST", "/login?user=alice")
  expect("login through A", login, 200, {ok: true})
  if (!login.cookie) fail("login set no cookie")
  const c = login.cookie
  expect("read through B", await call(sb, "GET", "/me", c), 200, {user: "alice", theme: null})
  expect("update through B", await call(sb, "POST", "/update?theme=dark", c), 200, {ok: true})
  expect("read the update through A", await call(sa, "GET", "/me", c), 200, {user: "alice", theme: "dark"})

  const short = await call(sa, "POST", "/login?user=bob&ttl_ms=2000")
  expect("short login through A", short, 200, {ok: true})
  expect("short session read through B", await call(sb, "GET", "/me", short.cookie), 200, {user: "bob", theme: null})
  await new Promise((r) => setTimeout(r, 3200))
  expect("expired through B", await call(sb, "GET", "/me", short.cookie), 200, {user: null, theme: null})

  expect("logout through B", await call(sb, "POST", "/logout", c), 200, {ok: true})
  expect("logged out through A", await call(sa, "GET", "/me", c), 200, {user: null, theme: null})
}

async function rateLimit(sa, sb) {
  // Three requests allowed per window, counted in the shared store whichever node takes them.
  const codes = []
  for (const s of [sa, sb, sa, sb]) codes.push((await call(s, "GET", "/ping")).status)
  if (codes.join(",") !== "200,200,200,429") fail(`limit across A and B: ${codes}`)
  console.log("ok limit across A and B")
}

async function main() {
  const ca = await client(A)
  const cb = await client(B)
  const sa = await listen(app(ca))
  const sb = await listen(app(cb))
  if (variant === "rate-limit") await rateLimit(sa, sb)
  else if (variant === "node-redis" || variant === "ioredis") await sessions(sa, sb)
  else fail("unknown variant")
  // A touch's error arrives after its answer: give the last ones time to land.
  await new Promise((r) => setTimeout(r, 100))
  if (appErrors.length) fail(appErrors.join("; "))
  sa.close()
  sb.close()
  await Promise.all([ca, cb].map((c) => c.quit()))
  console.log(`PASS ${variant}`)
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)))
