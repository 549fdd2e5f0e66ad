// Start a local AT Protocol network (PLC + PDS + Bluesky AppView + bsync + Ozone)
// with @atproto/dev-env's TestNetwork.
//
// stdout: exactly ONE line of JSON once the network is ready. Everything else
//         (our logs, console.log from libraries) goes to stderr.
// Stops (closes the network, drops its Postgres schemas, removes its temp
// dir) when stdin closes/ends, or on SIGTERM / SIGINT.
//
// Env (all optional):
//   DB_POSTGRES_URL    default postgresql://postgres@127.0.0.1:5432/test
//   REDIS_HOST         default 127.0.0.1:6379 (only asserted by dev-env, never connected)
//   ATP_SCHEMA         base schema name, letters and '_' only; default atp_<random>
//                      (dev-env creates appview_<s>, bsync_<s>, ozone_<s>)
//   ATP_PLC_PORT, ATP_PDS_PORT, ATP_APPVIEW_PORT, ATP_OZONE_PORT   0/unset = free port
//   ATP_KEEP_SCHEMA=1  do not drop the schemas on shutdown
//   ATP_START_TIMEOUT_MS   default 120000;  ATP_STOP_TIMEOUT_MS default 30000
//   ATP_IGNORE_STDIN=1 do not stop when stdin closes (use signals only)
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'

const t0 = Date.now()
const realStdoutWrite = process.stdout.write.bind(process.stdout)
// Keep stdout for the single JSON line: route everything else to stderr.
process.stdout.write = process.stderr.write.bind(process.stderr)
const log = (...a) => process.stderr.write(`[net.mjs +${Date.now() - t0}ms] ${a.join(' ')}\n`)

const env = process.env
env.DB_POSTGRES_URL ||= 'postgresql://postgres@127.0.0.1:5432/test'
env.REDIS_HOST ||= '127.0.0.1:6379'
const randLetters = (n) =>
  Array.from({ length: n }, () => 'abcdefghijklmnopqrstuvwxyz'[Math.floor(Math.random() * 26)]).join('')
const schema = env.ATP_SCHEMA || `atp_${randLetters(8)}`
if (!/^[A-Za-z_]+$/.test(schema)) {
  log(`ATP_SCHEMA must be letters and '_' only, got ${JSON.stringify(schema)}`)
  process.exit(2)
}
const schemas = [`appview_${schema}`, `bsync_${schema}`, `ozone_${schema}`]
// NB: never pass {port: undefined}: dev-env spreads these objects over its own
// defaults, so an explicit undefined would replace the port it picked.
const portOpt = (name) => {
  const v = parseInt(env[name] || '0', 10)
  return Number.isInteger(v) && v > 0 ? { port: v } : {}
}
const START_TIMEOUT = parseInt(env.ATP_START_TIMEOUT_MS || '120000', 10)
const STOP_TIMEOUT = parseInt(env.ATP_STOP_TIMEOUT_MS || '30000', 10)

const withTimeout = (p, ms, what) => {
  let timer
  return Promise.race([
    p,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${what} timed out after ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

// pg is a dependency of @atproto/bsky; resolve it from there.
const require = createRequire(import.meta.url)
const pg = require('pg')
const dropSchemas = async () => {
  const client = new pg.Client({ connectionString: env.DB_POSTGRES_URL, connectionTimeoutMillis: 5000 })
  await client.connect()
  try {
    for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`)
  } finally {
    await client.end()
  }
}

// Import dev-env (port-lock dir is computed at import from the normal tmpdir),
// then point TMPDIR at a private dir: the PDS puts its sqlite DBs and blobs in
// os.tmpdir()/<random>, so this keeps them together for removal at shutdown.
const { TestNetwork } = await import('@atproto/dev-env')
const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'atproto-net-'))
env.TMPDIR = runDir

let network
let stopping = false
const stop = async (why, code = 0) => {
  if (stopping) return
  stopping = true
  log(`stopping (${why})`)
  const hard = setTimeout(() => {
    log('hard exit: shutdown took too long')
    process.exit(code || 1)
  }, STOP_TIMEOUT + 10000)
  hard.unref()
  if (network) {
    try {
      await withTimeout(network.close(), STOP_TIMEOUT, 'network.close()')
    } catch (err) {
      log(`close error: ${err?.message ?? err}`)
      code ||= 1
    }
  }
  if (env.ATP_KEEP_SCHEMA !== '1') {
    try {
      await withTimeout(dropSchemas(), 10000, 'drop schemas')
      log(`dropped schemas ${schemas.join(', ')}`)
    } catch (err) {
      log(`drop schema error: ${err?.message ?? err}`)
    }
  }
  fs.rmSync(runDir, { recursive: true, force: true })
  log(`stopped after ${Date.now() - t0} ms total`)
  process.exit(code)
}

process.on('SIGTERM', () => stop('SIGTERM'))
process.on('SIGINT', () => stop('SIGINT'))
if (env.ATP_IGNORE_STDIN !== '1') {
  process.stdin.on('end', () => stop('stdin end'))
  process.stdin.on('close', () => stop('stdin closed'))
  process.stdin.on('error', () => stop('stdin error'))
  process.stdin.resume() // drain input; anything written is ignored
}
process.on('unhandledRejection', (err) => log(`unhandledRejection: ${err?.stack ?? err}`))

try {
  // Fresh state: a previous run with the same ATP_SCHEMA may have left data
  // (the PLC is in-memory, so old AppView rows would point at unknown DIDs).
  await withTimeout(dropSchemas(), 10000, 'drop old schemas')
  log(`starting TestNetwork, schema base ${schema}`)
  network = await withTimeout(
    TestNetwork.create({
      dbPostgresUrl: env.DB_POSTGRES_URL,
      dbPostgresSchema: schema,
      plc: { ...portOpt('ATP_PLC_PORT') },
      pds: { ...portOpt('ATP_PDS_PORT'), hostname: 'localhost' },
      bsky: { ...portOpt('ATP_APPVIEW_PORT') },
      ozone: { ...portOpt('ATP_OZONE_PORT') },
    }),
    START_TIMEOUT,
    'TestNetwork.create()',
  )
  await withTimeout(network.processAll(), 20000, 'initial processAll()')
} catch (err) {
  log(`startup failed: ${err?.stack ?? err}`)
  await stop('startup failure', 1)
}
if (stopping) await new Promise(() => {}) // stop() in progress (e.g. SIGTERM during start)

const pdsUrl = `http://localhost:${network.pds.port}`
const info = {
  pds: pdsUrl,
  appview: `http://localhost:${network.bsky.port}`,
  plc: network.plc.url,
  ozone: `http://localhost:${network.ozone.port}`,
  bsync: `http://localhost:${network.bsync.port}`,
  firehose: `ws://localhost:${network.pds.port}/xrpc/com.atproto.sync.subscribeRepos`,
  pds_did: network.pds.ctx.cfg.service.did,
  appview_did: network.bsky.serverDid,
  appview_proxy: `${network.bsky.serverDid}#bsky_appview`,
  admin_user: 'admin',
  admin_password: 'admin-pass',
  handle_domain: '.test',
  invite_required: network.pds.ctx.cfg.invites.required,
  schemas,
  pid: process.pid,
  startup_ms: Date.now() - t0,
}
realStdoutWrite(JSON.stringify(info) + '\n')
log(`ready: ${JSON.stringify(info)}`)
